//! `HostsView`: the live hosts as last read from the hosts bucket. The worker's scheduler
//! refreshes it every couple of seconds; placing replicas reads the snapshot (or refreshes it
//! first when something is to be placed).

use crate::log::EventLog;
use crate::placement::HostInfo;
use std::sync::{Arc, RwLock};
use tracing::warn;

#[derive(Clone, Default)]
pub struct HostsView {
    hosts: Arc<RwLock<Vec<HostInfo>>>,
}

impl HostsView {
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
