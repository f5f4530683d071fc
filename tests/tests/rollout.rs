//! Rollouts that protect the running version: a good update replaces the replicas one at a
//! time with a serving replica at every moment, and ends marked done; with a surge, an extra
//! replica keeps every replica's worth serving throughout and is gone afterwards; with
//! parallelism 2, two are replaced at once; a bad one (its new replica keeps exiting) is
//! rolled back, says why, and every replica serves the old spec again. Real nats-server,
//! real Docker, the test gateway's variants.
//!
//! Capacity is counted on the engine: at each look, the gateway's containers are listed and
//! all probed at once. The instances Get lists are probed too (and shown when fewer answer),
//! but a look at the record and the probes of its addresses are not one moment: a replica
//! the record still shows RUNNING may be being replaced by the time it is probed.

use krane_proto::krane::v1::{GatewayStatus, GetGatewayResponse, UpdatePolicy};
use krane_tests::client::{INVALID_ARGUMENT, TestClient, gateway_request};
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

/// How many of the gateway's containers on the engine answer right now, probed all at once:
/// the engine's own view, free of the record's lag behind the containers.
async fn containers_serving(namespace: &str) -> usize {
    let containers = docker::gateway_containers(namespace, "edge").await;
    let ports: Vec<u16> = containers
        .iter()
        .filter_map(|container| {
            container
                .ports
                .as_ref()?
                .iter()
                .find_map(|port| port.public_port)
        })
        .collect();
    let answers = futures::future::join_all(
        ports
            .iter()
            .map(|port| answers_at_once_owned(format!("127.0.0.1:{port}"))),
    )
    .await;
    answers.into_iter().filter(|answered| *answered).count()
}

async fn answers_at_once_owned(address: String) -> bool {
    answers_at_once(&address, "/").await
}

async fn update(client: &TestClient, namespace: &str, gateway: &str, replicas: u32, image: &str) {
    update_with(client, namespace, gateway, replicas, image, None).await;
}

async fn update_with(
    client: &TestClient,
    namespace: &str,
    gateway: &str,
    replicas: u32,
    image: &str,
    policy: Option<UpdatePolicy>,
) {
    docker::require_image(image).await;
    let mut request = gateway_request(namespace, gateway, replicas);
    request.image = image.into();
    request.update_policy = policy;
    client.update(request).await.expect("update accepted");
}

fn rollout_state(got: &GetGatewayResponse) -> (String, String) {
    got.rollout
        .as_ref()
        .map(|rollout| (rollout.state.clone(), rollout.reason.clone()))
        .unwrap_or_default()
}

/// What an update looked like, look by look, until it was done.
struct Followed {
    looks: usize,
    /// Fewest instances RUNNING and answering at one look.
    fewest_serving: usize,
    /// Fewest of the gateway's containers on the engine answering at one look.
    fewest_containers_serving: usize,
    /// Most instances listed at one look (an extra replica of a surge is listed too).
    most_instances: usize,
    /// Most instances PENDING at one look (replaced at once).
    most_pending: usize,
    took: Duration,
}

/// Looks at the gateway every 0.1 s, probing every RUNNING instance's address, until it runs
/// `image` with `replicas` instances all serving and no update in progress; fails after
/// `within`.
async fn follow_update(
    client: &TestClient,
    namespace: &str,
    replicas: usize,
    image: &str,
    within: Duration,
) -> Followed {
    let started = Instant::now();
    let mut followed = Followed {
        looks: 0,
        fewest_serving: usize::MAX,
        fewest_containers_serving: usize::MAX,
        most_instances: 0,
        most_pending: 0,
        took: Duration::ZERO,
    };
    loop {
        assert!(started.elapsed() < within, "the update did not finish");
        let containers_now = containers_serving(namespace).await;
        followed.fewest_containers_serving = followed.fewest_containers_serving.min(containers_now);
        let got = client.get(namespace, "edge").await.expect("get");
        let now_serving = serving(&got).await;
        if now_serving < followed.fewest_serving.min(replicas) {
            // What a dip looked like, for whoever reads a failure.
            let mut shown = String::new();
            for instance in &got.instances {
                let answers = answers_at_once(&instance.address, "/").await;
                shown.push_str(&format!(
                    "\n  {} {:?} {} answers now: {answers} {}",
                    instance.id,
                    GatewayStatus::try_from(instance.status),
                    instance.address,
                    instance.reason
                ));
            }
            eprintln!(
                "look {}: {now_serving} of {replicas} serving (rollout {:?}){shown}",
                followed.looks,
                rollout_state(&got)
            );
        }
        let pending = got
            .instances
            .iter()
            .filter(|i| i.status == GatewayStatus::Pending as i32)
            .count();
        followed.looks += 1;
        followed.fewest_serving = followed.fewest_serving.min(now_serving);
        followed.most_instances = followed.most_instances.max(got.instances.len());
        followed.most_pending = followed.most_pending.max(pending);
        let running_image = got
            .gateway
            .as_ref()
            .map(|g| g.image.clone())
            .unwrap_or_default();
        let done = running_image == image
            && rollout_state(&got).0.is_empty()
            && got.instances.len() == replicas
            && now_serving == replicas;
        if done {
            followed.took = started.elapsed();
            return followed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let followed = follow_update(
        &client,
        &namespace,
        3,
        "krane-test-gateway:healthy",
        Duration::from_secs(120),
    )
    .await;
    println!(
        "update done in {:?}; {} looks, at least {} of 3 replicas served at each",
        followed.took, followed.looks, followed.fewest_serving
    );
    // One replaced at a time: at least replicas - 1 of the engine's containers answer.
    assert!(
        followed.fewest_containers_serving >= 2,
        "fewer than replicas - 1 containers answered at one look: {}",
        followed.fewest_containers_serving
    );
    let containers = docker::gateway_containers(&namespace, "edge").await;
    assert_eq!(containers.len(), 3, "no replica left over or doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_with_a_surge_keeps_every_replica_serving_and_leaves_no_extra_container() {
    let namespace = unique_namespace("rollsurge");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "edge", 3)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "edge", 3, Duration::from_secs(30)).await;
    let surge = UpdatePolicy {
        max_surge: 1,
        ..UpdatePolicy::default()
    };
    let image = "krane-test-gateway:healthy";
    update_with(&client, &namespace, "edge", 3, image, Some(surge)).await;
    let followed = follow_update(&client, &namespace, 3, image, Duration::from_secs(45)).await;
    println!(
        "update with a surge done in {:?}; {} looks, at least {} of 3 replicas served at each \
         ({} containers answered at the fewest)",
        followed.took, followed.looks, followed.fewest_serving, followed.fewest_containers_serving
    );
    // Counted on the engine: a look at the record and the probes of its addresses are not
    // one moment (a replica the record still shows RUNNING may be being replaced by then).
    assert!(
        followed.fewest_containers_serving >= 3,
        "capacity dropped below the replicas at one look: {} containers answered",
        followed.fewest_containers_serving
    );
    assert_eq!(followed.most_instances, 4, "the extra replica was listed");
    let containers = docker::gateway_containers(&namespace, "edge").await;
    assert_eq!(containers.len(), 3, "no extra replica left: {containers:?}");
    let got = client.get(&namespace, "edge").await.expect("get");
    let shown = got.gateway.and_then(|gateway| gateway.update_policy);
    assert_eq!(shown.map(|policy| policy.max_surge), Some(1), "shown back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_replacing_two_replicas_at_once_finishes() {
    let namespace = unique_namespace("rollpar");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "edge", 3)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "edge", 3, Duration::from_secs(30)).await;
    let parallel = UpdatePolicy {
        parallelism: 2,
        ..UpdatePolicy::default()
    };
    let image = "krane-test-gateway:healthy";
    update_with(&client, &namespace, "edge", 3, image, Some(parallel)).await;
    let followed = follow_update(&client, &namespace, 3, image, Duration::from_secs(45)).await;
    println!(
        "update two at a time done in {:?}; {} looks, at least {} of 3 replicas served, at most {} pending at once",
        followed.took, followed.looks, followed.fewest_serving, followed.most_pending
    );
    // Two replaced at a time: at least replicas - 2 of the engine's containers answer.
    assert!(
        followed.fewest_containers_serving >= 1,
        "no container answered at one look"
    );
    assert_eq!(
        followed.most_pending, 2,
        "two replicas were replaced at once"
    );
    let containers = docker::gateway_containers(&namespace, "edge").await;
    assert_eq!(containers.len(), 3, "no replica left over or doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_beyond_its_bounds_is_refused_naming_the_field() {
    let namespace = unique_namespace("rollpolicy");
    let krane = Krane::start_without_worker(&namespace).await;
    let cases = [
        (
            UpdatePolicy {
                parallelism: 3,
                ..UpdatePolicy::default()
            },
            "gateway.update_policy.parallelism: must be between 1 and 2",
        ),
        (
            UpdatePolicy {
                max_surge: 2,
                ..UpdatePolicy::default()
            },
            "gateway.update_policy.max_surge: must be 0 or 1",
        ),
    ];
    for protocol in Protocol::ALL {
        let client = krane.client(protocol);
        for (policy, message) in &cases {
            let mut request = gateway_request(&namespace, "edge", 2);
            request.update_policy = Some(*policy);
            let error = client.create(Some(request)).await.expect_err(message);
            assert_eq!(error.code, INVALID_ARGUMENT, "{protocol:?}: {error:?}");
            assert_eq!(&error.message, message, "{protocol:?}");
        }
    }
    let records = krane.store.all_records().await.expect("records");
    assert!(records.is_empty(), "nothing stored: {records:?}");
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
    // The code it exited with, also when caught while the engine runs it again (when Docker
    // itself shows 0).
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
