//! `pipeline`: gateways per second from CreateGateway to RUNNING in KV, with 1, 2 and 4
//! in-process workers (distinct host ids), each on an in-memory runtime of its own (no Docker),
//! as each host has its own engine: container names are only unique per engine. Placement
//! spreads the replicas across the hosts.

use crate::env::{self, Api, Broker, Nats};
use crate::stats::{Table, cell, median};
use krane_worker::runtime::ContainerRuntime;
use krane_worker::runtime::fake::FakeRuntime;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Worker counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Gateways created per run.
    #[arg(long, default_value_t = 1000)]
    gateways: usize,
    /// Replicas per gateway.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Concurrent CreateGateway callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Repetitions (each on a fresh nats-server); tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// One nats-server, or a 3-node cluster with three replicas of everything.
    #[arg(long, value_enum, default_value = "single")]
    broker: Broker,
}

#[derive(Debug, serde::Serialize)]
struct Run {
    /// Seconds from the first Create to the last one answered.
    accept_seconds: f64,
    /// Seconds from the first Create to every gateway RUNNING in KV.
    running_seconds: f64,
    gateways_per_second: f64,
    /// Replicas each host runs at the end.
    containers_per_host: Vec<usize>,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let mut rows = Vec::new();
    let mut table = Table::new(
        format!(
            "Create → RUNNING in KV, {} gateways × {} replicas, {} callers, in-memory runtime, \
             NATS {:?}; medians of {} runs",
            args.gateways, args.replicas, args.callers, args.broker, args.runs
        ),
        &[
            "workers",
            "gateways/s",
            "accepted/s",
            "replicas per host (last run)",
        ],
    );
    for &workers in &args.workers {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            runs.push(measure(&args, workers).await?);
        }
        let per_second = median(runs.iter().map(|run| run.gateways_per_second));
        let accepted = median(
            runs.iter()
                .map(|run| args.gateways as f64 / run.accept_seconds),
        );
        table.row(vec![
            workers.to_string(),
            cell(per_second),
            cell(accepted),
            format!("{:?}", runs.last().map(|run| &run.containers_per_host)),
        ]);
        rows.push(json!({
            "workers": workers,
            "gateways_per_second": per_second,
            "accepted_per_second": accepted,
            "runs": runs,
        }));
    }
    table.print();
    Ok(json!({
        "benchmark": "pipeline",
        "gateways": args.gateways,
        "replicas": args.replicas,
        "callers": args.callers,
        "broker": args.broker,
        "runtime": "FakeRuntime (in-memory), one per in-process worker, distinct host ids",
        "rows": rows,
    }))
}

async fn measure(args: &Args, workers: usize) -> anyhow::Result<Run> {
    let nats = Nats::start_on(args.broker).await?;
    let log = nats.log().await?;
    // The API and every worker on a NATS connection of its own, as separate processes are.
    let api = Api::start(nats.log().await?).await?;
    let stop = CancellationToken::new();
    let hosts: Vec<String> = (0..workers).map(|i| format!("host{i}")).collect();
    let runtimes: Vec<_> = hosts
        .iter()
        .map(|_| Arc::new(FakeRuntime::with_images(&[env::TEST_IMAGE])))
        .collect();
    let mut tasks = Vec::new();
    for (host, runtime) in hosts.iter().zip(&runtimes) {
        let worker_log = nats.log().await?;
        tasks.push(env::start_worker(
            &nats,
            host,
            worker_log,
            runtime.clone(),
            stop.clone(),
        ));
    }
    env::wait_for_hosts(&log, workers).await?;
    let running = tokio::spawn(env::watch_running(log.clone(), args.gateways));
    let client = api.client()?;
    let started = Instant::now();
    env::create_many(&client, "p", args.gateways, args.replicas, args.callers).await?;
    let accept_seconds = started.elapsed().as_secs_f64();
    tokio::time::timeout(Duration::from_secs(300), running).await???;
    let running_seconds = started.elapsed().as_secs_f64();
    let mut containers_per_host = Vec::new();
    for (host, runtime) in hosts.iter().zip(&runtimes) {
        containers_per_host.push(runtime.list_owned(host).await?.len());
    }
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    api.stop().await;
    Ok(Run {
        accept_seconds,
        running_seconds,
        gateways_per_second: args.gateways as f64 / running_seconds,
        containers_per_host,
    })
}
