//! `time-to-running`: from CreateGateway to every replica RUNNING in GetGateway, on real Docker
//! with the real worker, vs the same containers created and started with bollard concurrently
//! (the physical limit) and one after another (the original), and vs `docker service create`
//! in Swarm mode when the engine can enter it.

use crate::env::{self, Stack};
use crate::stats::{Table, cell, median, ms};
use krane_proto::krane::v1::{
    CreateGatewayRequest, DeleteGatewayRequest, GatewayStatus, GetGatewayRequest,
};
use krane_worker::runtime::{ContainerRuntime, ReplicaContainer};
use serde_json::json;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replica counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,3,10")]
    replicas: Vec<u32>,
    /// Repetitions; tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the Swarm comparison.
    #[arg(long)]
    no_swarm: bool,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let namespace = format!("kbench-ttr-{}", std::process::id());
    let result = measure_all(&args, &namespace).await;
    env::remove_namespace_containers(&namespace);
    result
}

async fn measure_all(args: &Args, namespace: &str) -> anyhow::Result<serde_json::Value> {
    let docker = Arc::new(env::docker_runtime().await?);
    docker
        .ensure_image(env::TEST_IMAGE, &tokio::sync::watch::channel(None).0)
        .await?;
    let stack = Stack::start(namespace, docker.clone()).await?;
    let client = stack.api.client()?;

    let swarm = if args.no_swarm {
        Err("skipped (--no-swarm)".to_string())
    } else {
        Swarm::join()
    };
    let mut rows = Vec::new();
    let mut table = Table::new(
        format!(
            "Time to running on real Docker (ms), medians of {} runs",
            args.runs
        ),
        &[
            "replicas",
            "krane",
            "raw concurrent",
            "sequential",
            "swarm",
            "krane/raw",
            "seq/krane",
        ],
    );
    for &replicas in &args.replicas {
        let (mut ours, mut raw, mut sequential, mut swarm_ms) = (vec![], vec![], vec![], vec![]);
        for run in 0..args.runs {
            // krane: Create, then poll Get until every replica is RUNNING.
            let gateway_id = format!("k{replicas}r{run}");
            let request = CreateGatewayRequest {
                gateway: Some(env::gateway_request(namespace, &gateway_id, replicas)),
            };
            let get = GetGatewayRequest {
                namespace: namespace.into(),
                gateway_id: gateway_id.clone(),
            };
            let started = Instant::now();
            client
                .create_gateway(&request)
                .await
                .map_err(|error| anyhow::anyhow!("CreateGateway: {error}"))?;
            loop {
                let response = client
                    .get_gateway(&get)
                    .await
                    .map_err(|error| anyhow::anyhow!("GetGateway: {error}"))?
                    .into_inner();
                let running = response
                    .instances
                    .iter()
                    .filter(|i| i.status == GatewayStatus::Running as i32)
                    .count();
                if running == replicas as usize {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(120),
                    "{gateway_id} not running within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ours.push(ms(started.elapsed()));
            let delete = DeleteGatewayRequest {
                namespace: namespace.into(),
                gateway_id: gateway_id.clone(),
            };
            client
                .delete_gateway(&delete)
                .await
                .map_err(|error| anyhow::anyhow!("DeleteGateway: {error}"))?;
            while client.get_gateway(&get).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            // The same containers straight through bollard.
            let containers = replica_containers(namespace, &format!("c{replicas}r{run}"), replicas);
            let started = Instant::now();
            futures::future::try_join_all(containers.iter().map(|c| docker.create_and_start(c)))
                .await?;
            raw.push(ms(started.elapsed()));
            remove(&docker, &containers).await?;

            let containers = replica_containers(namespace, &format!("s{replicas}r{run}"), replicas);
            let started = Instant::now();
            for container in &containers {
                docker.create_and_start(container).await?;
            }
            sequential.push(ms(started.elapsed()));
            remove(&docker, &containers).await?;

            if let Ok(swarm) = &swarm {
                swarm_ms.push(swarm.service_time(&format!("kbench{replicas}r{run}"), replicas)?);
            }
        }
        let (o, r, s) = (
            median(ours.clone()),
            median(raw.clone()),
            median(sequential.clone()),
        );
        let w = (!swarm_ms.is_empty()).then(|| median(swarm_ms.clone()));
        table.row(vec![
            replicas.to_string(),
            cell(o),
            cell(r),
            cell(s),
            w.map_or_else(|| "-".into(), cell),
            format!("{:.2}", o / r),
            format!("{:.2}", s / o),
        ]);
        rows.push(json!({
            "replicas": replicas,
            "krane_ms": o, "raw_concurrent_ms": r, "sequential_ms": s, "swarm_ms": w,
            "runs": { "krane": ours, "raw_concurrent": raw, "sequential": sequential, "swarm": swarm_ms },
        }));
    }
    stack.stop().await;
    let swarm_note = match swarm {
        Ok(swarm) => {
            drop(swarm);
            "measured (swarm initialised for the run and left afterwards)".to_string()
        }
        Err(reason) => reason,
    };
    table.print();
    println!("  swarm: {swarm_note}");
    Ok(json!({
        "benchmark": "time-to-running",
        "runs": args.runs,
        "krane": "Create via the API, in-process worker on the local engine, Get polled every 2 ms",
        "swarm": swarm_note,
        "rows": rows,
    }))
}

fn replica_containers(namespace: &str, gateway_id: &str, replicas: u32) -> Vec<ReplicaContainer> {
    let spec = krane_api::convert::spec_from_request(Some(&env::gateway_request(
        namespace, gateway_id, replicas,
    )))
    .expect("valid request");
    (0..replicas)
        .map(|replica| ReplicaContainer::for_replica(&spec, replica, "bench-raw"))
        .collect()
}

async fn remove(
    docker: &krane_worker::runtime::docker::DockerRuntime,
    containers: &[ReplicaContainer],
) -> anyhow::Result<()> {
    futures::future::try_join_all(containers.iter().map(|c| docker.remove(&c.name))).await?;
    Ok(())
}

/// A single-node swarm this benchmark created (and leaves again).
struct Swarm;

impl Swarm {
    fn join() -> Result<Self, String> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        if state.trim() != "inactive" {
            return Err(format!(
                "skipped: engine swarm state is {:?}, not ours to touch",
                state.trim()
            ));
        }
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])
            .map_err(|error| format!("skipped: docker swarm init failed: {error}"))?;
        Ok(Self)
    }

    /// `docker service create --replicas N`, timed until `docker service ps` shows N Running.
    fn service_time(&self, name: &str, replicas: u32) -> anyhow::Result<f64> {
        let started = Instant::now();
        docker(&[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--no-resolve-image",
            "--name",
            name,
            "--replicas",
            &replicas.to_string(),
            env::TEST_IMAGE,
        ])
        .map_err(anyhow::Error::msg)?;
        loop {
            let states = docker(&[
                "service",
                "ps",
                name,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ])
            .map_err(anyhow::Error::msg)?;
            let running = states
                .lines()
                .filter(|line| line.starts_with("Running"))
                .count();
            if running == replicas as usize {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "service {name} not running within 120 s: {states}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = ms(started.elapsed());
        docker(&["service", "rm", name]).map_err(anyhow::Error::msg)?;
        // Wait for its containers to go before the next measurement.
        let label = format!("label=com.docker.swarm.service.name={name}");
        while !docker(&["ps", "-aq", "--filter", &label])
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(elapsed)
    }
}

impl Drop for Swarm {
    /// Leaves the swarm whatever happened, so the engine is as the benchmark found it.
    fn drop(&mut self) {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    let output = Process::new("docker")
        .args(args)
        .output()
        .map_err(|error| format!("docker {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}
