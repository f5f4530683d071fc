//! ListGatewayEvents and FollowGatewayEvents end to end (real nats-server, Docker, the
//! in-process worker): after a create, a scale and a delete, the history shows the commands in
//! order, who asked for each, and each replica's observations from PENDING through RUNNING to
//! gone; a follow opened before the create streams the same entries as they are stored; over
//! Connect JSON, Connect binary and gRPC.

use krane_proto::krane::v1::gateway_event::What;
use krane_proto::krane::v1::{GatewayEvent, ListGatewayEventsResponse};
use krane_tests::client::gateway_request;
use krane_tests::{Krane, Protocol, eventually, unique_namespace};
use std::collections::BTreeSet;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

/// `create`, `replica 0 running`, … in the order listed.
fn lines(history: &ListGatewayEventsResponse) -> Vec<String> {
    history.events.iter().filter_map(line).collect()
}

fn line(event: &GatewayEvent) -> Option<String> {
    match &event.what {
        Some(What::Command(command)) => Some(command.kind.clone()),
        Some(What::Observation(seen)) => Some(format!("replica {} {}", seen.replica, seen.state)),
        None => None,
    }
}

/// Each command's kind and who asked for it, in the order listed.
fn authors(history: &ListGatewayEventsResponse) -> Vec<(String, String)> {
    history
        .events
        .iter()
        .filter_map(|event| match &event.what {
            Some(What::Command(command)) => Some((command.kind.clone(), command.author.clone())),
            _ => None,
        })
        .collect()
}

fn position(lines: &[String], wanted: &str) -> usize {
    lines
        .iter()
        .position(|line| line == wanted)
        .unwrap_or_else(|| panic!("no {wanted:?} in {lines:?}"))
}

async fn history_of_a_lifecycle(protocol: Protocol) {
    let namespace = unique_namespace("history");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(protocol);
    let mut followed = client.follow_history(&namespace, "edge");
    client
        .create(Some(gateway_request(&namespace, "edge", 1)))
        .await
        .expect("create");
    eventually("replica 0 running", CONVERGE, || async {
        let seen = lines(&client.history(&namespace, "edge").await.ok()?);
        seen.contains(&"replica 0 running".to_string())
            .then_some(())
    })
    .await;
    client
        .update(gateway_request(&namespace, "edge", 2))
        .await
        .expect("scale");
    eventually("replica 1 running", CONVERGE, || async {
        let seen = lines(&client.history(&namespace, "edge").await.ok()?);
        seen.contains(&"replica 1 running".to_string())
            .then_some(())
    })
    .await;
    client.delete(&namespace, "edge").await.expect("delete");
    let seen = eventually("both replicas gone", CONVERGE, || async {
        let seen = lines(&client.history(&namespace, "edge").await.ok()?);
        let gone = |replica| seen.contains(&format!("replica {replica} gone"));
        (gone(0) && gone(1)).then_some(seen)
    })
    .await;
    assert_eq!(seen[0], "create", "{seen:?}");
    assert!(position(&seen, "replica 0 pending") < position(&seen, "replica 0 running"));
    assert!(position(&seen, "replica 0 running") < position(&seen, "update"));
    assert!(position(&seen, "update") < position(&seen, "replica 1 running"));
    assert!(position(&seen, "replica 1 running") < position(&seen, "delete"));
    assert!(position(&seen, "delete") < position(&seen, "replica 0 gone"));

    // Callers of an API without authentication are "unauthenticated"; a worker names its host.
    let history = client.history(&namespace, "edge").await.expect("history");
    for (kind, author) in authors(&history) {
        match kind.as_str() {
            "placement" => assert!(author.starts_with("worker "), "{kind} by {author:?}"),
            _ => assert_eq!(author, "unauthenticated", "{kind}"),
        }
    }

    // The follow opened before the create saw the same entries, as they were stored.
    let key = |event: &GatewayEvent| (event.stream.clone(), event.sequence);
    let listed: BTreeSet<_> = history.events.iter().map(key).collect();
    let mut streamed = Vec::new();
    while !listed
        .iter()
        .all(|wanted| streamed.iter().any(|event| &key(event) == wanted))
    {
        let entry = tokio::time::timeout(Duration::from_secs(10), followed.recv())
            .await
            .expect("the follow keeps up")
            .expect("the follow goes on")
            .expect("an entry");
        streamed.push(entry.event.expect("an event"));
    }
    let commands = |events: &[GatewayEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|event| matches!(event.what, Some(What::Command(_))))
            .filter_map(line)
            .collect()
    };
    assert_eq!(commands(&streamed), commands(&history.events));

    let unknown = client.history(&namespace, "nobody").await.expect("unknown");
    assert!(unknown.events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_connect_json() {
    history_of_a_lifecycle(Protocol::ConnectJson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_connect_binary() {
    history_of_a_lifecycle(Protocol::ConnectProto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_grpc() {
    history_of_a_lifecycle(Protocol::Grpc).await;
}
