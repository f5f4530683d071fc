//! A gateway's history read back from both streams: commands and observations merged oldest
//! first, only this gateway's, garbage skipped and counted, the most recent kept. Against a
//! real nats-server.

mod common;

use common::{create, open};
use futures::StreamExt;
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
use krane_core::routing::Replaced;
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
        Happened::Command(asked) => asked.kind.as_str().to_string(),
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
        &recent.entries[0].what,
        Happened::Command(asked) if asked.kind == CommandKind::Delete
    ));
}

#[tokio::test]
async fn commands_name_who_stored_them() {
    let (_nats, store) = open().await;
    let command = create("gw");
    let key = command.key();
    let first = store
        .publish_command_expecting(&command, 0, "alice\r\nInjected: yes", Replaced::Nothing)
        .await
        .expect("stored")
        .expect("first");
    let placed = command.with_placement(vec!["host-a".into()]);
    store
        .publish_command_expecting(&placed, first, "worker host-a", Replaced::Nothing)
        .await
        .expect("stored")
        .expect("placed");
    store
        .publish_command(&Command::delete(&key), 0)
        .await
        .expect("delete");

    let history = store.gateway_history(&key, 10).await.expect("history");
    let authors: Vec<(String, String)> = history
        .entries
        .iter()
        .filter_map(|entry| match &entry.what {
            Happened::Command(asked) => Some((asked.kind.as_str().into(), asked.author.clone())),
            Happened::Observation(_) => None,
        })
        .collect();
    let expected = [
        ("create", "alice  Injected: yes"),
        ("placement", "worker host-a"),
        ("delete", ""),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(kind, author)| (kind.to_string(), author.to_string()))
        .collect();
    assert_eq!(authors, expected);
}

#[tokio::test]
async fn a_followed_history_goes_on_with_what_is_stored_after_it() {
    let (_nats, store) = open().await;
    let command = create("gw");
    let key = command.key();
    store.publish_command(&command, 0).await.expect("create");
    store
        .append_events(&key, None, &[observed("gw", 0, ObservedState::Pending)])
        .await
        .expect("pending");
    let (history, mut new_entries) = store
        .follow_gateway_history(&key, 100)
        .await
        .expect("follow");
    let seen: Vec<String> = history.entries.iter().map(|e| summary(&e.what)).collect();
    assert_eq!(seen, ["create", "Pending 0"]);

    // Another gateway's entries never show; this one's come in the order stored, the kind of
    // a command told from the last one read before the follow began.
    store
        .publish_command(&create("gw2"), 0)
        .await
        .expect("other");
    publish_raw(&store, key.command_subject(), b"{garbage").await;
    store
        .append_events(&key, None, &[observed("gw", 0, ObservedState::Running)])
        .await
        .expect("running");
    store
        .publish_command(&Command::delete(&key), 0)
        .await
        .expect("delete");
    let mut followed = Vec::new();
    while followed.len() < 2 {
        let entry = tokio::time::timeout(std::time::Duration::from_secs(10), new_entries.next())
            .await
            .expect("a new entry in time")
            .expect("the follow goes on")
            .expect("readable");
        followed.push(summary(&entry.what));
    }
    followed.sort();
    assert_eq!(followed, ["Running 0", "delete"]);
    let nothing_more =
        tokio::time::timeout(std::time::Duration::from_millis(300), new_entries.next()).await;
    assert!(nothing_more.is_err(), "nothing else was stored");
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
