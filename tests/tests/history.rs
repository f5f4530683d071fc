//! ListGatewayEvents end to end (real nats-server, Docker, the in-process worker): after a
//! create, a scale and a delete, the history shows the commands in order and each replica's
//! observations from PENDING through RUNNING to gone, over Connect JSON, Connect binary and gRPC.

use krane_proto::krane::v1::ListGatewayEventsResponse;
use krane_proto::krane::v1::gateway_event::What;
use krane_tests::client::gateway_request;
use krane_tests::{Krane, Protocol, eventually, unique_namespace};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

/// `create`, `replica 0 running`, … in the order listed.
fn lines(history: &ListGatewayEventsResponse) -> Vec<String> {
    history
        .events
        .iter()
        .filter_map(|event| match &event.what {
            Some(What::Command(command)) => Some(command.kind.clone()),
            Some(What::Observation(seen)) => {
                Some(format!("replica {} {}", seen.replica, seen.state))
            }
            None => None,
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
