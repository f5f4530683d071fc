//! The pure decision of the worker: given what this host should run of a gateway
//! ([`Desired`]) and what the engine shows (`ObservedContainer`s), what to do ([`plan`]: a list
//! of [`Action`]s). No I/O here, so every case is unit-tested without Docker or NATS.

use crate::runtime::{ContainerState, ObservedContainer};
use krane_core::command::Command;
use krane_core::names::GatewayKey;
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
        let spec = intent.and_then(Command::spec).cloned();
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

    pub fn template(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::*;

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

    #[test]
    fn the_extra_replica_of_a_surge_is_created_on_its_host_and_removed_after_the_update() {
        let old = spec(2, "img:1");
        let new = spec(2, "img:2");
        let rollout = krane_core::rollout::Rollout {
            policy: krane_core::rollout::UpdatePolicy {
                max_surge: 1,
                ..Default::default()
            },
            previous: Some(Box::new(old.clone())),
            ..Default::default()
        };
        let placement = vec!["h1".to_string(), "h2".to_string(), "h1".to_string()];
        let surging = Command::create_with(new.clone(), placement.clone(), rollout.clone());
        let here = Desired::for_host(Some(&surging), "h1");
        assert_eq!(here.replicas, BTreeSet::from([0, 2]));
        let replica_0 = container(0, &old.template(), ContainerState::Running);
        assert_eq!(
            plan(&key(), &here, std::slice::from_ref(&replica_0)),
            vec![
                Action::Roll {
                    replica: 0,
                    container: key().container_name(0)
                },
                Action::Create { replica: 2 },
            ]
        );
        // A redelivery once it runs creates nothing again.
        let extra = container(2, &new.template(), ContainerState::Running);
        let rolled = container(0, &new.template(), ContainerState::Running);
        assert!(plan(&key(), &here, &[rolled.clone(), extra.clone()]).is_empty());
        // Done (or rolled back, or paused): the extra replica is not wanted any more.
        let done = krane_core::rollout::Rollout {
            previous: None,
            ..rollout
        };
        let done = Command::create_with(new, placement, done);
        assert_eq!(
            plan(
                &key(),
                &Desired::for_host(Some(&done), "h1"),
                &[rolled, extra]
            ),
            vec![Action::Remove {
                replica: Some(2),
                container: key().container_name(2)
            }]
        );
    }
}
