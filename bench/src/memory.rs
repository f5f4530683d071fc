//! `memory`: peak RSS (VmHWM) of the release binaries as processes: `krane-api` after
//! accepting and reading many gateways, `krane-worker` holding as many gateways on its
//! in-memory runtime (the hidden `--in-memory-runtime` flag; thousands of real containers do
//! not fit this machine), and `krane-worker` idle on the real engine.

use crate::env::{self, Api, Fsync, Nats};
use crate::stats::Table;
use krane_proto::krane::v1::GetGatewayRequest;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateways held.
    #[arg(long, default_value_t = 1000)]
    gateways: usize,
    /// Replicas per gateway.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Directory of the release `krane-api` and `krane-worker` binaries (default: next to
    /// this binary; build them with `cargo build --release -p krane-api -p krane-worker`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Rss {
    process: String,
    holding: String,
    peak_mib: f64,
    current_mib: f64,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let bin_dir = env::bin_dir(args.bin_dir.as_deref())?;
    let results = vec![
        api_process(&args, &bin_dir).await?,
        worker_binary_in_memory(&args, &bin_dir).await?,
        worker_binary_idle(&bin_dir).await?,
    ];
    let mut table = Table::new(
        "Peak RSS (VmHWM) — target ≤ 50 MiB each",
        &["process", "holding", "peak MiB", "RSS MiB at end"],
    );
    for rss in &results {
        table.row(vec![
            rss.process.clone(),
            rss.holding.clone(),
            format!("{:.1}", rss.peak_mib),
            format!("{:.1}", rss.current_mib),
        ]);
    }
    table.print();
    Ok(json!({ "benchmark": "memory", "results": results }))
}

/// The `krane-api` binary: create and then read every gateway, then its peak RSS.
async fn api_process(args: &Args, bin_dir: &Path) -> anyhow::Result<Rss> {
    let nats = Nats::start(Fsync::Default).await?;
    let port = krane_tests::nats::free_port();
    let child = Spawned::new(Process::new(bin_dir.join("krane-api")).args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--nats-url",
        &nats.url(),
    ]))?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = env::client_for(addr)?;
    env::create_many(&client, "m", args.gateways, args.replicas, 16).await?;
    env::for_each_concurrent(args.gateways, 16, |i| {
        let client = &client;
        async move {
            let get = GetGatewayRequest {
                namespace: "bench".into(),
                gateway_id: format!("m{i}"),
            };
            client
                .get_gateway(&get)
                .await
                .map_err(|error| anyhow::anyhow!("GetGateway: {error}"))?;
            Ok(())
        }
    })
    .await?;
    let (peak, current) = child.rss()?;
    Ok(Rss {
        process: "krane-api (release binary)".into(),
        holding: format!(
            "after {} creates + {} gets (×{} replicas), 16 callers",
            args.gateways, args.gateways, args.replicas
        ),
        peak_mib: peak,
        current_mib: current,
    })
}

/// The `krane-worker` binary on its in-memory runtime, until every gateway runs.
async fn worker_binary_in_memory(args: &Args, bin_dir: &Path) -> anyhow::Result<Rss> {
    let nats = Nats::start(Fsync::Default).await?;
    let log = nats.log().await?;
    let api = Api::start(nats.log().await?).await?;
    let child = Spawned::new(
        Process::new(bin_dir.join("krane-worker"))
            .args([
                "--nats-url",
                &nats.url(),
                "--host-id",
                "bench-mem",
                "--in-memory-runtime",
                env::TEST_IMAGE,
            ])
            .args(env::LARGE_HOST_ARGS),
    )?;
    env::wait_for_hosts(&log, 1).await?;
    let client = api.client()?;
    env::create_and_wait(&log, &client, "w", args.gateways, args.replicas, 16).await?;
    // Let the worker settle (acks, last events) before reading its peak.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (peak, current) = child.rss()?;
    api.stop().await;
    Ok(Rss {
        process: "krane-worker (release binary, in-memory runtime)".into(),
        holding: format!("{} gateways × {} RUNNING", args.gateways, args.replicas),
        peak_mib: peak,
        current_mib: current,
    })
}

/// The `krane-worker` binary on the real engine with no gateways.
async fn worker_binary_idle(bin_dir: &Path) -> anyhow::Result<Rss> {
    let nats = Nats::start(Fsync::Default).await?;
    let log = nats.log().await?;
    let host = format!("kbench-mem-{}", std::process::id());
    let child = Spawned::new(Process::new(bin_dir.join("krane-worker")).args([
        "--nats-url",
        &nats.url(),
        "--host-id",
        &host,
    ]))?;
    env::wait_for_hosts(&log, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (peak, current) = child.rss()?;
    Ok(Rss {
        process: "krane-worker (release binary, real Docker)".into(),
        holding: "no gateways (idle)".into(),
        peak_mib: peak,
        current_mib: current,
    })
}

/// A child process killed on drop.
struct Spawned(Child);

impl Spawned {
    fn new(command: &mut Process) -> anyhow::Result<Self> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| anyhow::anyhow!("start {command:?}: {error}"))?;
        Ok(Self(child))
    }

    /// (VmHWM, VmRSS) in MiB.
    fn rss(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|line| line.starts_with(name))
                .ok_or_else(|| anyhow::anyhow!("{name} missing from /proc status"))?;
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| anyhow::anyhow!("{name} has no value"))?
                .parse()?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
