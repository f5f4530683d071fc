//! Hosts: which workers are alive and where replicas go. A layer below the worker's context:
//! nothing here knows the `Worker`; the loops take the parts they use.
//!
//! - [`fencing`]: optional self-fencing when NATS stays unreachable (`--fence-after`).
//! - [`heartbeat`]: announces this host in the hosts bucket, again and again.
//! - [`view`]: `HostsView`, the live hosts as last read from that bucket.
//! - [`placing`]: places a gateway's unplaced replicas on live hosts and stores the placement
//!   as a new command, only if the gateway's latest command is still the one it placed.
//! - [`liveness`]: which missing hosts count as lost (pure), so a broker outage or a
//!   disrupted network never empties the fleet.
//! - [`scheduler`]: the loop that closes the instances of lost hosts and places their replicas
//!   elsewhere.

pub mod fencing;
pub mod heartbeat;
pub mod liveness;
pub mod placing;
pub mod scheduler;
pub mod view;

/// Where this worker runs: put into every observation it reports and every heartbeat.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    pub host_id: String,
    /// Host part of instance addresses.
    pub advertise_host: String,
}

impl HostIdentity {
    /// Who the commands this worker stores (placements, rollbacks, updates done) say asked.
    pub fn author(&self) -> String {
        format!("worker {}", self.host_id)
    }
}
