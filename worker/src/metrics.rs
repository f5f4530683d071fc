//! The worker's Prometheus metrics, served by `krane_platform::metrics` on `--metrics-listen`:
//! commands by outcome, redeliveries, queue lag, reconcile durations, Docker calls (recorded by
//! the runtime's `Instrumented` wrapper), this host's instances by state and the deleted
//! gateways purged. Callers pass plain
//! labels, so this module depends on nothing else in the worker.
//!
//! Instances are counted from what this worker last reported for each gateway it reconciled
//! (no extra NATS reads): the gauge is complete once the first resync after start has run, and
//! workers that share a host each count the gateways they reconciled.

use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_platform::metrics::{latency_buckets, register};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallErrorLabel {
    call: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

struct WorkerMetrics {
    commands: Family<OutcomeLabel, Counter>,
    redeliveries: Counter,
    pending: Gauge,
    in_flight: Gauge,
    reconciles: Family<OutcomeLabel, Histogram>,
    docker_calls: Family<CallLabel, Histogram>,
    docker_errors: Family<CallErrorLabel, Counter>,
    instances: Family<StateLabel, Gauge>,
    purged: Counter,
    dispatched: Counter,
    addressed: Counter,
    /// What this worker last reported, kept to update the instance gauges.
    reported: Mutex<Reported>,
}

/// Per gateway, the state last reported for each of its replicas on this host, and how many
/// replicas are in each state overall (kept up to date, so a report costs its own replicas).
#[derive(Default)]
struct Reported {
    by_gateway: HashMap<GatewayKey, BTreeMap<u32, ObservedState>>,
    counts: BTreeMap<&'static str, i64>,
}

impl Reported {
    fn set(&mut self, key: &GatewayKey, states: BTreeMap<u32, ObservedState>) {
        let before = if states.is_empty() {
            self.by_gateway.remove(key)
        } else {
            self.by_gateway.insert(key.clone(), states)
        };
        for state in before.iter().flat_map(BTreeMap::values) {
            *self.counts.entry(state_name(*state)).or_default() -= 1;
        }
        for state in self
            .by_gateway
            .get(key)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            *self.counts.entry(state_name(*state)).or_default() += 1;
        }
    }
}

fn state_name(state: ObservedState) -> &'static str {
    match state {
        ObservedState::Pending => "pending",
        ObservedState::Running => "running",
        ObservedState::Failed => "failed",
        ObservedState::Gone => "gone",
    }
}

static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| WorkerMetrics {
    commands: register(
        "worker_commands",
        "Commands handled, by outcome (converged, failed, retry, gave_up, engine_unavailable, \
         interrupted, handed_back, undecodable)",
        Family::default(),
    ),
    redeliveries: register(
        "worker_redeliveries",
        "Commands received more than once (JetStream delivered > 1)",
        Counter::default(),
    ),
    pending: register(
        "worker_commands_pending",
        "Work waiting in this host's consumer, as of the last delivery",
        Gauge::default(),
    ),
    in_flight: register(
        "worker_commands_in_flight",
        "Commands being handled now",
        Gauge::default(),
    ),
    reconciles: register(
        "worker_reconcile_duration_seconds",
        "Time to reconcile one gateway, by outcome (converged, failed, retryable, error)",
        Family::new_with_constructor(|| Histogram::new(latency_buckets())),
    ),
    docker_calls: register(
        "worker_docker_call_duration_seconds",
        "Latency of Docker engine calls, by call",
        Family::new_with_constructor(|| Histogram::new(latency_buckets())),
    ),
    docker_errors: register(
        "worker_docker_call_errors",
        "Failed Docker engine calls, by call and kind (unavailable, rejected, image_unavailable)",
        Family::default(),
    ),
    instances: register(
        "worker_instances",
        "Instances on this host by the state this worker last reported (pending, running, failed)",
        Family::default(),
    ),
    purged: register(
        "worker_gateways_purged",
        "Fully deleted gateways whose commands, events and record were purged after --retention",
        Counter::default(),
    ),
    dispatched: register(
        "worker_commands_dispatched",
        "Commands this worker took from the dispatch consumer and addressed",
        Counter::default(),
    ),
    addressed: register(
        "worker_work_addressed",
        "Work messages this worker's dispatch stored for other hosts (one per host a command concerns)",
        Counter::default(),
    ),
    reported: Mutex::default(),
});

/// Registers the worker's metrics, so they are listed before anything happened.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// A command was handled with `outcome`.
pub fn command(outcome: &'static str) {
    METRICS
        .commands
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}

/// A command was delivered: how often, and how many were still waiting behind it.
pub fn delivered(delivered: i64, pending: u64) {
    if delivered > 1 {
        METRICS.redeliveries.inc();
    }
    METRICS
        .pending
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
}

/// Counts a command dispatched, with the work it addressed to `elsewhere` other hosts.
pub fn dispatched(elsewhere: usize) {
    METRICS.dispatched.inc();
    METRICS
        .addressed
        .inc_by(u64::try_from(elsewhere).unwrap_or(u64::MAX));
}

/// Counts a command as in flight until the returned guard is dropped.
pub fn in_flight() -> InFlight {
    METRICS.in_flight.inc();
    InFlight(())
}

pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

/// One reconcile ended with `outcome` after `took`.
pub fn reconciled(outcome: &'static str, took: Duration) {
    METRICS
        .reconciles
        .get_or_create(&OutcomeLabel { outcome })
        .observe(took.as_secs_f64());
}

/// One engine call took `took`; `error_kind` names how it failed, if it did.
pub fn docker_call(call: &'static str, took: Duration, error_kind: Option<&'static str>) {
    METRICS
        .docker_calls
        .get_or_create(&CallLabel { call })
        .observe(took.as_secs_f64());
    if let Some(kind) = error_kind {
        METRICS
            .docker_errors
            .get_or_create(&CallErrorLabel { call, kind })
            .inc();
    }
}

/// A fully deleted gateway was purged (its record removal took effect).
pub fn gateway_purged() {
    METRICS.purged.inc();
}

/// After a report about `key`: the states of its replicas on `host_id` are those in `record`
/// (as it was before the report) updated by the `facts` just published.
pub fn reported(
    key: &GatewayKey,
    host_id: &str,
    record: Option<&GatewayRecord>,
    facts: &[InstanceObserved],
) {
    let mut states: BTreeMap<u32, ObservedState> = record
        .map(|record| {
            record
                .replicas
                .keys()
                .filter_map(|replica| {
                    let seen = record.observed(*replica, host_id)?;
                    Some((*replica, seen.state))
                })
                .collect()
        })
        .unwrap_or_default();
    states.extend(facts.iter().map(|fact| (fact.replica, fact.state)));
    states.retain(|_, state| *state != ObservedState::Gone);
    let Ok(mut reported) = METRICS.reported.lock() else {
        return;
    };
    reported.set(key, states);
    for state in ["pending", "running", "failed"] {
        let count = reported.counts.get(state).copied().unwrap_or_default();
        METRICS
            .instances
            .get_or_create(&StateLabel { state })
            .set(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(list: &[(u32, ObservedState)]) -> BTreeMap<u32, ObservedState> {
        list.iter().copied().collect()
    }

    #[test]
    fn instance_counts_follow_each_gateways_latest_report() {
        let (a, b) = (GatewayKey::new("ns", "a"), GatewayKey::new("ns", "b"));
        let mut reported = Reported::default();
        reported.set(
            &a,
            states(&[(0, ObservedState::Pending), (1, ObservedState::Pending)]),
        );
        reported.set(&b, states(&[(0, ObservedState::Running)]));
        reported.set(
            &a,
            states(&[(0, ObservedState::Running), (1, ObservedState::Failed)]),
        );
        assert_eq!(reported.counts.get("pending"), Some(&0));
        assert_eq!(reported.counts.get("running"), Some(&2));
        assert_eq!(reported.counts.get("failed"), Some(&1));
        reported.set(&a, BTreeMap::new());
        assert_eq!(reported.counts.get("running"), Some(&1));
        assert_eq!(reported.counts.get("failed"), Some(&0));
        assert!(!reported.by_gateway.contains_key(&a));
    }
}
