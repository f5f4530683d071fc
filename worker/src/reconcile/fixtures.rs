//! Shared fixtures of the reconcile unit tests.

use crate::hosts::HostIdentity;
use crate::runtime::{ContainerState, ObservedContainer};
use krane_core::command::Command;
use krane_core::event::InstanceObserved;
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_core::spec::GatewaySpec;

pub fn key() -> GatewayKey {
    GatewayKey::new("ns", "gw")
}

pub fn spec(replicas: u32, image: &str) -> GatewaySpec {
    GatewaySpec {
        namespace: "ns".into(),
        gateway_id: "gw".into(),
        workspace_id: "ws".into(),
        image: image.into(),
        replicas,
        cpu_millicores: 100,
        memory_mib: 32,
    }
}

pub fn container(replica: u32, template: &str, state: ContainerState) -> ObservedContainer {
    ObservedContainer {
        name: key().container_name(replica),
        gateway: key(),
        replica: Some(replica),
        template: template.into(),
        state,
        host_port: (state == ContainerState::Running).then_some(30000 + replica as u16),
        readiness: crate::runtime::Readiness::Ready,
    }
}

pub fn host() -> HostIdentity {
    HostIdentity {
        host_id: "h1".into(),
        advertise_host: "10.0.0.1".into(),
    }
}

pub fn record_with(spec: &GatewaySpec, events: &[InstanceObserved]) -> GatewayRecord {
    let placement = vec!["h1".to_string(); spec.replicas as usize];
    let mut record =
        GatewayRecord::apply_command(None, 1, &Command::create(spec.clone(), placement));
    for (seq, event) in events.iter().enumerate() {
        record = GatewayRecord::apply_event(record, seq as u64 + 1, event);
    }
    record.expect("record")
}
