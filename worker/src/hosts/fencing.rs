//! Self-fencing, off unless `--fence-after` is set: a worker that has not been able to reach
//! NATS for that long stops its host's krane containers (stop, not remove). Meanwhile the other
//! hosts judged this one lost and run its replicas; fencing keeps a partitioned host from
//! serving them twice, at the price of serving nothing while it is cut off (Nomad's
//! `stop_after_client_disconnect` makes the same trade). When NATS is back, the resync starts
//! the containers still placed here again and removes those placed elsewhere.

use crate::hosts::HostIdentity;
use crate::runtime::ContainerRuntime;
use krane_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the connection is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(500);

pub async fn run(
    store: Store,
    runtime: Arc<dyn ContainerRuntime>,
    host: HostIdentity,
    fence_after: Duration,
    stop: CancellationToken,
) {
    let mut cut_off_since: Option<Instant> = None;
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if store.connected_for().is_some() {
            if fenced {
                info!("NATS reachable again; the resync brings this host's replicas back");
            }
            cut_off_since = None;
            fenced = false;
            continue;
        }
        let since = *cut_off_since.get_or_insert_with(Instant::now);
        if fenced || since.elapsed() < fence_after {
            continue;
        }
        error!(after = ?fence_after, "NATS unreachable: fencing, stopping this host's krane containers");
        match runtime.list_owned(&host.host_id).await {
            Ok(containers) => {
                for container in containers {
                    if let Err(error) = runtime.stop(&container.name).await {
                        warn!(container = %container.name, %error, "cannot stop a container while fencing");
                    }
                }
                fenced = true;
            }
            Err(error) => {
                warn!(%error, "cannot list this host's containers to fence them; retrying")
            }
        }
    }
}
