//! Drift repair: the worker does not only react to commands. It follows the engine's event
//! stream (a krane container died, was stopped or removed behind our back) and runs a full
//! resync every `interval` and whenever the event stream had to reconnect. Both only mark
//! gateways as due; one drain loop reconciles due gateways, so a burst of events costs one
//! reconcile per gateway. Reconciling is level-triggered, so a container removed by hand is
//! recreated, one stopped is started, and one that belongs to no live gateway is removed.
//! Containers without krane's labels (and this host's id) are never looked at.

use crate::context::Worker;
use crate::reconcile::{Outcome, Reconciler};
use futures::StreamExt;
use krane_core::names::GatewayKey;
use krane_core::record::InstanceStatus;
use std::collections::BTreeSet;
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

/// Marks every gateway due every `interval` (the first time at once).
async fn periodic(
    worker: Worker,
    due: mpsc::UnboundedSender<GatewayKey>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => mark_all_due(&worker, &due).await,
        }
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
        mark_all_due(&worker, &due).await;
    }
}

/// Every gateway that has containers on this host, plus every gateway with replicas placed
/// here. Gateways whose every instance FAILED are left alone until a new Create (no endless
/// retries).
async fn mark_all_due(worker: &Worker, due: &mpsc::UnboundedSender<GatewayKey>) {
    let mut keys = BTreeSet::new();
    let me = worker.host.host_id.as_str();
    match worker.runtime.list_owned(me).await {
        Ok(containers) => keys.extend(containers.into_iter().map(|c| c.gateway)),
        Err(error) => warn!(%error, "resync cannot list containers"),
    }
    match worker.store.all_records().await {
        Ok(records) => keys.extend(
            records
                .values()
                .filter(|record| {
                    !record.intent.replicas_on(me).is_empty()
                        || record.live_observations().any(|seen| seen.host_id == me)
                })
                .filter(|record| {
                    let instances = record.instances();
                    !instances.iter().all(|i| i.status == InstanceStatus::Failed)
                })
                .map(|record| record.key()),
        ),
        Err(error) => warn!(%error, "resync cannot read gateway records"),
    }
    info!(gateways = keys.len(), "full resync");
    for key in keys {
        let _ = due.send(key);
    }
}
