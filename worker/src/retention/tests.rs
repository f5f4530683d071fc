//! Retention rounds against a real nats-server (started by the test on a free port with a
//! temporary store): what is purged, what is kept, and rounds run by two workers at once.

use super::{gone_records, round};
use crate::index::RecordIndex;
use futures::StreamExt;
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::{self, GatewayKey};
use krane_core::routing::Replaced;
use krane_core::spec::GatewaySpec;
use krane_store::{NatsArgs, Purge, Store, StoreError};
use krane_tests::NatsServer;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(3600);

async fn open() -> (NatsServer, Store) {
    let nats = NatsServer::start().await;
    let args = NatsArgs::url(nats.url());
    let store = krane_store::connect(&args, "retention-test", Duration::from_secs(5))
        .await
        .expect("store");
    (nats, store)
}

fn key(id: &str) -> GatewayKey {
    GatewayKey::new("ns", id)
}

fn create(id: &str) -> Command {
    let spec = GatewaySpec {
        namespace: "ns".into(),
        gateway_id: id.into(),
        workspace_id: "ws".into(),
        image: "img:1".into(),
        replicas: 1,
        cpu_millicores: 100,
        memory_mib: 32,
    };
    Command::create(spec, vec!["h1".into()])
}

/// Stores `command` as the API does (conditional on the latest, then folded).
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

async fn report(store: &Store, key: &GatewayKey, state: ObservedState) {
    let event = InstanceObserved {
        namespace: key.namespace.clone(),
        gateway_id: key.gateway_id.clone(),
        replica: 0,
        template: String::new(),
        state,
        address: String::new(),
        reason: String::new(),
        host_id: "h1".into(),
    };
    store
        .append_events(key, None, &[event])
        .await
        .expect("event stored");
}

/// Created, running, deleted; its container reported gone when `finished`.
async fn deleted(store: &Store, id: &str, finished: bool) {
    let key = key(id);
    command(store, &create(id)).await;
    report(store, &key, ObservedState::Running).await;
    command(store, &Command::delete(&key)).await;
    if finished {
        report(store, &key, ObservedState::Gone).await;
    }
}

/// What is left of a gateway: commands on its subject, its events, whether a record.
async fn left(store: &Store, key: &GatewayKey) -> (u64, u64, bool) {
    let commands = store.last_sequence(key).await.expect("read");
    let stream = store
        .jetstream()
        .get_stream(names::EVENTS_STREAM)
        .await
        .expect("stream");
    let mut subjects = stream
        .info_with_subjects(key.events_filter())
        .await
        .expect("subjects");
    let mut events = 0;
    while let Some(subject) = subjects.next().await {
        events += subject.expect("subject").1 as u64;
    }
    let record = store.load_record(key).await.expect("read").record.is_some();
    (commands, events, record)
}

/// The candidates as a worker's index holds them now (a fresh index, once current).
async fn candidates(store: &Store) -> Vec<GatewayKey> {
    let index = RecordIndex::default();
    let stop = CancellationToken::new();
    let follower = tokio::spawn(crate::index::follow(
        store.clone(),
        index.clone(),
        stop.clone(),
    ));
    assert!(index.wait_current(&stop).await);
    let keys = gone_records(index)().await.expect("candidates");
    stop.cancel();
    let _ = follower.await;
    keys
}

#[tokio::test]
async fn a_round_purges_finished_deletes_only() {
    let (_nats, store) = open().await;
    deleted(&store, "done", true).await;
    deleted(&store, "removing", false).await;
    command(&store, &create("live")).await;
    let keys = candidates(&store).await;
    assert_eq!(keys, [key("done")], "only records that are gone");
    let all = vec![key("done"), key("removing"), key("live")];
    assert_eq!(
        round(&store, all, Duration::ZERO, 16).await.expect("round"),
        1
    );
    assert_eq!(left(&store, &key("done")).await, (0, 0, false));
    let (commands, events, record) = left(&store, &key("removing")).await;
    assert!(commands > 0 && events == 1 && record);
    let (commands, _, record) = left(&store, &key("live")).await;
    assert!(commands > 0 && record);
    assert!(candidates(&store).await.is_empty());
}

#[tokio::test]
async fn a_delete_younger_than_the_retention_is_kept_until_it_is_old_enough() {
    let (_nats, store) = open().await;
    deleted(&store, "gw", true).await;
    let keys = candidates(&store).await;
    assert_eq!(
        round(&store, keys.clone(), LONG, 16).await.expect("round"),
        0
    );
    let retention = Duration::from_secs(1);
    assert_eq!(
        round(&store, keys.clone(), retention, 16)
            .await
            .expect("round"),
        0
    );
    let (commands, events, record) = left(&store, &key("gw")).await;
    assert!(commands > 0 && events == 2 && record, "kept");
    tokio::time::sleep(retention).await;
    assert_eq!(round(&store, keys, retention, 16).await.expect("round"), 1);
    assert_eq!(left(&store, &key("gw")).await, (0, 0, false));
}

#[tokio::test]
async fn a_subject_of_undecodable_messages_only_is_left_alone() {
    let (_nats, store) = open().await;
    let key = key("garbage");
    let garbage = store
        .jetstream()
        .publish(key.command_subject(), "{not json".into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    // A gone record over it (as folded from a Delete that has since been replaced by garbage).
    store
        .project_command(garbage, &Command::delete(&key))
        .await
        .expect("folded");
    assert_eq!(candidates(&store).await, std::slice::from_ref(&key));
    assert!(matches!(
        store.latest_command(&key).await,
        Err(StoreError::Corrupt { .. })
    ));
    let purged = round(&store, vec![key.clone()], Duration::ZERO, 16).await;
    assert_eq!(purged.expect("round"), 0);
    assert_eq!(left(&store, &key).await, (garbage, 0, true));
}

#[tokio::test]
async fn a_purge_stopped_before_the_record_is_finished_by_the_next_round() {
    let (_nats, store) = open().await;
    deleted(&store, "gw", true).await;
    let key = key("gw");
    let latest = store
        .latest_command(&key)
        .await
        .expect("read")
        .expect("some");
    // A purger died after the events and the commands, before the record.
    let partial = Purge {
        key: key.clone(),
        events_through: store.events_last_sequence().await.expect("read"),
        commands_through: latest.seq,
        record_revision: 0,
    };
    store.purge_gateway(&partial).await.expect("purged");
    assert_eq!(left(&store, &key).await, (0, 0, true));
    assert_eq!(
        round(&store, candidates(&store).await, LONG, 16)
            .await
            .expect("round"),
        1
    );
    assert_eq!(left(&store, &key).await, (0, 0, false));
}

#[tokio::test]
async fn two_workers_purging_at_once_do_no_harm_and_a_new_create_starts_afresh() {
    let (_nats, store) = open().await;
    for id in ["a", "b", "c"] {
        deleted(&store, id, true).await;
    }
    let keys = candidates(&store).await;
    let (one, two) = tokio::join!(
        round(&store, keys.clone(), Duration::ZERO, 16),
        round(&store, keys.clone(), Duration::ZERO, 16)
    );
    let (one, two) = (one.expect("first round"), two.expect("second round"));
    assert!((3..=6).contains(&(one + two)), "{one} + {two}");
    for key in &keys {
        assert_eq!(left(&store, key).await, (0, 0, false));
    }
    // A Create of a purged id is a first Create again (another spec: the first one's message id
    // is still in the dedup window, which `--retention` never is).
    let mut again = create("a");
    if let Command::Create { spec, .. } = &mut again {
        spec.image = "img:2".into();
    }
    let seq = store
        .publish_command_expecting(&again, 0, "test", Replaced::Nothing)
        .await
        .expect("stored")
        .expect("the subject is empty");
    let record = store.project_command(seq, &again).await.expect("folded");
    let record = record.record.expect("record");
    assert_eq!(record.intent_seq, seq);
    assert!(record.replicas.is_empty() && !record.is_gone());
    assert_eq!(
        round(&store, vec![key("a")], Duration::ZERO, 16)
            .await
            .expect("round"),
        0
    );
}

#[tokio::test]
async fn a_round_purges_no_more_than_its_limit() {
    let (_nats, store) = open().await;
    for id in ["a", "b", "c"] {
        deleted(&store, id, true).await;
    }
    let keys = candidates(&store).await;
    assert_eq!(
        round(&store, keys.clone(), Duration::ZERO, 2)
            .await
            .expect("round"),
        2
    );
    assert_eq!(candidates(&store).await.len(), 1);
    assert_eq!(
        round(&store, keys, Duration::ZERO, 2).await.expect("round"),
        1
    );
    assert!(candidates(&store).await.is_empty());
}
