//! Pulls from a real registry: the distribution reference server with basic auth on loopback
//! (`krane_tests::registry`), the real Docker engine, a real nats-server. The images pushed to
//! it are removed from the engine first, so the worker must pull them:
//!
//! - with the worker's credentials, a gateway of the registry's image runs and serves;
//! - with a wrong password, or without credentials (they are for another registry), it is
//!   FAILED at once with the registry's reason;
//! - while a large image pulls, its instances are PENDING with the pull's progress;
//! - a pull that hangs past `--pull-timeout` is retried, blocks no other gateway, and ends
//!   FAILED after `--max-attempts`.

use krane_proto::krane::v1::{GatewayInstance, GatewayStatus};
use krane_tests::client::gateway_request;
use krane_tests::registry::{Registry, SlowRelay, Unresponsive, build_large_test_image};
use krane_tests::{
    Krane, Protocol, TEST_IMAGE, docker, eventually, fetch_instance, unique_namespace,
    wait_all_running,
};
use std::time::{Duration, Instant};

/// A worker of `krane` started with `flags`.
async fn start_worker(krane: &mut Krane, flags: &[String]) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    krane.start_worker(&flags).await;
}

/// The gateway's first instance once `status`.
async fn instance_when(
    krane: &Krane,
    gateway_id: &str,
    status: GatewayStatus,
    within: Duration,
) -> GatewayInstance {
    let client = krane.client(Protocol::ConnectJson);
    let what = format!("{gateway_id} {status:?}");
    eventually(&what, within, || async {
        let got = client.get(&krane.namespace, gateway_id).await.ok()?;
        got.instances
            .into_iter()
            .find(|instance| instance.status == status as i32)
    })
    .await
}

async fn engine_has(image: &str) -> bool {
    docker::engine().await.inspect_image(image).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_runs_from_the_registry_with_the_workers_credentials() {
    let namespace = unique_namespace("regpull");
    let mut registry = Registry::start().await;
    let image = registry.push(TEST_IMAGE, "krane/test-gateway", &namespace);
    assert!(!engine_has(&image).await, "{image} must be pulled");
    let mut krane = Krane::start_without_worker(&namespace).await;
    start_worker(&mut krane, &registry.worker_flags(&registry.address())).await;

    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "pulled", 2);
    request.image = image.clone();
    client.create(Some(request)).await.expect("created");
    let got = wait_all_running(&client, &namespace, "pulled", 2, Duration::from_secs(45)).await;
    for instance in &got.instances {
        assert!(
            !fetch_instance(&instance.address).await.is_empty(),
            "{instance:?} serves"
        );
    }
    assert!(engine_has(&image).await, "{image} was pulled");
    for container in docker::gateway_containers(&namespace, "pulled").await {
        assert_eq!(container.image.as_deref(), Some(image.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_ends_failed_with_the_registrys_reason() {
    let namespace = unique_namespace("regwrong");
    let mut registry = Registry::start().await;
    let image = registry.push(TEST_IMAGE, "krane/test-gateway", &namespace);
    let mut krane = Krane::start_without_worker(&namespace).await;
    let address = registry.address();
    start_worker(
        &mut krane,
        &[
            "--registry-username".to_string(),
            krane_tests::registry::USERNAME.to_string(),
            "--registry-password".to_string(),
            format!("not-{}", registry.password()),
            "--registry-server".to_string(),
            address,
        ],
    )
    .await;

    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "refused", 1);
    request.image = image.clone();
    let asked = Instant::now();
    client.create(Some(request)).await.expect("created");
    let failed = instance_when(
        &krane,
        "refused",
        GatewayStatus::Failed,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        failed.reason.contains(&image)
            && failed
                .reason
                .contains("unauthorized: authentication required"),
        "{}",
        failed.reason
    );
    // Refused for good: FAILED at once, no retries used up first.
    assert!(!failed.reason.contains("gave up"), "{}", failed.reason);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        docker::gateway_containers(&namespace, "refused")
            .await
            .is_empty()
    );
    assert!(!engine_has(&image).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_only_to_their_registry_and_a_pull_without_them_fails() {
    let namespace = unique_namespace("regnocreds");
    let mut registry = Registry::start().await;
    let image = registry.push(TEST_IMAGE, "krane/test-gateway", &namespace);
    // The same registry under another address: the worker's credentials are not for it.
    let relay = SlowRelay::start(registry.socket_address(), 100_000_000).await;
    let elsewhere = image.replacen(&registry.address(), &relay.address(), 1);
    registry.remove_on_drop(&elsewhere);
    let mut krane = Krane::start_without_worker(&namespace).await;
    start_worker(&mut krane, &registry.worker_flags(&registry.address())).await;

    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "anonymous", 1);
    request.image = elsewhere.clone();
    client.create(Some(request)).await.expect("created");
    let failed = instance_when(
        &krane,
        "anonymous",
        GatewayStatus::Failed,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        failed.reason.contains(&elsewhere) && failed.reason.contains("no basic auth credentials"),
        "{}",
        failed.reason
    );
    assert!(!failed.reason.contains("gave up"), "{}", failed.reason);

    // The registry the credentials are for serves the same image.
    let mut request = gateway_request(&namespace, "authenticated", 1);
    request.image = image;
    client.create(Some(request)).await.expect("created");
    wait_all_running(
        &client,
        &namespace,
        "authenticated",
        1,
        Duration::from_secs(45),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_pull_shows_its_progress_while_pending() {
    let namespace = unique_namespace("regprogress");
    let mut registry = Registry::start().await;
    let local = format!("krane-test-large:{namespace}");
    build_large_test_image(&local, 48);
    let image = registry.push(&local, "krane/large", &namespace);
    let removed = std::process::Command::new("docker")
        .args(["rmi", &local])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker rmi");
    assert!(removed.success(), "docker rmi {local}");
    // 48 MB at 12 MB/s: about four seconds of pulling.
    let relay = SlowRelay::start(registry.socket_address(), 12_000_000).await;
    let slow_image = image.replacen(&registry.address(), &relay.address(), 1);
    registry.remove_on_drop(&slow_image);
    let mut krane = Krane::start_without_worker(&namespace).await;
    start_worker(&mut krane, &registry.worker_flags(&relay.address())).await;

    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "large", 2);
    request.image = slow_image.clone();
    client.create(Some(request)).await.expect("created");
    let mut progress_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(50);
    loop {
        assert!(
            Instant::now() < deadline,
            "not RUNNING within 50 s; reasons seen: {progress_seen:?}"
        );
        let got = client.get(&namespace, "large").await.expect("get");
        if got.instances.len() == 2
            && got
                .instances
                .iter()
                .all(|i| i.status == GatewayStatus::Running as i32)
        {
            break;
        }
        for instance in &got.instances {
            assert_ne!(
                instance.status,
                GatewayStatus::Failed as i32,
                "{instance:?}"
            );
            if instance.status == GatewayStatus::Pending as i32
                && instance.reason.starts_with("pulling ")
                && progress_seen.last() != Some(&instance.reason)
            {
                progress_seen.push(instance.reason.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let prefix = format!("pulling {slow_image}: ");
    let with_bytes: Vec<&String> = progress_seen
        .iter()
        .filter(|reason| reason.starts_with(&prefix) && reason.contains(" MB of "))
        .collect();
    eprintln!("reasons while pulling: {progress_seen:#?}");
    assert!(
        with_bytes.len() >= 2,
        "progress reported more than once while pulling: {progress_seen:?}"
    );
    assert!(engine_has(&slow_image).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_hangs_is_retried_blocks_no_other_gateway_and_ends_failed() {
    let namespace = unique_namespace("reghang");
    let hanging = Unresponsive::start().await;
    let image = format!("{}/krane/hangs:{namespace}", hanging.address());
    let mut krane = Krane::start_without_worker(&namespace).await;
    krane
        .start_worker(&["--pull-timeout", "2s", "--max-attempts", "3"])
        .await;

    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "hangs", 1);
    request.image = image.clone();
    client.create(Some(request)).await.expect("created");
    // Meanwhile another gateway goes ahead.
    client
        .create(Some(gateway_request(&namespace, "other", 1)))
        .await
        .expect("created");
    wait_all_running(&client, &namespace, "other", 1, Duration::from_secs(20)).await;
    let got = client.get(&namespace, "hangs").await.expect("get");
    assert!(
        got.instances
            .iter()
            .all(|i| i.status == GatewayStatus::Pending as i32),
        "still pulling, not FAILED, while the other runs: {got:?}"
    );

    let retrying = eventually("a retrying reason", Duration::from_secs(20), || async {
        let got = client.get(&namespace, "hangs").await.ok()?;
        got.instances
            .into_iter()
            .find(|i| i.reason.starts_with("retrying (attempt "))
    })
    .await;
    assert_eq!(retrying.status, GatewayStatus::Pending as i32);
    assert!(
        retrying.reason.contains(&image)
            && retrying.reason.contains("pull did not finish within 2s"),
        "{}",
        retrying.reason
    );

    let failed = instance_when(
        &krane,
        "hangs",
        GatewayStatus::Failed,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        failed.reason.starts_with("gave up after 3 attempts: ")
            && failed.reason.contains("pull did not finish within 2s"),
        "{}",
        failed.reason
    );
    assert!(
        hanging.accepted() >= 3,
        "the engine tried the registry on every attempt: {} connections",
        hanging.accepted()
    );
    assert!(
        docker::gateway_containers(&namespace, "hangs")
            .await
            .is_empty()
    );
}
