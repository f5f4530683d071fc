//! Whether a gateway needs a reconcile on this host, decided from memory alone, before any
//! NATS read:
//!
//! - [`in_sync`]: its record (from the index) against the containers the engine lists here.
//!   In sync means the planner has nothing to do and reporting has no news — exactly when a
//!   reconcile would read the log, find nothing to change and publish nothing. The periodic
//!   resync reconciles only the gateways that are not, so a quiet fleet costs no NATS reads
//!   however many gateways it runs.
//! - [`triage`]: what work addressed to this host asks of it. Work reaches only the hosts a
//!   command concerns, but one of them may have nothing of the gateway to act on: a host the
//!   command places nothing on, that reported nothing and holds nothing of it, needs no
//!   reconcile. A newer command does not make older work moot here: that newer command is
//!   addressed only to the hosts it concerns in turn, so this host reconciles to the latest.

use super::plan::{Desired, plan};
use super::report::observations;
use crate::hosts::HostIdentity;
use crate::runtime::ObservedContainer;
use krane_core::command::Command;
use krane_core::record::GatewayRecord;
use std::collections::BTreeMap;

/// What work about `delivered` needs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    /// Nothing is placed here and nothing was reported here: done, unless the engine holds a
    /// container of the gateway here after all (the caller looks: in what the engine was last
    /// seen to hold, `runtime::held`, and in the engine when that cannot rule one out).
    NothingHereUnlessEngineSays,
    /// Reconcile.
    Reconcile,
}

/// Decides what work about `delivered` needs on host `me`, from the record the index holds
/// (`None`: not indexed, or the index is not current). A command with unplaced replicas is
/// always reconciled: reconciling places them.
pub fn triage(delivered: &Command, indexed: Option<&GatewayRecord>, me: &str) -> Triage {
    let Some(record) = indexed else {
        return Triage::Reconcile;
    };
    if delivered.has_unplaced() {
        return Triage::Reconcile;
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
    fn an_older_command_is_reconciled_to_the_latest_and_an_unplaced_one_placed() {
        let spec = spec("img:1");
        let record = record(&spec);
        // The index holds a newer command: the work is still done (to the latest command).
        let older = Command::create(spec.clone(), vec!["h1".into()]);
        assert_eq!(triage(&older, Some(&record), "h1"), Triage::Reconcile);
        let unplaced = Command::create(spec, Vec::new());
        let record = GatewayRecord::apply_command(None, 5, &unplaced).expect("record");
        assert_eq!(triage(&unplaced, Some(&record), "h2"), Triage::Reconcile);
    }

    #[test]
    fn a_command_placing_nothing_here_needs_only_a_look_at_the_engine() {
        let spec = spec("img:1");
        let record = record(&spec);
        let placed = record.intent.clone();
        assert_eq!(
            triage(&placed, Some(&record), "h3"),
            Triage::NothingHereUnlessEngineSays
        );
        // h1 runs replica 0, h2 is to run replica 1.
        assert_eq!(triage(&placed, Some(&record), "h1"), Triage::Reconcile);
        assert_eq!(triage(&placed, Some(&record), "h2"), Triage::Reconcile);
    }

    #[test]
    fn a_delete_reaches_the_hosts_that_reported_instances() {
        let spec = spec("img:1");
        let record = record(&spec);
        let delete = Command::delete(&spec.key());
        let record = GatewayRecord::apply_command(Some(record), 2, &delete).expect("record");
        assert_eq!(triage(&delete, Some(&record), "h1"), Triage::Reconcile);
        assert_eq!(
            triage(&delete, Some(&record), "h2"),
            Triage::NothingHereUnlessEngineSays
        );
    }

    #[test]
    fn without_an_indexed_record_every_delivery_is_reconciled() {
        let spec = spec("img:1");
        let placed = Command::create(spec, vec!["h1".into(), "h2".into()]);
        assert_eq!(triage(&placed, None, "h3"), Triage::Reconcile);
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
