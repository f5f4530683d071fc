//! `RecordIndex`: every gateway record, in memory, kept current by a watch of the gateways
//! bucket (its state when the watch opens, then every change as it is written). The scheduler
//! and the resync scan it instead of reading every record from NATS, so what a worker reads
//! follows what changes, not how many gateways were ever created.
//!
//! Besides the records it keeps, updated with each change, what the scheduler asks every
//! second: the hosts the records name and the gateways with unplaced replicas, so that asking
//! costs the hosts and the unplaced gateways, not every record.
//!
//! It also sums, per host, the replicas the records' commands place there and their limits
//! (what krane reserved on each host): the heartbeat announces this host's, and placing counts
//! them without waiting for the other hosts' heartbeats.
//!
//! The index serves scans only. Every write decision taken from it is still checked against
//! the log (a placement is stored only if the gateway's latest command is the one the record
//! shows; a reconcile reads the latest command itself), so a lagging index costs a retry,
//! never a wrong container. A reconcile may fold its reports onto the index's copy of a
//! record (kept with the revision it was written at): the compare-and-set checks that copy
//! against the bucket, and a lagging one costs a conflict and a read.

use futures::StreamExt;
use krane_core::names::GatewayKey;
use krane_core::placement::{HostInfo, Resources};
use krane_core::record::GatewayRecord;
use krane_store::{BucketChange, Store, StoredRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The records by KV key, with what is derived from them.
#[derive(Default)]
struct Records {
    by_key: BTreeMap<String, Indexed>,
    /// How many records name each host (placing a replica there, or reporting one there).
    named: BTreeMap<String, usize>,
    /// The keys of the records whose latest command has unplaced replicas.
    unplaced: BTreeSet<String>,
    /// The limits of the replicas placed on each host, summed.
    reserved: BTreeMap<String, Resources>,
    /// How many replicas the records' commands place on each host.
    placed: BTreeMap<String, u32>,
}

/// One record as the bucket last showed it.
struct Indexed {
    record: Arc<GatewayRecord>,
    /// The bucket revision it was written at.
    revision: u64,
}

impl Records {
    fn put(&mut self, key: String, record: Arc<GatewayRecord>, revision: u64) {
        // Most changes are reports about replicas already counted: the same command (so the
        // same placement and limits) naming the same hosts. Nothing derived changes then.
        if let Some(stored) = self.by_key.get_mut(&key)
            && stored.record.intent_seq == record.intent_seq
            && stored.record.intent == record.intent
            && hosts_named_by(&stored.record) == hosts_named_by(&record)
        {
            *stored = Indexed { record, revision };
            return;
        }
        self.remove(&key);
        for host in hosts_named_by(&record) {
            // Most puts name hosts already counted: no new key to allocate.
            match self.named.get_mut(host) {
                Some(count) => *count += 1,
                None => {
                    self.named.insert(host.to_string(), 1);
                }
            }
        }
        if record.intent.has_unplaced() {
            self.unplaced.insert(key.clone());
        }
        let each = limits_per_replica(&record);
        for (host, replicas) in replicas_placed(&record) {
            let reserved = each.times(u64::from(replicas));
            // As for `named`: a host's name is allocated only the first time it is counted.
            match (self.placed.get_mut(host), self.reserved.get_mut(host)) {
                (Some(count), Some(total)) => {
                    *count += replicas;
                    *total = total.plus(reserved);
                }
                _ => {
                    *self.placed.entry(host.to_string()).or_default() += replicas;
                    let total = self.reserved.entry(host.to_string()).or_default();
                    *total = total.plus(reserved);
                }
            }
        }
        self.by_key.insert(key, Indexed { record, revision });
    }

    fn remove(&mut self, key: &str) {
        let Some(Indexed { record, .. }) = self.by_key.remove(key) else {
            return;
        };
        for host in hosts_named_by(&record) {
            if let Some(count) = self.named.get_mut(host) {
                *count -= 1;
                if *count == 0 {
                    self.named.remove(host);
                }
            }
        }
        self.unplaced.remove(key);
        let each = limits_per_replica(&record);
        for (host, replicas) in replicas_placed(&record) {
            if let Some(total) = self.reserved.get_mut(host) {
                *total = total.minus(each.times(u64::from(replicas)));
                if *total == Resources::default() {
                    self.reserved.remove(host);
                }
            }
            if let Some(count) = self.placed.get_mut(host) {
                *count = count.saturating_sub(replicas);
                if *count == 0 {
                    self.placed.remove(host);
                }
            }
        }
    }
}

/// What the index counts of `record` on each host (see [`reservations_of`]), owned.
pub(crate) fn reserved_per_host(record: &GatewayRecord) -> BTreeMap<String, Resources> {
    reservations_of(record)
        .into_iter()
        .map(|(host, reserved)| (host.to_string(), reserved))
        .collect()
}

/// What a record's latest command reserves on each host: its spec's limits once per replica
/// placed there (a Delete reserves nothing).
fn reservations_of(record: &GatewayRecord) -> BTreeMap<&str, Resources> {
    let each = limits_per_replica(record);
    replicas_placed(record)
        .into_iter()
        .map(|(host, replicas)| (host, each.times(u64::from(replicas))))
        .collect()
}

/// The limits of one replica of the record's latest command (none for a Delete).
fn limits_per_replica(record: &GatewayRecord) -> Resources {
    record.intent.spec().map(Resources::of).unwrap_or_default()
}

/// How many replicas a record's latest command places on each host (a Delete places none).
fn replicas_placed(record: &GatewayRecord) -> BTreeMap<&str, u32> {
    let mut placed: BTreeMap<&str, u32> = BTreeMap::new();
    if record.intent.spec().is_none() {
        return placed;
    }
    for replica in 0..record.intent.wanted_replicas() {
        if let Some(host) = record.intent.host_of(replica) {
            *placed.entry(host).or_default() += 1;
        }
    }
    placed
}

/// The hosts a record names, each once: where its replicas are placed and where instances
/// were reported (and not closed).
fn hosts_named_by(record: &GatewayRecord) -> BTreeSet<&str> {
    record
        .intent
        .placement()
        .iter()
        .map(String::as_str)
        .chain(record.live_observations().map(|seen| seen.host_id.as_str()))
        .filter(|host| !host.is_empty())
        .collect()
}

/// The records by KV key, and whether they are current.
#[derive(Clone)]
pub struct RecordIndex {
    records: Arc<RwLock<Records>>,
    /// Since when the index has followed the bucket without a break; `None` before the
    /// initial state arrived and while the watch is broken.
    current_since: watch::Sender<Option<Instant>>,
}

impl Default for RecordIndex {
    fn default() -> Self {
        Self {
            records: Arc::default(),
            current_since: watch::Sender::new(None),
        }
    }
}

impl RecordIndex {
    /// Every record, ordered by key (a snapshot: later changes do not show in it).
    pub fn records(&self) -> Vec<Arc<GatewayRecord>> {
        self.records
            .read()
            .map(|records| {
                let indexed = records.by_key.values();
                indexed.map(|indexed| indexed.record.clone()).collect()
            })
            .unwrap_or_default()
    }

    /// Every host some record names (places a replica on, or has an instance reported by).
    pub fn named_hosts(&self) -> Vec<String> {
        self.records
            .read()
            .map(|records| records.named.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The records whose latest command has unplaced replicas, ordered by key.
    pub fn unplaced(&self) -> Vec<Arc<GatewayRecord>> {
        self.records
            .read()
            .map(|records| {
                records
                    .unplaced
                    .iter()
                    .filter_map(|key| Some(records.by_key.get(key)?.record.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the records' commands reserve on `host_id`.
    pub fn reserved_on(&self, host_id: &str) -> Resources {
        self.records
            .read()
            .ok()
            .and_then(|records| records.reserved.get(host_id).copied())
            .unwrap_or_default()
    }

    /// What the gateway's record reserves on each host, as this index holds it (empty when it
    /// holds none): what [`with_reservations`](Self::with_reservations) counted of it.
    pub fn reserved_by(&self, key: &GatewayKey) -> BTreeMap<String, Resources> {
        let Ok(records) = self.records.read() else {
            return BTreeMap::new();
        };
        records
            .by_key
            .get(&key.kv_key())
            .map(|indexed| reserved_per_host(&indexed.record))
            .unwrap_or_default()
    }

    /// `hosts` with what is reserved on each, and how many containers each holds, counted
    /// from the records as well: the larger of the two, per figure (a heartbeat lags the
    /// placements made since, up to a heartbeat interval, so placers comparing heartbeat
    /// counts alone all pile onto the host that looked emptiest at its last heartbeat; the
    /// index may lag too, by a watch delivery, or still be loading).
    pub fn with_reservations(&self, mut hosts: Vec<HostInfo>) -> Vec<HostInfo> {
        if let Ok(records) = self.records.read() {
            for host in &mut hosts {
                if let Some(reserved) = records.reserved.get(&host.host_id) {
                    host.reserved = host.reserved.max(*reserved);
                }
                if let Some(placed) = records.placed.get(&host.host_id) {
                    host.containers = host.containers.max(*placed);
                }
            }
        }
        hosts
    }

    /// The gateway's record, while the index is current (`None` otherwise, or when it has
    /// none).
    pub fn get(&self, key: &GatewayKey) -> Option<Arc<GatewayRecord>> {
        if !self.is_current() {
            return None;
        }
        let records = self.records.read().ok()?;
        Some(records.by_key.get(&key.kv_key())?.record.clone())
    }

    /// The gateway's record with the revision it was written at, as a read of the bucket would
    /// have answered when the index last heard of it (while the index is current).
    pub fn stored(&self, key: &GatewayKey) -> Option<StoredRecord> {
        if !self.is_current() {
            return None;
        }
        let records = self.records.read().ok()?;
        let indexed = records.by_key.get(&key.kv_key())?;
        Some(StoredRecord {
            record: Some(GatewayRecord::clone(&indexed.record)),
            revision: indexed.revision,
        })
    }

    /// True while the index follows the bucket (its initial state is in, the watch unbroken).
    pub fn is_current(&self) -> bool {
        self.current_since.borrow().is_some()
    }

    /// Waits until the index is current (at once if it is); false if `stop` fired first.
    pub async fn wait_current(&self, stop: &CancellationToken) -> bool {
        let mut current = self.current_since.subscribe();
        tokio::select! {
            _ = stop.cancelled() => false,
            ready = current.wait_for(Option::is_some) => ready.is_ok(),
        }
    }

    fn replace_all(&self, records: Records) {
        if let Ok(mut current) = self.records.write() {
            *current = records;
        }
    }

    fn apply(&self, change: BucketChange<GatewayRecord>) {
        if let Ok(mut records) = self.records.write() {
            apply_to(&mut records, change);
        }
    }
}

#[cfg(test)]
impl RecordIndex {
    /// A current index holding exactly `stored` (for tests of what reads it).
    pub(crate) fn holding(stored: &[StoredRecord]) -> Self {
        let index = Self::default();
        for stored in stored {
            if let Some(record) = &stored.record {
                index.apply(BucketChange::Put {
                    key: record.key().kv_key(),
                    value: record.clone(),
                    revision: stored.revision,
                    written: std::time::SystemTime::now(),
                });
            }
        }
        index.current_since.send_replace(Some(Instant::now()));
        index
    }
}

fn apply_to(records: &mut Records, change: BucketChange<GatewayRecord>) {
    match change {
        BucketChange::Put {
            key,
            value,
            revision,
            ..
        } => records.put(key, Arc::new(value), revision),
        BucketChange::Removed { key } => records.remove(&key),
        BucketChange::Current => {}
    }
}

/// Follows the gateways bucket into `index` until `stop` fires, reopening the watch with
/// backoff when it breaks. While the initial state of a (re)opened watch arrives, the previous
/// contents stay readable; they are replaced at once when it is complete, so keys removed
/// while the watch was broken do not linger.
pub async fn follow(store: Store, index: RecordIndex, stop: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = store.watch_records() => opened,
        };
        match opened {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                let mut initial = Some(Records::default());
                loop {
                    let change = tokio::select! {
                        _ = stop.cancelled() => return,
                        change = changes.next() => change,
                    };
                    match change {
                        Some(Ok(BucketChange::Current)) => {
                            if let Some(records) = initial.take() {
                                let count = records.by_key.len();
                                index.replace_all(records);
                                index.current_since.send_replace(Some(Instant::now()));
                                info!(
                                    records = count,
                                    "gateway records indexed; following changes"
                                );
                                delay = Duration::from_millis(250);
                            }
                        }
                        Some(Ok(change)) => match initial.as_mut() {
                            Some(records) => apply_to(records, change),
                            None => index.apply(change),
                        },
                        Some(Err(error)) => {
                            warn!(%error, "watch of the gateway records broke; reopening it");
                            break;
                        }
                        None => {
                            warn!("watch of the gateway records ended; reopening it");
                            break;
                        }
                    }
                }
            }
            Err(error) => warn!(%error, "cannot watch the gateway records; retrying"),
        }
        index.current_since.send_replace(None);
        if !pause_before_reopening(&mut delay, &stop).await {
            return;
        }
    }
}

/// Waits `delay` before a broken watch is reopened, doubling it for the next time (at most
/// 5 s); false when `stop` fired meanwhile.
pub(crate) async fn pause_before_reopening(delay: &mut Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => return false,
        _ = tokio::time::sleep(*delay) => {}
    }
    *delay = (*delay * 2).min(Duration::from_secs(5));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_core::command::Command;
    use krane_core::event::{InstanceObserved, ObservedState};
    use krane_core::names;
    use krane_core::spec::GatewaySpec;
    use krane_store::NatsArgs;
    use krane_tests::NatsServer;

    fn create(gateway: &str) -> Command {
        let spec = GatewaySpec {
            gateway_id: gateway.into(),
            ..crate::reconcile::fixtures::spec(1, "img:1")
        };
        Command::create(spec, vec!["h1".into()])
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ids(index: &RecordIndex) -> Vec<String> {
        index
            .records()
            .iter()
            .map(|record| record.gateway_id.clone())
            .collect()
    }

    fn placed(gateway: &str, hosts: &[&str]) -> GatewayRecord {
        let Command::Create { spec, .. } = create(gateway) else {
            unreachable!("create() makes a Create")
        };
        let spec = GatewaySpec {
            replicas: u32::try_from(hosts.len()).unwrap_or(0),
            ..spec
        };
        let placement = hosts.iter().map(|host| host.to_string()).collect();
        GatewayRecord::apply_command(None, 1, &Command::create(spec, placement)).expect("record")
    }

    #[test]
    fn named_hosts_and_unplaced_gateways_follow_every_put_and_removal() {
        let mut records = Records::default();
        records.put("ns.a".into(), Arc::new(placed("a", &["h1", "h2"])), 1);
        records.put("ns.b".into(), Arc::new(placed("b", &["h2", ""])), 1);
        let named: Vec<&String> = records.named.keys().collect();
        assert_eq!(named, ["h1", "h2"]);
        assert_eq!(records.named["h2"], 2);
        assert_eq!(records.unplaced, BTreeSet::from(["ns.b".to_string()]));
        // b is placed: no longer unplaced; a moves off h1.
        records.put("ns.b".into(), Arc::new(placed("b", &["h2", "h3"])), 1);
        records.put("ns.a".into(), Arc::new(placed("a", &["h3", "h2"])), 1);
        let named: Vec<&String> = records.named.keys().collect();
        assert_eq!(named, ["h2", "h3"]);
        assert!(records.unplaced.is_empty());
        records.remove("ns.a");
        records.remove("ns.b");
        records.remove("ns.b");
        assert!(records.named.is_empty() && records.by_key.is_empty());
    }

    #[test]
    fn a_report_replaces_the_record_and_counts_a_host_it_names_anew() {
        let mut records = Records::default();
        let record = placed("a", &["h1", "h2"]);
        records.put("ns.a".into(), Arc::new(record.clone()), 1);
        let report = |record: &GatewayRecord, host: &str, seq: u64| {
            let event = InstanceObserved {
                namespace: "ns".into(),
                gateway_id: "a".into(),
                replica: 0,
                template: record
                    .intent
                    .spec()
                    .map(GatewaySpec::template)
                    .unwrap_or_default(),
                state: ObservedState::Running,
                address: String::new(),
                reason: String::new(),
                host_id: host.into(),
            };
            GatewayRecord::apply_event(Some(record.clone()), seq, &event).expect("folded")
        };
        // h1 reports its replica: same command, same hosts; the record is the new one.
        let reported = report(&record, "h1", 1);
        records.put("ns.a".into(), Arc::new(reported.clone()), 1);
        assert_eq!(records.by_key["ns.a"].record.as_ref(), &reported);
        assert_eq!(records.named["h1"], 1);
        assert_eq!(records.placed["h1"], 1);
        // h3 reports an instance it still runs: h3 is named from now on.
        let from_h3 = report(&reported, "h3", 2);
        records.put("ns.a".into(), Arc::new(from_h3), 1);
        let named: Vec<&String> = records.named.keys().collect();
        assert_eq!(named, ["h1", "h2", "h3"]);
        assert_eq!(records.placed.get("h3"), None, "reported, not placed there");
        records.remove("ns.a");
        assert!(records.named.is_empty() && records.placed.is_empty());
    }

    #[test]
    fn reservations_and_placed_replicas_follow_every_put_and_removal() {
        let mut records = Records::default();
        let each = Resources {
            millicores: 100,
            mib: 32,
        };
        records.put("ns.a".into(), Arc::new(placed("a", &["h1", "h1", "h2"])), 1);
        records.put("ns.b".into(), Arc::new(placed("b", &["h2", ""])), 1);
        assert_eq!(records.reserved["h1"], each.times(2));
        assert_eq!(records.reserved["h2"], each.times(2));
        // a scales to one replica on h2; b is deleted.
        assert_eq!(records.placed["h1"], 2);
        assert_eq!(records.placed["h2"], 2);
        records.put("ns.a".into(), Arc::new(placed("a", &["h2"])), 1);
        records.remove("ns.b");
        assert_eq!(records.reserved.get("h1"), None);
        assert_eq!(records.reserved["h2"], each);
        assert_eq!(records.placed.get("h1"), None);
        assert_eq!(records.placed["h2"], 1);
        let index = RecordIndex::default();
        index.replace_all(records);
        assert_eq!(index.reserved_on("h2"), each);
        let heartbeat = HostInfo {
            host_id: "h2".into(),
            advertise_host: String::new(),
            containers: 0,
            max_containers: None,
            engine_healthy: true,
            capacity: None,
            reserved: Resources {
                millicores: 0,
                mib: 64,
            },
        };
        let counted = index.with_reservations(vec![heartbeat]);
        assert_eq!(
            counted[0].reserved,
            Resources {
                millicores: 100,
                mib: 64
            },
            "the larger of heartbeat and index, per resource"
        );
        assert_eq!(
            counted[0].containers, 1,
            "a heartbeat that lags the placements"
        );
    }

    #[tokio::test]
    async fn the_index_follows_the_bucket_from_its_state_through_changes_and_a_broker_restart() {
        let mut nats = NatsServer::start().await;
        let store = krane_store::connect(
            &NatsArgs::url(nats.url()),
            "index-test",
            Duration::from_secs(5),
        )
        .await
        .expect("store");
        // An empty bucket is current at once.
        let index = RecordIndex::default();
        let stop = CancellationToken::new();
        let follower = tokio::spawn(follow(store.clone(), index.clone(), stop.clone()));
        assert!(index.wait_current(&stop).await);
        assert!(ids(&index).is_empty());
        stop.cancel();
        let _ = follower.await;

        // The state when the watch opens, then changes.
        store.project_command(1, &create("a")).await.expect("a");
        store.project_command(2, &create("b")).await.expect("b");
        let index = RecordIndex::default();
        let stop = CancellationToken::new();
        let follower = tokio::spawn(follow(store.clone(), index.clone(), stop.clone()));
        assert!(index.wait_current(&stop).await);
        assert_eq!(ids(&index), ["a", "b"]);
        let c = store.project_command(3, &create("c")).await.expect("c");
        until("c is indexed", || ids(&index) == ["a", "b", "c"]).await;
        // With the revision it was written at, as a read would answer.
        let indexed = index.stored(&create("c").key()).expect("c's copy");
        assert_eq!(indexed.revision, c.revision);
        assert_eq!(indexed.record, c.record);
        let bucket = store
            .jetstream()
            .get_key_value(names::GATEWAYS_BUCKET)
            .await
            .expect("bucket");
        bucket
            .purge(create("a").key().kv_key())
            .await
            .expect("purged");
        until("a is dropped", || ids(&index) == ["b", "c"]).await;
        assert!(index.stored(&create("a").key()).is_none());

        // The broker restarts on the same store: the index carries on without a restart.
        nats.restart().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if store.project_command(4, &create("d")).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "NATS is back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        until("d is indexed after the restart", || {
            ids(&index) == ["b", "c", "d"]
        })
        .await;
        assert!(index.is_current());
        stop.cancel();
        let _ = follower.await;
    }
}
