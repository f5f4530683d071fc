//! Placing a gateway's replicas: those on no host, or on a host that is not live, go to live
//! hosts (`krane_core::placement::place`). The decision is stored as a new command *only if the
//! gateway's latest command is still the one it looked at*
//! (`Store::publish_command_expecting`), so concurrent placers and newer caller intent never
//! clash. Used inline by the reconcile (when a command leaves replicas unplaced) and by the
//! scheduler (when hosts are judged lost). A replica moves off a host only when that host was
//! judged lost, never because this worker's view happens to miss it.

use crate::hosts::HostIdentity;
use krane_core::command::Command;
use krane_core::event::InstanceObserved;
use krane_core::placement::{self, HostInfo, Resources};
use krane_core::routing::Replaced;
use krane_store::{Latest, Result, Store, StoredRecord};
use std::collections::{BTreeMap, BTreeSet};
use tracing::info;

/// The hosts replicas may stay on or go to: the live ones, plus every host the intent names
/// that is not judged lost (its replicas stay there; `placement::place` moves replicas only
/// off hosts missing from this list).
fn keeping_all_but_lost(
    live: Vec<HostInfo>,
    intent: &Command,
    lost: &BTreeSet<String>,
) -> Vec<HostInfo> {
    let mut hosts: Vec<HostInfo> = live
        .into_iter()
        .filter(|host| !lost.contains(&host.host_id))
        .collect();
    for host in intent.placement() {
        if !host.is_empty()
            && !lost.contains(host)
            && !hosts.iter().any(|known| &known.host_id == host)
        {
            hosts.push(HostInfo {
                host_id: host.clone(),
                advertise_host: String::new(),
                containers: 0,
                max_containers: None,
                engine_healthy: true,
                capacity: None,
                reserved: Resources::default(),
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
            capacity: None,
            reserved: Resources::default(),
        });
    }
    hosts
}

/// What may be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Only replicas on no host (used inline, while handling a command).
    Unplaced,
    /// Also replicas on hosts judged lost (the scheduler), with the stored `Gone`
    /// observations that close those hosts' instances: folded with the new placement in one
    /// write of the record.
    OffLostHosts {
        lost: &'a BTreeSet<String>,
        closing: &'a [(u64, InstanceObserved)],
    },
}

/// Conditional writes that lose to a newer command before placing gives up for now (the
/// newer command's own delivery places it then).
const PLACING_ATTEMPTS: usize = 3;

/// Places the replicas of the latest command that need a host, publishing the new placement
/// only if nobody published a newer command meanwhile. When someone did, the newer command is
/// read and placed in turn, at once. Returns the command now in force, and the record if
/// placing folded it in (with the scope's closing observations; when nothing was placed,
/// folding those is the caller's). `counted`: what the reserved figures of `live` hold of
/// this gateway (`RecordIndex::reserved_by`); its own replicas are counted from the command
/// instead.
pub async fn place_if_needed(
    store: &Store,
    mut latest: Latest,
    live: &[HostInfo],
    counted: &BTreeMap<String, Resources>,
    scope: Scope<'_>,
    author: &str,
) -> Result<Placed> {
    let nothing_lost = BTreeSet::new();
    let (lost, closing) = match scope {
        Scope::Unplaced => (&nothing_lost, &[][..]),
        Scope::OffLostHosts { lost, closing } => (lost, closing),
    };
    for _ in 0..PLACING_ATTEMPTS {
        let hosts = keeping_all_but_lost(live.to_vec(), &latest.command, lost);
        let Some(command) = placed(&latest.command, &hosts, counted) else {
            return Ok(Placed::as_is(latest));
        };
        match store
            .publish_command_expecting(
                &command,
                latest.last_seq,
                author,
                Replaced::Command(&latest.command),
            )
            .await?
        {
            Some(seq) => {
                let key = command.key();
                let projected = store
                    .fold_into_record(&key, None, Some((seq, &command)), closing)
                    .await?;
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

/// `intent` with its replicas that need a host placed on `live` hosts (where their limits
/// fit, the replicas it keeps counted from `intent`, not from `counted`), and why those left
/// unplaced wait; `None` when neither changes.
fn placed(
    intent: &Command,
    live: &[HostInfo],
    counted: &BTreeMap<String, Resources>,
) -> Option<Command> {
    let spec = intent.spec()?;
    // The extra replica of an update that surges is placed like any other.
    let wanted = intent.wanted_replicas();
    if !placement::needs_placing(wanted, intent.placement(), live) {
        return None;
    }
    let demand = Resources::of(spec);
    let kept = intent
        .placement()
        .get(..usize::try_from(wanted).unwrap_or(usize::MAX))
        .unwrap_or(intent.placement());
    let hosts = placement::recount_own(live, counted, demand, kept);
    let placed = placement::place(&intent.key(), wanted, demand, intent.placement(), &hosts);
    let waiting = placed.waiting.unwrap_or_default();
    (placed.hosts.as_slice() != intent.placement() || waiting != intent.waiting())
        .then(|| intent.placed_waiting(placed.hosts, waiting))
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

    /// Placing with figures that hold nothing of the gateway.
    fn placed(intent: &Command, live: &[HostInfo]) -> Option<Command> {
        super::placed(intent, live, &BTreeMap::new())
    }

    fn host(id: &str) -> HostInfo {
        HostInfo {
            host_id: id.into(),
            advertise_host: "127.0.0.1".into(),
            containers: 0,
            max_containers: None,
            engine_healthy: true,
            capacity: None,
            reserved: Resources::default(),
        }
    }

    #[test]
    fn replicas_move_only_off_hosts_judged_lost() {
        let intent = Command::create(spec(3), vec!["h1".into(), "h2".into(), "h3".into()]);
        // This worker's view misses h2 and h3; only h3 was judged lost.
        let lost = BTreeSet::from(["h3".to_string()]);
        let moved = placed(
            &intent,
            &keeping_all_but_lost(vec![host("h1")], &intent, &lost),
        )
        .expect("h3's replica moves");
        assert_eq!(moved.placement()[..2], ["h1", "h2"]);
        assert_ne!(moved.placement()[2], "h3");
        // Nothing judged lost: nothing moves, whatever the view misses.
        let kept = keeping_all_but_lost(vec![host("h1")], &intent, &BTreeSet::new());
        assert_eq!(placed(&intent, &kept), None);
    }

    #[test]
    fn a_live_host_judged_lost_takes_no_replicas() {
        let intent = Command::create(spec(2), vec!["h1".into(), "h2".into()]);
        let lost = BTreeSet::from(["h2".to_string()]);
        let hosts = keeping_all_but_lost(vec![host("h1"), host("h2")], &intent, &lost);
        let moved = placed(&intent, &hosts).expect("moved");
        assert_eq!(moved.placement(), ["h1", "h1"]);
    }

    #[test]
    fn the_extra_replica_of_a_surge_is_placed_and_moved_like_the_others() {
        let rollout = krane_core::rollout::Rollout {
            policy: krane_core::rollout::UpdatePolicy {
                max_surge: 1,
                ..Default::default()
            },
            previous: Some(Box::new(GatewaySpec {
                image: "img:0".into(),
                ..spec(2)
            })),
            ..Default::default()
        };
        let intent = Command::create_with(spec(2), vec!["h1".into(), "h2".into()], rollout);
        let live = [host("h1"), host("h2"), host("h3")];
        let surged = placed(&intent, &live).expect("the extra replica is placed");
        assert_eq!(surged.placement()[..2], ["h1", "h2"]);
        assert_eq!(
            surged.placement()[2],
            "h3",
            "the host with fewest of the gateway"
        );
        assert_eq!(placed(&surged, &live), None, "placed once");
        let lost = BTreeSet::from(["h3".to_string()]);
        let hosts = keeping_all_but_lost(vec![host("h1"), host("h2")], &surged, &lost);
        let moved = placed(&surged, &hosts).expect("moved off the lost host");
        assert!(["h1", "h2"].contains(&moved.placement()[2].as_str()));
    }

    #[test]
    fn a_replica_that_fits_nowhere_waits_with_what_is_missing_said_once() {
        let intent = Command::create(spec(2), Vec::new());
        let small = HostInfo {
            capacity: Some(Resources {
                millicores: 150,
                mib: 1024,
            }),
            ..host("h1")
        };
        let placed = placed(&intent, std::slice::from_ref(&small)).expect("one placed");
        assert_eq!(placed.placement(), ["h1", ""]);
        assert_eq!(
            placed.waiting(),
            "no host has 100 millicores and 32 MiB free (most free: h1 with 50 millicores, 992 MiB)"
        );
        // Nothing new to say: nothing to store, whether or not the figures count replica 0.
        let one = Resources {
            millicores: 100,
            mib: 32,
        };
        let reserved = HostInfo {
            reserved: one,
            ..small.clone()
        };
        let counted = BTreeMap::from([("h1".to_string(), one)]);
        assert_eq!(super::placed(&placed, &[reserved], &counted), None);
        assert_eq!(super::placed(&placed, &[small], &BTreeMap::new()), None);
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
        let placed = place_if_needed(
            &store,
            seen,
            &[host("h1")],
            &BTreeMap::new(),
            Scope::Unplaced,
            "test",
        )
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
