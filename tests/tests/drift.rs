//! Self-healing: containers changed behind krane's back are put right — removed ones recreated,
//! stopped ones started, ones of no live gateway removed — while containers without krane's
//! labels (or owned by another host id) are never touched. Real nats-server, real Docker.

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::gateway_request;
use krane_tests::{Krane, Protocol, docker, eventually, unique_namespace, wait_all_running};
use std::process::Command;
use std::time::Duration;

/// The bound for the KV to show the truth again after drift.
const DRIFT_REPAIR: Duration = Duration::from_secs(10);

fn docker_cli(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_behind_our_back_is_recreated() {
    let namespace = unique_namespace("removed");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "heal", 2)))
        .await
        .expect("create");
    let before = wait_all_running(&client, &namespace, "heal", 2, Duration::from_secs(60))
        .await
        .instances
        .into_iter()
        .map(|i| i.address)
        .collect::<Vec<_>>();
    let victim = krane_core::GatewayKey::new(&namespace, "heal").container_name(0);
    docker_cli(&["rm", "-f", &victim]);

    // Within the bound, the replica runs again and the KV says where.
    eventually("replica 0 recreated and reported", DRIFT_REPAIR, || async {
        let got = client.get(&namespace, "heal").await.ok()?;
        let first = got.instances.first()?;
        let recreated = first.status == GatewayStatus::Running as i32
            && first.address != before[0]
            && docker::gateway_containers(&namespace, "heal").await.len() == 2;
        recreated.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_is_started_again() {
    let namespace = unique_namespace("stopped");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "restart", 1)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "restart", 1, Duration::from_secs(60)).await;
    let victim = krane_core::GatewayKey::new(&namespace, "restart").container_name(0);
    docker_cli(&["stop", "--time", "1", &victim]);
    eventually("stopped replica running again", DRIFT_REPAIR, || async {
        let state = docker_cli(&["inspect", "--format", "{{.State.Running}}", &victim]);
        let got = client.get(&namespace, "restart").await.ok()?;
        (state == "true" && got.instances[0].status == GatewayStatus::Running as i32).then_some(())
    })
    .await;
    assert_eq!(
        docker::gateway_containers(&namespace, "restart")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_removed_and_foreign_containers_never_touched() {
    let namespace = unique_namespace("orphans");
    let mut krane = Krane::start(&namespace).await;
    // A faster resync than the default, so the test need not wait 30 s.
    krane.shutdown_worker().await;
    krane.start_worker(&["--resync-interval", "1s"]).await;
    let host_label = format!("krane.host.id={}", krane.host_id());
    let ns_label = format!("unkey.namespace={namespace}");
    let run = |name: &str, labels: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.push(krane_tests::TEST_IMAGE);
        docker_cli(&args)
    };
    // Ours (all krane labels, this host) but no gateway wants it: an orphan.
    let orphan = format!("{namespace}-orphan");
    run(
        &orphan,
        &[
            "unkey.managed.by=krane",
            &host_label,
            &ns_label,
            "unkey.gateway.id=nobody",
            "unkey.replica=0",
        ],
    );
    // Not managed by krane, though it carries a namespace label: never touched.
    let foreign = format!("{namespace}-foreign");
    run(&foreign, &[&ns_label, "unkey.gateway.id=nobody"]);
    // Managed by krane, but another host's: not this worker's business.
    let other_host = format!("{namespace}-otherhost");
    run(
        &other_host,
        &[
            "unkey.managed.by=krane",
            "krane.host.id=some-other-host",
            &ns_label,
            "unkey.gateway.id=elsewhere",
            "unkey.replica=0",
        ],
    );

    eventually("orphan removed", Duration::from_secs(15), || async {
        let listed = docker_cli(&["ps", "-aq", "--filter", &format!("name=^{orphan}$")]);
        listed.is_empty().then_some(())
    })
    .await;
    // A few more resyncs pass; the others are still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in [&foreign, &other_host] {
        let listed = docker_cli(&["ps", "-aq", "--filter", &format!("name=^{name}$")]);
        assert!(!listed.is_empty(), "{name} was touched");
    }
}
