//! Drives the system as docker-compose brings it up (images built by scripts/build-images.sh):
//! a separate compose project on a free port, a gateway created through its API, RUNNING and
//! answering, deleted, gone; then the project is torn down.

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::{NOT_FOUND, UNAUTHENTICATED, gateway_request};
use krane_tests::nats::free_port;
use krane_tests::{Protocol, TestClient, docker, eventually, fetch_instance, unique_namespace};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

struct ComposeProject {
    name: String,
    port: u16,
    /// The API's bearer token: the compose file publishes the API only with one.
    token: String,
}

impl ComposeProject {
    fn up() -> Self {
        let project = Self {
            name: format!("krane-test-{}", std::process::id()),
            port: free_port(),
            token: format!("test-{}-{}", std::process::id(), free_port()),
        };
        project.run(&["up", "-d"]);
        project
    }

    fn run(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/compose.sh");
        let output = Command::new("bash")
            .arg(script)
            .args(["-p", &self.name])
            .args(args)
            .env("KRANE_API_PORT", self.port.to_string())
            .env("KRANE_HOST_ID", &self.name)
            .env("KRANE_AUTH_TOKEN", &self.token)
            .output()
            .expect("run docker-compose");
        assert!(
            output.status.success(),
            "docker-compose {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        self.run(&["down", "-v", "--remove-orphans"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_provisions_and_deletes_a_gateway() {
    docker::require_test_image().await;
    let namespace = unique_namespace("compose");
    let project = ComposeProject::up();
    let address = format!("127.0.0.1:{}", project.port)
        .parse()
        .expect("address");
    // Without the token the API answers nothing but `unauthenticated`.
    let anonymous = TestClient::new(Protocol::ConnectJson, address);
    let client = TestClient::new(Protocol::ConnectJson, address).with_token(&project.token);
    // The API restarts until NATS is up; wait until it answers a Get at all.
    eventually(
        "the compose API answers",
        Duration::from_secs(60),
        || async {
            client
                .get(&namespace, "probe")
                .await
                .err()
                .filter(|e| e.code == NOT_FOUND)
        },
    )
    .await;
    let refused = anonymous
        .get(&namespace, "probe")
        .await
        .expect_err("refused");
    assert_eq!(refused.code, UNAUTHENTICATED, "{refused:?}");

    client
        .create(Some(gateway_request(&namespace, "composed", 3)))
        .await
        .expect("create through the compose API");
    let running = eventually("3 RUNNING", Duration::from_secs(90), || async {
        let got = client.get(&namespace, "composed").await.ok()?;
        got.instances
            .iter()
            .all(|i| i.status == GatewayStatus::Running as i32)
            .then_some(got)
    })
    .await;
    assert_eq!(running.instances.len(), 3);
    for instance in &running.instances {
        let body = fetch_instance(&instance.address).await;
        assert!(body.contains("composed"), "{body}");
    }

    client.delete(&namespace, "composed").await.expect("delete");
    eventually(
        "not_found after delete",
        Duration::from_secs(60),
        || async {
            client
                .get(&namespace, "composed")
                .await
                .err()
                .filter(|e| e.code == NOT_FOUND)
        },
    )
    .await;
    assert!(
        docker::gateway_containers(&namespace, "composed")
            .await
            .is_empty()
    );
    docker::remove_namespace_containers(&namespace);
}
