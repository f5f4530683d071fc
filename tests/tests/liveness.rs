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
//!
//! 3. Then one of the three workers really dies (SIGKILL): its host is judged lost and only
//!    its replicas move, to the two hosts left, all RUNNING again within the host timeout,
//!    the confirmation interval and a few seconds.
//!
//! Every worker keeps its view of the hosts and the records with watches; the test also
//! shows that three workers started together each see all three hosts (a worker that missed
//! a live host would move its replicas in part 3 or judge a disruption in part 1).

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
async fn neither_a_broker_outage_nor_most_hosts_going_quiet_moves_replicas_but_a_dead_host_loses_its_own()
 {
    let namespace = unique_namespace("liveness");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let mut workers: Vec<ServiceProcess> = (0..3).map(|index| worker(&krane, index)).collect();
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
    // The host holding the fewest replicas watches; the other two go quiet in part 2, so
    // moving their replicas would show.
    let mut per_host = [0usize; 3];
    for host in before.values().flatten() {
        if let Some(index) = host
            .rsplit("-h")
            .next()
            .and_then(|i| i.parse::<usize>().ok())
        {
            per_host[index] += 1;
        }
    }
    let watcher = (0..3).min_by_key(|index| per_host[*index]).unwrap_or(0);
    let quiet: Vec<usize> = (0..3).filter(|index| *index != watcher).collect();

    // 1. A broker outage longer than the host timeout.
    krane.nats.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    krane.nats.restart().await;
    settle_and_compare(&krane, &workers, &before).await;

    // 2. Two of three hosts quiet for two host timeouts.
    for index in &quiet {
        workers[*index].signal(Signal::SIGSTOP);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    for index in &quiet {
        workers[*index].signal(Signal::SIGCONT);
    }
    settle_and_compare(&krane, &workers, &before).await;
    assert!(
        workers[watcher]
            .log_tail(400)
            .contains("more than half of the known hosts"),
        "the disruption was reported"
    );

    // 3. The host with the most replicas dies for real; only its replicas move.
    let victim = (0..3).max_by_key(|index| per_host[*index]).unwrap_or(0);
    let victim_host = format!("{namespace}-h{victim}");
    workers[victim].kill();
    let killed_at = std::time::Instant::now();
    eventually(
        "the dead host's replicas placed elsewhere",
        Duration::from_secs(40),
        || async {
            let now = placements(&krane, &namespace).await;
            now.values()
                .flatten()
                .all(|host| *host != victim_host)
                .then_some(())
        },
    )
    .await;
    for gateway in GATEWAYS {
        wait_all_running(&client, &namespace, gateway, 2, Duration::from_secs(30)).await;
    }
    let moved_after = killed_at.elapsed();
    let after = placements(&krane, &namespace).await;
    for (gateway, hosts) in &after {
        for (replica, host) in hosts.iter().enumerate() {
            let was = &before[gateway][replica];
            if *was != victim_host {
                assert_eq!(
                    host, was,
                    "{gateway} replica {replica} moved off a live host"
                );
            }
        }
    }
    // Host timeout 5 s, one heartbeat interval to confirm, a scan every 2 s, the start.
    assert!(
        moved_after < Duration::from_secs(20),
        "failover took {moved_after:?}"
    );
    eprintln!("failover after SIGKILL of {victim_host}: {moved_after:?}");
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
