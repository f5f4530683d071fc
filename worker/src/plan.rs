//! The pure core of the worker: given what should run (`desired`) and what the engine shows
//! (`observed`), decide what to do (`plan`) and what to report (`observations`). No I/O here,
//! so every case is unit-tested without Docker or NATS.

use crate::runtime::{ContainerState, ObservedContainer};
use krane_core::command::Command;
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
    /// The replica's container is broken (dead, half-removed): remove it, then create a new
    /// one under the same name.
    Replace { replica: u32, container: String },
    /// The replica's running container has another template (image or limits changed):
    /// replace it as part of a rolling update, one replica of the gateway at a time.
    Roll { replica: u32, container: String },
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
            | Self::Replace { replica, .. }
            | Self::Roll { replica, .. } => Some(*replica),
            Self::Remove { replica, .. } => *replica,
        }
    }

    /// True for actions that bring a new container into being.
    pub fn creates(&self) -> bool {
        matches!(
            self,
            Self::Create { .. } | Self::Replace { .. } | Self::Roll { .. }
        )
    }
}

/// What one host should run of a gateway: the spec (`None` = the gateway should not exist)
/// and the replicas placed on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub spec: Option<GatewaySpec>,
    pub replicas: BTreeSet<u32>,
}

impl Desired {
    /// This host's share of the latest command (`None`: never commanded, nothing wanted).
    pub fn for_host(intent: Option<&Command>, host_id: &str) -> Self {
        let spec = intent.and_then(Command::desired).cloned();
        let replicas = intent
            .map(|command| command.replicas_on(host_id).into_iter().collect())
            .unwrap_or_default();
        Self { spec, replicas }
    }

    /// Every replica of the spec on this host (single-host set-ups and tests).
    pub fn all_replicas(spec: &GatewaySpec) -> Self {
        Self {
            spec: Some(spec.clone()),
            replicas: (0..spec.replicas).collect(),
        }
    }

    pub fn nothing() -> Self {
        Self {
            spec: None,
            replicas: BTreeSet::new(),
        }
    }

    fn template(&self) -> String {
        self.spec
            .as_ref()
            .map(GatewaySpec::template)
            .unwrap_or_default()
    }
}

/// What to do so that exactly the replicas desired on this host run, each once, with the
/// current template. Containers of replicas not desired here (deleted, scaled away, or placed
/// on another host) are removed.
pub fn plan(key: &GatewayKey, desired: &Desired, observed: &[ObservedContainer]) -> Vec<Action> {
    let template = desired.template();
    let mut by_replica: BTreeMap<u32, Vec<&ObservedContainer>> = BTreeMap::new();
    let mut actions = Vec::new();
    for container in observed {
        match container.replica {
            Some(replica) if desired.replicas.contains(&replica) => {
                by_replica.entry(replica).or_default().push(container);
            }
            replica => actions.push(Action::Remove {
                replica,
                container: container.name.clone(),
            }),
        }
    }
    for &replica in &desired.replicas {
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
            Some(container)
                if container.template != template
                    && matches!(
                        container.state,
                        ContainerState::Running | ContainerState::Restarting
                    ) =>
            {
                actions.push(Action::Roll {
                    replica,
                    container: container.name.clone(),
                })
            }
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

/// Rolling updates: lets through at most the one `Roll` that keeps the gateway at no fewer
/// than `replicas - 1` running instances, across all hosts. A roll of replica `r` may start
/// only when every other replica runs (as the record shows on its placed host) and `r` is the
/// lowest-numbered replica not yet on the current template. Returns the actions to run now and
/// how many rolls wait for an earlier one.
pub fn gate_rollout(actions: Vec<Action>, record: Option<&GatewayRecord>) -> (Vec<Action>, usize) {
    let rolls = actions
        .iter()
        .filter(|action| matches!(action, Action::Roll { .. }))
        .count();
    if rolls == 0 {
        return (actions, 0);
    }
    let next = record.and_then(next_replica_to_roll);
    let (mut ready, mut waiting) = (Vec::new(), 0);
    for action in actions {
        match action {
            Action::Roll { replica, .. } if Some(replica) != next => waiting += 1,
            action => ready.push(action),
        }
    }
    (ready, waiting)
}

/// The replica a rolling update may replace now, per the record: the lowest one not on the
/// current template, provided every other replica is running.
fn next_replica_to_roll(record: &GatewayRecord) -> Option<u32> {
    let spec = record.intent.desired()?;
    let template = spec.template();
    let seen = |replica: u32| {
        let host = record.intent.host_of(replica)?;
        record.observed(replica, host)
    };
    let outdated =
        (0..spec.replicas).find(|replica| seen(*replica).is_none_or(|s| s.template != template))?;
    let others_running = (0..spec.replicas)
        .filter(|replica| *replica != outdated)
        .all(|replica| seen(replica).is_some_and(|s| s.state == ObservedState::Running));
    others_running.then_some(outdated)
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
            plan(&key(), &Desired::all_replicas(&spec), &[]),
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
        assert!(plan(&key(), &Desired::all_replicas(&spec), &running).is_empty());
    }

    #[test]
    fn partial_progress_is_completed_not_repeated() {
        let spec = spec(3, "img:1");
        let observed = [
            container(0, &spec.template(), ContainerState::Running),
            container(1, &spec.template(), ContainerState::Created),
        ];
        assert_eq!(
            plan(&key(), &Desired::all_replicas(&spec), &observed),
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
        let actions = plan(&key(), &Desired::nothing(), &observed);
        assert_eq!(actions.len(), 2);
        assert!(actions.iter().all(|a| matches!(a, Action::Remove { .. })));
        assert!(plan(&key(), &Desired::nothing(), &[]).is_empty());
    }

    #[test]
    fn scale_down_removes_the_highest_replicas() {
        let spec3 = spec(3, "img:1");
        let observed: Vec<_> = (0..3)
            .map(|r| container(r, &spec3.template(), ContainerState::Running))
            .collect();
        assert_eq!(
            plan(&key(), &Desired::all_replicas(&spec(1, "img:1")), &observed),
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
            plan(&key(), &Desired::all_replicas(&spec(1, "img:2")), &observed),
            vec![Action::Roll {
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
        let actions = plan(
            &key(),
            &Desired::all_replicas(&spec),
            &[own, stray, unlabelled],
        );
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
        let actions = plan(&key(), &Desired::all_replicas(&spec), &observed);
        assert!(matches!(actions[0], Action::Replace { replica: 0, .. }));
        assert!(matches!(actions[1], Action::Start { replica: 1, .. }));
    }

    fn record_with(spec: &GatewaySpec, events: &[InstanceObserved]) -> GatewayRecord {
        let placement = vec!["h1".to_string(); spec.replicas as usize];
        let mut record =
            GatewayRecord::apply_command(None, 1, &Command::create(spec.clone(), placement));
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
    fn only_the_replicas_placed_here_are_run_here() {
        let spec = spec(3, "img:1");
        let intent = Command::create(spec.clone(), vec!["h1".into(), "h2".into(), "h1".into()]);
        let mine = Desired::for_host(Some(&intent), "h1");
        assert_eq!(mine.replicas, BTreeSet::from([0, 2]));
        let elsewhere = container(1, &spec.template(), ContainerState::Running);
        let actions = plan(&key(), &mine, &[elsewhere]);
        assert!(actions.contains(&Action::Create { replica: 0 }));
        assert!(actions.contains(&Action::Create { replica: 2 }));
        assert!(actions.contains(&Action::Remove {
            replica: Some(1),
            container: key().container_name(1)
        }));
    }

    fn running_on_h1(spec: &GatewaySpec, templates: &[&str]) -> GatewayRecord {
        let events: Vec<InstanceObserved> = templates
            .iter()
            .enumerate()
            .map(|(replica, template)| {
                let container = container(replica as u32, template, ContainerState::Running);
                observed_fact(&key(), replica as u32, &container, &host())
            })
            .collect();
        record_with(spec, &events)
    }

    #[test]
    fn a_rolling_update_replaces_one_replica_at_a_time_lowest_first() {
        let new = spec(3, "img:2");
        let old = spec(3, "img:1").template();
        let record = running_on_h1(&new, &[&old, &old, &old]);
        let observed: Vec<_> = (0..3)
            .map(|r| container(r, &old, ContainerState::Running))
            .collect();
        let actions = plan(&key(), &Desired::all_replicas(&new), &observed);
        assert_eq!(actions.len(), 3);
        let (ready, waiting) = gate_rollout(actions, Some(&record));
        assert_eq!(waiting, 2);
        assert_eq!(
            ready,
            vec![Action::Roll {
                replica: 0,
                container: key().container_name(0)
            }]
        );
    }

    #[test]
    fn a_rolling_update_waits_while_another_replica_is_down() {
        let new = spec(3, "img:2");
        let old = spec(3, "img:1").template();
        let current = new.template();
        // Replica 0 is done; replica 1 is next, but replica 2 is not running: wait.
        let mut record = running_on_h1(&new, &[&current, &old, &old]);
        let down = InstanceObserved {
            state: ObservedState::Pending,
            ..record.observed(2, "h1").cloned().expect("seen")
        };
        record = GatewayRecord::apply_event(Some(record), 99, &down).expect("record");
        let observed = [container(1, &old, ContainerState::Running)];
        let desired = Desired {
            spec: Some(new.clone()),
            replicas: BTreeSet::from([1]),
        };
        let (ready, waiting) = gate_rollout(plan(&key(), &desired, &observed), Some(&record));
        assert!(ready.is_empty());
        assert_eq!(waiting, 1);
    }

    #[test]
    fn creating_and_removing_are_never_held_back_by_a_rollout() {
        let actions = vec![
            Action::Create { replica: 1 },
            Action::Remove {
                replica: Some(5),
                container: "x".into(),
            },
        ];
        let (ready, waiting) = gate_rollout(actions.clone(), None);
        assert_eq!((ready, waiting), (actions, 0));
    }
}
