//! `krane_store_record_writes_total`: a record write that lands counts as `written`, one that
//! lost a race with another writer as `conflict` before its retry lands. A file of its own, so
//! no other test writes records in this process while the counters are read.

mod common;

use common::{create, observed, open};
use krane_core::event::ObservedState;
use krane_core::routing::Replaced;
use krane_store::StoredRecord;
use krane_store::projection::record_writes;

#[tokio::test]
async fn writes_and_lost_races_of_records_are_counted() {
    let (_nats, store) = open().await;
    let command = create("gw");
    let key = command.key();
    let seq = store
        .publish_command_expecting(&command, 0, "test", Replaced::Nothing)
        .await
        .expect("write")
        .expect("stored");
    let (written_before, conflicts_before) = record_writes();

    let first = store.project_command(seq, &command).await.expect("folded");
    assert_eq!(
        record_writes(),
        (written_before + 1, conflicts_before),
        "the first fold creates the record"
    );

    // Folding onto the record as read one revision too early loses the race with the write
    // above: counted once, then read again and written.
    let running = observed(&key, "h1", ObservedState::Running);
    let event_seqs = store
        .publish_events(std::slice::from_ref(&running))
        .await
        .expect("stored");
    let stale = StoredRecord {
        record: first.record.clone(),
        revision: first.revision - 1,
    };
    let stored = store
        .fold_into_record(&key, Some(stale), None, &[(event_seqs[0], running)])
        .await
        .expect("folded");
    assert_eq!(stored.revision, first.revision + 1);
    assert_eq!(
        record_writes(),
        (written_before + 2, conflicts_before + 1),
        "one conflict, then the write"
    );

    // A fold that changes nothing writes nothing.
    store.project_command(seq, &command).await.expect("folded");
    assert_eq!(record_writes(), (written_before + 2, conflicts_before + 1));

    // What an operator scrapes is the same two counters.
    let exposed = krane_platform::metrics::render();
    let (written, conflicts) = record_writes();
    for line in [
        format!("krane_store_record_writes_total{{outcome=\"written\"}} {written}"),
        format!("krane_store_record_writes_total{{outcome=\"conflict\"}} {conflicts}"),
    ] {
        assert!(exposed.contains(&line), "{line} missing from:\n{exposed}");
    }
}
