//! Operators' view of the real binaries: spans exported over OTLP (gRPC and HTTP/protobuf) to a
//! local receiver, with the worker's span for a command a child of the API call that stored it
//! (the trace context travels in NATS headers); gateway fields on log lines; `/metrics`.

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::gateway_request;
use krane_tests::otlp::{OtlpProtocol, OtlpReceiver, ReceivedSpan};
use krane_tests::process::ServiceProcess;
use krane_tests::tls::TestPki;
use krane_tests::{Krane, Protocol, TestClient, eventually, unique_namespace};
use std::net::SocketAddr;
use std::time::Duration;

const GATEWAY: &str = "traced";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_spans_share_one_trace_over_grpc() {
    let run = TracedRun::start(OtlpProtocol::Grpc, "otlpgrpc").await;
    run.check_metrics().await;
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_spans_share_one_trace_over_http_protobuf() {
    let run = TracedRun::start(OtlpProtocol::HttpProtobuf, "otlphttp").await;
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_mutual_tls_to_a_grpc_receiver() {
    let pki = TestPki::new();
    let run = TracedRun::start_with(OtlpProtocol::Grpc, "otlpgrpctls", Some(&pki)).await;
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_tls_to_an_http_receiver() {
    let pki = TestPki::new();
    let run = TracedRun::start_with(OtlpProtocol::HttpProtobuf, "otlphttptls", Some(&pki)).await;
    run.finish().await;
}

/// NATS, an OTLP receiver, and the API and worker as processes exporting to it, after one
/// gateway was created and runs.
struct TracedRun {
    _krane: Krane,
    receiver: OtlpReceiver,
    namespace: String,
    api: ServiceProcess,
    worker: ServiceProcess,
    api_metrics: SocketAddr,
    worker_metrics: SocketAddr,
}

impl TracedRun {
    async fn start(protocol: OtlpProtocol, prefix: &str) -> Self {
        Self::start_with(protocol, prefix, None).await
    }

    /// With `pki`, the receiver serves TLS and the binaries trust its CA
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`) and present a client certificate of it.
    async fn start_with(protocol: OtlpProtocol, prefix: &str, pki: Option<&TestPki>) -> Self {
        let namespace = unique_namespace(prefix);
        let krane = Krane::start_without_worker(&namespace).await;
        let receiver = match pki {
            Some(pki) => OtlpReceiver::start_tls(protocol, pki).await,
            None => OtlpReceiver::start(protocol).await,
        };
        let tls_env: Vec<(String, String)> = match pki {
            Some(pki) => {
                let (cert, key) =
                    pki.write_client("exporter", &pki.client("spiffe://krane.test/exporter"));
                vec![
                    (
                        "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
                        pki.path("ca.pem").display().to_string(),
                    ),
                    (
                        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".into(),
                        cert.display().to_string(),
                    ),
                    (
                        "OTEL_EXPORTER_OTLP_CLIENT_KEY".into(),
                        key.display().to_string(),
                    ),
                ]
            }
            None => Vec::new(),
        };
        let otel = |service: Option<&str>| {
            let mut env = vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                    receiver.endpoint(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
                    protocol.env_value().to_string(),
                ),
            ];
            if let Some(service) = service {
                env.push(("OTEL_SERVICE_NAME".to_string(), service.to_string()));
            }
            env.extend(tls_env.iter().cloned());
            env
        };
        let nats = krane.nats.url();
        let api_args = [
            "--nats-url",
            &nats,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-json",
        ];
        // The API keeps its default service name; the worker's is set through the environment.
        let api = ServiceProcess::spawn_with_env(
            "krane-api",
            strings(&api_args),
            otel(None),
            std::env::temp_dir().join(format!("{namespace}-api.log")),
        );
        let host_id = krane.host_id();
        let worker_args = [
            "--nats-url",
            &nats,
            "--host-id",
            &host_id,
            "--advertise-host",
            "127.0.0.1",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-json",
        ];
        let worker = ServiceProcess::spawn_with_env(
            "krane-worker",
            strings(&worker_args),
            otel(Some("krane-worker-under-test")),
            std::env::temp_dir().join(format!("{namespace}-worker.log")),
        );
        let api_address = logged_address(&api, "krane-api listening").await;
        let api_metrics = logged_address(&api, "serving metrics at /metrics").await;
        let worker_metrics = logged_address(&worker, "serving metrics at /metrics").await;

        let client = TestClient::new(Protocol::ConnectJson, api_address);
        client
            .create(Some(gateway_request(&namespace, GATEWAY, 1)))
            .await
            .expect("create");
        eventually("the gateway runs", Duration::from_secs(60), || async {
            let got = client.get(&namespace, GATEWAY).await.ok()?;
            let running = got.instances.len() == 1
                && got.instances[0].status == GatewayStatus::Running as i32;
            running.then_some(())
        })
        .await;
        Self {
            _krane: krane,
            receiver,
            namespace,
            api,
            worker,
            api_metrics,
            worker_metrics,
        }
    }

    /// Both binaries serve their metrics, with the call and the command just made counted.
    async fn check_metrics(&self) {
        let api = scrape(self.api_metrics).await;
        assert!(
            api.contains(r#"krane_api_calls_total{rpc="CreateGateway",code="ok"} 1"#),
            "{api}"
        );
        assert!(
            api.contains("krane_api_call_duration_seconds_bucket"),
            "{api}"
        );
        let worker = eventually(
            "the worker counts the command and the running instance",
            Duration::from_secs(10),
            || async {
                let text = scrape(self.worker_metrics).await;
                (text.contains(r#"krane_worker_instances{state="running"} 1"#)
                    && text.contains(r#"krane_worker_commands_total{outcome="converged"}"#))
                .then_some(text)
            },
        )
        .await;
        for expected in [
            r#"krane_worker_reconcile_duration_seconds_count{outcome="converged"}"#,
            r#"krane_worker_docker_call_duration_seconds_count{call="create_and_start"} 1"#,
            "krane_worker_commands_pending 0",
            "krane_worker_redeliveries_total 0",
        ] {
            assert!(worker.contains(expected), "{expected} missing:\n{worker}");
        }
    }

    /// SIGTERM flushes both binaries' batched spans; then the trace is checked.
    async fn finish(mut self) {
        let status = self.api.terminate(Duration::from_secs(15));
        assert!(status.success(), "API exit {status:?}");
        let status = self.worker.terminate(Duration::from_secs(30));
        assert!(status.success(), "worker exit {status:?}");
        let spans = self.receiver.spans();
        let named = |service: &str, name: &str| -> Vec<ReceivedSpan> {
            spans
                .iter()
                .filter(|span| span.service == service && span.name == name)
                .cloned()
                .collect()
        };
        let calls = named("krane-api", "krane.v1.GatewayService/CreateGateway");
        let [call] = calls.as_slice() else {
            panic!("one CreateGateway span expected: {spans:#?}");
        };
        assert_eq!(call.attribute("namespace"), Some(self.namespace.as_str()));
        assert_eq!(call.attribute("gateway"), Some(GATEWAY));
        assert_eq!(call.attribute("code"), Some("ok"));

        // The trace also holds the placement command the worker publishes itself (a child of
        // its reconcile); the command the call stored is a child of the call.
        let commands = named("krane-worker-under-test", "command");
        let command = commands
            .iter()
            .find(|span| span.trace_id == call.trace_id && span.parent_span_id == call.span_id)
            .unwrap_or_else(|| {
                panic!("no worker command span that is a child of the API call: {spans:#?}")
            });
        assert_eq!(command.attribute("gateway"), Some(GATEWAY));
        let in_trace = |name: &str| {
            spans.iter().any(|span| {
                span.service == "krane-worker-under-test"
                    && span.name == name
                    && span.trace_id == call.trace_id
            })
        };
        assert!(in_trace("reconcile"), "reconcile span in the trace");
        assert!(in_trace("docker"), "Docker call spans in the trace");

        // Log lines about the gateway name it through their spans' fields.
        let log = self.worker.log_tail(10_000);
        let named_line = log.lines().any(|line| {
            let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            line["fields"]["message"] == "applying plan"
                && line["span"]["namespace"] == self.namespace.as_str()
                && line["span"]["gateway"] == GATEWAY
        });
        assert!(
            named_line,
            "no 'applying plan' line with the gateway:\n{log}"
        );
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// The `address` field of the first JSON log line with `message`.
async fn logged_address(process: &ServiceProcess, message: &str) -> SocketAddr {
    eventually(
        &format!("log line {message:?}"),
        Duration::from_secs(20),
        || async {
            process.log_tail(200).lines().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                if !line["fields"]["message"].as_str()?.starts_with(message) {
                    return None;
                }
                line["fields"]["address"].as_str()?.parse().ok()
            })
        },
    )
    .await
}

async fn scrape(address: SocketAddr) -> String {
    let response = krane_tests::http_client()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert!(response.status().is_success());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("metrics body")
}
