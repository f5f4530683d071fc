//! Bearer-token auth: an API started with a token refuses Connect (HTTP 401, `unauthenticated`)
//! and gRPC (`unauthenticated`) calls without it or with another one, before looking at the
//! body, and serves calls that carry it. The refused calls store nothing.

use krane_api::ApiOptions;
use krane_proto::krane::v1::gateway_service_client::GatewayServiceClient as GrpcClient;
use krane_proto::krane::v1::gateway_service_connect_client::GatewayServiceClient as ConnectClient;
use krane_proto::krane::v1::{CreateGatewayRequest, GetGatewayRequest};
use krane_tests::client::gateway_request;
use krane_tests::{Krane, RpcError, unique_namespace};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-3f9a1c";
const UNAUTHENTICATED: i32 = 16;

/// A second API on the harness's NATS, this one requiring `TOKEN`.
async fn api_with_token(krane: &Krane) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let address = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let options = ApiOptions {
        auth_token: Some(TOKEN.to_string()),
        ..Default::default()
    };
    let api = tokio::spawn({
        let log = krane.store.clone();
        let stop = stop.clone();
        async move {
            krane_api::serve(listener, log, options, stop)
                .await
                .expect("the authenticated API serves");
        }
    });
    (address, stop, api)
}

fn connect_client(address: SocketAddr, proto: bool, token: Option<&str>) -> ConnectClient {
    let mut builder =
        ConnectClient::builder(format!("http://{address}")).timeout(Duration::from_secs(10));
    builder = if proto {
        builder.use_proto()
    } else {
        builder.use_json()
    };
    if let Some(token) = token {
        builder = builder.default_header("authorization", format!("Bearer {token}"));
    }
    builder.build().expect("Connect client")
}

async fn grpc_create(
    address: SocketAddr,
    token: Option<&str>,
    request: CreateGatewayRequest,
) -> Result<(), RpcError> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .expect("URL")
        .connect()
        .await
        .expect("connect gRPC");
    let authorization = token.map(|token| {
        format!("Bearer {token}")
            .parse::<tonic::metadata::MetadataValue<_>>()
            .expect("metadata value")
    });
    let mut client = GrpcClient::with_interceptor(channel, move |mut call: tonic::Request<()>| {
        if let Some(value) = &authorization {
            call.metadata_mut().insert("authorization", value.clone());
        }
        Ok(call)
    });
    client.create_gateway(request).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_bearer_token_are_unauthenticated() {
    let namespace = unique_namespace("auth");
    let krane = Krane::start_without_worker(&namespace).await;
    let (address, stop, api) = api_with_token(&krane).await;
    let create = |id: &str| CreateGatewayRequest {
        gateway: Some(gateway_request(&namespace, id, 1)),
    };

    // Connect over raw HTTP: 401 with a Connect error body, even for a body that is garbage.
    let http = krane_tests::http_client();
    let url = format!("http://{address}/krane.v1.GatewayService/CreateGateway");
    let valid_body = serde_json::json!({"gateway": {"namespace": namespace, "gatewayId": "raw",
        "image": krane_tests::TEST_IMAGE, "replicas": 1, "cpuMillicores": 100, "memorySizeMib": 16}})
    .to_string();
    for (authorization, body) in [
        (None, valid_body.as_str()),
        (Some("Bearer wrong-token".to_string()), valid_body.as_str()),
        (Some(format!("Basic {TOKEN}")), valid_body.as_str()),
        (Some(TOKEN.to_string()), valid_body.as_str()),
        (None, "{not json"),
    ] {
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"krane\""
        );
        let error: serde_json::Value = response.json().await.expect("a JSON error body");
        assert_eq!(error["code"], "unauthenticated", "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // The generated Connect clients (JSON and binary) and gRPC: refused without or with the
    // wrong token, served with the right one.
    for proto in [false, true] {
        for token in [None, Some("wrong-token")] {
            let error = connect_client(address, proto, token)
                .create_gateway(&create("refused"))
                .await
                .map(|_| ())
                .map_err(RpcError::from)
                .expect_err("refused");
            assert_eq!(
                error.code, UNAUTHENTICATED,
                "proto={proto} {token:?}: {error:?}"
            );
        }
    }
    for token in [None, Some("wrong-token")] {
        let error = grpc_create(address, token, create("refused"))
            .await
            .expect_err("refused");
        assert_eq!(error.code, UNAUTHENTICATED, "gRPC {token:?}: {error:?}");
    }
    assert!(
        krane.store.all_records().await.expect("records").is_empty(),
        "refused calls stored nothing"
    );

    connect_client(address, false, Some(TOKEN))
        .create_gateway(&create("json"))
        .await
        .expect("Connect JSON with the token");
    connect_client(address, true, Some(TOKEN))
        .create_gateway(&create("proto"))
        .await
        .expect("Connect proto with the token");
    grpc_create(address, Some(TOKEN), create("grpc"))
        .await
        .expect("gRPC with the token");
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("bearer {TOKEN}"))
        .body(valid_body)
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        response.status().as_u16(),
        200,
        "scheme is case-insensitive"
    );
    let gateway = connect_client(address, false, Some(TOKEN))
        .get_gateway(&GetGatewayRequest {
            namespace: namespace.clone(),
            gateway_id: "grpc".into(),
        })
        .await
        .expect("Get with the token")
        .into_inner();
    assert_eq!(gateway.instances.len(), 1);
    assert_eq!(krane.store.all_records().await.expect("records").len(), 4);

    // The harness's API has no token configured and keeps serving calls without one.
    krane
        .client(krane_tests::Protocol::ConnectJson)
        .get(&namespace, "json")
        .await
        .expect("no token needed when none is configured");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), api)
        .await
        .expect("the API stops")
        .expect("the API task did not panic");
}
