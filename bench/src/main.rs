//! `krane-bench`: measures krane on this machine against the physical limits underneath it
//! (raw JetStream publishes, raw Docker calls) and against the synchronous design it replaced.
//! Every subcommand starts its own nats-server on a temporary store, prints a table and, with
//! `--json <file>`, writes its results. Build with `--release`.

mod accept;
mod env;
mod failover;
mod get;
mod hosts;
mod memory;
mod pipeline;
mod stats;
mod ttr;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The worker's allocator (see worker/src/main.rs), as the in-process workers measured here
/// are the same code.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "krane-bench", about = "Benchmarks of krane on this machine")]
struct Cli {
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// CreateGateway latency and rate vs raw JetStream publishes and a synchronous baseline.
    Accept(accept::Args),
    /// GetGateway from the KV record vs a Docker ContainerList-based Get.
    Get(get::Args),
    /// Gateways per second from Create to RUNNING with the in-memory runtime.
    Pipeline(pipeline::Args),
    /// Create to all replicas running on real Docker vs raw bollard and Swarm.
    TimeToRunning(ttr::Args),
    /// Peak RSS of the API and worker holding many gateways.
    Memory(memory::Args),
    /// Many gateways on many hosts: NATS messages per worker at steady state, and the time
    /// to move a killed host's replicas.
    Failover(failover::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_span_timings();
    let report = match cli.command {
        Command::Accept(args) => accept::run(args).await?,
        Command::Get(args) => get::run(args).await?,
        Command::Pipeline(args) => pipeline::run(args).await?,
        Command::TimeToRunning(args) => ttr::run(args).await?,
        Command::Memory(args) => memory::run(args).await?,
        Command::Failover(args) => failover::run(args).await?,
    };
    if let Some(path) = cli.json {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// With `RUST_LOG` set (e.g. `RUST_LOG=krane_worker=info`), logs every closing span of the
/// in-process API and workers with its busy and idle time to stderr: where a benchmark's time
/// goes. Without it nothing is logged, so logging costs the figures nothing.
fn init_span_timings() {
    if std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
}
