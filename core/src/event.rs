//! Events: what a worker saw of one replica after acting on it, published on the events stream
//! and folded into the gateway's record. An event states a fact about a container ("replica 1 of
//! template T runs at host:port"), never an instruction, so replaying events is harmless.

use crate::names::GatewayKey;
use serde::{Deserialize, Serialize};

/// The state of one replica's container as the worker observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedState {
    /// Being created or started, or not running yet.
    Pending,
    /// Running with its port published.
    Running,
    /// Could not be provisioned; `reason` says why.
    Failed,
    /// No container exists for the replica.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceObserved {
    pub namespace: String,
    pub gateway_id: String,
    pub replica: u32,
    /// Template of the observed container (empty when `Gone`); see `GatewaySpec::template`.
    pub template: String,
    pub state: ObservedState,
    /// `<advertise host>:<host port>` while running, else empty.
    pub address: String,
    /// Why the replica failed or what is being retried; empty otherwise.
    pub reason: String,
    /// The worker host that observed (and runs) the container; for a host declared lost, the
    /// lost host (reported `Gone` by whichever worker noticed).
    pub host_id: String,
}

impl InstanceObserved {
    pub fn key(&self) -> GatewayKey {
        GatewayKey::new(&self.namespace, &self.gateway_id)
    }

    /// True when both say the same thing about the replica (so publishing `self` is pointless).
    pub fn same_fact(&self, other: &Self) -> bool {
        self.template == other.template
            && self.state == other.state
            && self.address == other.address
            && self.reason == other.reason
            && self.host_id == other.host_id
    }
}
