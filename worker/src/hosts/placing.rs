//! Placing a gateway's replicas: those on no host, or on a host that is not live, go to live
//! hosts (`krane_core::placement::place`). The decision is stored as a new command *only if the
//! gateway's latest command is still the one it looked at*
//! (`Store::publish_command_if_latest`), so concurrent placers and newer caller intent never
//! clash. Used inline by the reconcile (when a command leaves replicas unplaced) and by the
//! scheduler (when hosts are lost).

use crate::hosts::HostIdentity;
use krane_core::command::Command;
use krane_core::placement::{self, HostInfo};
use krane_store::{Result, Store, StoredRecord};
use tracing::info;

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
pub fn live_with_self(me: &HostIdentity, mut hosts: Vec<HostInfo>) -> Vec<HostInfo> {
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

/// Places the replicas of `intent` (at `seq`) that are unplaced or on lost hosts, publishing
/// the new placement if nobody published a newer command meanwhile. Returns the command now
/// in force, and the record if placing folded it in.
pub async fn place_if_needed(
    store: &Store,
    seq: u64,
    intent: &Command,
    live: &[HostInfo],
) -> Result<Placed> {
    let unchanged = || Placed {
        seq,
        command: intent.clone(),
        projected: None,
    };
    let Some(spec) = intent.spec() else {
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
    match store.publish_command_if_latest(&command, seq).await? {
        Some(new_seq) => {
            let projected = store.project_command(new_seq, &command).await?;
            let key = command.key();
            info!(namespace = %key.namespace, gateway = %key.gateway_id, placement = ?command.placement(), "placed replicas");
            Ok(Placed {
                seq: new_seq,
                command,
                projected: Some(projected),
            })
        }
        // Someone published a newer command; that one is in force.
        None => Ok(match store.latest_command(&command.key()).await? {
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
