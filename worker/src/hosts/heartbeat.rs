//! Heartbeat: announces this host in the hosts bucket every `interval` — its advertise
//! address, how many krane containers it runs and its capacity. The entry expires after the
//! host timeout; a host whose entry expired is lost and its replicas are placed elsewhere.
//! On shutdown the entry is left to expire, so a quick restart moves nothing.
//!
//! The engine call that counts the containers has a timeout: a worker whose engine hangs keeps
//! heartbeating, with the engine marked unhealthy (the host keeps its replicas and takes no
//! new ones), instead of silently going quiet and being judged lost.

use super::HostIdentity;
use crate::runtime::ContainerRuntime;
use krane_core::placement::HostInfo;
use krane_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub async fn run(
    store: Store,
    runtime: Arc<dyn ContainerRuntime>,
    host: HostIdentity,
    max_containers: Option<u32>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut containers = 0;
    loop {
        let counted = tokio::time::timeout(interval, runtime.list_owned(&host.host_id)).await;
        let engine_healthy = match counted {
            Ok(Ok(owned)) => {
                containers = u32::try_from(owned.len()).unwrap_or(u32::MAX);
                true
            }
            // An engine that answers with an error is down, not hanging: its gateways wait for
            // it (PENDING, "waiting for the Docker engine") where they are placed.
            Ok(Err(error)) => {
                warn!(%error, "heartbeat cannot count containers; sending the last count");
                true
            }
            Err(_) => {
                warn!(timeout = ?interval, "the engine did not answer the heartbeat in time; engine marked unhealthy");
                false
            }
        };
        let info = HostInfo {
            host_id: host.host_id.clone(),
            advertise_host: host.advertise_host.clone(),
            containers,
            max_containers,
            engine_healthy,
        };
        if let Err(error) = store.heartbeat(&info).await {
            warn!(%error, "heartbeat not sent");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
