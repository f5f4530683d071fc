//! `HostsView`: the live hosts, kept by a watch of the hosts bucket (its state when the watch
//! opens, then every heartbeat as it is written), so placing and the scheduler read memory,
//! not NATS. A host is live while its last heartbeat is younger than the host timeout, as
//! this worker heard it: a heartbeat that arrives now counts from now; one found in the
//! bucket when the watch opened counts from when it was written (never older than the
//! timeout, whatever the clocks say).
//!
//! The view also says since when it has followed the bucket without a break (`None` while the
//! watch is broken or before its initial state arrived): the scheduler judges no host lost
//! on a view that has not been whole for long. Every worker hears its own heartbeats through
//! the watch; when its own has not come back for a host timeout, the watch is taken for
//! broken and reopened.

use futures::StreamExt;
use krane_core::placement::HostInfo;
use krane_store::{BucketChange, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Clone)]
pub struct HostsView {
    inner: Arc<RwLock<Heard>>,
    host_timeout: Duration,
}

/// What the watch has told so far.
#[derive(Default)]
struct Heard {
    /// Each host's last heartbeat, and when it counts from.
    hosts: BTreeMap<String, (HostInfo, Instant)>,
    /// Since when the view has followed the bucket without a break.
    whole_since: Option<Instant>,
}

impl HostsView {
    pub fn new(host_timeout: Duration) -> Self {
        Self {
            inner: Arc::default(),
            host_timeout,
        }
    }

    /// The live hosts, sorted by id.
    pub fn snapshot(&self) -> Vec<HostInfo> {
        self.live_at(Instant::now())
    }

    fn live_at(&self, now: Instant) -> Vec<HostInfo> {
        let Ok(heard) = self.inner.read() else {
            return Vec::new();
        };
        heard
            .hosts
            .values()
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.host_timeout)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Every host heard of, with the instant its last heartbeat counts from.
    pub fn last_heard(&self) -> Vec<(String, Instant)> {
        let Ok(heard) = self.inner.read() else {
            return Vec::new();
        };
        heard
            .hosts
            .iter()
            .map(|(id, (_, at))| (id.clone(), *at))
            .collect()
    }

    /// Since when the view has followed the hosts bucket without a break (`None`: it does
    /// not now).
    pub fn whole_since(&self) -> Option<Instant> {
        self.inner.read().ok()?.whole_since
    }

    /// Records a heartbeat that counts from `at`.
    fn heard(&self, host: HostInfo, at: Instant) {
        if let Ok(mut heard) = self.inner.write() {
            heard.hosts.insert(host.host_id.clone(), (host, at));
            // Forget hosts long gone, so the map stays as small as the fleet.
            let forget_after = self.host_timeout * 10;
            heard.hosts.retain(|_, (_, at)| at.elapsed() < forget_after);
        }
    }

    fn removed(&self, host_id: &str) {
        if let Ok(mut heard) = self.inner.write() {
            heard.hosts.remove(host_id);
        }
    }

    fn set_whole(&self, whole: bool) {
        if let Ok(mut heard) = self.inner.write() {
            heard.whole_since = if whole {
                heard.whole_since.or(Some(Instant::now()))
            } else {
                None
            };
        }
    }

    /// When `me` was last heard.
    fn last_heard_of(&self, me: &str) -> Option<Instant> {
        self.inner.read().ok()?.hosts.get(me).map(|(_, at)| *at)
    }

    /// The instant a heartbeat written at `written` (by the server's clock) counts from: its
    /// age by this host's clock, clamped to `[0, host timeout]`.
    fn counts_from(&self, written: SystemTime, now: Instant) -> Instant {
        let age = SystemTime::now()
            .duration_since(written)
            .unwrap_or_default()
            .min(self.host_timeout);
        now.checked_sub(age).unwrap_or(now)
    }
}

/// Follows the hosts bucket into `view` until `stop` fires, reopening the watch with backoff
/// when it breaks or when `me`'s own heartbeats stop coming back through it.
pub async fn follow(store: Store, view: HostsView, me: String, stop: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    let check_every = (view.host_timeout / 3).max(Duration::from_millis(100));
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = store.watch_hosts() => opened,
        };
        match opened {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                let mut initial = true;
                let opened_at = Instant::now();
                let mut check = tokio::time::interval(check_every);
                loop {
                    let change = tokio::select! {
                        _ = stop.cancelled() => return,
                        change = changes.next() => change,
                        _ = check.tick() => {
                            let last = view.last_heard_of(&me).unwrap_or(opened_at).max(opened_at);
                            if last.elapsed() > view.host_timeout && store.is_connected() {
                                warn!(host = %me, "this host's own heartbeats stopped coming back through the hosts watch; reopening it");
                                break;
                            }
                            continue;
                        }
                    };
                    let now = Instant::now();
                    match change {
                        Some(Ok(BucketChange::Put { value, written, .. })) => {
                            let at = if initial {
                                view.counts_from(written, now)
                            } else {
                                now
                            };
                            view.heard(value, at);
                        }
                        Some(Ok(BucketChange::Removed { key })) => view.removed(&key),
                        Some(Ok(BucketChange::Current)) => {
                            initial = false;
                            view.set_whole(true);
                            info!(
                                hosts = view.snapshot().len(),
                                "live hosts read; following heartbeats"
                            );
                            delay = Duration::from_millis(250);
                        }
                        Some(Err(error)) => {
                            warn!(%error, "watch of the hosts broke; reopening it");
                            break;
                        }
                        None => {
                            warn!("watch of the hosts ended; reopening it");
                            break;
                        }
                    }
                }
            }
            Err(error) => warn!(%error, "cannot watch the hosts; retrying"),
        }
        view.set_whole(false);
        if !crate::index::pause_before_reopening(&mut delay, &stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_store::NatsArgs;
    use krane_tests::NatsServer;

    fn host(id: &str) -> HostInfo {
        HostInfo {
            host_id: id.into(),
            advertise_host: "127.0.0.1".into(),
            containers: 0,
            max_containers: None,
            engine_healthy: true,
            capacity: None,
            reserved: Default::default(),
        }
    }

    #[test]
    fn a_host_is_live_until_its_heartbeat_is_a_host_timeout_old() {
        let view = HostsView::new(Duration::from_secs(15));
        let now = Instant::now();
        view.heard(host("a"), now);
        view.heard(host("b"), now - Duration::from_secs(10));
        let ids = |hosts: Vec<HostInfo>| -> Vec<String> {
            hosts.into_iter().map(|host| host.host_id).collect()
        };
        assert_eq!(ids(view.live_at(now)), ["a", "b"]);
        assert_eq!(ids(view.live_at(now + Duration::from_secs(6))), ["a"]);
        assert!(view.live_at(now + Duration::from_secs(15)).is_empty());
    }

    #[test]
    fn a_heartbeat_found_in_the_bucket_counts_from_when_it_was_written_at_most_a_timeout_back() {
        let view = HostsView::new(Duration::from_secs(15));
        let now = Instant::now();
        let five_ago = view.counts_from(SystemTime::now() - Duration::from_secs(5), now);
        let age = now.duration_since(five_ago);
        assert!(
            age >= Duration::from_secs(5) && age < Duration::from_secs(6),
            "{age:?}"
        );
        // A clock far behind or far ahead of the server's never makes a heartbeat older than
        // the timeout, nor younger than now.
        let ancient = view.counts_from(SystemTime::now() - Duration::from_secs(3600), now);
        assert_eq!(now.duration_since(ancient), Duration::from_secs(15));
        let future = view.counts_from(SystemTime::now() + Duration::from_secs(3600), now);
        assert_eq!(future, now);
    }

    #[test]
    fn a_removed_host_is_no_longer_live() {
        let view = HostsView::new(Duration::from_secs(15));
        view.heard(host("a"), Instant::now());
        view.removed("a");
        assert!(view.snapshot().is_empty());
    }

    /// Three workers starting together, each with its own connection, all see all three.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_started_together_each_see_every_host() {
        let nats = NatsServer::start().await;
        let timeout = Duration::from_secs(3);
        let stop = CancellationToken::new();
        let mut views = Vec::new();
        for index in 0..3 {
            let mut store = krane_store::connect(
                &NatsArgs::url(nats.url()),
                &format!("view-test-{index}"),
                Duration::from_secs(5),
            )
            .await
            .expect("store");
            store.set_host_timeout(timeout).await.expect("timeout set");
            let id = format!("h{index}");
            let view = HostsView::new(timeout);
            tokio::spawn(follow(
                store.clone(),
                view.clone(),
                id.clone(),
                stop.clone(),
            ));
            let beat = stop.clone();
            tokio::spawn(async move {
                while !beat.is_cancelled() {
                    let _ = store.heartbeat(&host(&id)).await;
                    tokio::time::sleep(timeout / 3).await;
                }
            });
            views.push(view);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (index, view) in views.iter().enumerate() {
            loop {
                let seen: Vec<String> = view.snapshot().into_iter().map(|h| h.host_id).collect();
                if seen == ["h0", "h1", "h2"] && view.whole_since().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "worker {index} sees only {seen:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // And keeps seeing them for several host timeouts.
        for _ in 0..4 {
            tokio::time::sleep(timeout).await;
            for view in &views {
                assert_eq!(view.snapshot().len(), 3);
            }
        }
        stop.cancel();
    }
}
