//! Reporting: what this host tells the others about a gateway's replicas. The pure
//! [`observations`] decides which facts are news (one per replica wanted here, reported here
//! before, or present on the engine, minus what the record already states); the methods below
//! publish them as events and fold them into the record.

use super::Reconciler;
use super::plan::{Action, Desired};
use crate::hosts::HostIdentity;
use crate::runtime::{ContainerState, ObservedContainer, Readiness, RuntimeError};
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_store::StoredRecord;
use std::collections::BTreeMap;
use tracing::debug;

/// The facts to report after acting: one observation per replica that is wanted, was seen
/// before, or exists now — minus those the record already states. `failures` (replica →
/// reason) override what the engine shows for the replicas whose action failed.
pub fn observations(
    key: &GatewayKey,
    desired: &Desired,
    record: Option<&GatewayRecord>,
    observed: &[ObservedContainer],
    failures: &BTreeMap<u32, FailedReplica>,
    host: &HostIdentity,
) -> Vec<InstanceObserved> {
    let template = desired.template();
    let mut replicas = desired.replicas.clone();
    replicas.extend(observed.iter().filter_map(|c| c.replica));
    if let Some(record) = record {
        let reported_here = record
            .replicas
            .iter()
            .filter(|(_, hosts)| hosts.contains_key(&host.host_id))
            .map(|(replica, _)| *replica);
        replicas.extend(reported_here);
    }
    replicas.extend(failures.keys().copied());
    let mut facts = Vec::new();
    for replica in replicas {
        let name = key.container_name(replica);
        let container = observed.iter().find(|c| c.name == name);
        let fact = match (failures.get(&replica), container) {
            // Never worse than the truth: a container that still serves (the previous spec,
            // or the current one) is reported as it is, whatever failed around it; a failure
            // that kept it from being replaced is its reason.
            (Some(failure), Some(container)) if serving(container) => {
                let mut fact = observed_fact(key, replica, container, host);
                if container.template != template {
                    fact.reason = failure.reason.clone();
                }
                fact
            }
            (Some(failure), _) => fact(
                key,
                replica,
                &template,
                failure.state,
                String::new(),
                failure.reason.clone(),
                host,
            ),
            (None, Some(container)) => observed_fact(key, replica, container, host),
            (None, None) => fact(
                key,
                replica,
                "",
                ObservedState::Gone,
                String::new(),
                String::new(),
                host,
            ),
        };
        let known = record.and_then(|record| record.observed(replica, &host.host_id));
        let news = match known {
            Some(known) => !known.same_fact(&fact),
            // A replica never reported and still without a container has nothing to tell.
            None => fact.state != ObservedState::Gone,
        };
        if news {
            facts.push(fact);
        }
    }
    facts
}

/// True when the container runs with its port published and serves there.
fn serving(container: &ObservedContainer) -> bool {
    container.state == ContainerState::Running
        && container.host_port.is_some()
        && container.readiness == Readiness::Ready
}

/// Why one replica could not be brought to its desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedReplica {
    /// `Failed` when giving up, `Pending` while a retry is scheduled.
    pub state: ObservedState,
    pub reason: String,
}

pub(super) fn observed_fact(
    key: &GatewayKey,
    replica: u32,
    container: &ObservedContainer,
    host: &HostIdentity,
) -> InstanceObserved {
    // RUNNING means serving: a container that runs but does not serve (yet) is not.
    let (state, address, reason) =
        match (container.state, container.host_port, &container.readiness) {
            (ContainerState::Running, Some(port), Readiness::Ready) => (
                ObservedState::Running,
                format!("{}:{port}", host.advertise_host),
                String::new(),
            ),
            (_, _, Readiness::Failing(reason)) => {
                (ObservedState::Failed, String::new(), reason.clone())
            }
            (ContainerState::Running, None, _) => (
                ObservedState::Pending,
                String::new(),
                "running without a published port".to_string(),
            ),
            (ContainerState::Running, Some(_), Readiness::Starting(reason)) => {
                (ObservedState::Pending, String::new(), reason.clone())
            }
            (ContainerState::Exited | ContainerState::Dead, _, _) => (
                ObservedState::Failed,
                String::new(),
                "container exited".to_string(),
            ),
            _ => (ObservedState::Pending, String::new(), String::new()),
        };
    fact(
        key,
        replica,
        &container.template,
        state,
        address,
        reason,
        host,
    )
}

fn fact(
    key: &GatewayKey,
    replica: u32,
    template: &str,
    state: ObservedState,
    address: String,
    reason: String,
    host: &HostIdentity,
) -> InstanceObserved {
    InstanceObserved {
        namespace: key.namespace.clone(),
        gateway_id: key.gateway_id.clone(),
        replica,
        template: template.to_string(),
        state,
        address,
        reason,
        host_id: host.host_id.clone(),
    }
}

impl Reconciler {
    /// Reports every replica wanted here as failed by `error` (FAILED when retrying cannot
    /// help, else PENDING) and says how the reconcile ended.
    pub(super) async fn report_failure(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        error: &RuntimeError,
    ) -> Result<super::Outcome, super::ReconcileError> {
        let (state, permanent) = if error.is_permanent() {
            (ObservedState::Failed, true)
        } else {
            (ObservedState::Pending, false)
        };
        tracing::warn!(%error, permanent, "reconcile failed");
        let failures = failing_all(desired, &error.to_string(), state);
        self.report_only_failures(key, desired, stored, &failures)
            .await?;
        Ok(super::Outcome::Failed {
            reason: error.to_string(),
            permanent,
        })
    }

    /// Before (or while, see `execute::announcement_may_wait`) creating or replacing
    /// containers, says so: a Delete arriving meanwhile then shows them as TERMINATING, and
    /// other hosts see the replica is not running (rolling updates). Returns the record as
    /// stored afterwards.
    pub(super) async fn announce_pending(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        actions: &[Action],
    ) -> Result<StoredRecord, super::ReconcileError> {
        if desired.spec.is_none() {
            return Ok(stored);
        }
        let pending: BTreeMap<u32, FailedReplica> = actions
            .iter()
            .filter(|action| action.creates())
            .filter_map(Action::replica)
            .map(|replica| {
                let state = FailedReplica {
                    state: ObservedState::Pending,
                    reason: String::new(),
                };
                (replica, state)
            })
            .collect();
        self.report_only_failures(key, desired, stored, &pending)
            .await
    }

    /// Publishes what changed since `stored` and folds it into the record; returns the record
    /// as stored afterwards.
    pub(super) async fn report(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        observed: &[ObservedContainer],
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<StoredRecord, super::ReconcileError> {
        let facts = observations(
            key,
            desired,
            stored.record.as_ref(),
            observed,
            failures,
            &self.worker.host,
        );
        self.publish(key, stored, facts).await
    }

    /// Reports only the replicas in `failures`: used when the engine could not be listed, so
    /// nothing is known about the others.
    pub(super) async fn report_only_failures(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<StoredRecord, super::ReconcileError> {
        self.report_these(key, desired, stored, &[], failures).await
    }

    /// Reports only the replicas in `failures`, as `observed` shows them where they still
    /// serve.
    pub(super) async fn report_these(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        observed: &[ObservedContainer],
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<StoredRecord, super::ReconcileError> {
        let facts = observations(
            key,
            desired,
            stored.record.as_ref(),
            observed,
            failures,
            &self.worker.host,
        )
        .into_iter()
        .filter(|fact| failures.contains_key(&fact.replica))
        .collect();
        self.publish(key, stored, facts).await
    }

    /// Stores the facts, folds them into the record (starting from `stored`) and updates the
    /// instance gauges; returns the record as stored afterwards.
    async fn publish(
        &self,
        key: &GatewayKey,
        stored: StoredRecord,
        facts: Vec<InstanceObserved>,
    ) -> Result<StoredRecord, super::ReconcileError> {
        let after = self
            .worker
            .store
            .append_events(key, Some(stored), &facts)
            .await?
            .unwrap_or_else(StoredRecord::absent);
        for fact in &facts {
            debug!(replica = fact.replica, state = ?fact.state, "reported");
        }
        crate::metrics::reported(
            key,
            &self.worker.host.host_id,
            after.record.as_ref(),
            &facts,
        );
        Ok(after)
    }
}

/// The failures of the replicas whose actions failed, as they are reported.
pub(super) fn failures_to_report(
    failures: &BTreeMap<u32, RuntimeError>,
) -> BTreeMap<u32, FailedReplica> {
    failures
        .iter()
        .map(|(replica, error)| {
            let state = if error.is_permanent() {
                ObservedState::Failed
            } else {
                ObservedState::Pending
            };
            let failure = FailedReplica {
                state,
                reason: error.to_string(),
            };
            (*replica, failure)
        })
        .collect()
}

/// Every replica wanted here, failing with `reason` in `state`.
pub(super) fn failing_all(
    desired: &Desired,
    reason: &str,
    state: ObservedState,
) -> BTreeMap<u32, FailedReplica> {
    desired
        .replicas
        .iter()
        .map(|replica| {
            let failure = FailedReplica {
                state,
                reason: reason.to_string(),
            };
            (*replica, failure)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::*;

    #[test]
    fn running_containers_are_reported_with_their_address() {
        let spec = spec(2, "img:1");
        let record = record_with(&spec, &[]);
        let observed: Vec<_> = (0..2)
            .map(|r| container(r, &spec.template(), ContainerState::Running))
            .collect();
        let facts = observations(
            &key(),
            &Desired::all_replicas(&spec),
            Some(&record),
            &observed,
            &BTreeMap::new(),
            &host(),
        );
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[1].state, ObservedState::Running);
        assert_eq!(facts[1].address, "10.0.0.1:30001");
        assert_eq!(facts[1].host_id, "h1");
    }

    #[test]
    fn facts_the_record_already_holds_are_not_reported_again() {
        let spec = spec(1, "img:1");
        let observed = [container(0, &spec.template(), ContainerState::Running)];
        let first = observations(
            &key(),
            &Desired::all_replicas(&spec),
            None,
            &observed,
            &BTreeMap::new(),
            &host(),
        );
        let record = record_with(&spec, &first);
        assert!(
            observations(
                &key(),
                &Desired::all_replicas(&spec),
                Some(&record),
                &observed,
                &BTreeMap::new(),
                &host()
            )
            .is_empty()
        );
    }

    #[test]
    fn removed_containers_are_reported_gone_once() {
        let spec = spec(1, "img:1");
        let running = observations(
            &key(),
            &Desired::all_replicas(&spec),
            None,
            &[container(0, &spec.template(), ContainerState::Running)],
            &BTreeMap::new(),
            &host(),
        );
        let record = record_with(&spec, &running);
        let gone = observations(
            &key(),
            &Desired::nothing(),
            Some(&record),
            &[],
            &BTreeMap::new(),
            &host(),
        );
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].state, ObservedState::Gone);
        let record = GatewayRecord::apply_event(Some(record), 99, &gone[0]).expect("record");
        assert!(
            observations(
                &key(),
                &Desired::nothing(),
                Some(&record),
                &[],
                &BTreeMap::new(),
                &host()
            )
            .is_empty()
        );
    }

    #[test]
    fn failures_override_what_the_engine_shows() {
        let spec = spec(1, "img:1");
        let failures = BTreeMap::from([(
            0,
            FailedReplica {
                state: ObservedState::Failed,
                reason: "image img:1 is not available".into(),
            },
        )]);
        let facts = observations(
            &key(),
            &Desired::all_replicas(&spec),
            None,
            &[],
            &failures,
            &host(),
        );
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].state, ObservedState::Failed);
        assert_eq!(facts[0].template, spec.template());
        assert_eq!(facts[0].reason, "image img:1 is not available");
    }

    #[test]
    fn a_running_container_without_port_never_panics_and_stays_pending() {
        let spec = spec(1, "img:1");
        let mut portless = container(0, &spec.template(), ContainerState::Running);
        portless.host_port = None;
        let facts = observations(
            &key(),
            &Desired::all_replicas(&spec),
            None,
            &[portless],
            &BTreeMap::new(),
            &host(),
        );
        assert_eq!(facts[0].state, ObservedState::Pending);
        assert_eq!(facts[0].address, "");
    }

    #[test]
    fn running_means_serving_a_container_that_does_not_serve_is_not_running() {
        let spec = spec(3, "img:1");
        let template = spec.template();
        let mut starting = container(0, &template, ContainerState::Running);
        starting.readiness = Readiness::Starting("starting: port 30000 does not answer".into());
        let mut unhealthy = container(1, &template, ContainerState::Running);
        unhealthy.readiness = Readiness::Failing("health check failing: 503".into());
        let mut crashing = container(2, &template, ContainerState::Restarting);
        crashing.readiness = Readiness::Failing("exited with code 3: config invalid".into());
        let facts = observations(
            &key(),
            &Desired::all_replicas(&spec),
            None,
            &[starting, unhealthy, crashing],
            &BTreeMap::new(),
            &host(),
        );
        let states: Vec<_> = facts
            .iter()
            .map(|f| (f.state, f.address.as_str()))
            .collect();
        assert_eq!(
            states,
            vec![
                (ObservedState::Pending, ""),
                (ObservedState::Failed, ""),
                (ObservedState::Failed, "")
            ]
        );
        assert!(facts[0].reason.starts_with("starting"));
        assert_eq!(facts[2].reason, "exited with code 3: config invalid");
    }

    #[test]
    fn a_previous_spec_that_stopped_serving_is_not_kept_running_by_a_failed_update() {
        let old = spec(1, "img:1");
        let new = spec(1, "img:2");
        let mut stale = container(0, &old.template(), ContainerState::Running);
        stale.readiness = Readiness::Starting("starting: port 30000 does not answer".into());
        let failures = BTreeMap::from([(
            0,
            FailedReplica {
                state: ObservedState::Failed,
                reason: "image img:2 is not available".into(),
            },
        )]);
        let facts = observations(
            &key(),
            &Desired::all_replicas(&new),
            None,
            &[stale],
            &failures,
            &host(),
        );
        assert_eq!(facts[0].state, ObservedState::Failed);
        assert_eq!(facts[0].address, "");
    }
}
