//! Rollouts that protect the running version: a good update replaces the replicas one at a
//! time with a serving replica at every moment, and ends marked done; a bad one (its new
//! replica keeps exiting) is rolled back, says why, and every replica serves the old spec
//! again. Real nats-server, real Docker, the test gateway's variants.

use krane_proto::krane::v1::{GatewayStatus, GetGatewayResponse};
use krane_tests::client::{TestClient, gateway_request};
use krane_tests::{
    Krane, Protocol, answers_at_once, docker, eventually, unique_namespace, wait_all_running,
};
use std::time::{Duration, Instant};

/// How many RUNNING instances answer right now.
async fn serving(got: &GetGatewayResponse) -> usize {
    let mut count = 0;
    for instance in &got.instances {
        if instance.status == GatewayStatus::Running as i32
            && answers_at_once(&instance.address, "/").await
        {
            count += 1;
        }
    }
    count
}

async fn update(client: &TestClient, namespace: &str, gateway: &str, replicas: u32, image: &str) {
    docker::require_image(image).await;
    let mut request = gateway_request(namespace, gateway, replicas);
    request.image = image.into();
    client.update(request).await.expect("update accepted");
}

fn rollout_state(got: &GetGatewayResponse) -> (String, String) {
    got.rollout
        .as_ref()
        .map(|rollout| (rollout.state.clone(), rollout.reason.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_update_completes_with_a_serving_replica_at_every_moment() {
    let namespace = unique_namespace("rollgood");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "edge", 3)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "edge", 3, Duration::from_secs(60)).await;
    update(&client, &namespace, "edge", 3, "krane-test-gateway:healthy").await;
    let started = Instant::now();
    let mut looks = 0;
    let mut fewest = usize::MAX;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the update did not finish"
        );
        let got = client.get(&namespace, "edge").await.expect("get");
        let now_serving = serving(&got).await;
        looks += 1;
        fewest = fewest.min(now_serving);
        assert!(now_serving >= 1, "no replica served at one moment: {got:?}");
        let image = got
            .gateway
            .as_ref()
            .map(|g| g.image.clone())
            .unwrap_or_default();
        let done = image == "krane-test-gateway:healthy"
            && rollout_state(&got).0.is_empty()
            && got.instances.len() == 3
            && now_serving == 3;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "update done in {:?}; {looks} looks, at least {fewest} of 3 replicas served at each",
        started.elapsed()
    );
    let containers = docker::gateway_containers(&namespace, "edge").await;
    assert_eq!(containers.len(), 3, "no replica left over or doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_is_rolled_back_and_every_replica_serves_the_old_spec_again() {
    let namespace = unique_namespace("rollbad");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "edge", 2)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "edge", 2, Duration::from_secs(60)).await;
    update(&client, &namespace, "edge", 2, "krane-test-gateway:exits").await;
    let rolled_back = eventually(
        "the update rolled back",
        Duration::from_secs(60),
        || async {
            let got = client.get(&namespace, "edge").await.ok()?;
            let (state, reason) = rollout_state(&got);
            (state == "rolled_back").then_some((got, reason))
        },
    )
    .await;
    let (got, reason) = rolled_back;
    assert!(reason.contains("exited with code 3"), "why: {reason}");
    assert_eq!(
        got.gateway.as_ref().map(|g| g.image.as_str()),
        Some(krane_tests::TEST_IMAGE),
        "back on the previous spec"
    );
    eventually(
        "both replicas serve the old spec",
        Duration::from_secs(60),
        || async {
            let got = client.get(&namespace, "edge").await.ok()?;
            (serving(&got).await == 2).then_some(())
        },
    )
    .await;
    let containers = docker::gateway_containers(&namespace, "edge").await;
    assert_eq!(containers.len(), 2, "no replica of the bad spec left");
}
