//! Placing a gateway's replicas: those on no host, or on a host that is not live, go to live
//! hosts (`krane_core::placement::place`). The decision is stored as a new command *only if the
//! gateway's latest command is still the one it looked at*
//! (`Store::publish_command_expecting`), so concurrent placers and newer caller intent never
//! clash. Used inline by the reconcile (when a command leaves replicas unplaced) and by the
//! scheduler (when hosts are lost).

use crate::hosts::HostIdentity;
use krane_core::command::Command;
use krane_core::placement::{self, HostInfo};
use krane_store::{Latest, Result, Store, StoredRecord};
use tracing::info;

/// For placing a gateway inline, while handling its command: only unplaced replicas are
/// placed; replicas on hosts this worker does not know (yet) stay, since only the scheduler,
/// which reads the hosts right before it decides, moves replicas off lost hosts.
fn unplaced_only(live: Vec<HostInfo>, intent: &Command) -> Vec<HostInfo> {
    let mut hosts = live;
    for host in intent.placement() {
        if !host.is_empty() && !hosts.iter().any(|known| &known.host_id == host) {
            hosts.push(HostInfo {
                host_id: host.clone(),
                advertise_host: String::new(),
                containers: 0,
                max_containers: None,
                engine_healthy: true,
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
            engine_healthy: true,
        });
    }
    hosts
}

/// What may be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only replicas on no host; replicas on hosts this worker does not know stay (used
    /// inline, while handling a command).
    Unplaced,
    /// Also replicas on hosts that are not live (the scheduler, which read the hosts right
    /// before it decides).
    OffLostHosts,
}

/// Conditional writes that lose to a newer command before placing gives up for now (the
/// newer command's own delivery places it then).
const PLACING_ATTEMPTS: usize = 3;

/// Places the replicas of the latest command that need a host, publishing the new placement
/// only if nobody published a newer command meanwhile. When someone did, the newer command is
/// read and placed in turn, at once. Returns the command now in force, and the record if
/// placing folded it in.
pub async fn place_if_needed(
    store: &Store,
    mut latest: Latest,
    live: &[HostInfo],
    scope: Scope,
) -> Result<Placed> {
    for _ in 0..PLACING_ATTEMPTS {
        let hosts = match scope {
            Scope::Unplaced => unplaced_only(live.to_vec(), &latest.command),
            Scope::OffLostHosts => live.to_vec(),
        };
        let Some(command) = placed(&latest.command, &hosts) else {
            return Ok(Placed::as_is(latest));
        };
        match store
            .publish_command_expecting(&command, latest.last_seq)
            .await?
        {
            Some(seq) => {
                let projected = store.project_command(seq, &command).await?;
                let key = command.key();
                info!(namespace = %key.namespace, gateway = %key.gateway_id, placement = ?command.placement(), "placed replicas");
                return Ok(Placed {
                    seq,
                    command,
                    projected: Some(projected),
                });
            }
            // Someone published a newer command: that one is in force; place it instead.
            None => match store.latest_command(&command.key()).await? {
                Some(newer) => latest = newer,
                None => return Ok(Placed::as_is(latest)),
            },
        }
    }
    Ok(Placed::as_is(latest))
}

/// `intent` with its replicas that need a host placed on `live` hosts; `None` when nothing
/// changes.
fn placed(intent: &Command, live: &[HostInfo]) -> Option<Command> {
    let spec = intent.spec()?;
    if !placement::needs_placing(spec.replicas, intent.placement(), live) {
        return None;
    }
    let placed = placement::place(&intent.key(), spec.replicas, intent.placement(), live);
    (placed.as_slice() != intent.placement()).then(|| Command::create(spec.clone(), placed))
}

/// The command in force after [`place_if_needed`].
pub struct Placed {
    pub seq: u64,
    pub command: Command,
    /// The record with `command` folded in, when placing wrote it.
    pub projected: Option<StoredRecord>,
}

impl Placed {
    fn as_is(latest: Latest) -> Self {
        Self {
            seq: latest.seq,
            command: latest.command,
            projected: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_core::spec::GatewaySpec;
    use krane_store::NatsArgs;
    use krane_tests::NatsServer;
    use std::time::Duration;

    fn spec(replicas: u32) -> GatewaySpec {
        GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: "img:1".into(),
            replicas,
            cpu_millicores: 100,
            memory_mib: 32,
        }
    }

    fn host(id: &str) -> HostInfo {
        HostInfo {
            host_id: id.into(),
            advertise_host: "127.0.0.1".into(),
            containers: 0,
            max_containers: None,
            engine_healthy: true,
        }
    }

    #[tokio::test]
    async fn losing_the_placement_race_places_the_newer_command_at_once() {
        let nats = NatsServer::start().await;
        let store = krane_store::connect(
            &NatsArgs::url(nats.url()),
            "placing-test",
            Duration::from_secs(5),
        )
        .await
        .expect("store");
        let first = Command::create(spec(1), Vec::new());
        let key = first.key();
        store.publish_command(&first, 1).await.expect("stored");
        let seen = store
            .latest_command(&key)
            .await
            .expect("read")
            .expect("some");
        // A newer caller command lands between our read and our conditional write.
        let newer = Command::create(spec(3), Vec::new());
        store.publish_command(&newer, 2).await.expect("stored");
        let placed = place_if_needed(&store, seen, &[host("h1")], Scope::Unplaced)
            .await
            .expect("placed");
        assert_eq!(placed.command.spec(), newer.spec());
        assert_eq!(placed.command.placement(), ["h1", "h1", "h1"]);
        let latest = store
            .latest_command(&key)
            .await
            .expect("read")
            .expect("some");
        assert_eq!(latest.command, placed.command, "stored, not only returned");
    }
}
