//! Stored values that do not decode (a bug, a bit flip, or a message from another version):
//! they are skipped, so one bad value never stops reads, scans or replays of the others. Each
//! is counted in `krane_store_undecodable_total{kind}` and logged once per place.

use krane_platform::metrics::register;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use tracing::warn;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

static SKIPPED: LazyLock<Family<KindLabel, Counter>> = LazyLock::new(|| {
    register(
        "store_undecodable",
        "Stored values that could not be decoded and were skipped, by kind",
        Family::default(),
    )
});

/// Places already logged; bounded, so a flood of bad values cannot grow it without end.
static LOGGED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);
const MAX_LOGGED: usize = 10_000;

/// Registers the metric, so it is listed before anything was skipped.
pub fn register_metrics() {
    LazyLock::force(&SKIPPED);
}

/// Notes that the `kind` value at `location` was skipped because of `error`.
pub(crate) fn skipped(kind: &'static str, location: &str, error: &dyn std::fmt::Display) {
    SKIPPED.get_or_create(&KindLabel { kind }).inc();
    let first_time = LOGGED.lock().is_ok_and(|mut logged| {
        if logged.len() >= MAX_LOGGED {
            logged.clear();
        }
        logged.insert(location.to_string())
    });
    if first_time {
        warn!(kind, location, %error, "undecodable value skipped");
    }
}
