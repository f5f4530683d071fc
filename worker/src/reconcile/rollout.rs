//! Rolling updates, pure: which `Roll` may run now so a gateway keeps at least `replicas - 1`
//! instances running across all hosts. A roll that must wait is not slept on: the reconcile
//! returns `Outcome::Requeue` and looks again later, holding nothing meanwhile.

use super::plan::Action;
use krane_core::event::ObservedState;
use krane_core::record::GatewayRecord;

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
    let spec = record.intent.spec()?;
    // A paused update replaces no more replicas.
    if record
        .intent
        .rollout()
        .is_some_and(|rollout| rollout.paused.is_some())
    {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::*;
    use crate::reconcile::plan::{Desired, plan};
    use crate::reconcile::report::observed_fact;
    use crate::runtime::ContainerState;
    use krane_core::event::InstanceObserved;
    use krane_core::spec::GatewaySpec;
    use std::collections::BTreeSet;

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
