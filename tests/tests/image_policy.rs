//! The image policy, at the API and again at the worker: a Create or Update naming an image
//! the policy does not allow is refused as invalid_argument naming the field and the rule,
//! with nothing stored; a command that bypassed the API (stored straight into the log) is
//! FAILED by the worker with the same reason, and no container is created. Real nats-server,
//! real Docker.

use krane_api::ApiOptions;
use krane_core::images::ImagePolicy;
use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::{INVALID_ARGUMENT, NOT_FOUND, TestClient, gateway_request};
use krane_tests::{Krane, Protocol, docker, eventually, unique_namespace, wait_all_running};
use std::time::Duration;

const ALLOWED: &str = "docker.io/library/krane-test-gateway";

fn policy() -> ImagePolicy {
    ImagePolicy::new(&[ALLOWED.to_string()]).expect("a valid pattern")
}

/// An API with the policy on this test's NATS; returns its client.
async fn api_with_policy(krane: &Krane) -> TestClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let address = listener.local_addr().expect("address");
    let options = ApiOptions {
        allowed_images: policy(),
        ..Default::default()
    };
    let log = krane.store.clone();
    tokio::spawn(async move {
        let _ = krane_api::serve(listener, log, options, Default::default()).await;
    });
    TestClient::new(Protocol::ConnectJson, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_images_outside_the_policy_and_stores_nothing() {
    let namespace = unique_namespace("imgpolicy");
    let krane = Krane::start(&namespace).await;
    let client = api_with_policy(&krane).await;
    let mut request = gateway_request(&namespace, "outside", 1);
    request.image = "nginx:1".into();
    let refused = client.create(Some(request)).await.expect_err("refused");
    assert_eq!(refused.code, INVALID_ARGUMENT, "{refused:?}");
    assert!(
        refused.message.starts_with("gateway.image: ") && refused.message.contains(ALLOWED),
        "{}",
        refused.message
    );
    let missing = client
        .get(&namespace, "outside")
        .await
        .expect_err("nothing stored");
    assert_eq!(missing.code, NOT_FOUND);

    // An allowed gateway runs; an Update to another image is refused and changes nothing.
    client
        .create(Some(gateway_request(&namespace, "inside", 1)))
        .await
        .expect("allowed");
    wait_all_running(&client, &namespace, "inside", 1, Duration::from_secs(60)).await;
    let mut update = gateway_request(&namespace, "inside", 1);
    update.image = "registry.example.com/other/gateway:2".into();
    let refused = client.update(update).await.expect_err("refused");
    assert_eq!(refused.code, INVALID_ARGUMENT, "{refused:?}");
    let got = client.get(&namespace, "inside").await.expect("still there");
    assert_eq!(
        got.gateway.map(|g| g.image),
        Some(krane_tests::TEST_IMAGE.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_command_that_bypassed_the_api() {
    let namespace = unique_namespace("imgbypass");
    let mut krane = Krane::start_without_worker(&namespace).await;
    krane
        .start_worker(&["--allowed-images", "registry.example.com/only/*"])
        .await;
    let client = krane.client(Protocol::ConnectJson);
    // The in-process API has no policy: the command reaches the log as if it bypassed one.
    client
        .create(Some(gateway_request(&namespace, "sneaky", 1)))
        .await
        .expect("stored");
    let failed = eventually(
        "FAILED by the worker's policy",
        Duration::from_secs(30),
        || async {
            let got = client.get(&namespace, "sneaky").await.ok()?;
            let instance = got.instances.into_iter().next()?;
            (instance.status == GatewayStatus::Failed as i32).then_some(instance)
        },
    )
    .await;
    assert!(
        failed.reason.contains("not allowed by the image policy"),
        "{}",
        failed.reason
    );
    assert!(
        docker::gateway_containers(&namespace, "sneaky")
            .await
            .is_empty()
    );
}
