//! Purging a deleted gateway (`Store::purge_gateway`) against a real nats-server: it removes
//! the gateway's events, commands and record and nothing else, spares whatever was written after
//! the reads it was decided from, leaves undecodable messages after the Delete, and a new
//! Create of the same id starts from scratch. Repeated or concurrent purges are harmless.

mod common;

use common::{create, observed, open};
use futures::StreamExt;
use krane_core::command::Command;
use krane_core::event::ObservedState;
use krane_core::names::{self, GatewayKey};
use krane_core::routing::Replaced;
use krane_core::spec::GatewaySpec;
use krane_store::{Purge, Purged, Store, StoreError, StoredRecord};
use std::time::{Duration, SystemTime};

/// Stores `command` as the API does (conditional on the latest, then folded); its sequence.
async fn command(store: &Store, command: &Command) -> u64 {
    let expected = store
        .latest_command(&command.key())
        .await
        .expect("read")
        .map_or(0, |latest| latest.last_seq);
    let seq = store
        .publish_command_expecting(command, expected, "test", Replaced::Nothing)
        .await
        .expect("stored")
        .expect("not superseded");
    store.project_command(seq, command).await.expect("folded");
    seq
}

async fn event(store: &Store, key: &GatewayKey, state: ObservedState) {
    store
        .append_events(key, None, &[observed(key, "h1", state)])
        .await
        .expect("event stored");
}

/// A gateway created, run, deleted and its container reported gone; the Delete's sequence.
async fn fully_deleted(store: &Store, id: &str) -> u64 {
    let create = create(id);
    let key = create.key();
    command(store, &create).await;
    event(store, &key, ObservedState::Running).await;
    let delete = command(store, &Command::delete(&key)).await;
    event(store, &key, ObservedState::Gone).await;
    let record = store.load_record(&key).await.expect("read").record;
    assert!(record.expect("record").is_gone());
    delete
}

/// What a purger reads before it decides (the worker's order).
async fn decide(store: &Store, key: &GatewayKey, delete_seq: u64) -> Purge {
    let events_through = store.events_last_sequence().await.expect("events read");
    let latest = store
        .latest_command(key)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(latest.seq, delete_seq);
    let stored = store.load_record(key).await.expect("record read");
    Purge {
        key: key.clone(),
        events_through,
        commands_through: latest.seq,
        record_revision: stored.revision,
    }
}

/// Messages stored on `filter` in `stream` (wildcards allowed).
async fn stored_on(store: &Store, stream: &str, filter: &str) -> u64 {
    let stream = store.jetstream().get_stream(stream).await.expect("stream");
    let mut subjects = stream.info_with_subjects(filter).await.expect("subjects");
    let mut count = 0;
    while let Some(subject) = subjects.next().await {
        count += subject.expect("subject").1 as u64;
    }
    count
}

async fn events_of(store: &Store, key: &GatewayKey) -> u64 {
    stored_on(store, names::EVENTS_STREAM, &key.events_filter()).await
}

/// Messages under the key in the bucket's stream: values and delete or purge markers alike.
async fn bucket_messages(store: &Store, key: &GatewayKey) -> u64 {
    let stream = format!("KV_{}", names::GATEWAYS_BUCKET);
    let subject = format!("$KV.{}.{}", names::GATEWAYS_BUCKET, key.kv_key());
    stored_on(store, &stream, &subject).await
}

#[tokio::test]
async fn a_purge_removes_the_gateways_commands_events_and_record_and_nothing_else() {
    let (_nats, store) = open().await;
    let delete = fully_deleted(&store, "gone").await;
    let kept = fully_deleted(&store, "kept").await;
    let (gone, other) = (GatewayKey::new("ns", "gone"), GatewayKey::new("ns", "kept"));
    let purge = decide(&store, &gone, delete).await;
    let purged = store.purge_gateway(&purge).await.expect("purged");
    assert_eq!(
        purged,
        Purged {
            events: 2,
            commands: 2,
            record: true
        }
    );
    assert_eq!(store.latest_command(&gone).await.expect("read"), None);
    assert_eq!(store.last_sequence(&gone).await.expect("read"), 0);
    assert_eq!(events_of(&store, &gone).await, 0);
    let stored = store.load_record(&gone).await.expect("read");
    assert!(stored.record.is_none(), "GetGateway answers not_found");
    assert_eq!(bucket_messages(&store, &gone).await, 0, "no marker left");
    assert!(
        !store
            .all_records()
            .await
            .expect("records")
            .contains_key(&gone.kv_key())
    );
    // The other gateway is untouched.
    let latest = store
        .latest_command(&other)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(latest.seq, kept);
    assert_eq!(events_of(&store, &other).await, 2);
    assert_eq!(
        bucket_messages(&store, &other).await,
        1,
        "one value per key"
    );
}

#[tokio::test]
async fn a_create_stored_and_folded_after_the_decision_survives_the_purge() {
    let (_nats, store) = open().await;
    let delete = fully_deleted(&store, "gw").await;
    let key = GatewayKey::new("ns", "gw");
    let stale = decide(&store, &key, delete).await;
    let again = create("gw");
    let seq = command(&store, &again).await;
    event(&store, &key, ObservedState::Running).await;
    let purged = store.purge_gateway(&stale).await.expect("purged");
    assert!(!purged.record, "the record was written after the decision");
    let latest = store
        .latest_command(&key)
        .await
        .expect("read")
        .expect("some");
    assert_eq!((latest.seq, latest.command), (seq, again));
    let record = store
        .load_record(&key)
        .await
        .expect("read")
        .record
        .expect("kept");
    assert_eq!(record.intent_seq, seq);
    assert_eq!(
        record.observed(0, "h1").map(|seen| seen.state),
        Some(ObservedState::Running)
    );
    assert_eq!(
        events_of(&store, &key).await,
        1,
        "only the new event is left"
    );
}

#[tokio::test]
async fn a_create_stored_but_not_yet_folded_gets_a_fresh_record() {
    let (_nats, store) = open().await;
    let delete = fully_deleted(&store, "gw").await;
    let key = GatewayKey::new("ns", "gw");
    let stale = decide(&store, &key, delete).await;
    // The API stored its Create on top of the Delete and has not folded it yet.
    let again = create("gw");
    let seq = store
        .publish_command_expecting(&again, delete, "test", Replaced::Nothing)
        .await
        .expect("stored")
        .expect("not superseded");
    let purged = store.purge_gateway(&stale).await.expect("purged");
    assert!(purged.record);
    assert_eq!(purged.commands, 2, "the Create and the Delete before it");
    let folded = store.project_command(seq, &again).await.expect("folded");
    let record = folded.record.expect("record");
    assert_eq!(record.intent_seq, seq);
    assert!(record.replicas.is_empty(), "nothing of the deleted gateway");
    let latest = store
        .latest_command(&key)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(latest.command, again);
}

#[tokio::test]
async fn after_a_purge_a_first_create_of_the_same_id_starts_from_scratch() {
    let (_nats, store) = open().await;
    let delete = fully_deleted(&store, "gw").await;
    let key = GatewayKey::new("ns", "gw");
    let purge = decide(&store, &key, delete).await;
    store.purge_gateway(&purge).await.expect("purged");
    // As the API writes a gateway it has never seen: expecting an empty subject, onto no record.
    // (Another spec: the same one would share the first Create's message id, which the
    // server's dedup window, shorter than any allowed retention, still remembers here.)
    let again = Command::create(
        GatewaySpec {
            image: "img:2".into(),
            ..create("gw").spec().expect("spec").clone()
        },
        Vec::new(),
    );
    let seq = store
        .publish_command_expecting(&again, 0, "test", Replaced::Nothing)
        .await
        .expect("stored")
        .expect("the subject is empty");
    let folded = store
        .project_command_onto(Some(StoredRecord::absent()), seq, &again)
        .await
        .expect("folded");
    let record = folded.record.expect("record");
    assert!(!record.is_gone());
    assert!(record.replicas.is_empty());
    assert_eq!((record.intent_seq, record.intent), (seq, again));
}

#[tokio::test]
async fn purges_repeated_or_at_once_are_harmless() {
    let (_nats, store) = open().await;
    let delete = fully_deleted(&store, "gw").await;
    let key = GatewayKey::new("ns", "gw");
    let purge = decide(&store, &key, delete).await;
    let (one, two) = tokio::join!(store.purge_gateway(&purge), store.purge_gateway(&purge));
    let (one, two) = (one.expect("first"), two.expect("second"));
    assert!(one.record != two.record, "exactly one removed the record");
    assert_eq!(one.commands + two.commands, 2);
    assert_eq!(one.events + two.events, 2);
    let again = store.purge_gateway(&purge).await.expect("again");
    assert_eq!(again, Purged::default());
    assert!(
        store
            .load_record(&key)
            .await
            .expect("read")
            .record
            .is_none()
    );
}

#[tokio::test]
async fn undecodable_messages_after_the_delete_are_not_purged() {
    let (_nats, store) = open().await;
    let delete = fully_deleted(&store, "gw").await;
    let key = GatewayKey::new("ns", "gw");
    let purge = decide(&store, &key, delete).await;
    let garbage = store
        .jetstream()
        .publish(key.command_subject(), "{not json".into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    let purged = store.purge_gateway(&purge).await.expect("purged");
    assert_eq!(purged.commands, 2);
    assert_eq!(store.last_sequence(&key).await.expect("read"), garbage);
    let read = store.latest_command(&key).await;
    assert!(matches!(read, Err(StoreError::Corrupt { .. })), "{read:?}");
}

#[tokio::test]
async fn the_latest_command_comes_with_the_time_it_was_stored() {
    let (_nats, store) = open().await;
    let before = SystemTime::now() - Duration::from_secs(1);
    let command = create("gw");
    let seq = store.publish_command(&command, 0).await.expect("stored");
    let after = SystemTime::now() + Duration::from_secs(1);
    let key = command.key();
    let (latest, at) = store
        .latest_command_at(&key)
        .await
        .expect("read")
        .expect("some");
    assert_eq!(latest.seq, seq);
    assert!(before <= at && at <= after, "{at:?}");
    // Through the slow path too, past an undecodable message.
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .jetstream()
        .publish(key.command_subject(), "garbage".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let (latest, slow_at) = store
        .latest_command_at(&key)
        .await
        .expect("read")
        .expect("some");
    assert_eq!((latest.seq, slow_at), (seq, at));
}
