//! The hosts bucket: each worker's heartbeat ([`HostInfo`]) under its host id. An entry
//! expires after the host timeout; a host without an entry is lost. [`Store::heard_hosts`]
//! reads every entry with the time it was stored (what `ListHosts` answers).

use crate::{Result, Store, encode, layout, unavailable};
use async_nats::jetstream::kv;
use krane_core::codec;
use krane_core::placement::HostInfo;
use std::time::{Duration, SystemTime};
use tracing::debug;

/// A host as the bucket holds it: its latest heartbeat and when the server stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardHost {
    pub info: HostInfo,
    pub last_heard: SystemTime,
    /// Heard within the host timeout (the bucket's entry TTL). An entry past it is about to
    /// expire: the host counts as lost.
    pub live: bool,
}

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

    /// Every host of the bucket, by id, with when its latest heartbeat was stored and whether
    /// that is within the host timeout (the bucket's TTL, read from the server: the workers
    /// set it). Undecodable entries are skipped, as in [`live_hosts`](Self::live_hosts).
    pub async fn heard_hosts(&self) -> Result<Vec<HeardHost>> {
        self.ensure_connected()?;
        let timeout = self
            .hosts
            .stream
            .get_info()
            .await
            .map_err(unavailable)?
            .config
            .max_age;
        let now = SystemTime::now();
        let mut hosts = Vec::new();
        for key in crate::projection::keys_of(&self.hosts, ">").await? {
            let Some(entry) = self.hosts.entry(&key).await.map_err(unavailable)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match codec::decode::<HostInfo>(&entry.value) {
                Ok(info) => {
                    let last_heard = SystemTime::from(entry.created);
                    hosts.push(HeardHost {
                        info,
                        last_heard,
                        live: heard_within(last_heard, now, timeout),
                    });
                }
                Err(error) => debug!(host = %key, %error, "undecodable heartbeat; skipping it"),
            }
        }
        hosts.sort_by(|a, b| a.info.host_id.cmp(&b.info.host_id));
        Ok(hosts)
    }
}

/// True when a heartbeat stored at `heard` is younger than `timeout` at `now` (a zero timeout:
/// entries never expire). A time ahead of `now` (clocks apart) counts as just heard.
fn heard_within(heard: SystemTime, now: SystemTime, timeout: Duration) -> bool {
    timeout.is_zero() || now.duration_since(heard).unwrap_or_default() < timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_live_until_the_host_timeout() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let timeout = Duration::from_secs(10);
        assert!(heard_within(now - Duration::from_secs(9), now, timeout));
        assert!(!heard_within(now - Duration::from_secs(10), now, timeout));
        assert!(heard_within(now + Duration::from_secs(1), now, timeout));
        assert!(heard_within(SystemTime::UNIX_EPOCH, now, Duration::ZERO));
    }
}
