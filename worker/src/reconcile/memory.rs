//! What one worker remembers between reconciles, in memory only (losing it costs at most a
//! redundant reconcile): a lock per gateway, the command each gateway last converged at (and
//! this host's share of it), and since when a rolling update has been waiting for its turn.

use super::plan::Desired;
use krane_core::names::GatewayKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Gateways remembered at most per map; a full map is cleared (forgetting is harmless).
const MAX_GATEWAYS: usize = 100_000;

/// One async mutex per gateway, so a worker never runs two reconciles of one gateway at once.
#[derive(Clone, Default)]
pub struct GatewayLocks {
    locks: Arc<Mutex<HashMap<GatewayKey, Arc<tokio::sync::Mutex<()>>>>>,
}

impl GatewayLocks {
    pub fn lock_for(&self, key: &GatewayKey) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut locks) = self.locks.lock() else {
            return Arc::default();
        };
        // Forget locks nobody holds, so the map stays as small as the work in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key.clone()).or_default().clone()
    }
}

/// Where a gateway's last reconcile here converged: the command's sequence and what that
/// command asked of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    pub seq: u64,
    pub share: Desired,
}

/// Per gateway, where its last reconcile here converged.
#[derive(Default)]
pub struct ConvergedAt {
    converged: Mutex<HashMap<GatewayKey, Converged>>,
}

impl ConvergedAt {
    pub fn get(&self, key: &GatewayKey) -> Option<Converged> {
        self.converged.lock().ok()?.get(key).cloned()
    }

    pub fn set(&self, key: &GatewayKey, converged: Converged) {
        if let Ok(mut map) = self.converged.lock() {
            if map.len() >= MAX_GATEWAYS {
                map.clear();
            }
            map.insert(key.clone(), converged);
        }
    }

    pub fn forget(&self, key: &GatewayKey) {
        if let Ok(mut map) = self.converged.lock() {
            map.remove(key);
        }
    }
}

/// Per gateway in an update, since when each replica of the new template that does not serve
/// yet has been seen so (the update's monitor window runs from then, for each on its own:
/// with parallelism or a surge, several start at once).
#[derive(Default)]
pub struct UpdateMonitor {
    starting: Mutex<HashMap<GatewayKey, BTreeMap<u32, Instant>>>,
}

impl UpdateMonitor {
    /// Of `starting` (the gateway's replicas of the new template that do not serve), the one
    /// seen so the longest and for how long. A replica's clock starts when it is first seen
    /// starting and starts again after it was seen otherwise; `None` when none is starting.
    pub fn longest_not_serving(
        &self,
        key: &GatewayKey,
        starting: &[u32],
    ) -> Option<(u32, Duration)> {
        let mut map = self.starting.lock().ok()?;
        if starting.is_empty() {
            map.remove(key);
            return None;
        }
        if map.len() >= MAX_GATEWAYS {
            map.clear();
        }
        let now = Instant::now();
        let since = map.entry(key.clone()).or_default();
        since.retain(|replica, _| starting.contains(replica));
        for replica in starting {
            since.entry(*replica).or_insert(now);
        }
        since
            .iter()
            .min_by_key(|(replica, since)| (**since, **replica))
            .map(|(replica, since)| (*replica, now.saturating_duration_since(*since)))
    }

    pub fn forget(&self, key: &GatewayKey) {
        if let Ok(mut map) = self.starting.lock() {
            map.remove(key);
        }
    }
}

/// Per gateway, when its rolling update started waiting for another replica (and has not
/// moved since), so a wait that lasts past `--rollout-timeout` can be given up.
#[derive(Default)]
pub struct RolloutWaits {
    since: Mutex<HashMap<GatewayKey, Instant>>,
}

impl RolloutWaits {
    /// When the current wait began; starts one now if none is under way.
    pub fn waiting_since(&self, key: &GatewayKey) -> Instant {
        let now = Instant::now();
        let Ok(mut since) = self.since.lock() else {
            return now;
        };
        if since.len() >= MAX_GATEWAYS {
            since.clear();
        }
        *since.entry(key.clone()).or_insert(now)
    }

    /// The wait is over (the rollout moved, converged, or was given up).
    pub fn end(&self, key: &GatewayKey) {
        if let Ok(mut since) = self.since.lock() {
            since.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_being_replaced_has_its_own_window() {
        let monitor = UpdateMonitor::default();
        let key = GatewayKey::new("ns", "gw");
        let waited = |starting: &[u32]| monitor.longest_not_serving(&key, starting);
        assert_eq!(waited(&[0]), Some((0, Duration::ZERO)));
        std::thread::sleep(Duration::from_millis(20));
        let (replica, since_0) = waited(&[0, 1]).expect("starting");
        assert_eq!(replica, 0, "replica 0 has not served the longest");
        assert!(since_0 >= Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(20));
        // Replica 0 serves now: replica 1 keeps the clock it started with.
        let (replica, since_1) = waited(&[1]).expect("starting");
        assert_eq!(replica, 1);
        assert!(since_1 >= Duration::from_millis(20));
        assert!(since_1 < since_0 + Duration::from_millis(20));
        assert_eq!(waited(&[]), None);
        assert_eq!(
            waited(&[1]),
            Some((1, Duration::ZERO)),
            "waiting for a turn in between started it anew"
        );
    }
}
