//! A gateway's history read back from both streams: commands and observations merged oldest
//! first, only this gateway's, garbage skipped and counted, the most recent kept. Against a
//! real nats-server.

mod common;

use common::{create, open};
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
use krane_store::{CommandKind, Happened, Store};

fn observed(gateway_id: &str, replica: u32, state: ObservedState) -> InstanceObserved {
    InstanceObserved {
        namespace: "ns".into(),
        gateway_id: gateway_id.into(),
        replica,
        template: "t".into(),
        state,
        address: String::new(),
        reason: String::new(),
        host_id: "host-a".into(),
    }
}

async fn publish_raw(store: &Store, subject: String, payload: &'static [u8]) {
    store
        .jetstream()
        .publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// A short, readable form of an entry: `create`, `pending 0`, ….
fn summary(what: &Happened) -> String {
    match what {
        Happened::Command(kind, _) => kind.as_str().to_string(),
        Happened::Observation(event) => format!("{:?} {}", event.state, event.replica),
    }
}

#[tokio::test]
async fn history_merges_both_streams_oldest_first_and_skips_garbage() {
    let (_nats, store) = open().await;
    let command = create("gw");
    let key = command.key();
    store.publish_command(&command, 0).await.expect("create");
    publish_raw(&store, key.command_subject(), b"{not json").await;
    store
        .append_events(&key, None, &[observed("gw", 0, ObservedState::Pending)])
        .await
        .expect("pending");
    publish_raw(&store, key.event_subject(0, "host-a"), b"\xff").await;
    // Another gateway's messages are not part of it, even with a prefix of its id.
    let other = create("gw2");
    store.publish_command(&other, 0).await.expect("other");
    store
        .append_events(
            &other.key(),
            None,
            &[observed("gw2", 0, ObservedState::Running)],
        )
        .await
        .expect("other event");
    store
        .append_events(&key, None, &[observed("gw", 0, ObservedState::Running)])
        .await
        .expect("running");
    let placed = command.with_placement(vec!["host-a".into()]);
    store.publish_command(&placed, 1).await.expect("placed");
    store
        .publish_command(&Command::delete(&key), 0)
        .await
        .expect("delete");
    store
        .append_events(&key, None, &[observed("gw", 0, ObservedState::Gone)])
        .await
        .expect("gone");

    let history = store.gateway_history(&key, 100).await.expect("history");
    let seen: Vec<String> = history.entries.iter().map(|e| summary(&e.what)).collect();
    assert_eq!(
        seen,
        [
            "create",
            "Pending 0",
            "Running 0",
            "placement",
            "delete",
            "Gone 0"
        ]
    );
    assert_eq!(history.undecodable, 2);
    let times: Vec<_> = history.entries.iter().map(|entry| entry.time).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");

    let recent = store.gateway_history(&key, 2).await.expect("recent");
    let seen: Vec<String> = recent.entries.iter().map(|e| summary(&e.what)).collect();
    assert_eq!(seen, ["delete", "Gone 0"]);
    assert!(matches!(
        recent.entries[0].what,
        Happened::Command(CommandKind::Delete, _)
    ));
}

#[tokio::test]
async fn a_gateway_never_commanded_has_an_empty_history() {
    let (_nats, store) = open().await;
    let history = store
        .gateway_history(&GatewayKey::new("ns", "nobody"), 100)
        .await
        .expect("history");
    assert!(history.entries.is_empty());
    assert_eq!(history.undecodable, 0);
}
