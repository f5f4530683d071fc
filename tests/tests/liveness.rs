//! Host liveness that cannot empty the fleet. Three hosts (one `krane-worker` process each, on
//! the in-memory runtime) run three gateways of two replicas.
//!
//! 1. nats-server is stopped for longer than the host timeout and started again on the same
//!    store: every heartbeat expired meanwhile, but a broker outage is not the loss of hosts.
//!    (Which missing hosts count as lost right after a reconnect is unit-tested in
//!    `krane_worker`'s `hosts::liveness`.)
//! 2. Two of the three workers go quiet (SIGSTOP) for two host timeouts: more than half of the
//!    hosts look lost at once, so nothing moves, and the worker left says so.
//!
//! After each, every replica still runs where it ran.

use krane_core::names::GatewayKey;
use krane_tests::client::gateway_request;
use krane_tests::process::ServiceProcess;
use krane_tests::{Krane, Protocol, eventually, unique_namespace, wait_all_running};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::Duration;

const GATEWAYS: [&str; 3] = ["l0", "l1", "l2"];

fn worker(krane: &Krane, index: usize) -> ServiceProcess {
    let host = format!("{}-h{index}", krane.namespace);
    let args: Vec<String> = [
        "--nats-url",
        &krane.nats.url(),
        "--host-id",
        &host,
        "--advertise-host",
        "127.0.0.1",
        "--host-timeout",
        "5s",
        "--resync-interval",
        "2s",
        "--in-memory-runtime",
        krane_tests::TEST_IMAGE,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let log = std::env::temp_dir().join(format!("{host}.log"));
    ServiceProcess::spawn("krane-worker", args, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_a_broker_outage_nor_most_hosts_going_quiet_moves_replicas() {
    let namespace = unique_namespace("liveness");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let workers: Vec<ServiceProcess> = (0..3).map(|index| worker(&krane, index)).collect();
    eventually("three hosts live", Duration::from_secs(15), || async {
        (krane.store.live_hosts().await.ok()?.len() == 3).then_some(())
    })
    .await;
    let client = krane.client(Protocol::ConnectJson);
    for gateway in GATEWAYS {
        let request = gateway_request(&namespace, gateway, 2);
        client.create(Some(request)).await.expect("create");
    }
    for gateway in GATEWAYS {
        wait_all_running(&client, &namespace, gateway, 2, Duration::from_secs(30)).await;
    }
    let before = placements(&krane, &namespace).await;
    let spread: usize = before
        .values()
        .flatten()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(spread, 3, "replicas on every host: {before:?}");

    // 1. A broker outage longer than the host timeout.
    krane.nats.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    krane.nats.restart().await;
    settle_and_compare(&krane, &workers, &before).await;

    // 2. Two of three hosts quiet for two host timeouts.
    workers[1].signal(Signal::SIGSTOP);
    workers[2].signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(10)).await;
    workers[1].signal(Signal::SIGCONT);
    workers[2].signal(Signal::SIGCONT);
    settle_and_compare(&krane, &workers, &before).await;
    assert!(
        workers[0]
            .log_tail(400)
            .contains("more than half of the known hosts"),
        "the disruption was reported"
    );
}

/// Waits out a couple of scans, then: every gateway RUNNING, no replica moved.
async fn settle_and_compare(
    krane: &Krane,
    workers: &[ServiceProcess],
    before: &BTreeMap<&'static str, Vec<String>>,
) {
    tokio::time::sleep(Duration::from_secs(8)).await;
    let client = krane.client(Protocol::ConnectJson);
    for gateway in GATEWAYS {
        wait_all_running(
            &client,
            &krane.namespace,
            gateway,
            2,
            Duration::from_secs(30),
        )
        .await;
    }
    assert_eq!(
        &placements(krane, &krane.namespace).await,
        before,
        "no replica moved\n{}",
        workers[0].log_tail(20)
    );
}

/// Each gateway's placement, as its latest command says.
async fn placements(krane: &Krane, namespace: &str) -> BTreeMap<&'static str, Vec<String>> {
    let mut placements = BTreeMap::new();
    for gateway in GATEWAYS {
        let key = GatewayKey::new(namespace, gateway);
        let latest = krane.store.latest_command(&key).await.expect("read");
        let placement = latest
            .map(|latest| latest.command.placement().to_vec())
            .unwrap_or_default();
        placements.insert(gateway, placement);
    }
    placements
}
