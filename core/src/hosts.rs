//! `HostsView`: the live hosts as last read from the hosts bucket, refreshed in the background
//! so placing replicas (on every create, update and reschedule) costs no NATS round trip.

use crate::log::EventLog;
use crate::placement::HostInfo;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

#[derive(Clone, Default)]
pub struct HostsView {
    hosts: Arc<RwLock<Vec<HostInfo>>>,
}

impl HostsView {
    /// Reads the hosts once, then keeps refreshing every `interval` until `stop` fires.
    pub async fn follow(log: EventLog, interval: Duration, stop: CancellationToken) -> Self {
        let view = Self::default();
        view.refresh(&log).await;
        let refreshed = view.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => refreshed.refresh(&log).await,
                }
            }
        });
        view
    }

    /// Re-reads the hosts bucket now; on failure the previous view stays.
    pub async fn refresh(&self, log: &EventLog) {
        match log.live_hosts().await {
            Ok(hosts) => self.set(hosts),
            Err(error) => warn!(%error, "cannot read the live hosts; keeping the last view"),
        }
    }

    pub fn set(&self, hosts: Vec<HostInfo>) {
        if let Ok(mut current) = self.hosts.write() {
            *current = hosts;
        }
    }

    /// The live hosts, sorted by id.
    pub fn snapshot(&self) -> Vec<HostInfo> {
        self.hosts
            .read()
            .map(|hosts| hosts.clone())
            .unwrap_or_default()
    }
}
