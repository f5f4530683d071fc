//! The hosts bucket: each worker's heartbeat ([`HostInfo`]) under its host id. An entry
//! expires after the host timeout; a host without an entry is lost.

use crate::{Result, Store, encode, layout, unavailable};
use krane_core::codec;
use krane_core::placement::HostInfo;
use std::time::Duration;
use tracing::debug;

impl Store {
    /// Sets how long a host stays live without a heartbeat (the hosts bucket's entry TTL).
    pub async fn set_host_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.hosts = self
            .jetstream
            .update_key_value(layout::hosts_bucket(timeout, self.replicas))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Announces (or renews) a host; it stays live until its entry expires.
    pub async fn heartbeat(&self, host: &HostInfo) -> Result<()> {
        self.ensure_connected()?;
        self.hosts
            .put(&host.host_id, encode("heartbeat", host)?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Every host whose heartbeat has not expired, by id. An entry that does not decode is
    /// skipped (and logged): one bad heartbeat must not hide the other hosts.
    pub async fn live_hosts(&self) -> Result<Vec<HostInfo>> {
        self.ensure_connected()?;
        let mut hosts = Vec::new();
        for key in crate::projection::keys_of(&self.hosts, ">").await? {
            let Some(value) = self.hosts.get(&key).await.map_err(unavailable)? else {
                continue;
            };
            match codec::decode::<HostInfo>(&value) {
                Ok(host) => hosts.push(host),
                Err(error) => debug!(host = %key, %error, "undecodable heartbeat; skipping it"),
            }
        }
        hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        Ok(hosts)
    }
}
