//! Ready means serving: an instance is RUNNING only while its container serves — healthy where
//! the image has a health check, else its published port answering — and says why not
//! otherwise. Real nats-server, real Docker, the test gateway's image variants
//! (`scripts/build-images.sh test-gateway`): `:slow` binds its port after 4 s, `:exits` exits
//! with code 3, `:refuses` never binds, `:healthy` has a health check; every variant can be told
//! over HTTP to stop serving or to fail its health check.

use krane_proto::krane::v1::{GatewayInstance, GatewayStatus};
use krane_tests::client::{TestClient, gateway_request};
use krane_tests::{
    Krane, Protocol, answers_at_once, docker, eventually, unique_namespace, wait_all_running,
};
use std::time::{Duration, Instant};

/// How soon a change of readiness must show in GetGateway.
const NOTICED_WITHIN: Duration = Duration::from_secs(10);

async fn create(client: &TestClient, namespace: &str, gateway: &str, image: &str) {
    docker::require_image(image).await;
    let mut request = gateway_request(namespace, gateway, 1);
    request.image = image.into();
    client.create(Some(request)).await.expect("create");
}

async fn instance(client: &TestClient, namespace: &str, gateway: &str) -> Option<GatewayInstance> {
    let got = client.get(namespace, gateway).await.ok()?;
    got.instances.into_iter().next()
}

fn is(instance: &GatewayInstance, status: GatewayStatus) -> bool {
    instance.status == status as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_binds_its_port_late_is_pending_starting_until_it_serves() {
    let namespace = unique_namespace("slow");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    let created = Instant::now();
    create(&client, &namespace, "late", "krane-test-gateway:slow").await;
    let starting = eventually("PENDING, starting", NOTICED_WITHIN, || async {
        let instance = instance(&client, &namespace, "late").await?;
        (is(&instance, GatewayStatus::Pending) && instance.reason.starts_with("starting"))
            .then_some(instance)
    })
    .await;
    assert!(starting.address.is_empty(), "no address before it serves");
    let running = eventually(
        "RUNNING once it serves",
        Duration::from_secs(30),
        || async {
            let instance = instance(&client, &namespace, "late").await?;
            is(&instance, GatewayStatus::Running).then_some(instance)
        },
    )
    .await;
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "RUNNING after {:?}, before the image binds its port",
        created.elapsed()
    );
    assert!(
        answers_at_once(&running.address, "/").await,
        "RUNNING means serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_keeps_exiting_is_failed_with_its_exit_code_and_last_log_lines() {
    let namespace = unique_namespace("exits");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    create(&client, &namespace, "crash", "krane-test-gateway:exits").await;
    let failed = eventually("FAILED with the exit", Duration::from_secs(20), || async {
        let instance = instance(&client, &namespace, "crash").await?;
        (is(&instance, GatewayStatus::Failed) && instance.reason.contains("exited with code 3"))
            .then_some(instance)
    })
    .await;
    assert!(
        failed.reason.contains("told to exit"),
        "the log's last lines: {}",
        failed.reason
    );
    // It stays FAILED while the engine keeps restarting it, never RUNNING.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let instance = instance(&client, &namespace, "crash")
            .await
            .expect("instance");
        assert!(!is(&instance, GatewayStatus::Running), "{instance:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_port_never_answers_is_never_running() {
    let namespace = unique_namespace("refuses");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    create(&client, &namespace, "mute", "krane-test-gateway:refuses").await;
    eventually("PENDING, starting", NOTICED_WITHIN, || async {
        let instance = instance(&client, &namespace, "mute").await?;
        (is(&instance, GatewayStatus::Pending) && instance.reason.starts_with("starting"))
            .then_some(())
    })
    .await;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let instance = instance(&client, &namespace, "mute")
            .await
            .expect("instance");
        assert!(is(&instance, GatewayStatus::Pending), "{instance:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_serving_shows_it_within_seconds_and_recovers_when_restarted() {
    let namespace = unique_namespace("stops");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    create(&client, &namespace, "quits", krane_tests::TEST_IMAGE).await;
    let running = wait_all_running(&client, &namespace, "quits", 1, Duration::from_secs(60)).await;
    let address = running.instances[0].address.clone();
    assert!(answers_at_once(&address, "/_krane/stop-serving").await);
    let stopped = Instant::now();
    eventually("no longer RUNNING", NOTICED_WITHIN, || async {
        let instance = instance(&client, &namespace, "quits").await?;
        (is(&instance, GatewayStatus::Pending) && instance.reason.starts_with("starting"))
            .then_some(())
    })
    .await;
    println!("stopped serving → not RUNNING in {:?}", stopped.elapsed());
    // Restarted behind krane's back, it serves again: RUNNING again.
    let name = krane_core::GatewayKey::new(&namespace, "quits").container_name(0);
    let restarted = std::process::Command::new("docker")
        .args(["restart", "--time", "1", &name])
        .output()
        .expect("docker restart");
    assert!(restarted.status.success());
    wait_all_running(&client, &namespace, "quits", 1, NOTICED_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_image_has_a_health_check_it_decides() {
    let namespace = unique_namespace("health");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    create(&client, &namespace, "checked", "krane-test-gateway:healthy").await;
    let running =
        wait_all_running(&client, &namespace, "checked", 1, Duration::from_secs(60)).await;
    let address = running.instances[0].address.clone();
    assert!(answers_at_once(&address, "/_krane/unhealthy").await);
    let failing = eventually("FAILED by its health check", NOTICED_WITHIN, || async {
        let instance = instance(&client, &namespace, "checked").await?;
        (is(&instance, GatewayStatus::Failed) && instance.reason.contains("health check"))
            .then_some(instance)
    })
    .await;
    assert!(failing.address.is_empty(), "{failing:?}");
}
