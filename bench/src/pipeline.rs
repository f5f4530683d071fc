//! `pipeline`: gateways per second from CreateGateway to RUNNING in KV, with 1, 2 and 4
//! in-process workers (distinct host ids), each on an in-memory runtime of its own (no Docker),
//! as each host has its own engine: container names are only unique per engine. Placement
//! spreads the replicas across the hosts. With `--host-cpu` each host is instead a
//! `krane-worker` process capped to that much CPU ([`crate::hosts`]), as real hosts bring
//! their own. In-process runs also count the record writes per gateway (API and workers
//! together, as they share this process): the changes every worker's record index receives.

use crate::env::{self, Api, Broker, Nats};
use crate::hosts::CappedHosts;
use crate::stats::{Table, cell, median};
use krane_store::Store;
use krane_worker::runtime::fake::FakeRuntime;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
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
    /// Run each host as a release `krane-worker` process capped to this many CPUs (e.g. 0.25)
    /// in a cgroup of its own, instead of in-process workers sharing the benchmark's CPU.
    /// Needs root.
    #[arg(long)]
    host_cpu: Option<f64>,
    /// Directory of the release `krane-worker` for `--host-cpu` (default: next to this
    /// binary). Build it in the same command as `krane-bench`
    /// (`cargo build --release -p krane-bench -p krane-worker`): that gives it the in-memory
    /// runtime.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
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
    /// Record writes (API and workers) per gateway created, and lost races among them; not
    /// counted with `--host-cpu` (the workers' writes happen in their own processes).
    record_writes_per_gateway: Option<f64>,
    record_conflicts_per_gateway: Option<f64>,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let mut rows = Vec::new();
    let mut table = Table::new(
        format!(
            "Create → RUNNING in KV, {} gateways × {} replicas, {} callers, in-memory runtime, \
             NATS {:?}, {}; medians of {} runs",
            args.gateways,
            args.replicas,
            args.callers,
            args.broker,
            hosts_label(&args),
            args.runs
        ),
        &[
            "workers",
            "gateways/s",
            "accepted/s",
            "record writes / conflicts per gateway",
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
            match (
                median_of(runs.iter().map(|run| run.record_writes_per_gateway)),
                median_of(runs.iter().map(|run| run.record_conflicts_per_gateway)),
            ) {
                (Some(writes), Some(conflicts)) => {
                    format!("{} / {}", cell(writes), cell(conflicts))
                }
                _ => "–".to_string(),
            },
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
        "host_cpu": args.host_cpu,
        "runtime": "FakeRuntime (in-memory), one per worker, distinct host ids",
        "hosts": hosts_label(&args),
        "rows": rows,
    }))
}

async fn measure(args: &Args, workers: usize) -> anyhow::Result<Run> {
    let nats = Nats::start_on(args.broker).await?;
    let log = nats.log().await?;
    // The API and every worker on a NATS connection of its own, as separate processes are.
    let api = Api::start(nats.log().await?).await?;
    let hosts: Vec<String> = (0..workers).map(|i| format!("host{i}")).collect();
    let running_hosts = match args.host_cpu {
        Some(cpus) => {
            let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
            Hosts::Capped(CappedHosts::start(&nats, &bin_dir, &hosts, cpus)?)
        }
        None => Hosts::InProcess(InProcessHosts::start(&nats, &hosts).await?),
    };
    env::wait_for_hosts(&log, workers).await?;
    let running = tokio::spawn(env::watch_running(log.clone(), args.gateways));
    let client = api.client()?;
    let (written_before, conflicts_before) = krane_store::projection::record_writes();
    let started = Instant::now();
    env::create_many(&client, "p", args.gateways, args.replicas, args.callers).await?;
    let accept_seconds = started.elapsed().as_secs_f64();
    tokio::time::timeout(Duration::from_secs(300), running).await???;
    let running_seconds = started.elapsed().as_secs_f64();
    let (written, conflicts) = krane_store::projection::record_writes();
    // Host processes count their writes in their own process.
    let counted = args.host_cpu.is_none();
    let per_gateway = |count: u64| counted.then(|| count as f64 / args.gateways as f64);
    let containers_per_host = replicas_per_host(&log, &hosts).await?;
    running_hosts.stop().await;
    api.stop().await;
    Ok(Run {
        accept_seconds,
        running_seconds,
        gateways_per_second: args.gateways as f64 / running_seconds,
        containers_per_host,
        record_writes_per_gateway: per_gateway(written - written_before),
        record_conflicts_per_gateway: per_gateway(conflicts - conflicts_before),
    })
}

/// The hosts of one run.
enum Hosts {
    InProcess(InProcessHosts),
    Capped(CappedHosts),
}

impl Hosts {
    async fn stop(self) {
        match self {
            Self::InProcess(in_process) => in_process.stop().await,
            // Killed, and their cgroups removed, as they are dropped.
            Self::Capped(capped) => drop(capped),
        }
    }
}

/// Workers in this process, each on an in-memory runtime of its own.
struct InProcessHosts {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessHosts {
    async fn start(nats: &Nats, hosts: &[String]) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for host in hosts {
            let runtime = Arc::new(FakeRuntime::with_images(&[env::TEST_IMAGE]));
            let worker_log = nats.log().await?;
            tasks.push(env::start_worker(
                nats,
                host,
                worker_log,
                runtime,
                stop.clone(),
            ));
        }
        Ok(Self { stop, tasks })
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Replicas each host runs, in `hosts` order, as the records say (the same for in-process
/// and process hosts).
async fn replicas_per_host(log: &Store, hosts: &[String]) -> anyhow::Result<Vec<usize>> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in log.all_records().await?.values() {
        for instance in record.instances() {
            *counts.entry(instance.host_id.clone()).or_default() += 1;
        }
    }
    Ok(hosts
        .iter()
        .map(|host| counts.get(host).copied().unwrap_or(0))
        .collect())
}

fn hosts_label(args: &Args) -> String {
    match args.host_cpu {
        Some(cpus) => format!("hosts as krane-worker processes capped to {cpus} CPU each"),
        None => "hosts as in-process workers".to_string(),
    }
}

/// The median of values that were measured, `None` if none was.
fn median_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let measured: Vec<f64> = values.flatten().collect();
    (!measured.is_empty()).then(|| median(measured))
}
