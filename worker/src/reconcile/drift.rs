//! Whether a gateway needs a reconcile on this host, decided from memory alone: its record
//! (from the index) and the containers the engine lists here. In sync means the planner has
//! nothing to do and reporting has no news — exactly when a reconcile would read the log,
//! find nothing to change and publish nothing. The periodic resync reconciles only the
//! gateways that are not, so a quiet fleet costs no NATS reads however many gateways it runs.

use super::plan::{Desired, plan};
use super::report::observations;
use crate::hosts::HostIdentity;
use crate::runtime::ObservedContainer;
use krane_core::record::GatewayRecord;
use std::collections::BTreeMap;

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
