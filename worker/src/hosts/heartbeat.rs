//! Heartbeat: announces this host in the hosts bucket every `interval` — its advertise
//! address, how many krane containers it runs, the most it accepts, its CPUs and memory (the
//! engine's, unless the flags say otherwise) and what krane reserved there (the limits of the
//! replicas placed on it, from the record index). The entry expires after the
//! host timeout; a host whose entry expired is lost and its replicas are placed elsewhere.
//! On shutdown the entry is left to expire, so a quick restart moves nothing.
//!
//! The engine call that counts the containers has a timeout: a worker whose engine hangs keeps
//! heartbeating, with the engine marked unhealthy (the host keeps its replicas and takes no
//! new ones), instead of silently going quiet and being judged lost.

use super::HostIdentity;
use crate::index::RecordIndex;
use crate::runtime::ContainerRuntime;
use krane_core::placement::{HostInfo, Resources};
use krane_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What the heartbeat announces besides what it counts, and how often.
pub struct Heartbeat {
    pub store: Store,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub records: RecordIndex,
    pub host: HostIdentity,
    /// `--max-containers`.
    pub max_containers: Option<u32>,
    /// `--cpu-millicores`, `--memory-mib`: each replaces the engine's figure.
    pub cpu_millicores: Option<u64>,
    pub memory_mib: Option<u64>,
    pub interval: Duration,
}

pub async fn run(heartbeat: Heartbeat, stop: CancellationToken) {
    let Heartbeat {
        store,
        runtime,
        records,
        host,
        max_containers,
        cpu_millicores,
        memory_mib,
        interval,
    } = heartbeat;
    let mut containers = 0;
    // The engine's machine does not change while the worker runs: asked until it answers.
    let mut engine_capacity: Option<Resources> = None;
    loop {
        if engine_capacity.is_none() && (cpu_millicores.is_none() || memory_mib.is_none()) {
            match tokio::time::timeout(interval, runtime.capacity()).await {
                Ok(Ok(capacity)) => engine_capacity = Some(capacity),
                Ok(Err(error)) => warn!(%error, "the engine's CPUs and memory are unknown yet"),
                Err(_) => warn!("the engine did not say its CPUs and memory in time"),
            }
        }
        let capacity = announced_capacity(engine_capacity, cpu_millicores, memory_mib);
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
            capacity,
            reserved: records.reserved_on(&host.host_id),
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

/// The capacity announced: each flag replaces the engine's figure; unknown (no limit) while
/// neither the flag nor the engine said.
fn announced_capacity(
    engine: Option<Resources>,
    cpu_millicores: Option<u64>,
    memory_mib: Option<u64>,
) -> Option<Resources> {
    Some(Resources {
        millicores: cpu_millicores.or(engine.map(|engine| engine.millicores))?,
        mib: memory_mib.or(engine.map(|engine| engine.mib))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_the_engines_figures_one_by_one() {
        let engine = Some(Resources {
            millicores: 8000,
            mib: 16384,
        });
        assert_eq!(announced_capacity(engine, None, None), engine);
        assert_eq!(
            announced_capacity(engine, Some(500), None),
            Some(Resources {
                millicores: 500,
                mib: 16384
            })
        );
        assert_eq!(
            announced_capacity(None, Some(500), Some(256)),
            Some(Resources {
                millicores: 500,
                mib: 256
            })
        );
        assert_eq!(announced_capacity(None, Some(500), None), None);
    }
}
