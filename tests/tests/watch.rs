//! Operators' and clients' calls: WatchGateway (Connect JSON, Connect proto, gRPC) from PENDING
//! through RUNNING to its end after Delete, ListGateways per namespace, gRPC health, server
//! reflection and gRPC-Web. Real nats-server; the in-memory container runtime stands in for
//! Docker, which is not the point here.

use krane_proto::krane::v1::{
    GatewayStatus, ListGatewaysRequest, ListGatewaysResponse, WatchGatewayResponse,
};
use krane_tests::client::{INVALID_ARGUMENT, NOT_FOUND, WatchUpdates, gateway_request};
use krane_tests::{Krane, Protocol, RpcError, eventually, unique_namespace};
use krane_worker::runtime::fake::FakeRuntime;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

const WAIT: Duration = Duration::from_secs(30);

fn fake_runtime() -> Arc<FakeRuntime> {
    Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]))
}

/// The next update, failing the test after [`WAIT`]; `None` once the stream ended.
async fn next_update(updates: &mut WatchUpdates) -> Option<Result<WatchGatewayResponse, RpcError>> {
    tokio::time::timeout(WAIT, updates.recv())
        .await
        .expect("a watch update or the end of the stream in time")
}

fn status_of(update: &WatchGatewayResponse) -> GatewayStatus {
    GatewayStatus::try_from(update.status).unwrap_or(GatewayStatus::Unspecified)
}

async fn watch_from_pending_to_the_end(protocol: Protocol) {
    let namespace = unique_namespace("watch");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let client = krane.client(protocol);
    client
        .create(Some(gateway_request(&namespace, "edge", 2)))
        .await
        .expect("create accepted");

    // No worker yet: the first state is PENDING, sent at once.
    let mut updates = client.watch(&namespace, "edge");
    let first = next_update(&mut updates)
        .await
        .expect("a first state")
        .expect("watch accepted");
    assert_eq!(status_of(&first), GatewayStatus::Pending, "{first:?}");
    assert_eq!(first.instances.len(), 2);
    assert_eq!(
        first.gateway.as_ref().map(|g| g.replicas),
        Some(2),
        "{first:?}"
    );

    krane.start_worker_on(fake_runtime(), &[]);
    loop {
        let update = next_update(&mut updates)
            .await
            .expect("the stream goes on while the gateway exists")
            .expect("no error");
        if status_of(&update) == GatewayStatus::Running {
            assert!(update.instances.iter().all(|i| !i.address.is_empty()));
            break;
        }
        assert_eq!(status_of(&update), GatewayStatus::Pending, "{update:?}");
    }

    client.delete(&namespace, "edge").await.expect("delete");
    while let Some(update) = next_update(&mut updates).await {
        let update = update.expect("the stream ends without an error once the gateway is gone");
        assert_eq!(status_of(&update), GatewayStatus::Terminating, "{update:?}");
        assert!(update.gateway.is_none());
    }
    let error = client.get(&namespace, "edge").await.expect_err("gone");
    assert_eq!(error.code, NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_connect_json() {
    watch_from_pending_to_the_end(Protocol::ConnectJson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_connect_proto() {
    watch_from_pending_to_the_end(Protocol::ConnectProto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_grpc() {
    watch_from_pending_to_the_end(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_an_unknown_gateway_is_not_found_and_bad_ids_are_invalid() {
    let namespace = unique_namespace("watch404");
    let krane = Krane::start_without_worker(&namespace).await;
    for protocol in Protocol::ALL {
        let client = krane.client(protocol);
        let mut updates = client.watch(&namespace, "never-created");
        let error = next_update(&mut updates)
            .await
            .expect("an answer")
            .expect_err("unknown gateway");
        assert_eq!(error.code, NOT_FOUND, "{protocol:?}: {error:?}");
        assert!(next_update(&mut updates).await.is_none());

        let mut updates = client.watch(&namespace, "-bad");
        let error = next_update(&mut updates)
            .await
            .expect("an answer")
            .expect_err("bad id");
        assert_eq!(error.code, INVALID_ARGUMENT, "{protocol:?}: {error:?}");
        assert!(error.message.starts_with("gateway_id: "), "{error:?}");
    }
}

fn ids(list: &ListGatewaysResponse) -> Vec<&str> {
    list.gateways
        .iter()
        .map(|g| g.gateway_id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_one_namespace_and_leaves_deleted_gateways_out() {
    let namespace = unique_namespace("list");
    let other = format!("{namespace}-other");
    let mut krane = Krane::start_without_worker(&namespace).await;
    krane.start_worker_on(fake_runtime(), &[]);
    let client = krane.client(Protocol::ConnectJson);
    for (ns, id) in [(&namespace, "b"), (&namespace, "a"), (&other, "c")] {
        client
            .create(Some(gateway_request(ns, id, 1)))
            .await
            .expect("create");
    }
    for protocol in Protocol::ALL {
        let list = krane.client(protocol).list(&namespace).await.expect("list");
        assert_eq!(ids(&list), ["a", "b"], "{protocol:?}");
        assert!(list.gateways.iter().all(|g| g.namespace == namespace));
        assert!(list.gateways.iter().all(|g| g.instances.len() == 1));
        let list = krane.client(protocol).list(&other).await.expect("list");
        assert_eq!(ids(&list), ["c"], "{protocol:?}");
        let empty = krane.client(protocol).list("nobody-here").await;
        assert_eq!(empty.expect("an empty namespace").gateways.len(), 0);
        let error = krane.client(protocol).list("").await.expect_err("invalid");
        assert_eq!(error.code, INVALID_ARGUMENT);
        assert!(error.message.starts_with("namespace: "), "{error:?}");
    }
    eventually("a RUNNING summary", WAIT, || async {
        let list = client.list(&namespace).await.ok()?;
        list.gateways
            .iter()
            .all(|g| g.status == GatewayStatus::Running as i32)
            .then_some(())
    })
    .await;
    client.delete(&namespace, "b").await.expect("delete");
    eventually("the deleted gateway leaves the list", WAIT, || async {
        let list = client.list(&namespace).await.ok()?;
        (ids(&list) == ["a"]).then_some(())
    })
    .await;
}

async fn channel(krane: &Krane) -> Channel {
    Channel::from_shared(format!("http://{}", krane.api_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over gRPC")
}

async fn health_of(mut health: HealthClient<Channel>, service: &str) -> Option<ServingStatus> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let status = health.check(request).await.ok()?.into_inner().status;
    ServingStatus::try_from(status).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_nats_connection() {
    let namespace = unique_namespace("health");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let health = HealthClient::new(channel(&krane).await);
    for service in ["", "krane.v1.GatewayService"] {
        assert_eq!(
            health_of(health.clone(), service).await,
            Some(ServingStatus::Serving),
            "{service:?}"
        );
    }
    krane.nats.kill();
    eventually("NOT_SERVING without NATS", WAIT, || async {
        let status = health_of(health.clone(), "krane.v1.GatewayService").await;
        (status == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    krane.nats.restart().await;
    eventually("SERVING again with NATS back", WAIT, || async {
        let status = health_of(health.clone(), "").await;
        (status == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
}

async fn reflect(krane: &Krane, request: MessageRequest) -> MessageResponse {
    let mut reflection = ServerReflectionClient::new(channel(krane).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response: ServerReflectionResponse = responses
        .message()
        .await
        .expect("a reflection response")
        .expect("one message");
    response.message_response.expect("a message response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_gateway_service() {
    let namespace = unique_namespace("reflect");
    let krane = Krane::start_without_worker(&namespace).await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(&krane, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["krane.v1.GatewayService", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let symbol = MessageRequest::FileContainingSymbol("krane.v1.GatewayService".into());
    let MessageResponse::FileDescriptorResponse(files) = reflect(&krane, symbol).await else {
        panic!("not a file descriptor");
    };
    // The encoded descriptor carries its file, service and method names as plain strings.
    let file = String::from_utf8_lossy(&files.file_descriptor_proto[0]);
    assert!(file.contains("krane/v1/gateway.proto"), "{file}");
    assert!(file.contains("WatchGateway"), "{file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_are_answered_on_the_same_port() {
    let namespace = unique_namespace("grpcweb");
    let krane = Krane::start_without_worker(&namespace).await;
    let request = ListGatewaysRequest {
        namespace: namespace.clone(),
    }
    .encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(request.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&request);
    let response = krane_tests::http_client()
        .post(format!(
            "http://{}/krane.v1.GatewayService/ListGateways",
            krane.api_addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .expect("gRPC-Web call over HTTP/1.1");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    let bytes = response.bytes().await.expect("body");
    // A data frame (an empty list), then the trailers frame (flag 0x80) with grpc-status 0.
    assert_eq!(bytes.first(), Some(&0), "{bytes:?}");
    let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let list = ListGatewaysResponse::decode(&bytes[5..5 + length]).expect("a list");
    assert!(list.gateways.is_empty());
    let trailers = &bytes[5 + length..];
    assert_eq!(trailers.first(), Some(&0x80), "{bytes:?}");
    let trailers = String::from_utf8_lossy(&trailers[5..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}
