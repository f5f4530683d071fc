//! Drift repair: the worker does not only react to commands. It follows the engine's event
//! stream (a krane container died, was stopped or removed behind our back) and runs a resync
//! every `interval` and whenever the event stream had to reconnect. Both only mark gateways as
//! due; one drain loop reconciles due gateways, so a burst of events costs one reconcile per
//! gateway. Reconciling is level-triggered, so a container removed by hand is recreated, one
//! stopped is started, and one that belongs to no live gateway is removed. Containers without
//! krane's labels (and this host's id) are never looked at.
//!
//! The periodic resync compares the engine's containers with the records of the
//! [`RecordIndex`](crate::index::RecordIndex) (memory) and marks only the gateways that are
//! not in sync (`reconcile::drift`), so a quiet fleet costs no NATS reads. The first resync
//! after start, and the one after the engine's events reconnect (events may have been missed),
//! mark every gateway of this host.

use crate::context::Worker;
use crate::reconcile::drift::in_sync;
use crate::reconcile::{Outcome, Reconciler};
use crate::runtime::ObservedContainer;
use futures::StreamExt;
use krane_core::names::GatewayKey;
use krane_core::record::InstanceStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct ResyncSettings {
    /// Time between full resyncs.
    pub interval: Duration,
    /// Gateways reconciled at once by the drain loop.
    pub parallelism: usize,
}

/// Runs until `stop` fires.
pub async fn run(
    worker: Worker,
    reconciler: Arc<Reconciler>,
    settings: ResyncSettings,
    stop: CancellationToken,
) {
    let (due, mut due_keys) = mpsc::unbounded_channel::<GatewayKey>();
    let follower = tokio::spawn(follow_engine(worker.clone(), due.clone(), stop.clone()));
    let ticker = tokio::spawn(periodic(
        worker.clone(),
        due.clone(),
        settings.interval,
        stop.clone(),
    ));
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            key = due_keys.recv() => match key {
                Some(key) => key,
                None => break,
            },
        };
        let mut batch = BTreeSet::from([first]);
        while let Ok(key) = due_keys.try_recv() {
            batch.insert(key);
        }
        debug!(gateways = batch.len(), "resyncing");
        futures::stream::iter(batch)
            .for_each_concurrent(settings.parallelism.max(1), |key| {
                let reconciler = reconciler.clone();
                let due = due.clone();
                async move {
                    match reconciler.reconcile(&key).await {
                        // A rolling update waits for its turn: look again after the delay,
                        // holding nothing meanwhile.
                        Ok(Outcome::Requeue { after }) => {
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                let _ = due.send(key);
                            });
                        }
                        Ok(_) => {}
                        Err(error) => {
                            warn!(namespace = %key.namespace, gateway = %key.gateway_id, %error, "resync failed; the next one retries");
                        }
                    }
                }
            })
            .await;
    }
    follower.abort();
    ticker.abort();
}

/// Resyncs every `interval`: the first time (as soon as the records are indexed) every
/// gateway of this host, then those that drifted.
async fn periodic(
    worker: Worker,
    due: mpsc::UnboundedSender<GatewayKey>,
    interval: Duration,
    stop: CancellationToken,
) {
    if !worker.records.wait_current(&stop).await {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    let mut scope = Scope::Everything;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => mark_due(&worker, &due, scope).await,
        }
        scope = Scope::Drifted;
    }
}

/// Follows the engine's events, reconnecting with backoff; after a reconnect everything is
/// due, because events may have been missed meanwhile.
async fn follow_engine(
    worker: Worker,
    due: mpsc::UnboundedSender<GatewayKey>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let mut changes = worker.runtime.changes(&worker.host.host_id);
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                change = changes.next() => change,
            };
            match change {
                Some(Ok(key)) => {
                    debug!(namespace = %key.namespace, gateway = %key.gateway_id, "engine reported a change");
                    delay = Duration::from_secs(1);
                    let _ = due.send(key);
                }
                Some(Err(error)) => {
                    warn!(%error, "engine event stream failed; reconnecting");
                    break;
                }
                None => {
                    warn!("engine event stream ended; reconnecting");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
        mark_due(&worker, &due, Scope::Everything).await;
    }
}

/// Which gateways a resync marks due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every gateway with containers or replicas on this host.
    Everything,
    /// Of those, the ones whose containers or record are not in sync.
    Drifted,
}

/// Every gateway that has containers on this host, plus every gateway with replicas placed
/// (or instances reported) here — all of them, or only those that drifted. Gateways whose
/// every instance FAILED and that have no container here are left alone until a new Create
/// (no endless retries). Records come from the index; while it is not current, only the
/// gateways with containers here are marked.
async fn mark_due(worker: &Worker, due: &mpsc::UnboundedSender<GatewayKey>, scope: Scope) {
    let me = worker.host.host_id.as_str();
    let mut here: BTreeMap<GatewayKey, Vec<ObservedContainer>> = BTreeMap::new();
    let listed = match worker.runtime.list_owned(me).await {
        Ok(containers) => {
            for container in containers {
                here.entry(container.gateway.clone())
                    .or_default()
                    .push(container);
            }
            true
        }
        Err(error) => {
            warn!(%error, "resync cannot list containers");
            false
        }
    };
    let mut keys = BTreeSet::new();
    if worker.records.is_current() {
        for record in worker.records.records() {
            let key = record.key();
            let containers = here.remove(&key).unwrap_or_default();
            let mine = !containers.is_empty()
                || !record.intent.replicas_on(me).is_empty()
                || record.live_observations().any(|seen| seen.host_id == me);
            if !mine {
                continue;
            }
            let all_failed = record
                .instances()
                .iter()
                .all(|i| i.status == InstanceStatus::Failed);
            if containers.is_empty() && all_failed {
                continue;
            }
            let drifted = !listed || !in_sync(&record, &containers, &worker.host);
            if scope == Scope::Everything || drifted {
                keys.insert(key);
            }
        }
    } else {
        warn!("resync before the gateway records are indexed: only gateways with containers here");
    }
    // Containers of gateways without a record (or not yet indexed).
    keys.extend(here.into_keys());
    info!(gateways = keys.len(), ?scope, "resync");
    for key in keys {
        let _ = due.send(key);
    }
}
