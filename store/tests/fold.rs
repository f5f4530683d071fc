//! Folding a command and events into a record in one write (`Store::fold_into_record`), as
//! the scheduler does when it moves replicas off a lost host: the record changes once, with
//! both in it. Against a real nats-server.

mod common;

use common::{create, observed, open};
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::routing::Replaced;

#[tokio::test]
async fn a_placement_and_the_gone_observations_it_follows_are_one_change_of_the_record() {
    let (_nats, store) = open().await;
    let Command::Create { spec, .. } = create("gw") else {
        unreachable!("create() makes a Create")
    };
    let on_h1 = Command::create(spec.clone(), vec!["h1".into()]);
    let key = on_h1.key();
    let first = store
        .publish_command_expecting(&on_h1, 0, "test", Replaced::Nothing)
        .await
        .expect("write")
        .expect("stored");
    store.project_command(first, &on_h1).await.expect("folded");
    let running = store
        .append_events(&key, None, &[observed(&key, "h1", ObservedState::Running)])
        .await
        .expect("event")
        .expect("record");
    assert_eq!(
        running
            .record
            .as_ref()
            .map(|record| record.live_observations().count()),
        Some(1)
    );

    // h1 is lost: its instance is closed and the replica goes to h2, in one write.
    let gone = vec![observed(&key, "h1", ObservedState::Gone)];
    let seqs = store.publish_events(&gone).await.expect("stored");
    let closing: Vec<(u64, InstanceObserved)> = seqs.into_iter().zip(gone).collect();
    let on_h2 = Command::create(spec, vec!["h2".into()]);
    let moved = store
        .publish_command_expecting(&on_h2, first, "test", Replaced::Nothing)
        .await
        .expect("write")
        .expect("stored");
    let stored = store
        .fold_into_record(&key, None, Some((moved, &on_h2)), &closing)
        .await
        .expect("folded");
    assert_eq!(stored.revision, running.revision + 1, "one write");
    let record = stored.record.expect("record");
    assert_eq!(record.intent_seq, moved);
    assert_eq!(record.intent.placement(), ["h2"]);
    assert_eq!(
        record.live_observations().count(),
        0,
        "h1's instance closed"
    );
    assert_eq!(
        store.load_record(&key).await.expect("read").revision,
        stored.revision
    );

    // Folding the same again changes nothing, and writes nothing.
    let again = store
        .fold_into_record(&key, None, Some((moved, &on_h2)), &closing)
        .await
        .expect("folded");
    assert_eq!(again.revision, stored.revision);
}
