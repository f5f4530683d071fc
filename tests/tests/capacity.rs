//! Placement by resources, for real: two extra engines, each with a worker announcing a small
//! capacity (1000 millicores, 256 MiB). A gateway's replicas go only where their limits fit,
//! spread over both hosts; the one that fits nowhere stays PENDING saying what it lacks;
//! ListHosts shows what is reserved and free on each host (over every protocol); a scale-down
//! frees room that a waiting gateway then takes, and deleting frees everything.

use krane_proto::krane::v1::{
    GatewayInstance, GatewayRequest, GatewayStatus, GetGatewayResponse, HostStatus,
};
use krane_tests::client::{NOT_FOUND, gateway_request};
use krane_tests::engines::ExtraEngine;
use krane_tests::workers::HostWorker;
use krane_tests::{Krane, Protocol, TestClient, eventually, unique_namespace};
use std::collections::BTreeMap;
use std::time::Duration;

const HOST_TIMEOUT: &str = "3s";
const WITHIN: Duration = Duration::from_secs(90);

/// A gateway of `replicas` replicas, each limited to `millicores` and `mib`.
fn sized(namespace: &str, id: &str, replicas: u32, millicores: u32, mib: u64) -> GatewayRequest {
    GatewayRequest {
        cpu_millicores: millicores,
        memory_size_mib: mib,
        ..gateway_request(namespace, id, replicas)
    }
}

fn with_status(got: &GetGatewayResponse, status: GatewayStatus) -> Vec<&GatewayInstance> {
    got.instances
        .iter()
        .filter(|instance| instance.status == status as i32)
        .collect()
}

/// The running instances per host.
fn running_per_host(got: &GetGatewayResponse) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for instance in with_status(got, GatewayStatus::Running) {
        *counts.entry(instance.host_id.clone()).or_default() += 1;
    }
    counts
}

/// What ListHosts says of a host: reserved and free as (millicores, MiB), and its containers.
type Usage = ((u64, u64), (u64, u64), u32);

fn usage(host: &HostStatus) -> Usage {
    let pair = |resources: Option<&krane_proto::krane::v1::HostResources>| {
        resources.map_or((u64::MAX, u64::MAX), |r| (r.cpu_millicores, r.memory_mib))
    };
    (
        pair(host.reserved.as_ref()),
        pair(host.free.as_ref()),
        host.containers,
    )
}

/// Waits until ListHosts shows `expected` (reserved, free, containers) per host id.
async fn hosts_show(
    client: &TestClient,
    what: &str,
    expected: &BTreeMap<String, Usage>,
) -> Vec<HostStatus> {
    eventually(what, Duration::from_secs(30), || async {
        let hosts = client.hosts().await.ok()?.hosts;
        let shown: BTreeMap<String, _> = hosts
            .iter()
            .map(|host| (host.host_id.clone(), usage(host)))
            .collect();
        (&shown == expected).then_some(hosts)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_go_only_where_they_fit_and_the_rest_wait_saying_what_is_missing() {
    let namespace = unique_namespace("capacity");
    // Engine indices 31 and 32 belong to this test (see krane_tests::engines).
    let one = ExtraEngine::start("cap", 31);
    let two = ExtraEngine::start("cap", 32);
    let krane = Krane::start_without_worker(&namespace).await;
    let flags = [
        "--host-timeout",
        HOST_TIMEOUT,
        "--resync-interval",
        "2s",
        "--cpu-millicores",
        "1000",
        "--memory-mib",
        "256",
    ];
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
    let _w2 = HostWorker::start(
        &krane,
        &h2,
        &two.docker_host(),
        &two.advertise_host(),
        &flags,
    )
    .await;
    let client = krane.client(Protocol::ConnectJson);
    let empty = BTreeMap::from([
        (h1.clone(), ((0, 0), (1000, 256), 0)),
        (h2.clone(), ((0, 0), (1000, 256), 0)),
    ]);
    let hosts = hosts_show(&client, "both hosts announce their capacity", &empty).await;
    assert!(hosts.iter().all(|host| host.live && host.engine_healthy));
    // The workers' views of the hosts follow the same heartbeats a moment later.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 5 replicas of 400m / 100 MiB: two fit on each host (800m, 200 MiB), the fifth nowhere.
    client
        .create(Some(sized(&namespace, "wide", 5, 400, 100)))
        .await
        .expect("create");
    let got = eventually("4 replicas running, 1 waiting", WITHIN, || async {
        let got = client.get(&namespace, "wide").await.ok()?;
        let settled = with_status(&got, GatewayStatus::Running).len() == 4
            && with_status(&got, GatewayStatus::Pending).len() == 1;
        settled.then_some(got)
    })
    .await;
    assert_eq!(
        running_per_host(&got),
        BTreeMap::from([(h1.clone(), 2), (h2.clone(), 2)]),
        "spread first: {got:?}"
    );
    let waiting = with_status(&got, GatewayStatus::Pending)[0];
    assert_eq!(waiting.host_id, "", "placed nowhere: {waiting:?}");
    assert!(
        waiting
            .reason
            .starts_with("no host has 400 millicores and 100 MiB free (most free: ")
            && waiting.reason.ends_with(" with 200 millicores, 56 MiB)"),
        "{waiting:?}"
    );

    // Every protocol's ListHosts shows the reservations and what is left.
    let full = BTreeMap::from([
        (h1.clone(), ((800, 200), (200, 56), 2)),
        (h2.clone(), ((800, 200), (200, 56), 2)),
    ]);
    for protocol in Protocol::ALL {
        let hosts = hosts_show(
            &krane.client(protocol),
            "two replicas reserved on each",
            &full,
        )
        .await;
        for (host, engine) in hosts.iter().zip([&one, &two]) {
            assert!(host.live && host.engine_healthy, "{host:?}");
            assert_eq!(host.advertise_host, engine.advertise_host(), "{host:?}");
            assert!(!host.last_heard.is_empty(), "{host:?}");
            let capacity = host.capacity.expect("announced");
            assert_eq!((capacity.cpu_millicores, capacity.memory_mib), (1000, 256));
        }
    }

    // Another gateway of 300m / 64 MiB fits nowhere either, and says so.
    client
        .create(Some(sized(&namespace, "late", 1, 300, 64)))
        .await
        .expect("create");
    let late = eventually("the late gateway waits", WITHIN, || async {
        let got = client.get(&namespace, "late").await.ok()?;
        let reason = &got.instances.first()?.reason;
        reason
            .starts_with("no host has 300 millicores")
            .then_some(got)
    })
    .await;
    assert_eq!(
        late.instances[0].status,
        GatewayStatus::Pending as i32,
        "{late:?}"
    );

    // Scaling down to 3 frees replica 3's host of 400m / 100 MiB: the late gateway goes there.
    let freed = got
        .instances
        .iter()
        .find(|instance| {
            instance.id == krane_core::GatewayKey::new(&namespace, "wide").container_name(3)
        })
        .map(|instance| instance.host_id.clone())
        .expect("replica 3");
    let other = if freed == h1 { h2.clone() } else { h1.clone() };
    client
        .update(sized(&namespace, "wide", 3, 400, 100))
        .await
        .expect("scale down");
    let late = eventually("the late gateway placed and running", WITHIN, || async {
        let got = client.get(&namespace, "late").await.ok()?;
        (with_status(&got, GatewayStatus::Running).len() == 1).then_some(got)
    })
    .await;
    assert_eq!(late.instances[0].host_id, freed, "{late:?}");
    let got = eventually("3 replicas of wide running", WITHIN, || async {
        let got = client.get(&namespace, "wide").await.ok()?;
        let settled =
            got.instances.len() == 3 && with_status(&got, GatewayStatus::Running).len() == 3;
        settled.then_some(got)
    })
    .await;
    assert_eq!(
        running_per_host(&got),
        BTreeMap::from([(freed.clone(), 1), (other.clone(), 2)])
    );
    let shared = BTreeMap::from([
        (freed.clone(), ((700, 164), (300, 92), 2)),
        (other.clone(), ((800, 200), (200, 56), 2)),
    ]);
    hosts_show(&client, "the freed room taken by the late gateway", &shared).await;

    // Deleting both frees everything.
    client.delete(&namespace, "wide").await.expect("delete");
    client.delete(&namespace, "late").await.expect("delete");
    for id in ["wide", "late"] {
        eventually("not_found after delete", WITHIN, || async {
            let error = client.get(&namespace, id).await.err()?;
            (error.code == NOT_FOUND).then_some(())
        })
        .await;
    }
    hosts_show(&client, "nothing reserved after the deletes", &empty).await;
}
