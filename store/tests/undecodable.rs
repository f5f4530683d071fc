//! Undecodable values in the log or the bucket (a bug, a bit flip, another version's message)
//! are skipped: the latest decodable intent stands, replays and scans carry on, and nothing is
//! guessed when no intent can be read. Against a real nats-server.

mod common;

use common::{create, open};
use krane_core::names::{self, GatewayKey};
use krane_store::{Store, StoreError};

/// Publishes raw bytes, as a buggy or newer writer would; returns the sequence.
async fn publish_raw(store: &Store, subject: String, payload: &'static [u8]) -> u64 {
    store
        .jetstream()
        .publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

#[tokio::test]
async fn garbage_after_a_command_leaves_that_command_in_force() {
    let (_nats, store) = open().await;
    let command = create("gw");
    let seq = store.publish_command(&command, 0).await.expect("stored");
    let key = command.key();
    let garbage = publish_raw(&store, key.command_subject(), b"{not json").await;
    let latest = store
        .latest_command(&key)
        .await
        .expect("read")
        .expect("some");
    assert_eq!((latest.seq, latest.last_seq), (seq, garbage));
    assert_eq!(latest.command, command);
}

#[tokio::test]
async fn a_subject_of_garbage_only_is_an_error_not_a_guess() {
    let (_nats, store) = open().await;
    let key = GatewayKey::new("ns", "garbage");
    publish_raw(&store, key.command_subject(), b"\xff\xfe").await;
    let read = store.latest_command(&key).await;
    assert!(matches!(read, Err(StoreError::Corrupt { .. })), "{read:?}");
}

#[tokio::test]
async fn rebuilding_the_projection_skips_undecodable_messages() {
    let (_nats, store) = open().await;
    let command = create("good");
    let seq = store.publish_command(&command, 0).await.expect("stored");
    store
        .project_command(seq, &command)
        .await
        .expect("projected");
    publish_raw(
        &store,
        GatewayKey::new("ns", "bad").command_subject(),
        b"nope",
    )
    .await;
    let event_subject = command.key().event_subject(0, "h1");
    publish_raw(&store, event_subject, b"{\"state\":42}").await;
    assert_eq!(store.rebuild_projection().await.expect("rebuilt"), 1);
    let records = store.all_records().await.expect("records");
    assert_eq!(records.len(), 1);
}

#[tokio::test]
async fn one_corrupt_record_does_not_stop_scans_of_the_others() {
    let (_nats, store) = open().await;
    for id in ["a", "b"] {
        let command = create(id);
        let seq = store.publish_command(&command, 0).await.expect("stored");
        store
            .project_command(seq, &command)
            .await
            .expect("projected");
    }
    let bucket = store
        .jetstream()
        .get_key_value(names::GATEWAYS_BUCKET)
        .await
        .expect("bucket");
    bucket
        .put(GatewayKey::new("ns", "corrupt").kv_key(), "\u{0}".into())
        .await
        .expect("put");
    let all = store.all_records().await.expect("the scan carries on");
    assert_eq!(all.len(), 2, "{:?}", all.keys());
    let listed = store
        .namespace_records("ns")
        .await
        .expect("the listing carries on");
    assert_eq!(listed.len(), 2);
    // The bad value itself is still reported as corrupt to whoever reads it directly.
    let direct = store.load_record(&GatewayKey::new("ns", "corrupt")).await;
    assert!(matches!(direct, Err(StoreError::Corrupt { .. })));
    let metrics = krane_platform::metrics::render();
    assert!(
        metrics.contains("krane_store_undecodable_total{kind=\"record\"}"),
        "{metrics}"
    );
}
