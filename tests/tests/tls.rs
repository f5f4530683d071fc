//! HTTPS and mutual TLS on the API's one port, with certificates made at test time: Connect over
//! h2 and HTTP/1.1 (chosen by ALPN), gRPC and gRPC-Web all served over TLS; with a client CA,
//! a verified client certificate authenticates its caller as the credentials file scopes it,
//! while an expired certificate or one from another CA never gets past the handshake, and a
//! caller without a certificate needs a token. Refused calls store nothing.

use krane_api::ApiOptions;
use krane_proto::krane::v1::ListGatewaysRequest;
use krane_proto::krane::v1::gateway_service_client::GatewayServiceClient as GrpcClient;
use krane_tests::client::{PERMISSION_DENIED, UNAUTHENTICATED};
use krane_tests::tls::{ClientCert, TestPki};
use krane_tests::{Krane, unique_namespace};
use prost::Message;
use std::net::SocketAddr;

const TOKEN: &str = "tls-test-token-0b7d";

fn url(address: SocketAddr, method: &str) -> String {
    format!(
        "https://localhost:{}/krane.v1.GatewayService/{method}",
        address.port()
    )
}

fn create_body(namespace: &str, gateway_id: &str) -> String {
    serde_json::json!({"gateway": {"namespace": namespace, "gatewayId": gateway_id,
        "image": krane_tests::TEST_IMAGE, "replicas": 1, "cpuMillicores": 100, "memorySizeMib": 16}})
    .to_string()
}

/// A Connect JSON call; the HTTP status, the HTTP version and the body, or the error of a
/// connection that never got an answer.
async fn connect_call(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: String,
) -> Result<(u16, reqwest::Version, serde_json::Value), reqwest::Error> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let (status, version) = (response.status().as_u16(), response.version());
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, version, body))
}

/// ListGateways over gRPC and TLS, presenting `client`; a channel that cannot be opened is
/// `unavailable`.
async fn grpc_list(
    pki: &TestPki,
    address: SocketAddr,
    client: Option<&ClientCert>,
    namespace: &str,
) -> Result<krane_proto::krane::v1::ListGatewaysResponse, tonic::Status> {
    let channel = pki
        .grpc_channel(address.port(), client)
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = ListGatewaysRequest {
        namespace: namespace.to_string(),
    };
    Ok(GrpcClient::new(channel)
        .list_gateways(request)
        .await?
        .into_inner())
}

fn list_body(namespace: &str) -> String {
    serde_json::json!({ "namespace": namespace }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_connect_over_h2_and_http1_grpc_and_grpc_web() {
    let namespace = unique_namespace("https");
    let krane = Krane::start_without_worker(&namespace).await;
    let pki = TestPki::new();
    let (address, stop) = krane
        .serve_api(ApiOptions {
            auth_token: Some(TOKEN.into()),
            tls: Some(pki.server_settings(false)),
            ..Default::default()
        })
        .await;

    let h2 = pki.https_client(None, false);
    let (status, version, body) = connect_call(
        &h2,
        url(address, "CreateGateway"),
        Some(TOKEN),
        create_body(&namespace, "over-h2"),
    )
    .await
    .expect("an answer over TLS");
    assert_eq!((status, version), (200, reqwest::Version::HTTP_2), "{body}");

    let http1 = pki.https_client(None, true);
    let (status, version, body) = connect_call(
        &http1,
        url(address, "ListGateways"),
        Some(TOKEN),
        list_body(&namespace),
    )
    .await
    .expect("an answer over TLS");
    assert_eq!(
        (status, version),
        (200, reqwest::Version::HTTP_11),
        "{body}"
    );
    assert_eq!(body["gateways"][0]["gatewayId"], "over-h2", "{body}");

    // Credentials are still needed over TLS.
    let (status, _, body) = connect_call(
        &h2,
        url(address, "ListGateways"),
        None,
        list_body(&namespace),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 401, "{body}");

    // gRPC over TLS (tonic, h2 by ALPN).
    let channel = pki
        .grpc_channel(address.port(), None)
        .await
        .expect("a TLS channel");
    let mut grpc = GrpcClient::new(channel);
    let mut request = tonic::Request::new(ListGatewaysRequest {
        namespace: namespace.clone(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("metadata"),
    );
    let listed = grpc
        .list_gateways(request)
        .await
        .expect("gRPC over TLS")
        .into_inner();
    assert_eq!(listed.gateways.len(), 1);

    // gRPC-Web over HTTP/1.1 and TLS: one frame in, a frame and a trailer frame out.
    let message = ListGatewaysRequest {
        namespace: namespace.clone(),
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let response = http1
        .post(url(address, "ListGateways"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .bearer_auth(TOKEN)
        .body(frame)
        .send()
        .await
        .expect("a gRPC-Web answer");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let body = response.bytes().await.expect("the body");
    let trailers = String::from_utf8_lossy(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // No plaintext on the TLS port.
    let plaintext = krane_tests::http_client()
        .post(format!(
            "http://127.0.0.1:{}/krane.v1.GatewayService/ListGateways",
            address.port()
        ))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(list_body(&namespace))
        .send()
        .await;
    assert!(
        plaintext.is_err() || plaintext.as_ref().is_ok_and(|r| r.status().as_u16() != 200),
        "plaintext was served on the TLS port: {plaintext:?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_lets_in_verified_clients_as_scoped_and_nobody_else() {
    let namespace = unique_namespace("mtls");
    let krane = Krane::start_without_worker(&namespace).await;
    let pki = TestPki::new();
    let deployer_id = "spiffe://krane.test/deployer";
    let credentials = format!(
        r#"
[[clients]]
name = "deployer"
identity = "{deployer_id}"
namespaces = ["{namespace}"]
access = "read-write"

[[tokens]]
name = "reader"
token = "{TOKEN}"
namespaces = ["*"]
access = "read-only"
"#
    );
    let file = pki.path("credentials.toml");
    std::fs::write(&file, credentials).expect("write the credentials file");
    let (address, stop) = krane
        .serve_api(ApiOptions {
            auth_tokens_file: Some(file),
            tls: Some(pki.server_settings(true)),
            ..Default::default()
        })
        .await;
    let call =
        |client: Option<&ClientCert>, token: Option<&'static str>, method: &str, body: String| {
            let https = pki.https_client(client, false);
            let url = url(address, method);
            async move { connect_call(&https, url, token, body).await }
        };
    let deployer = pki.client(deployer_id);

    // The deployer's certificate lets it write its namespace and nothing else.
    let (status, _, body) = call(
        Some(&deployer),
        None,
        "CreateGateway",
        create_body(&namespace, "edge"),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 200, "{body}");
    let other = format!("{namespace}-other");
    let (status, _, body) = call(
        Some(&deployer),
        None,
        "CreateGateway",
        create_body(&other, "edge"),
    )
    .await
    .expect("an answer");
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    let listed = grpc_list(&pki, address, Some(&deployer), &namespace)
        .await
        .expect("gRPC with the client certificate");
    assert_eq!(listed.gateways.len(), 1);
    let refused = grpc_list(&pki, address, Some(&deployer), &other)
        .await
        .expect_err("another namespace");
    assert_eq!(refused.code() as i32, PERMISSION_DENIED, "{refused:?}");

    // A verified certificate nobody let in, or no certificate at all, needs a token; the
    // token's own scope then applies (read-only here).
    for client in [Some(pki.client("spiffe://krane.test/stranger")), None] {
        let (status, _, body) = call(client.as_ref(), None, "ListGateways", list_body(&namespace))
            .await
            .expect("an answer");
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthenticated")),
            "{body}"
        );
        let (status, _, body) = call(
            client.as_ref(),
            Some(TOKEN),
            "ListGateways",
            list_body(&namespace),
        )
        .await
        .expect("an answer");
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = call(
            client.as_ref(),
            Some(TOKEN),
            "CreateGateway",
            create_body(&namespace, "by-reader"),
        )
        .await
        .expect("an answer");
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied")),
            "{body}"
        );
    }
    let refused = grpc_list(&pki, address, None, &namespace)
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code() as i32, UNAUTHENTICATED, "{refused:?}");

    // An expired certificate, or one from another CA, fails the handshake: no call at all.
    for (what, client) in [
        ("expired", pki.expired_client(deployer_id)),
        ("foreign", TestPki::foreign_client(deployer_id)),
    ] {
        let refused = call(
            Some(&client),
            Some(TOKEN),
            "CreateGateway",
            create_body(&namespace, what),
        )
        .await;
        assert!(
            refused.is_err(),
            "{what} certificate got an answer: {refused:?}"
        );
        let refused = grpc_list(&pki, address, Some(&client), &namespace)
            .await
            .expect_err("no call with a bad certificate");
        // The TLS 1.3 client finishes its handshake first; the server's alert then ends
        // the connection, a transport failure whose code depends on timing.
        assert!(
            matches!(
                refused.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{what}: {refused:?}"
        );
    }
    let records = krane.store.all_records().await.expect("records");
    assert_eq!(
        records.len(),
        1,
        "only the deployer's gateway was stored: {records:?}"
    );
    stop.cancel();
}
