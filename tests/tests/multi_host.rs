//! Several Docker hosts, for real: two extra engines, each in its own network namespace, one
//! worker per engine. Proves spread, addresses per host, scale up/down through UpdateGateway,
//! a rolling update that never has more than one replica down, host loss with rescheduling,
//! removal of stale containers when the lost host returns, and delete fan-out.

use krane_proto::krane::v1::{GatewayStatus, GetGatewayResponse};
use krane_tests::client::{NOT_FOUND, gateway_request};
use krane_tests::engines::ExtraEngine;
use krane_tests::workers::HostWorker;
use krane_tests::{
    Krane, Protocol, eventually, fetch_instance, unique_namespace, wait_all_running,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const HOST_TIMEOUT: &str = "4s";

fn per_host(got: &GetGatewayResponse) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for instance in &got.instances {
        *counts.entry(instance.host_id.clone()).or_default() += 1;
    }
    counts
}

async fn engine_container_count(engine: &ExtraEngine, namespace: &str) -> usize {
    let output = std::process::Command::new("docker")
        .args(["-H", &engine.docker_host(), "ps", "-q", "--filter"])
        .arg(format!("label=unkey.namespace={namespace}"))
        .output()
        .expect("docker ps on the extra engine");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .count()
}

fn nano_cpus(engine: &ExtraEngine, container: &str) -> String {
    let output = std::process::Command::new("docker")
        .args([
            "-H",
            &engine.docker_host(),
            "inspect",
            "--format",
            "{{.HostConfig.NanoCpus}}",
        ])
        .arg(container)
        .output()
        .expect("docker inspect on the extra engine");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_spread_scale_roll_and_survive_host_loss_across_engines() {
    let namespace = unique_namespace("hosts");
    // Engine indices 11 and 12 belong to this test (see krane_tests::engines).
    let one = ExtraEngine::start("hosts", 11);
    let two = ExtraEngine::start("hosts", 12);
    let krane = Krane::start_without_worker(&namespace).await;
    let flags = ["--host-timeout", HOST_TIMEOUT, "--resync-interval", "2s"];
    let h1 = format!("{namespace}-h1");
    let h2 = format!("{namespace}-h2");
    let _w1 = HostWorker::start(
        &krane,
        &h1,
        &one.docker_host(),
        &one.advertise_host(),
        &flags,
    )
    .await;
    let mut w2 = HostWorker::start(
        &krane,
        &h2,
        &two.docker_host(),
        &two.advertise_host(),
        &flags,
    )
    .await;
    let client = krane.client(Protocol::ConnectJson);
    eventually("both hosts live", Duration::from_secs(10), || async {
        (krane.store.live_hosts().await.ok()?.len() == 2).then_some(())
    })
    .await;

    // Spread: 4 replicas, 2 per host, each reachable at its host's address.
    client
        .create(Some(gateway_request(&namespace, "wide", 4)))
        .await
        .expect("create");
    let got = wait_all_running(&client, &namespace, "wide", 4, Duration::from_secs(90)).await;
    assert_eq!(
        per_host(&got),
        BTreeMap::from([(h1.clone(), 2), (h2.clone(), 2)])
    );
    for instance in &got.instances {
        let advertise = if instance.host_id == h1 {
            one.advertise_host()
        } else {
            two.advertise_host()
        };
        assert!(
            instance.address.starts_with(&format!("{advertise}:")),
            "{instance:?}"
        );
        assert!(fetch_instance(&instance.address).await.contains("wide"));
    }

    // Scale up and down through UpdateGateway.
    let scaled = client
        .update(gateway_request(&namespace, "wide", 6))
        .await
        .expect("scale up");
    assert_eq!(scaled.pod_ids.len(), 6);
    let got = wait_all_running(&client, &namespace, "wide", 6, Duration::from_secs(90)).await;
    assert_eq!(
        per_host(&got).values().copied().collect::<Vec<_>>(),
        vec![3, 3]
    );
    client
        .update(gateway_request(&namespace, "wide", 3))
        .await
        .expect("scale down");
    let got = wait_all_running(&client, &namespace, "wide", 3, Duration::from_secs(90)).await;
    let ids: Vec<&str> = got.instances.iter().map(|i| i.id.as_str()).collect();
    let key = krane_core::GatewayKey::new(&namespace, "wide");
    assert_eq!(
        ids,
        (0..3).map(|r| key.container_name(r)).collect::<Vec<_>>()
    );
    eventually(
        "surplus containers removed",
        Duration::from_secs(30),
        || async {
            let total = engine_container_count(&one, &namespace).await
                + engine_container_count(&two, &namespace).await;
            (total == 3).then_some(())
        },
    )
    .await;

    // Rolling update: new limits replace every container, never two replicas down at once.
    let mut update = gateway_request(&namespace, "wide", 3);
    update.cpu_millicores = 150;
    client.update(update).await.expect("rolling update");
    let started = Instant::now();
    let mut worst_running = 3;
    loop {
        let got = client.get(&namespace, "wide").await.expect("get");
        let running = got
            .instances
            .iter()
            .filter(|i| i.status == GatewayStatus::Running as i32)
            .count();
        worst_running = worst_running.min(running);
        if running == 3 {
            let updated = got.instances.iter().all(|i| {
                let engine = if i.host_id == h1 { &one } else { &two };
                nano_cpus(engine, &i.id) == "150000000"
            });
            if updated {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rollout stuck: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst_running >= 2,
        "a rolling update had {worst_running} of 3 running"
    );

    // Host loss: h2's worker stops heartbeating and its engine goes down.
    w2.stop().await;
    two.stop();
    let lost_at = Instant::now();
    // Within the host timeout plus 30 s, every replica runs on the remaining host.
    eventually(
        "replicas rescheduled onto h1",
        Duration::from_secs(4 + 30),
        || async {
            let got = client.get(&namespace, "wide").await.ok()?;
            let moved = got.instances.len() == 3
                && got
                    .instances
                    .iter()
                    .all(|i| i.host_id == h1 && i.status == GatewayStatus::Running as i32);
            moved.then_some(())
        },
    )
    .await;
    eprintln!("rescheduled after host loss in {:?}", lost_at.elapsed());

    // h2 returns: its stale containers (restarted by the engine) are removed.
    two.restart();
    let _w2 = HostWorker::start(
        &krane,
        &h2,
        &two.docker_host(),
        &two.advertise_host(),
        &flags,
    )
    .await;
    eventually(
        "stale containers on the returning host removed",
        Duration::from_secs(60),
        || async { (engine_container_count(&two, &namespace).await == 0).then_some(()) },
    )
    .await;
    let got = client.get(&namespace, "wide").await.expect("get");
    assert_eq!(got.instances.len(), 3, "no replica counted twice: {got:?}");

    // Delete reaches every host.
    client
        .create(Some(gateway_request(&namespace, "spread", 2)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "spread", 2, Duration::from_secs(90)).await;
    client.delete(&namespace, "wide").await.expect("delete");
    client.delete(&namespace, "spread").await.expect("delete");
    for id in ["wide", "spread"] {
        eventually(
            "not_found after delete",
            Duration::from_secs(60),
            || async {
                let error = client.get(&namespace, id).await.err()?;
                (error.code == NOT_FOUND).then_some(())
            },
        )
        .await;
    }
    assert_eq!(engine_container_count(&one, &namespace).await, 0);
    assert_eq!(engine_container_count(&two, &namespace).await, 0);
}
