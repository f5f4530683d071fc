//! krane-worker: turns gateway commands into containers. One worker (or several sharing a
//! consumer) runs per Docker host. [`run`] builds one [`Worker`](context::Worker) context and
//! hands it to the intake and the reconcile (the host loops take the parts they use):
//!
//! - [`intake`]: what starts a reconcile: the commands consumer (with its pure retry
//!   `policy`) and the drift resync.
//! - [`reconcile`]: level-triggered handling of one gateway: latest intent → plan → act →
//!   report; a rollout that must wait is requeued, never slept on.
//! - [`hosts`]: the heartbeat, the view of live hosts, placing replicas and the scheduler that
//!   moves them off lost hosts.
//! - [`retention`]: purging fully deleted gateways after `--retention`.
//! - [`runtime`]: the `ContainerRuntime` trait, the only door to an engine, and its
//!   implementations (Docker, instrumented, and an in-memory one for tests).
//! - [`context`]: the `Worker` context every loop shares.
//! - [`index`]: every gateway record in memory, kept by a watch, for the scans of the
//!   scheduler and the resync.
//! - [`metrics`]: the worker's Prometheus metrics.
//! - [`config`]: command-line flags and environment variables.
//!
//! Errors: modules return their own `thiserror` enums (`RuntimeError`, `StoreError`,
//! `ReconcileError`) because callers branch on them (retry or give up); the binary's edges use
//! `anyhow`, where errors are only reported.

pub mod config;
mod context;
mod hosts;
mod index;
mod intake;
pub mod metrics;
mod reconcile;
mod retention;
pub mod runtime;

/// The pure planner, public for its benchmarks.
pub use reconcile::plan;

use crate::config::WorkerConfig;
use crate::context::Worker;
use crate::hosts::HostIdentity;
use crate::hosts::view::HostsView;
use crate::index::RecordIndex;
use crate::intake::consumer::{self, ConsumerSettings};
use crate::intake::resync::{self, ResyncSettings};
use crate::reconcile::Reconciler;
use crate::runtime::ContainerRuntime;
use crate::runtime::held::Remembering;
use anyhow::Context;
use krane_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs a worker on an open store and runtime until `stop` fires.
pub async fn run(
    config: &WorkerConfig,
    mut store: Store,
    runtime: Arc<dyn ContainerRuntime>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if let Err(error) = store.set_host_timeout(config.host_timeout).await {
        // Not fatal: heartbeats still work with the bucket's current timeout.
        tracing::warn!(%error, "cannot set the host timeout on the hosts bucket");
    }
    let images = krane_core::images::ImagePolicy::new(&config.allowed_images)
        .map_err(|error| anyhow::anyhow!("--allowed-images: {error}"))?;
    let (runtime, held) = Remembering::wrap(runtime);
    let worker = Worker {
        images: Arc::new(images),
        store,
        runtime,
        held,
        host: HostIdentity {
            host_id: config.host_id(),
            advertise_host: config.advertise_host.clone(),
        },
        hosts: HostsView::new(config.host_timeout),
        records: RecordIndex::default(),
    };
    let reconciler = Arc::new(Reconciler::new(
        worker.clone(),
        config.replica_parallelism,
        config.rollout_timeout,
    ));
    let background = [
        tokio::spawn(hosts::view::follow(
            worker.store.clone(),
            worker.hosts.clone(),
            worker.host.host_id.clone(),
            stop.clone(),
        )),
        tokio::spawn(index::follow(
            worker.store.clone(),
            worker.records.clone(),
            stop.clone(),
        )),
        tokio::spawn(hosts::heartbeat::run(
            hosts::heartbeat::Heartbeat {
                store: worker.store.clone(),
                runtime: worker.runtime.clone(),
                records: worker.records.clone(),
                host: worker.host.clone(),
                max_containers: config.max_containers,
                cpu_millicores: config.cpu_millicores,
                memory_mib: config.memory_mib,
                interval: config.host_timeout / 3,
            },
            stop.clone(),
        )),
        tokio::spawn(hosts::scheduler::run(
            hosts::scheduler::Scheduler {
                store: worker.store.clone(),
                hosts: worker.hosts.clone(),
                records: worker.records.clone(),
                me: worker.host.clone(),
                settings: hosts::scheduler::SchedulerSettings {
                    interval: HOSTS_JUDGED_EVERY,
                    full_scan: config.resync_interval,
                    host_timeout: config.host_timeout,
                },
            },
            stop.clone(),
        )),
        tokio::spawn(resync::run(
            worker.clone(),
            reconciler.clone(),
            ResyncSettings {
                interval: config.resync_interval,
                parallelism: config.concurrency,
            },
            stop.clone(),
        )),
        tokio::spawn(retention::run(
            worker.store.clone(),
            retention::gone_records(worker.records.clone()),
            config.retention,
            stop.clone(),
        )),
    ];
    let fencing = config.fence_after.map(|fence_after| {
        tokio::spawn(hosts::fencing::run(
            worker.store.clone(),
            worker.runtime.clone(),
            worker.host.clone(),
            fence_after,
            stop.clone(),
        ))
    });
    let settings = ConsumerSettings {
        durable_name: consumer_name(&worker.host.host_id),
        concurrency: config.concurrency,
        max_attempts: config.max_attempts,
        ack_wait: config.ack_wait,
        grace: config.shutdown_grace,
    };
    let consumed = consumer::run(worker, reconciler, settings, stop.clone())
        .await
        .context("command consumer failed");
    // Whatever ended the consumer, the background loops go with it.
    stop.cancel();
    for task in background.into_iter().chain(fencing) {
        let _ = task.await;
    }
    consumed
}

/// How often the scheduler judges the hosts (from memory: the view follows the heartbeats).
const HOSTS_JUDGED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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
