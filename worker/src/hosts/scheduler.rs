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
//! `full_scan_interval`; a worker also places a gateway inline when it handles its command.

use super::HostIdentity;
use super::placing::{Scope, live_with_self, place_if_needed};
use super::view::HostsView;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::placement::HostInfo;
use krane_core::record::GatewayRecord;
use krane_store::{Latest, Result, Store};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub async fn run(
    store: Store,
    hosts: HostsView,
    me: HostIdentity,
    interval: Duration,
    full_scan_interval: Duration,
    stop: CancellationToken,
) {
    let mut last_hosts: BTreeSet<String> = BTreeSet::new();
    let mut last_scan: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        hosts.refresh(&store).await;
        let live = live_with_self(&me, hosts.snapshot());
        let ids: BTreeSet<String> = live.iter().map(|host| host.host_id.clone()).collect();
        let due =
            ids != last_hosts || last_scan.is_none_or(|at| at.elapsed() >= full_scan_interval);
        if !due {
            continue;
        }
        if ids != last_hosts {
            info!(hosts = ?ids, "live hosts changed");
        }
        match scan(&store, &live).await {
            Ok(()) => {
                last_hosts = ids;
                last_scan = Some(Instant::now());
            }
            Err(error) => warn!(%error, "scheduling scan failed; retrying"),
        }
    }
}

async fn scan(store: &Store, live: &[HostInfo]) -> Result<()> {
    for record in store.all_records().await?.into_values() {
        close_lost_hosts(store, &record, live).await?;
        // The record may lag the log; a stale decision loses its conditional write, and the
        // latest command is read from the log and placed instead.
        let latest = Latest {
            seq: record.intent_seq,
            command: record.intent.clone(),
            last_seq: record.intent_seq,
        };
        place_if_needed(store, latest, live, Scope::OffLostHosts).await?;
    }
    Ok(())
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
