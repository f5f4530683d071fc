//! krane-worker: turns gateway commands into containers. One worker (or several sharing a
//! consumer) runs per Docker host.
//!
//! - [`consumer`]: takes commands off the JetStream consumer, acks only after the work is done.
//! - [`reconcile`]: level-triggered handling of one gateway: latest intent → plan → act → report.
//! - [`resync`]: drift repair from the engine's event stream and a periodic full resync.
//! - [`heartbeat`]: announces the host; [`scheduler`]: places replicas on live hosts and moves
//!   them off lost ones.
//! - [`plan`]: the pure decision (`plan`) and report (`observations`) logic.
//! - [`runtime`]: the `ContainerRuntime` trait, the only door to an engine.
//! - [`docker`]: `DockerRuntime`, the trait on bollard; [`fake`]: an in-memory one;
//!   [`instrumented`]: any runtime with a span, latency and errors per call.
//! - [`metrics`]: the worker's Prometheus metrics.
//! - [`config`]: command-line flags and environment variables.
//!
//! Errors: modules return their own `thiserror` enums (`RuntimeError`, `LogError`,
//! `ReconcileError`) because callers branch on them (retry or give up); the binary's edges use
//! `anyhow`, where errors are only reported.

pub mod config;
pub mod consumer;
pub mod docker;
pub mod fake;
pub mod heartbeat;
pub mod instrumented;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod resync;
pub mod runtime;
pub mod scheduler;

use crate::config::WorkerConfig;
use crate::consumer::ConsumerSettings;
use crate::plan::HostIdentity;
use crate::reconcile::Reconciler;
use crate::resync::ResyncSettings;
use crate::runtime::ContainerRuntime;
use anyhow::Context;
use krane_core::hosts::HostsView;
use krane_core::log::EventLog;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs a worker on an open log and runtime until `stop` fires.
pub async fn run(
    config: &WorkerConfig,
    mut log: EventLog,
    runtime: Arc<dyn ContainerRuntime>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if let Err(error) = log.set_host_timeout(config.host_timeout).await {
        // Not fatal: heartbeats still work with the bucket's current timeout.
        tracing::warn!(%error, "cannot set the host timeout on the hosts bucket");
    }
    let host = HostIdentity {
        host_id: config.host_id(),
        advertise_host: config.advertise_host.clone(),
    };
    let hosts = HostsView::default();
    hosts.refresh(&log).await;
    let reconciler = Arc::new(Reconciler::new(
        log,
        runtime,
        host.clone(),
        config.replica_parallelism,
        config.rollout_timeout,
        hosts.clone(),
    ));
    let background = [
        tokio::spawn(heartbeat::run(
            reconciler.clone(),
            config.max_containers,
            config.host_timeout / 3,
            stop.clone(),
        )),
        tokio::spawn(scheduler::run(
            reconciler.clone(),
            hosts,
            HOSTS_REFRESH,
            config.resync_interval,
            stop.clone(),
        )),
        tokio::spawn(resync::run(
            reconciler.clone(),
            ResyncSettings {
                interval: config.resync_interval,
                parallelism: config.concurrency,
            },
            stop.clone(),
        )),
    ];
    let settings = ConsumerSettings {
        durable_name: consumer_name(&host.host_id),
        concurrency: config.concurrency,
        max_attempts: config.max_attempts,
        ack_wait: config.ack_wait,
        grace: config.shutdown_grace,
    };
    let consumed = consumer::run(reconciler, settings, stop.clone())
        .await
        .context("command consumer failed");
    // Whatever ended the consumer, the background loops go with it.
    stop.cancel();
    for task in background {
        let _ = task.await;
    }
    consumed
}

/// How often workers re-read the live hosts.
const HOSTS_REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Durable consumer name of a host: consumer names may not contain `.`, `*`, `>` or spaces.
pub fn consumer_name(host_id: &str) -> String {
    let safe: String = host_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("worker-{safe}")
}
