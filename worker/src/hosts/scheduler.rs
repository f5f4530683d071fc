//! Scheduling across hosts. Every worker runs this loop; what one decides is stored through
//! [`placing`](super::placing), conditionally on the gateway's latest command, so concurrent
//! schedulers and newer caller intent never clash.
//!
//! - A replica placed on no host, or on a host judged lost, is placed again
//!   (`placement::place`: other replicas stay, the moved ones spread over live hosts).
//! - A lost host's last observations are closed as `Gone` ("host … lost"), so deletions finish
//!   and nothing is counted twice; when the host comes back its worker removes the containers
//!   of replicas now placed elsewhere.
//!
//! The loop scans the records of the [`RecordIndex`] (memory, kept by a watch; no NATS reads)
//! when the live hosts or the lost ones change and every `full_scan`; every second (and the
//! moment a host's heartbeat would expire, so a loss is judged when due, not up to a second
//! later) it asks the index only for the hosts the records name and the gateways left
//! unplaced; a worker also places a gateway inline when it handles its command. Which missing
//! hosts count as lost is [`liveness`](super::liveness)'s call: none right after a reconnect
//! or while a view is incomplete, none when more than half look lost; only hosts judged lost
//! lose replicas, and one scan moves at most `MOVES_PER_SCAN` gateways.

use super::HostIdentity;
use super::liveness::{Judgement, Liveness};
use super::placing::{Scope, live_with_self, place_if_needed};
use super::view::HostsView;
use crate::index::RecordIndex;
use futures::StreamExt;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::placement;
use krane_core::placement::HostInfo;
use krane_core::record::GatewayRecord;
use krane_store::{Latest, Result, Store};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Gateways whose replicas one worker's scan moves at most; the rest are moved by the next
/// scans, a second apart, so a mistaken judgement cannot move the whole fleet at once.
const MOVES_PER_SCAN: usize = 128;
/// Gateways one scan works on at once.
const SCAN_PARALLELISM: usize = 16;
/// Looking again when a heartbeat expires: this long after, so it has.
const EXPIRY_MARGIN: Duration = Duration::from_millis(5);
/// The shortest pause between two looks.
const MIN_PAUSE: Duration = Duration::from_millis(50);

/// The parts of the worker the scheduler uses.
pub struct Scheduler {
    pub store: Store,
    pub hosts: HostsView,
    pub records: RecordIndex,
    pub me: HostIdentity,
    pub settings: SchedulerSettings,
}

pub async fn run(scheduler: Scheduler, stop: CancellationToken) {
    let Scheduler {
        store,
        hosts,
        records,
        me,
        settings,
    } = scheduler;
    // What the last complete scan acted on: the live hosts and those judged lost.
    let mut last_scanned: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
    let mut last_scan: Option<Instant> = None;
    let mut liveness = Liveness::new(settings.host_timeout);
    let mut last_judgement = Judgement::Steady;
    let mut unplaced = Unplaced::default();
    let author = me.author();
    loop {
        let pause = next_pause(&liveness, settings.interval);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let now = Instant::now();
        // Whole views of the hosts and the records since when, and connected since when: a
        // reconnect, a broken watch or an index still loading restarts the clock.
        let records_whole = records.is_current();
        let reading_well_for = hosts
            .whole_since()
            .filter(|_| records_whole)
            .map(|since| now.saturating_duration_since(since))
            .zip(store.connected_for())
            .map(|(reading, connected)| reading.min(connected));
        let heard = hosts.last_heard();
        liveness.heard(heard.iter().map(|(host, at)| (host.as_str(), *at)));
        // This worker is alive, whatever its last heartbeat says.
        liveness.heard([(me.host_id.as_str(), now)]);
        liveness.learn(records.named_hosts().iter().map(String::as_str), now);
        // What is reserved counts the placements the heartbeats do not show yet.
        let live = records.with_reservations(live_with_self(&me, hosts.snapshot()));
        let ids: BTreeSet<String> = live.iter().map(|host| host.host_id.clone()).collect();
        let judgement = liveness.judge(now, reading_well_for);
        if judgement != last_judgement {
            match &judgement {
                Judgement::Steady => info!(hosts = ?ids, "every known host is live"),
                Judgement::Lost(lost) => warn!(?lost, "hosts lost; moving their replicas"),
                Judgement::TooSoon(missing) => info!(
                    ?missing,
                    "hosts missing; not judged lost yet (just missing, or right after a reconnect)"
                ),
                Judgement::Disrupted { quiet, known } => error!(
                    ?quiet,
                    known,
                    "more than half of the known hosts went quiet at once: moving nothing (check NATS and the network between the hosts)"
                ),
            }
            last_judgement = judgement.clone();
        }
        if !records_whole {
            continue;
        }
        // New gateways left to a placer that did not place them: anyone places them now.
        let stale = unplaced.stale(&records.unplaced(), now);
        if !stale.is_empty() {
            // Debug only: a replica no host can take stays unplaced, and is looked at every scan.
            debug!(
                gateways = stale.len(),
                "placing gateways their placer left unplaced"
            );
            let nothing_lost = BTreeSet::new();
            if let Err(error) =
                scan(&store, &stale, &live, &nothing_lost, Mover::Anyone, &author).await
            {
                warn!(%error, "placing unplaced gateways failed; retrying");
            }
        }
        let lost: BTreeSet<String> = match &judgement {
            Judgement::Lost(lost) => lost.iter().cloned().collect(),
            _ => BTreeSet::new(),
        };
        let state = (ids, lost);
        let due = last_scanned.as_ref() != Some(&state)
            || last_scan.is_none_or(|at| at.elapsed() >= settings.full_scan);
        if !due {
            continue;
        }
        if last_scanned
            .as_ref()
            .is_some_and(|(ids, _)| *ids != state.0)
        {
            info!(hosts = ?state.0, "live hosts changed");
        }
        let full = last_scan.is_none_or(|at| at.elapsed() >= settings.full_scan);
        let mover = if full {
            Mover::Anyone
        } else {
            Mover::OnlyIfMine(&me.host_id)
        };
        match scan(&store, &records.records(), &live, &state.1, mover, &author).await {
            Ok(Scanned::Complete) => {
                last_scanned = Some(state);
                last_scan = Some(Instant::now());
            }
            // More to move: the next round goes on where this one stopped.
            Ok(Scanned::MoveLimitReached) => {
                info!(
                    moves = MOVES_PER_SCAN,
                    "moved as many gateways as one scan may; more next round"
                );
            }
            Err(error) => warn!(%error, "scheduling scan failed; retrying"),
        }
    }
}

/// How long to wait before the next look: an interval, or until just after the moment a
/// host's heartbeat would expire if that is sooner.
fn next_pause(liveness: &Liveness, interval: Duration) -> Duration {
    liveness
        .until_next_expiry(Instant::now())
        .map_or(interval, |expiry| {
            (expiry + EXPIRY_MARGIN).max(MIN_PAUSE).min(interval)
        })
}

/// Since when each gateway has been seen with unplaced replicas; placed by anyone once that
/// is longer than `PLACER_GRACE` (its placer is dead, slow, or sees other hosts).
#[derive(Default)]
struct Unplaced {
    since: std::collections::HashMap<String, Instant>,
}

/// How long a new gateway is left to its placer (`placement::placer`).
const PLACER_GRACE: Duration = Duration::from_secs(2);

impl Unplaced {
    fn stale(&mut self, records: &[Arc<GatewayRecord>], now: Instant) -> Vec<Arc<GatewayRecord>> {
        let mut seen = std::collections::HashMap::new();
        let mut stale = Vec::new();
        for record in records.iter().filter(|record| record.intent.has_unplaced()) {
            let key = record.key().kv_key();
            let since = self.since.get(&key).copied().unwrap_or(now);
            if now.saturating_duration_since(since) >= PLACER_GRACE {
                stale.push(record.clone());
            }
            seen.insert(key, since);
        }
        self.since = seen;
        stale
    }
}

/// How often and how patiently the scheduler looks.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// How often the live hosts are judged.
    pub interval: Duration,
    /// How often every record is scanned even if the hosts did not change.
    pub full_scan: Duration,
    /// `--host-timeout`: also (twice) how long reads must go well before a missing host is lost.
    pub host_timeout: Duration,
}

/// How far a scan got.
enum Scanned {
    Complete,
    MoveLimitReached,
}

async fn scan(
    store: &Store,
    records: &[Arc<GatewayRecord>],
    live: &[HostInfo],
    lost: &BTreeSet<String>,
    mover: Mover<'_>,
    author: &str,
) -> Result<Scanned> {
    // Hosts that may take replicas: the live ones not judged lost.
    let takers: Vec<HostInfo> = live
        .iter()
        .filter(|host| !lost.contains(&host.host_id))
        .cloned()
        .collect();
    let work: Vec<Arc<GatewayRecord>> = records
        .iter()
        .filter(|record| needs_scheduling(record, lost))
        .filter(|record| match mover {
            Mover::Anyone => true,
            Mover::OnlyIfMine(me) => placement::placer(&record.key(), &takers) == Some(me),
        })
        .cloned()
        .collect();
    let more = work.len() > MOVES_PER_SCAN;
    let results: Vec<Result<()>> = futures::stream::iter(work.into_iter().take(MOVES_PER_SCAN))
        .map(|record| async move { schedule(store, &record, live, lost, author).await })
        .buffer_unordered(SCAN_PARALLELISM)
        .collect()
        .await;
    results.into_iter().collect::<Result<()>>()?;
    Ok(if more {
        Scanned::MoveLimitReached
    } else {
        Scanned::Complete
    })
}

/// Who moves a gateway's replicas in a scan.
#[derive(Debug, Clone, Copy)]
enum Mover<'a> {
    /// The host that `placement::placer` names among the hosts that may take replicas, so
    /// the workers do not race for every gateway (the scan after a change of hosts).
    OnlyIfMine(&'a str),
    /// Any worker (the periodic full scan: covers a placer that died or saw other hosts).
    Anyone,
}

/// True when the record has replicas to place or instances to close: unplaced replicas,
/// replicas placed on a lost host, or instances a lost host reported.
fn needs_scheduling(record: &GatewayRecord, lost: &BTreeSet<String>) -> bool {
    record.intent.has_unplaced()
        || record
            .intent
            .placement()
            .iter()
            .any(|host| lost.contains(host))
        || record
            .live_observations()
            .any(|seen| lost.contains(&seen.host_id))
}

/// Closes a gateway's instances on lost hosts and places its replicas that need a host: the
/// `Gone` observations are stored first, then folded into the record together with the new
/// placement (one write; a worker dying in between leaves the gateway to the next scan).
async fn schedule(
    store: &Store,
    record: &GatewayRecord,
    live: &[HostInfo],
    lost: &BTreeSet<String>,
    author: &str,
) -> Result<()> {
    let gone = closing_lost_hosts(record, lost);
    let seqs = store.publish_events(&gone).await?;
    let closing: Vec<(u64, InstanceObserved)> = seqs.into_iter().zip(gone).collect();
    // The record may lag the log; a stale decision loses its conditional write, and the
    // latest command is read from the log and placed instead.
    let latest = Latest {
        seq: record.intent_seq,
        command: record.intent.clone(),
        last_seq: record.intent_seq,
    };
    // The record is the index's: what the live hosts' reserved figures hold of this gateway.
    let counted = crate::index::reserved_per_host(record);
    let placed = place_if_needed(
        store,
        latest,
        live,
        &counted,
        Scope::OffLostHosts {
            lost,
            closing: &closing,
        },
        author,
    )
    .await?;
    if placed.projected.is_none() && !closing.is_empty() {
        store
            .fold_into_record(&record.key(), None, None, &closing)
            .await?;
    }
    Ok(())
}

/// A `Gone` observation for every replica a host judged lost last reported as present.
fn closing_lost_hosts(
    record: &GatewayRecord,
    lost_hosts: &BTreeSet<String>,
) -> Vec<InstanceObserved> {
    if lost_hosts.is_empty() {
        return Vec::new();
    }
    let lost: Vec<InstanceObserved> = record
        .live_observations()
        .filter(|seen| lost_hosts.contains(&seen.host_id))
        .map(|seen| InstanceObserved {
            state: ObservedState::Gone,
            address: String::new(),
            template: String::new(),
            reason: format!("host {} lost", seen.host_id),
            ..seen.clone()
        })
        .collect();
    for event in &lost {
        info!(namespace = %event.namespace, gateway = %event.gateway_id, replica = event.replica, host = %event.host_id, "host lost; closing its instance");
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_core::command::Command;
    use krane_core::spec::GatewaySpec;

    fn record(placement: &[&str]) -> GatewayRecord {
        let spec = GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: "img:1".into(),
            replicas: u32::try_from(placement.len()).unwrap_or(0),
            cpu_millicores: 100,
            memory_mib: 32,
        };
        let placement = placement.iter().map(|host| host.to_string()).collect();
        GatewayRecord::apply_command(None, 1, &Command::create(spec, placement)).expect("record")
    }

    #[test]
    fn a_gateway_unplaced_past_the_grace_is_anyones_to_place() {
        let mut unplaced = Unplaced::default();
        let start = Instant::now();
        let records = vec![Arc::new(record(&["h1", ""])), Arc::new(record(&["h1"]))];
        assert!(unplaced.stale(&records, start).is_empty());
        assert!(
            unplaced
                .stale(&records, start + PLACER_GRACE / 2)
                .is_empty()
        );
        let stale = unplaced.stale(&records, start + PLACER_GRACE);
        assert_eq!(stale.len(), 1);
        // Placed meanwhile: forgotten.
        assert!(
            unplaced
                .stale(&records[1..], start + PLACER_GRACE * 2)
                .is_empty()
        );
        assert!(unplaced.since.is_empty());
    }

    #[test]
    fn only_gateways_touching_a_lost_host_or_unplaced_need_scheduling() {
        let lost = BTreeSet::from(["h3".to_string()]);
        assert!(!needs_scheduling(&record(&["h1", "h2"]), &lost));
        assert!(needs_scheduling(&record(&["h1", "h3"]), &lost));
        assert!(needs_scheduling(&record(&["h1", ""]), &lost));
        assert!(!needs_scheduling(&record(&["h1", "h3"]), &BTreeSet::new()));
    }
}
