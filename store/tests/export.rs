//! The log exported from both streams: one namespace's (or every namespace's) commands and
//! observations oldest first, each with its gateway and subject, kinds told per subject,
//! garbage skipped and counted, and the cut-offs by time and by command sequence. Against a
//! real nats-server.

mod common;

use common::{create, observed, open};
use krane_core::command::Command;
use krane_core::event::ObservedState;
use krane_core::names::GatewayKey;
use krane_store::export::{Export, Since};
use krane_store::{Happened, Store};

/// `gw create`, `gw Running`, … in the order exported.
fn summary(export: &Export) -> Vec<String> {
    export
        .entries
        .iter()
        .map(|exported| {
            let what = match &exported.entry.what {
                Happened::Command(asked) => asked.kind.as_str().to_string(),
                Happened::Observation(event) => format!("{:?}", event.state),
            };
            format!("{} {what}", exported.key.gateway_id)
        })
        .collect()
}

fn in_namespace(command: Command, namespace: &str) -> Command {
    let Some(spec) = command.spec() else {
        return command;
    };
    let mut spec = spec.clone();
    spec.namespace = namespace.into();
    Command::create(spec, Vec::new())
}

async fn observe(store: &Store, key: &GatewayKey, state: ObservedState) {
    store
        .append_events(key, None, &[observed(key, "host-a", state)])
        .await
        .expect("stored");
}

#[tokio::test]
async fn a_namespace_exports_oldest_first_with_kinds_per_subject() {
    let (_nats, store) = open().await;
    let (a, b) = (create("a"), create("b"));
    store.publish_command(&a, 0).await.expect("a");
    observe(&store, &a.key(), ObservedState::Pending).await;
    store.publish_command(&b, 0).await.expect("b");
    let elsewhere = in_namespace(create("a"), "other");
    store
        .publish_command(&elsewhere, 0)
        .await
        .expect("elsewhere");
    observe(&store, &elsewhere.key(), ObservedState::Running).await;
    store
        .jetstream()
        .publish(a.key().command_subject(), "{garbage".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    observe(&store, &a.key(), ObservedState::Running).await;
    let cut = store
        .publish_command(&Command::delete(&a.key()), 0)
        .await
        .expect("delete");
    observe(&store, &a.key(), ObservedState::Gone).await;

    let export = store
        .export_log(Some("ns"), Since::default())
        .await
        .expect("export");
    assert_eq!(
        summary(&export),
        [
            "a create",
            "a Pending",
            "b create",
            "a Running",
            "a delete",
            "a Gone"
        ]
    );
    assert_eq!(export.undecodable, 1);
    assert!(export.entries.iter().all(|e| e.key.namespace == "ns"));
    assert_eq!(export.entries[2].subject, b.key().command_subject());

    let everything = store.export_log(None, Since::default()).await.expect("all");
    assert_eq!(everything.entries.len(), 8, "{:?}", summary(&everything));

    let since_delete = Since {
        command_sequence: Some(cut),
        ..Default::default()
    };
    let tail = store
        .export_log(Some("ns"), since_delete)
        .await
        .expect("tail");
    assert_eq!(summary(&tail), ["a delete", "a Gone"]);

    let later = Since {
        time: Some(tail.entries[0].entry.time),
        ..Default::default()
    };
    let tail = store
        .export_log(Some("ns"), later)
        .await
        .expect("since a time");
    assert_eq!(summary(&tail), ["a delete", "a Gone"]);

    let nothing = Since {
        command_sequence: Some(cut + 100),
        ..Default::default()
    };
    let none = store.export_log(Some("ns"), nothing).await.expect("none");
    assert!(none.entries.is_empty(), "{:?}", summary(&none));
}
