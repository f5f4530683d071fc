//! The API driven by clients that share no code with krane: `buf curl` (Connect, gRPC and
//! gRPC-Web; the schema from server reflection over HTTP/2, which reflection needs, or from
//! `proto/` over HTTP/1.1) and the official Python Connect client (`connectrpc`, with message classes and a client
//! generated from `proto/` at test time by `buf generate`; `tests/python/connect_client.py`).
//! Real nats-server; the in-memory container runtime stands in for Docker.
//!
//! The clients come from `scripts/install-clients.sh` (run by `scripts/test.sh`), found through
//! `KRANE_BUF` and `KRANE_PY_CLIENTS`; without them the tests fail, never skip.

use krane_tests::{Krane, eventually, unique_namespace};
use krane_worker::runtime::fake::FakeRuntime;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(30);
const SERVICE: &str = "krane.v1.GatewayService";

/// A path from an environment variable that `scripts/install-clients.sh` prints.
fn installed(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{variable} is not set: install the independent clients with \
             scripts/install-clients.sh and export the {variable}=… line it prints \
             (scripts/test.sh does both)"
            )
        });
    assert!(
        path.exists(),
        "{variable}={} does not exist: run scripts/install-clients.sh again",
        path.display()
    );
    path
}

fn buf() -> PathBuf {
    installed("KRANE_BUF")
}

/// The pip target holding `connectrpc` and the code generator plugins (in its `bin/`).
fn py_clients() -> PathBuf {
    installed("KRANE_PY_CLIENTS")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn proto_dir() -> String {
    repo_root().join("proto").display().to_string()
}

async fn start() -> Krane {
    let namespace = unique_namespace("clients");
    let mut krane = Krane::start_without_worker(&namespace).await;
    krane.start_worker_on(
        Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE])),
        &[],
    );
    krane
}

async fn run(command: &mut Command, what: &str) -> Output {
    tokio::time::timeout(WAIT, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} finished within {WAIT:?}"))
        .unwrap_or_else(|error| panic!("run {what}: {error}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One way of calling with `buf curl`: a protocol, an HTTP version and where the schema comes
/// from.
struct Way {
    name: &'static str,
    flags: Vec<String>,
}

/// buf fetches the schema by reflection with the protocol of the call (krane serves reflection
/// over Connect, gRPC and gRPC-Web). Reflection needs HTTP/2, so HTTP/1.1 calls take the schema
/// from `proto/`.
fn ways() -> Vec<Way> {
    let schema = ["--schema".to_string(), proto_dir()];
    let flags = |list: &[&str]| list.iter().map(|flag| flag.to_string()).collect::<Vec<_>>();
    vec![
        Way {
            name: "connect-http1",
            flags: [flags(&["--protocol", "connect"]), schema.to_vec()].concat(),
        },
        Way {
            name: "connect-h2c",
            flags: flags(&["--protocol", "connect", "--http2-prior-knowledge"]),
        },
        Way {
            name: "grpc",
            flags: flags(&["--protocol", "grpc", "--http2-prior-knowledge"]),
        },
        Way {
            name: "grpcweb",
            flags: flags(&["--protocol", "grpcweb", "--http2-prior-knowledge"]),
        },
        Way {
            name: "grpcweb-http1",
            flags: [flags(&["--protocol", "grpcweb"]), schema.to_vec()].concat(),
        },
    ]
}

/// `buf curl` of `<service>/<method>` with `body`: the JSON it printed, or the exit status and
/// the error it printed.
async fn buf_curl(
    krane: &Krane,
    way: &Way,
    service: &str,
    method: &str,
    body: &Value,
) -> Result<Value, String> {
    let url = format!("http://{}/{service}/{method}", krane.api_addr);
    let what = format!("buf curl {method} ({})", way.name);
    let output = run(
        Command::new(buf())
            .arg("curl")
            .args(&way.flags)
            .args(["--data", &body.to_string(), &url]),
        &what,
    )
    .await;
    if output.status.success() {
        let stdout = text(&output.stdout);
        Ok(serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("{what} printed no JSON ({error}): {stdout}")))
    } else {
        Err(format!("{}: {}", output.status, text(&output.stderr)))
    }
}

async fn call(krane: &Krane, way: &Way, method: &str, body: Value) -> Value {
    buf_curl(krane, way, SERVICE, method, &body)
        .await
        .unwrap_or_else(|error| panic!("buf curl {method} ({}) failed: {error}", way.name))
}

fn gateway_spec(namespace: &str, gateway_id: &str, replicas: u32) -> Value {
    json!({
        "namespace": namespace,
        "workspaceId": "ws_buf",
        "gatewayId": gateway_id,
        "image": krane_tests::TEST_IMAGE,
        "replicas": replicas,
        "cpuMillicores": 100,
        // uint64 is a string in proto3 JSON.
        "memorySizeMib": "16",
    })
}

fn statuses(response: &Value) -> Vec<&str> {
    response["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances: {response}"))
        .iter()
        .map(|instance| instance["status"].as_str().unwrap_or("(none)"))
        .collect()
}

#[tokio::test]
async fn buf_curl_over_connect_grpc_and_grpc_web() {
    let krane = start().await;
    let namespace = krane.namespace.clone();
    let ways = ways();

    // Each way creates its own gateway.
    for way in &ways {
        let created = call(
            &krane,
            way,
            "CreateGateway",
            json!({ "gateway": gateway_spec(&namespace, &format!("buf-{}", way.name), 2) }),
        )
        .await;
        assert_eq!(
            created,
            json!({ "status": "GATEWAY_STATUS_PENDING" }),
            "{}",
            way.name
        );
    }

    // Every way reads every gateway, once all of them run.
    for created_by in &ways {
        let gateway_id = format!("buf-{}", created_by.name);
        let request = json!({ "namespace": namespace, "gatewayId": gateway_id });
        let first = &ways[0];
        eventually(&format!("{gateway_id} RUNNING"), WAIT, || async {
            let got = call(&krane, first, "GetGateway", request.clone()).await;
            (statuses(&got) == ["GATEWAY_STATUS_RUNNING"; 2]).then_some(())
        })
        .await;
        for way in &ways {
            let got = call(&krane, way, "GetGateway", request.clone()).await;
            assert_eq!(
                statuses(&got),
                ["GATEWAY_STATUS_RUNNING"; 2],
                "{} read by {}: {got}",
                created_by.name,
                way.name
            );
            let instances = got["instances"].as_array().expect("instances");
            assert!(
                instances.iter().all(|instance| {
                    instance["id"].as_str().is_some_and(|id| !id.is_empty())
                        && instance["address"].as_str().is_some_and(|a| !a.is_empty())
                }),
                "{} read by {}: {got}",
                created_by.name,
                way.name
            );
            assert_eq!(
                got["gateway"],
                gateway_spec(&namespace, &gateway_id, 2),
                "{} read by {}",
                created_by.name,
                way.name
            );
        }
    }

    for way in &ways {
        let listed = call(
            &krane,
            way,
            "ListGateways",
            json!({ "namespace": namespace }),
        )
        .await;
        let ids: Vec<&str> = listed["gateways"]
            .as_array()
            .unwrap_or_else(|| panic!("no gateways listed ({}): {listed}", way.name))
            .iter()
            .map(|gateway| gateway["gatewayId"].as_str().unwrap_or_default())
            .collect();
        let mut expected: Vec<String> = ways.iter().map(|w| format!("buf-{}", w.name)).collect();
        expected.sort();
        assert_eq!(ids, expected, "{}", way.name);

        // The added RPCs too: the gateway's history starts with its create, by who asked.
        let history = call(
            &krane,
            way,
            "ListGatewayEvents",
            json!({ "namespace": namespace, "gatewayId": format!("buf-{}", way.name) }),
        )
        .await;
        assert_eq!(
            history["events"][0]["command"]["kind"], "create",
            "{}: {history}",
            way.name
        );

        // Errors arrive as codes with the API's messages.
        let error = buf_curl(
            &krane,
            way,
            SERVICE,
            "CreateGateway",
            &json!({ "gateway": gateway_spec(&namespace, "bad", 0) }),
        )
        .await
        .expect_err("replicas 0 is refused");
        assert!(
            error.contains("invalid_argument") && error.contains("gateway.replicas"),
            "{}: {error}",
            way.name
        );
        let error = buf_curl(
            &krane,
            way,
            SERVICE,
            "GetGateway",
            &json!({ "namespace": namespace, "gatewayId": "unknown" }),
        )
        .await
        .expect_err("an unknown gateway is not found");
        assert!(error.contains("not_found"), "{}: {error}", way.name);
    }

    // Health (a gRPC service), over the gRPC and gRPC-Web ways that use reflection.
    let reflecting = ways
        .iter()
        .filter(|way| way.name.starts_with("grpc") && !way.flags.iter().any(|f| f == "--schema"));
    for way in reflecting {
        for service in ["", SERVICE] {
            let health = buf_curl(
                &krane,
                way,
                "grpc.health.v1.Health",
                "Check",
                &json!({ "service": service }),
            )
            .await
            .unwrap_or_else(|error| panic!("health ({}): {error}", way.name));
            assert_eq!(
                health,
                json!({ "status": "SERVING" }),
                "{} {service:?}",
                way.name
            );
        }
    }
    // Reflection answers over gRPC and over Connect (buf's default protocol).
    for protocol in ["grpc", "connect"] {
        let listed = run(
            Command::new(buf()).args([
                "curl",
                "--protocol",
                protocol,
                "--http2-prior-knowledge",
                "--list-services",
                &format!("http://{}", krane.api_addr),
            ]),
            "buf curl --list-services",
        )
        .await;
        assert!(
            listed.status.success(),
            "{protocol}: {}",
            text(&listed.stderr)
        );
        let services = text(&listed.stdout);
        for service in [SERVICE, "grpc.health.v1.Health"] {
            assert!(
                services.lines().any(|line| line == service),
                "{service} missing from reflection over {protocol}: {services}"
            );
        }
    }

    // Each way deletes the gateway it created; then every one is gone.
    for way in &ways {
        let gateway_id = format!("buf-{}", way.name);
        let deleted = call(
            &krane,
            way,
            "DeleteGateway",
            json!({ "namespace": namespace, "gatewayId": gateway_id }),
        )
        .await;
        assert_eq!(deleted, json!({}), "{}", way.name);
        eventually(&format!("{gateway_id} gone"), WAIT, || async {
            let result = buf_curl(
                &krane,
                way,
                SERVICE,
                "GetGateway",
                &json!({ "namespace": namespace, "gatewayId": gateway_id }),
            )
            .await;
            match result {
                Err(error) if error.contains("not_found") => Some(()),
                Err(error) => panic!("get after delete ({}): {error}", way.name),
                Ok(_) => None,
            }
        })
        .await;
    }
}

#[tokio::test]
async fn the_python_connect_client() {
    let py_clients = py_clients();
    let krane = start().await;

    // Message classes (protoc-gen-py) and the service client (protoc-gen-connectrpc), generated
    // from proto/ by buf with the plugins installed next to connectrpc: nothing is downloaded.
    let generated = tempfile::tempdir().expect("a directory for the generated code");
    let plugin = |name: &str| py_clients.join("bin").join(name).display().to_string();
    let out = generated.path().display().to_string();
    let template = json!({
        "version": "v2",
        "plugins": [
            { "local": plugin("protoc-gen-py"), "out": out },
            { "local": plugin("protoc-gen-connectrpc"), "out": out },
        ],
    });
    let generate = run(
        Command::new(buf())
            .args([
                "generate",
                &proto_dir(),
                "--template",
                &template.to_string(),
            ])
            .env("PYTHONPATH", &py_clients),
        "buf generate",
    )
    .await;
    assert!(
        generate.status.success(),
        "buf generate failed: {}",
        text(&generate.stderr)
    );
    assert!(
        generated
            .path()
            .join("krane/v1/gateway_connect.py")
            .exists(),
        "buf generate wrote no krane/v1/gateway_connect.py"
    );

    let python_path =
        std::env::join_paths([generated.path(), py_clients.as_path()]).expect("a PYTHONPATH");
    let script = repo_root().join("tests/python/connect_client.py");
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new("python3")
            .arg(&script)
            .arg(format!("http://{}", krane.api_addr))
            .arg(&krane.namespace)
            .env("PYTHONPATH", python_path)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finishes within 180 s")
    .expect("run python3 (3.11 or later) with tests/python/connect_client.py");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "the Python Connect client failed ({}):\n{stdout}\n{}",
        output.status,
        text(&output.stderr)
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("ok "))
        .collect();
    assert_eq!(
        passed,
        [
            "connect-json-http1",
            "connect-proto-http1",
            "connect-json-h2c",
            "connect-proto-h2c",
            "grpc-proto-h2c",
            "grpcweb-proto-http1",
        ],
        "{stdout}"
    );
}
