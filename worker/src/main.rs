//! `krane-worker`: connects to NATS and the Docker engine (exiting with a clear message when
//! either is unreachable), then reconciles gateways until SIGTERM/SIGINT.

use clap::Parser;
use krane_worker::config::{WorkerCommand, WorkerConfig};
use krane_worker::runtime::ContainerRuntime;
use krane_worker::runtime::docker::{DockerRuntime, RegistryAuth};
use krane_worker::runtime::instrumented::Instrumented;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// mimalloc instead of glibc's allocator: every worker's record index decodes each record
/// change and drops the record it replaces, and with glibc's `free`/`malloc_consolidate` that
/// churn took over a third of the CPU in a 10,000-gateway failover (BENCHMARKS.md §9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    krane_platform::crypto::install_default_provider();
    let config = WorkerConfig::parse();
    let telemetry = match krane_platform::telemetry::init(config.log_json, "krane-worker") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("krane-worker: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            eprintln!("krane-worker: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans (commands finished or handed back at shutdown) are sent before exiting.
    telemetry.shutdown();
    code
}

async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    krane_platform::shutdown::cancel_on_signal(stop.clone());
    let connect_nats = || async {
        krane_store::connect(&config.nats, "krane-worker", Duration::from_secs(5))
            .await
            .map_err(|error| {
                anyhow::anyhow!("NATS at {} is not usable: {error}", config.nats.nats_url)
            })
    };
    if let Some(WorkerCommand::RebuildProjection) = config.command {
        let records = connect_nats().await?.rebuild_projection().await?;
        println!("rebuilt {records} gateway records from the streams");
        return Ok(());
    }
    let runtime = open_runtime(&config).await?;
    let store = connect_nats().await?;
    krane_worker::metrics::register_metrics();
    krane_store::register_metrics();
    config.metrics.serve(stop.clone()).await?;
    info!(host_id = %config.host_id(), advertise_host = %config.advertise_host, "krane-worker started");
    krane_worker::run(&config, store, runtime, stop).await?;
    info!("krane-worker stopped");
    Ok(())
}

/// The Docker engine, instrumented (or, in a benchmark build, the in-memory runtime).
async fn open_runtime(config: &WorkerConfig) -> anyhow::Result<Arc<dyn ContainerRuntime>> {
    #[cfg(feature = "fake-runtime")]
    if !config.in_memory_runtime.is_empty() {
        tracing::warn!(images = ?config.in_memory_runtime, "in-memory runtime: no Docker engine is used");
        let images: Vec<&str> = config
            .in_memory_runtime
            .iter()
            .map(String::as_str)
            .collect();
        return Ok(Arc::new(
            krane_worker::runtime::fake::FakeRuntime::with_images(&images),
        ));
    }
    let auth = RegistryAuth {
        username: config.registry_username.clone(),
        password: config.registry_password.clone(),
        server: config.registry_server.clone(),
    };
    let runtime = DockerRuntime::connect(config.docker_host.as_deref(), auth, config.pull_timeout)
        .await
        .map_err(|error| anyhow::anyhow!("the Docker engine is not usable: {error}"))?
        .with_probe(config.probe(), config.probe_interval)
        .with_hardening(config.hardening());
    Ok(Arc::new(Instrumented::new(runtime)))
}
