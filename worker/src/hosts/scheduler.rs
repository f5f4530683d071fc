//! Scheduling across hosts. Every worker runs this loop; what one decides is stored through
//! [`placing`](super::placing), conditionally on the gateway's latest command, so concurrent
//! schedulers and newer caller intent never clash.
//!
//! - A replica placed on no host, or on a host whose heartbeat expired, is placed again
//!   (`placement::place`: live replicas stay, the others spread over live hosts).
//! - A lost host's last observations are closed as `Gone` ("host … lost"), so deletions finish
//!   and nothing is counted twice; when the host comes back its worker removes the containers
//!   of replicas now placed elsewhere.
//!
//! The loop scans all gateway records when the set of live hosts changes and every
//! `full_scan`; a worker also places a gateway inline when it handles its command. Which
//! missing hosts count as lost is [`liveness`](super::liveness)'s call: none right after a
//! reconnect, none when more than half look lost; and one scan moves at most
//! `MOVES_PER_SCAN` gateways.

use super::HostIdentity;
use super::liveness::{Judgement, Liveness};
use super::placing::{Scope, live_with_self, place_if_needed};
use super::view::HostsView;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::placement::HostInfo;
use krane_core::record::GatewayRecord;
use krane_store::{Latest, Result, Store};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Gateways whose replicas one scan moves at most; the rest are moved by the next scans,
/// a couple of seconds apart, so a mistaken judgement cannot move the whole fleet at once.
const MOVES_PER_SCAN: usize = 64;

pub async fn run(
    store: Store,
    hosts: HostsView,
    me: HostIdentity,
    settings: SchedulerSettings,
    stop: CancellationToken,
) {
    let mut last_hosts: BTreeSet<String> = BTreeSet::new();
    let mut last_scan: Option<Instant> = None;
    let mut liveness = Liveness::new(settings.host_timeout);
    // Since when reads of the hosts bucket have gone well, without a break.
    let mut reading_well_since: Option<Instant> = None;
    let mut last_judgement = Judgement::Steady;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        let now = Instant::now();
        if hosts.refresh(&store).await {
            reading_well_since.get_or_insert(now);
        } else {
            reading_well_since = None;
        }
        // A reconnect of this worker to NATS restarts the clock too.
        let reading_well_for = reading_well_since
            .map(|since| now.saturating_duration_since(since))
            .zip(store.connected_for())
            .map(|(reading, connected)| reading.min(connected));
        let live = live_with_self(&me, hosts.snapshot());
        let ids: BTreeSet<String> = live.iter().map(|host| host.host_id.clone()).collect();
        let judgement = liveness.judge(&ids, now, reading_well_for);
        if judgement != last_judgement {
            match &judgement {
                Judgement::Steady => info!(hosts = ?ids, "every known host is live"),
                Judgement::Lost(lost) => warn!(?lost, "hosts lost; moving their replicas"),
                Judgement::TooSoon(missing) => info!(
                    ?missing,
                    "hosts missing; not judged lost yet (just missing, or right after a reconnect)"
                ),
                Judgement::Disrupted { lost, known } => error!(
                    ?lost,
                    known,
                    "more than half of the known hosts look lost at once: moving nothing (check NATS and the network between the hosts)"
                ),
            }
            last_judgement = judgement.clone();
        }
        if matches!(
            judgement,
            Judgement::TooSoon(_) | Judgement::Disrupted { .. }
        ) {
            continue;
        }
        let due =
            ids != last_hosts || last_scan.is_none_or(|at| at.elapsed() >= settings.full_scan);
        if !due {
            continue;
        }
        if ids != last_hosts {
            info!(hosts = ?ids, "live hosts changed");
        }
        match scan(&store, &live).await {
            Ok(Scanned::Complete) => {
                last_hosts = ids;
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

/// How often and how patiently the scheduler looks.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// How often the live hosts are read.
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

async fn scan(store: &Store, live: &[HostInfo]) -> Result<Scanned> {
    let mut moves = 0;
    for record in store.all_records().await?.into_values() {
        close_lost_hosts(store, &record, live).await?;
        // The record may lag the log; a stale decision loses its conditional write, and the
        // latest command is read from the log and placed instead.
        let latest = Latest {
            seq: record.intent_seq,
            command: record.intent.clone(),
            last_seq: record.intent_seq,
        };
        let placed = place_if_needed(store, latest, live, Scope::OffLostHosts).await?;
        if placed.projected.is_some() {
            moves += 1;
            if moves >= MOVES_PER_SCAN {
                return Ok(Scanned::MoveLimitReached);
            }
        }
    }
    Ok(Scanned::Complete)
}

/// Publishes `Gone` for every replica a lost host last reported as present.
async fn close_lost_hosts(store: &Store, record: &GatewayRecord, live: &[HostInfo]) -> Result<()> {
    let lost: Vec<InstanceObserved> = record
        .live_observations()
        .filter(|seen| !live.iter().any(|host| host.host_id == seen.host_id))
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
    store.append_events(&record.key(), None, &lost).await?;
    Ok(())
}
