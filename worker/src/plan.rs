//! The pure core of the worker: given what should run (`desired`) and what the engine shows
//! (`observed`), decide what to do (`plan`) and what to report (`observations`). No I/O here,
//! so every case is unit-tested without Docker or NATS.

use crate::runtime::{ContainerState, ObservedContainer};
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_core::spec::GatewaySpec;
use std::collections::{BTreeMap, BTreeSet};

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No container exists for the replica: create and start one.
    Create { replica: u32 },
    /// The replica's container exists with the right template but is stopped.
    Start { replica: u32, container: String },
    /// The replica's container has another template (image or limits changed): remove it,
    /// then create the new one under the same name.
    Replace { replica: u32, container: String },
    /// The container is not wanted (gateway deleted, scaled down, duplicate or unlabelled).
    Remove {
        replica: Option<u32>,
        container: String,
    },
}

impl Action {
    pub fn replica(&self) -> Option<u32> {
        match self {
            Self::Create { replica }
            | Self::Start { replica, .. }
            | Self::Replace { replica, .. } => Some(*replica),
            Self::Remove { replica, .. } => *replica,
        }
    }

    /// True for actions that bring a new container into being.
    pub fn creates(&self) -> bool {
        matches!(self, Self::Create { .. } | Self::Replace { .. })
    }
}

/// What to do so that exactly the desired replicas run, each once, with the current template.
/// `desired == None` means the gateway should not exist.
pub fn plan(
    key: &GatewayKey,
    desired: Option<&GatewaySpec>,
    observed: &[ObservedContainer],
) -> Vec<Action> {
    let replicas = desired.map_or(0, |spec| spec.replicas);
    let template = desired.map(GatewaySpec::template).unwrap_or_default();
    let mut by_replica: BTreeMap<u32, Vec<&ObservedContainer>> = BTreeMap::new();
    let mut actions = Vec::new();
    for container in observed {
        match container.replica {
            Some(replica) if replica < replicas => {
                by_replica.entry(replica).or_default().push(container);
            }
            replica => actions.push(Action::Remove {
                replica,
                container: container.name.clone(),
            }),
        }
    }
    for replica in 0..replicas {
        let name = key.container_name(replica);
        let containers = by_replica.remove(&replica).unwrap_or_default();
        // Only the deterministic name counts as the replica; anything else is a stray.
        let (own, strays): (Vec<_>, Vec<_>) = containers.into_iter().partition(|c| c.name == name);
        for stray in strays {
            actions.push(Action::Remove {
                replica: None,
                container: stray.name.clone(),
            });
        }
        match own.first() {
            None => actions.push(Action::Create { replica }),
            Some(container) if container.template != template => actions.push(Action::Replace {
                replica,
                container: container.name.clone(),
            }),
            Some(container) => match container.state {
                ContainerState::Running | ContainerState::Restarting => {}
                ContainerState::Created | ContainerState::Exited | ContainerState::Paused => {
                    actions.push(Action::Start {
                        replica,
                        container: container.name.clone(),
                    })
                }
                ContainerState::Dead | ContainerState::Removing | ContainerState::Unknown => {
                    actions.push(Action::Replace {
                        replica,
                        container: container.name.clone(),
                    })
                }
            },
        }
    }
    actions
}

/// Where this worker runs: put into every observation it reports.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    pub host_id: String,
    /// Host part of instance addresses.
    pub advertise_host: String,
}

/// The facts to report after acting: one observation per replica that is wanted, was seen
/// before, or exists now — minus those the record already states. `failures` (replica →
/// reason) override what the engine shows for the replicas whose action failed.
pub fn observations(
    key: &GatewayKey,
    desired: Option<&GatewaySpec>,
    record: Option<&GatewayRecord>,
    observed: &[ObservedContainer],
    failures: &BTreeMap<u32, FailedReplica>,
    host: &HostIdentity,
) -> Vec<InstanceObserved> {
    let template = desired.map(GatewaySpec::template).unwrap_or_default();
    let mut replicas: BTreeSet<u32> = (0..desired.map_or(0, |spec| spec.replicas)).collect();
    replicas.extend(observed.iter().filter_map(|c| c.replica));
    if let Some(record) = record {
        replicas.extend(record.replicas.keys().copied());
    }
    replicas.extend(failures.keys().copied());
    let mut facts = Vec::new();
    for replica in replicas {
        let name = key.container_name(replica);
        let container = observed.iter().find(|c| c.name == name);
        let fact = match (failures.get(&replica), container) {
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
        let known = record.and_then(|record| record.observed(replica));
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

/// Why one replica could not be brought to its desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedReplica {
    /// `Failed` when giving up, `Pending` while a retry is scheduled.
    pub state: ObservedState,
    pub reason: String,
}

fn observed_fact(
    key: &GatewayKey,
    replica: u32,
    container: &ObservedContainer,
    host: &HostIdentity,
) -> InstanceObserved {
    let (state, address, reason) = match (container.state, container.host_port) {
        (ContainerState::Running, Some(port)) => (
            ObservedState::Running,
            format!("{}:{port}", host.advertise_host),
            String::new(),
        ),
        (ContainerState::Running, None) => (
            ObservedState::Pending,
            String::new(),
            "running without a published port".to_string(),
        ),
        (ContainerState::Exited | ContainerState::Dead, _) => (
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

#[cfg(test)]
mod tests {
    use super::*;
    use krane_core::command::Command;

    fn key() -> GatewayKey {
        GatewayKey::new("ns", "gw")
    }

    fn spec(replicas: u32, image: &str) -> GatewaySpec {
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

    fn container(replica: u32, template: &str, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            name: key().container_name(replica),
            gateway: key(),
            replica: Some(replica),
            template: template.into(),
            state,
            host_port: (state == ContainerState::Running).then_some(30000 + replica as u16),
        }
    }

    fn host() -> HostIdentity {
        HostIdentity {
            host_id: "h1".into(),
            advertise_host: "10.0.0.1".into(),
        }
    }

    #[test]
    fn nothing_observed_creates_every_replica() {
        let spec = spec(3, "img:1");
        assert_eq!(
            plan(&key(), Some(&spec), &[]),
            vec![
                Action::Create { replica: 0 },
                Action::Create { replica: 1 },
                Action::Create { replica: 2 }
            ]
        );
    }

    #[test]
    fn redelivered_create_makes_no_duplicate() {
        let spec = spec(2, "img:1");
        let running: Vec<_> = (0..2)
            .map(|r| container(r, &spec.template(), ContainerState::Running))
            .collect();
        assert!(plan(&key(), Some(&spec), &running).is_empty());
    }

    #[test]
    fn partial_progress_is_completed_not_repeated() {
        let spec = spec(3, "img:1");
        let observed = [
            container(0, &spec.template(), ContainerState::Running),
            container(1, &spec.template(), ContainerState::Created),
        ];
        assert_eq!(
            plan(&key(), Some(&spec), &observed),
            vec![
                Action::Start {
                    replica: 1,
                    container: key().container_name(1)
                },
                Action::Create { replica: 2 }
            ]
        );
    }

    #[test]
    fn delete_removes_everything_and_of_nothing_is_a_no_op() {
        let template = spec(1, "img:1").template();
        let observed = [
            container(0, &template, ContainerState::Running),
            container(5, &template, ContainerState::Exited),
        ];
        let actions = plan(&key(), None, &observed);
        assert_eq!(actions.len(), 2);
        assert!(actions.iter().all(|a| matches!(a, Action::Remove { .. })));
        assert!(plan(&key(), None, &[]).is_empty());
    }

    #[test]
    fn scale_down_removes_the_highest_replicas() {
        let spec3 = spec(3, "img:1");
        let observed: Vec<_> = (0..3)
            .map(|r| container(r, &spec3.template(), ContainerState::Running))
            .collect();
        assert_eq!(
            plan(&key(), Some(&spec(1, "img:1")), &observed),
            vec![
                Action::Remove {
                    replica: Some(1),
                    container: key().container_name(1)
                },
                Action::Remove {
                    replica: Some(2),
                    container: key().container_name(2)
                },
            ]
        );
    }

    #[test]
    fn a_changed_template_replaces_the_container() {
        let old = spec(1, "img:1");
        let observed = [container(0, &old.template(), ContainerState::Running)];
        assert_eq!(
            plan(&key(), Some(&spec(1, "img:2")), &observed),
            vec![Action::Replace {
                replica: 0,
                container: key().container_name(0)
            }]
        );
    }

    #[test]
    fn strays_and_unlabelled_containers_of_the_gateway_are_removed() {
        let spec = spec(1, "img:1");
        let mut stray = container(0, &spec.template(), ContainerState::Running);
        stray.name = "someone-elses-name".into();
        let mut unlabelled = container(0, &spec.template(), ContainerState::Running);
        unlabelled.name = "garbled".into();
        unlabelled.replica = None;
        let own = container(0, &spec.template(), ContainerState::Running);
        let actions = plan(&key(), Some(&spec), &[own, stray, unlabelled]);
        assert_eq!(actions.len(), 2);
        assert!(
            actions
                .iter()
                .all(|a| matches!(a, Action::Remove { replica: None, .. }))
        );
    }

    #[test]
    fn dead_containers_are_replaced_and_stopped_ones_started() {
        let spec = spec(2, "img:1");
        let observed = [
            container(0, &spec.template(), ContainerState::Dead),
            container(1, &spec.template(), ContainerState::Exited),
        ];
        let actions = plan(&key(), Some(&spec), &observed);
        assert!(matches!(actions[0], Action::Replace { replica: 0, .. }));
        assert!(matches!(actions[1], Action::Start { replica: 1, .. }));
    }

    fn record_with(spec: &GatewaySpec, events: &[InstanceObserved]) -> GatewayRecord {
        let mut record =
            GatewayRecord::apply_command(None, 1, &Command::Create { spec: spec.clone() });
        for (seq, event) in events.iter().enumerate() {
            record = GatewayRecord::apply_event(record, seq as u64 + 1, event);
        }
        record.expect("record")
    }

    #[test]
    fn running_containers_are_reported_with_their_address() {
        let spec = spec(2, "img:1");
        let record = record_with(&spec, &[]);
        let observed: Vec<_> = (0..2)
            .map(|r| container(r, &spec.template(), ContainerState::Running))
            .collect();
        let facts = observations(
            &key(),
            Some(&spec),
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
            Some(&spec),
            None,
            &observed,
            &BTreeMap::new(),
            &host(),
        );
        let record = record_with(&spec, &first);
        assert!(
            observations(
                &key(),
                Some(&spec),
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
            Some(&spec),
            None,
            &[container(0, &spec.template(), ContainerState::Running)],
            &BTreeMap::new(),
            &host(),
        );
        let record = record_with(&spec, &running);
        let gone = observations(&key(), None, Some(&record), &[], &BTreeMap::new(), &host());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].state, ObservedState::Gone);
        let record = GatewayRecord::apply_event(Some(record), 99, &gone[0]).expect("record");
        assert!(
            observations(&key(), None, Some(&record), &[], &BTreeMap::new(), &host()).is_empty()
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
        let facts = observations(&key(), Some(&spec), None, &[], &failures, &host());
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
            Some(&spec),
            None,
            &[portless],
            &BTreeMap::new(),
            &host(),
        );
        assert_eq!(facts[0].state, ObservedState::Pending);
        assert_eq!(facts[0].address, "");
    }
}
