//! `HostsView`: the live hosts as last read from the hosts bucket. The worker's scheduler
//! refreshes it every couple of seconds; placing replicas reads the snapshot (or refreshes it
//! first when it is older than placing allows).

use krane_core::placement::HostInfo;
use krane_store::Store;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tracing::warn;

#[derive(Clone, Default)]
pub struct HostsView {
    hosts: Arc<RwLock<Vec<HostInfo>>>,
    /// When the bucket was last read successfully.
    read_at: Arc<RwLock<Option<Instant>>>,
    /// Taken while reading, so callers that all find the view too old share one read.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl HostsView {
    /// Re-reads the hosts bucket now; on failure the previous view stays. True when read.
    pub async fn refresh(&self, store: &Store) -> bool {
        let _reading = self.reading.lock().await;
        self.read(store).await
    }

    /// Re-reads the hosts bucket unless the view was read less than `max_age` ago; callers
    /// arriving while a read is under way wait for it instead of reading again.
    pub async fn refresh_if_older_than(&self, store: &Store, max_age: Duration) {
        let _reading = self.reading.lock().await;
        if self.age().is_some_and(|age| age < max_age) {
            return;
        }
        self.read(store).await;
    }

    /// Time since the last successful read (`None` before the first).
    fn age(&self) -> Option<Duration> {
        let read_at = *self.read_at.read().ok()?;
        read_at.map(|at| at.elapsed())
    }

    async fn read(&self, store: &Store) -> bool {
        match store.live_hosts().await {
            Ok(hosts) => {
                self.set(hosts);
                if let Ok(mut read_at) = self.read_at.write() {
                    *read_at = Some(Instant::now());
                }
                true
            }
            Err(error) => {
                warn!(%error, "cannot read the live hosts; keeping the last view");
                false
            }
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
