//! Docker helpers for tests: the engine itself (version-negotiated bollard), the test image,
//! and inspection and clean-up of the containers a test's namespace owns.

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::ListContainersOptions;
use std::collections::HashMap;

pub async fn engine() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .expect("Docker socket configured (DOCKER_HOST or /var/run/docker.sock)");
    docker
        .negotiate_version()
        .await
        .expect("the Docker engine answers; is dockerd running?")
}

/// Fails the test unless the test gateway image is present (no registry: it must be built).
pub async fn require_test_image() {
    engine()
        .await
        .inspect_image(crate::TEST_IMAGE)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "image {} missing ({error}); build it with scripts/build-images.sh test-gateway",
                crate::TEST_IMAGE
            )
        });
}

/// Fails the test unless `image` (a tag of the test gateway built by `scripts/build-images.sh`)
/// is present.
pub async fn require_image(image: &str) {
    engine().await.inspect_image(image).await.unwrap_or_else(|error| {
        panic!("image {image} missing ({error}); build it with scripts/build-images.sh test-gateway")
    });
}

/// Containers (running or not) carrying every `label=value` given.
pub async fn containers_with(labels: &[(&str, &str)]) -> Vec<ContainerSummary> {
    let filters = labels
        .iter()
        .map(|(label, value)| format!("{label}={value}"))
        .collect();
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), filters)])),
        ..Default::default()
    };
    engine()
        .await
        .list_containers(Some(options))
        .await
        .expect("list containers")
}

/// The containers of one gateway.
pub async fn gateway_containers(namespace: &str, gateway_id: &str) -> Vec<ContainerSummary> {
    containers_with(&[
        ("unkey.managed.by", "krane"),
        ("unkey.namespace", namespace),
        ("unkey.gateway.id", gateway_id),
    ])
    .await
}

pub async fn inspect(name: &str) -> ContainerInspectResponse {
    engine()
        .await
        .inspect_container(name, None)
        .await
        .expect("inspect container")
}

/// Removes every container of a test namespace (synchronously: called from `Drop`).
pub fn remove_namespace_containers(namespace: &str) {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=unkey.namespace={namespace}"))
        .output();
    let Ok(listed) = listed else { return };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output();
    }
}

/// Gives the test image a second name, on the machine's engine or (with `docker_host`) another.
pub fn tag_test_image(tag: &str, docker_host: Option<&str>) {
    let mut command = std::process::Command::new("docker");
    if let Some(host) = docker_host {
        command.args(["-H", host]);
    }
    let status = command
        .args(["tag", crate::TEST_IMAGE, tag])
        .status()
        .expect("run docker tag");
    assert!(
        status.success(),
        "docker tag {} {tag} failed",
        crate::TEST_IMAGE
    );
}
