//! Whether a gateway needs a reconcile on this host, decided from memory alone, before any
//! NATS read:
//!
//! - [`in_sync`]: its record (from the index) against the containers the engine lists here.
//!   In sync means the planner has nothing to do and reporting has no news — exactly when a
//!   reconcile would read the log, find nothing to change and publish nothing. The periodic
//!   resync reconciles only the gateways that are not, so a quiet fleet costs no NATS reads
//!   however many gateways it runs.
//! - [`triage`]: what a delivered command asks of this host. Every host's consumer receives
//!   every command, but most commands concern a few hosts: one that a newer command replaced
//!   already (its own delivery follows), one that places nothing here, and a new gateway that
//!   another host is the one to place first, need no reconcile here. This is what lets more
//!   workers add throughput instead of repeating each other's reads.

use super::plan::{Desired, plan};
use super::report::observations;
use crate::hosts::HostIdentity;
use crate::runtime::ObservedContainer;
use krane_core::command::Command;
use krane_core::record::GatewayRecord;
use std::collections::BTreeMap;

/// What a delivered command needs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    /// The index holds a newer command of the gateway: that command's delivery does the work.
    Superseded,
    /// A new gateway's replicas are unplaced and another host is the one to place them: its
    /// placement arrives as a newer command (and should it not, any worker's scheduler places
    /// what stayed unplaced too long).
    LeaveToPlacer,
    /// Nothing is placed here and nothing was reported here: done, unless the engine holds a
    /// container of the gateway here after all (the caller looks: in what the engine was last
    /// seen to hold, `runtime::held`, and in the engine when that cannot rule one out).
    NothingHereUnlessEngineSays,
    /// Reconcile.
    Reconcile,
}

/// Decides what the delivery of `delivered` (at `seq`, delivered for the `delivery`-th time:
/// a redelivery is never left to another host) needs on host `me`, from the record the index holds (`None`: not indexed, or the index is
/// not current) and the host that should place a new gateway's replicas (`placer`).
pub fn triage(
    delivered: &Command,
    seq: u64,
    delivery: i64,
    indexed: Option<&GatewayRecord>,
    me: &str,
    placer: Option<&str>,
) -> Triage {
    let Some(record) = indexed else {
        return Triage::Reconcile;
    };
    if record.intent_seq > seq {
        return Triage::Superseded;
    }
    if delivered.has_unplaced() {
        let someone_else_places = placer.is_some_and(|placer| placer != me);
        return if someone_else_places && delivery <= 1 {
            Triage::LeaveToPlacer
        } else {
            Triage::Reconcile
        };
    }
    let wanted_here = !delivered.replicas_on(me).is_empty();
    let reported_here = record.live_observations().any(|seen| seen.host_id == me);
    if wanted_here || reported_here {
        Triage::Reconcile
    } else {
        Triage::NothingHereUnlessEngineSays
    }
}

/// True when `containers` (this host's, of the record's gateway) are what the record's intent
/// asks of `host`, and the record already states what they show.
pub fn in_sync(
    record: &GatewayRecord,
    containers: &[ObservedContainer],
    host: &HostIdentity,
) -> bool {
    let key = record.key();
    let desired = Desired::for_host(Some(&record.intent), &host.host_id);
    plan(&key, &desired, containers).is_empty()
        && observations(
            &key,
            &desired,
            Some(record),
            containers,
            &BTreeMap::new(),
            host,
        )
        .is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerState;
    use krane_core::command::Command;
    use krane_core::event::{InstanceObserved, ObservedState};
    use krane_core::spec::GatewaySpec;

    fn spec(image: &str) -> GatewaySpec {
        GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: image.into(),
            replicas: 2,
            cpu_millicores: 100,
            memory_mib: 32,
        }
    }

    fn me() -> HostIdentity {
        HostIdentity {
            host_id: "h1".into(),
            advertise_host: "10.0.0.1".into(),
        }
    }

    fn container(spec: &GatewaySpec, replica: u32, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            name: spec.key().container_name(replica),
            gateway: spec.key(),
            replica: Some(replica),
            template: spec.template(),
            state,
            host_port: Some(30000 + u16::try_from(replica).unwrap_or(0)),
            readiness: crate::runtime::Readiness::Ready,
        }
    }

    /// A record of `spec` placed on h1 (replica 0) and h2 (replica 1), with h1's replica
    /// reported running at its port.
    fn record(spec: &GatewaySpec) -> GatewayRecord {
        let intent = Command::create(spec.clone(), vec!["h1".into(), "h2".into()]);
        let record = GatewayRecord::apply_command(None, 1, &intent);
        let running = InstanceObserved {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            replica: 0,
            template: spec.template(),
            state: ObservedState::Running,
            address: "10.0.0.1:30000".into(),
            reason: String::new(),
            host_id: "h1".into(),
        };
        GatewayRecord::apply_event(record, 1, &running).expect("record")
    }

    #[test]
    fn a_delivery_the_index_knows_a_newer_command_of_is_superseded() {
        let spec = spec("img:1");
        let record = record(&spec);
        let older = Command::create(spec, Vec::new());
        assert_eq!(
            triage(&older, 0, 1, Some(&record), "h1", Some("h1")),
            Triage::Superseded
        );
    }

    #[test]
    fn a_new_gateway_is_placed_by_its_placer_and_by_anyone_on_redelivery() {
        let spec = spec("img:1");
        let unplaced = Command::create(spec.clone(), Vec::new());
        let record = GatewayRecord::apply_command(None, 5, &unplaced).expect("record");
        assert_eq!(
            triage(&unplaced, 5, 1, Some(&record), "h2", Some("h1")),
            Triage::LeaveToPlacer
        );
        assert_eq!(
            triage(&unplaced, 5, 1, Some(&record), "h1", Some("h1")),
            Triage::Reconcile
        );
        // The placer did not place it in time (dead, or it saw other hosts): anyone does.
        assert_eq!(
            triage(&unplaced, 5, 2, Some(&record), "h2", Some("h1")),
            Triage::Reconcile
        );
        assert_eq!(
            triage(&unplaced, 5, 1, Some(&record), "h2", None),
            Triage::Reconcile
        );
    }

    #[test]
    fn a_command_placing_nothing_here_needs_only_a_look_at_the_engine() {
        let spec = spec("img:1");
        let record = record(&spec);
        let placed = record.intent.clone();
        assert_eq!(
            triage(&placed, 1, 1, Some(&record), "h3", None),
            Triage::NothingHereUnlessEngineSays
        );
        // h1 runs replica 0, h2 is to run replica 1.
        assert_eq!(
            triage(&placed, 1, 1, Some(&record), "h1", None),
            Triage::Reconcile
        );
        assert_eq!(
            triage(&placed, 1, 1, Some(&record), "h2", None),
            Triage::Reconcile
        );
    }

    #[test]
    fn a_delete_reaches_the_hosts_that_reported_instances() {
        let spec = spec("img:1");
        let record = record(&spec);
        let delete = Command::delete(&spec.key());
        let record = GatewayRecord::apply_command(Some(record), 2, &delete).expect("record");
        assert_eq!(
            triage(&delete, 2, 1, Some(&record), "h1", None),
            Triage::Reconcile
        );
        assert_eq!(
            triage(&delete, 2, 1, Some(&record), "h2", None),
            Triage::NothingHereUnlessEngineSays
        );
    }

    #[test]
    fn without_an_indexed_record_every_delivery_is_reconciled() {
        let spec = spec("img:1");
        let placed = Command::create(spec, vec!["h1".into(), "h2".into()]);
        assert_eq!(triage(&placed, 1, 1, None, "h3", None), Triage::Reconcile);
    }

    #[test]
    fn a_running_replica_the_record_states_is_in_sync() {
        let spec = spec("img:1");
        let here = [container(&spec, 0, ContainerState::Running)];
        assert!(in_sync(&record(&spec), &here, &me()));
    }

    #[test]
    fn a_missing_or_stopped_container_is_drift() {
        let spec = spec("img:1");
        assert!(!in_sync(&record(&spec), &[], &me()));
        let stopped = [container(&spec, 0, ContainerState::Exited)];
        assert!(!in_sync(&record(&spec), &stopped, &me()));
    }

    #[test]
    fn a_container_nobody_wants_here_is_drift() {
        let spec = spec("img:1");
        let here = [
            container(&spec, 0, ContainerState::Running),
            container(&spec, 1, ContainerState::Running),
        ];
        assert!(!in_sync(&record(&spec), &here, &me()));
    }

    #[test]
    fn a_record_that_lags_the_engine_is_drift() {
        let spec = spec("img:1");
        // Runs, but on another port than the record says: the report is news.
        let mut moved = container(&spec, 0, ContainerState::Running);
        moved.host_port = Some(31000);
        assert!(!in_sync(&record(&spec), &[moved], &me()));
    }

    #[test]
    fn a_new_template_is_drift() {
        let old = spec("img:1");
        let mut record = record(&old);
        let new = spec("img:2");
        record = GatewayRecord::apply_command(
            Some(record),
            2,
            &Command::create(new, vec!["h1".into(), "h2".into()]),
        )
        .expect("record");
        let here = [container(&old, 0, ContainerState::Running)];
        assert!(!in_sync(&record, &here, &me()));
    }
}
