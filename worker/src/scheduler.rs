//! Scheduling across hosts. Every worker runs this loop; what one decides is published as a
//! new command *only if the gateway's latest command is still the one it looked at*
//! (`publish_command_if_latest`), so concurrent schedulers and newer user intent never clash.
//!
//! - A replica placed on no host, or on a host whose heartbeat expired, is placed again
//!   (`placement::place`: live replicas stay, the others spread over live hosts).
//! - A lost host's last observations are closed as `Gone` ("host … lost"), so deletions finish
//!   and nothing is counted twice; when the host comes back its worker removes the containers
//!   of replicas now placed elsewhere.
//!
//! The loop scans all gateway records when the set of live hosts changes and every
//! `full_scan_interval`; a worker also places a gateway inline when it handles its command.

use crate::reconcile::Reconciler;
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::hosts::HostsView;
use krane_core::log::{EventLog, LogError, StoredRecord};
use krane_core::placement::{self, HostInfo};
use krane_core::record::GatewayRecord;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub async fn run(
    reconciler: Arc<Reconciler>,
    hosts: HostsView,
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
        hosts.refresh(reconciler.log()).await;
        let live = live_with_self(&reconciler, hosts.snapshot());
        let ids: BTreeSet<String> = live.iter().map(|host| host.host_id.clone()).collect();
        let due =
            ids != last_hosts || last_scan.is_none_or(|at| at.elapsed() >= full_scan_interval);
        if !due {
            continue;
        }
        if ids != last_hosts {
            info!(hosts = ?ids, "live hosts changed");
        }
        match scan(reconciler.log(), &live).await {
            Ok(()) => {
                last_hosts = ids;
                last_scan = Some(Instant::now());
            }
            Err(error) => warn!(%error, "scheduling scan failed; retrying"),
        }
    }
}

/// For placing a gateway inline, while handling its command: only unplaced replicas are
/// placed; replicas on hosts this worker does not know (yet) stay, since only the scheduler,
/// which reads the hosts right before it decides, moves replicas off lost hosts.
pub fn unplaced_only(live: Vec<HostInfo>, intent: &Command) -> Vec<HostInfo> {
    let mut hosts = live;
    for host in intent.placement() {
        if !host.is_empty() && !hosts.iter().any(|known| &known.host_id == host) {
            hosts.push(HostInfo {
                host_id: host.clone(),
                advertise_host: String::new(),
                containers: 0,
                max_containers: None,
            });
        }
    }
    hosts
}

/// The live hosts as this worker sees them, itself always included (it is alive, whatever
/// a late heartbeat says).
pub fn live_with_self(reconciler: &Reconciler, mut hosts: Vec<HostInfo>) -> Vec<HostInfo> {
    let me = reconciler.host();
    if !hosts.iter().any(|host| host.host_id == me.host_id) {
        hosts.push(HostInfo {
            host_id: me.host_id.clone(),
            advertise_host: me.advertise_host.clone(),
            containers: 0,
            max_containers: None,
        });
    }
    hosts
}

async fn scan(log: &EventLog, live: &[HostInfo]) -> Result<(), LogError> {
    for record in log.all_records().await?.into_values() {
        close_lost_hosts(log, &record, live).await?;
        place_if_needed(log, record.intent_seq, &record.intent, live).await?;
    }
    Ok(())
}

/// Publishes `Gone` for every replica a lost host last reported as present.
async fn close_lost_hosts(
    log: &EventLog,
    record: &GatewayRecord,
    live: &[HostInfo],
) -> Result<(), LogError> {
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
    log.append_events(&record.key(), None, &lost).await?;
    Ok(())
}

/// Places the replicas of `intent` (at `seq`) that are unplaced or on lost hosts, publishing
/// the new placement if nobody published a newer command meanwhile. Returns the command now
/// in force, and the record if placing folded it in.
pub async fn place_if_needed(
    log: &EventLog,
    seq: u64,
    intent: &Command,
    live: &[HostInfo],
) -> Result<Placed, LogError> {
    let unchanged = || Placed {
        seq,
        command: intent.clone(),
        projected: None,
    };
    let Some(spec) = intent.desired() else {
        return Ok(unchanged());
    };
    if !placement::needs_placing(spec.replicas, intent.placement(), live) {
        return Ok(unchanged());
    }
    let placed = placement::place(&intent.key(), spec.replicas, intent.placement(), live);
    if placed.as_slice() == intent.placement() {
        return Ok(unchanged());
    }
    let command = Command::create(spec.clone(), placed);
    match log.publish_command_if_latest(&command, seq).await? {
        Some(new_seq) => {
            let projected = log.project_command(new_seq, &command).await?;
            let key = command.key();
            info!(namespace = %key.namespace, gateway = %key.gateway_id, placement = ?command.placement(), "placed replicas");
            Ok(Placed {
                seq: new_seq,
                command,
                projected: Some(projected),
            })
        }
        // Someone published a newer command; that one is in force.
        None => Ok(match log.latest_command(&command.key()).await? {
            Some((seq, command)) => Placed {
                seq,
                command,
                projected: None,
            },
            None => unchanged(),
        }),
    }
}

/// The command in force after [`place_if_needed`].
pub struct Placed {
    pub seq: u64,
    pub command: Command,
    /// The record with `command` folded in, when placing wrote it.
    pub projected: Option<StoredRecord>,
}
