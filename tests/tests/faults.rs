//! Fault injection: the worker *process* is killed with SIGKILL at random moments while
//! gateways are created, scaled and deleted, then restarted; after every trial the engine and
//! GetGateway must equal the last accepted intent. Reports trials, duplicate containers,
//! orphaned containers, lost commands and the worst time to converge; all counts must be 0.
//!
//! `KRANE_FAULT_TRIALS` sets the number of trials (default 12, which `scripts/test.sh` runs;
//! the full run is `KRANE_FAULT_TRIALS=50 cargo test -p krane-tests --test faults`), and
//! `KRANE_FAULT_SEED` replays a run (the seed is printed).

use krane_core::GatewayKey;
use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::{NOT_FOUND, gateway_request};
use krane_tests::{Krane, Protocol, TestClient, docker, unique_namespace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const GATEWAYS: [&str; 3] = ["f0", "f1", "f2"];
const CONVERGE: Duration = Duration::from_secs(90);

#[derive(Debug, Default)]
struct Report {
    trials: u32,
    duplicate_containers: usize,
    orphaned_containers: usize,
    lost_commands: usize,
    worst_convergence: Duration,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Containers that should not exist given `desired` replicas per gateway: (duplicates, orphans).
async fn audit(namespace: &str, desired: &BTreeMap<&str, u32>) -> (usize, usize) {
    let (mut duplicates, mut orphans) = (0, 0);
    for gateway in GATEWAYS {
        let wanted = desired.get(gateway).copied().unwrap_or(0);
        let key = GatewayKey::new(namespace, gateway);
        let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
        for container in docker::gateway_containers(namespace, gateway).await {
            let labels = container.labels.unwrap_or_default();
            let replica = labels.get("unkey.replica").cloned().unwrap_or_default();
            let index: Option<u32> = replica.parse().ok();
            let name = container
                .names
                .and_then(|names| names.first().cloned())
                .unwrap_or_default();
            let expected_name = index.map(|i| format!("/{}", key.container_name(i)));
            if index.is_none_or(|i| i >= wanted) || expected_name.as_deref() != Some(&name) {
                orphans += 1;
            } else {
                *per_replica.entry(replica).or_default() += 1;
            }
        }
        duplicates += per_replica.values().map(|count| count - 1).sum::<usize>();
    }
    (duplicates, orphans)
}

/// True when every gateway's containers and Get answer equal `desired`.
async fn converged(client: &TestClient, namespace: &str, desired: &BTreeMap<&str, u32>) -> bool {
    for gateway in GATEWAYS {
        let wanted = desired.get(gateway).copied().unwrap_or(0);
        let containers = docker::gateway_containers(namespace, gateway).await;
        let running = containers
            .iter()
            .filter(|c| c.state.map(|s| s.to_string()) == Some("running".into()))
            .count();
        if containers.len() != wanted as usize || running != wanted as usize {
            return false;
        }
        match client.get(namespace, gateway).await {
            Err(error) if wanted == 0 && error.code == NOT_FOUND => {}
            Ok(got) if wanted > 0 => {
                let all_running = got.instances.len() == wanted as usize
                    && got
                        .instances
                        .iter()
                        .all(|i| i.status == GatewayStatus::Running as i32);
                if !all_running {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_converge_without_duplicates_orphans_or_lost_commands() {
    let trials = env_number("KRANE_FAULT_TRIALS", 12);
    let seed = env_number("KRANE_FAULT_SEED", rand::random());
    eprintln!("fault injection: {trials} trials, KRANE_FAULT_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let namespace = unique_namespace("faults");
    let krane = Krane::start_without_worker(&namespace).await;
    let mut worker = krane.worker_process(&["--ack-wait", "3s", "--resync-interval", "5s"]);
    let client = krane.client(Protocol::ConnectJson);
    let mut desired: BTreeMap<&str, u32> = BTreeMap::new();
    let mut report = Report::default();

    for trial in 0..trials {
        let commands = rng.random_range(2..=5);
        let kill_at = rng.random_range(0..=commands);
        for command in 0..commands {
            if command == kill_at {
                worker.kill();
            }
            let gateway = GATEWAYS[rng.random_range(0..GATEWAYS.len())];
            if rng.random_bool(0.3) {
                client
                    .delete(&namespace, gateway)
                    .await
                    .expect("delete accepted");
                desired.insert(gateway, 0);
            } else {
                let replicas = rng.random_range(1..=3);
                let request = gateway_request(&namespace, gateway, replicas);
                client.create(Some(request)).await.expect("create accepted");
                desired.insert(gateway, replicas);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..250))).await;
        }
        if kill_at == commands {
            // Kill while the worker is busy with the burst.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
            worker.kill();
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        worker.start();

        let started = Instant::now();
        let mut settled = false;
        while started.elapsed() < CONVERGE {
            if converged(&client, &namespace, &desired).await {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let took = started.elapsed();
        report.worst_convergence = report.worst_convergence.max(took);
        let (duplicates, orphans) = audit(&namespace, &desired).await;
        report.duplicate_containers += duplicates;
        report.orphaned_containers += orphans;
        if !settled {
            report.lost_commands += 1;
            eprintln!(
                "trial {trial}: not converged to {desired:?} within {CONVERGE:?}\n{}",
                worker.log_tail(40)
            );
        }
        report.trials += 1;
    }
    eprintln!("fault injection report (seed {seed}): {report:#?}");
    assert_eq!(report.duplicate_containers, 0, "{report:?}");
    assert_eq!(report.orphaned_containers, 0, "{report:?}");
    assert_eq!(report.lost_commands, 0, "{report:?}");
}
