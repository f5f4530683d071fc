//! A real Docker engine going away: the worker backs off, GetGateway shows why, and the
//! gateway converges once the engine is back. Also two workers serving one host (same host id,
//! same engine) touching the same gateway at once end right, without duplicates.

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::gateway_request;
use krane_tests::engines::ExtraEngine;
use krane_tests::workers::HostWorker;
use krane_tests::{Krane, Protocol, docker, eventually, fetch_instance, unique_namespace};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_converges_once_its_engine_is_back() {
    let namespace = unique_namespace("engdown");
    // Engine index 13 belongs to this test (see krane_tests::engines).
    let engine = ExtraEngine::start("outage", 13);
    let krane = Krane::start_without_worker(&namespace).await;
    let host = format!("{namespace}-h");
    let _worker = HostWorker::start(
        &krane,
        &host,
        &engine.docker_host(),
        &engine.advertise_host(),
        &["--max-attempts", "2"],
    )
    .await;
    let client = krane.client(Protocol::ConnectJson);
    eventually("the host is live", Duration::from_secs(10), || async {
        (!krane.store.live_hosts().await.ok()?.is_empty()).then_some(())
    })
    .await;

    engine.stop();
    client
        .create(Some(gateway_request(&namespace, "patient", 2)))
        .await
        .expect("accepted while the engine is down");
    krane_tests::assert_engine_outage_is_waited_out(
        &client,
        &namespace,
        "patient",
        Duration::from_secs(20),
    )
    .await;

    engine.restart();
    let running = eventually(
        "converged after the engine returned",
        Duration::from_secs(60),
        || async {
            let got = client.get(&namespace, "patient").await.ok()?;
            let done = got.instances.len() == 2
                && got
                    .instances
                    .iter()
                    .all(|i| i.status == GatewayStatus::Running as i32);
            done.then_some(got)
        },
    )
    .await;
    for instance in &running.instances {
        assert!(fetch_instance(&instance.address).await.contains("patient"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_of_one_host_never_duplicate_a_replica() {
    let namespace = unique_namespace("twins");
    let mut krane = Krane::start(&namespace).await;
    // A second worker with the same host id on the same engine shares the host's consumer.
    let socket = "unix:///var/run/docker.sock";
    let _twin = HostWorker::start(&krane, &krane.host_id(), socket, "127.0.0.1", &[]).await;
    let client = krane.client(Protocol::ConnectProto);
    for replicas in [3, 1, 4, 2] {
        client
            .create(Some(gateway_request(&namespace, "shared", replicas)))
            .await
            .expect("create");
    }
    eventually(
        "2 RUNNING and exactly 2 containers",
        Duration::from_secs(60),
        || async {
            let got = client.get(&namespace, "shared").await.ok()?;
            let running = got.instances.len() == 2
                && got
                    .instances
                    .iter()
                    .all(|i| i.status == GatewayStatus::Running as i32);
            let containers = docker::gateway_containers(&namespace, "shared").await.len();
            (running && containers == 2).then_some(())
        },
    )
    .await;
    krane.shutdown_worker().await;
}
