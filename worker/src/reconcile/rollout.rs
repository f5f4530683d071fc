//! Rolling updates, pure: which `Roll`s may run now so a gateway keeps serving while its
//! replicas are replaced, across all hosts. With the update policy's parallelism `p`, up to
//! `p` replicas are replaced at once while every other wanted replica serves: at least
//! `replicas − p` serve, or `replicas + 1 − p` while the update surges (its extra replica of
//! the new template is wanted, and must serve, before any replica is replaced). A roll that
//! must wait is not slept on: the reconcile returns `Outcome::Requeue` and looks again later,
//! holding nothing meanwhile.

use super::plan::Action;
use krane_core::command::Command;
use krane_core::event::ObservedState;
use krane_core::record::GatewayRecord;
use std::collections::BTreeSet;

/// Whether `command` is an update still away from the spec it updates (rolling, paused or
/// rolling back).
pub fn is_updating(command: &Command) -> bool {
    command
        .rollout()
        .is_some_and(|rollout| rollout.previous.is_some())
}

/// Rolling updates: lets through the `Roll`s of the replicas [`replicas_to_roll`] names, and
/// every roll of an extra replica of a surge (a container left with another template at its
/// index, from a scale-down; nothing the gateway counts on). Returns the actions to run now
/// and how many rolls wait for their turn.
pub fn gate_rollout(actions: Vec<Action>, record: Option<&GatewayRecord>) -> (Vec<Action>, usize) {
    let rolls = actions
        .iter()
        .filter(|action| matches!(action, Action::Roll { .. }))
        .count();
    if rolls == 0 {
        return (actions, 0);
    }
    let may_roll = record.map(replicas_to_roll).unwrap_or_default();
    let extra = |replica: u32| record.is_some_and(|record| record.intent.is_surge(replica));
    let (mut ready, mut waiting) = (Vec::new(), 0);
    for action in actions {
        match action {
            Action::Roll { replica, .. } if !may_roll.contains(&replica) && !extra(replica) => {
                waiting += 1
            }
            action => ready.push(action),
        }
    }
    (ready, waiting)
}

/// The replicas a rolling update may replace now, per the record. Replicas not seen on the
/// current template on their placed host are *outdated*; wanted replicas that are not
/// outdated and not running there are *busy* (being replaced, starting, or the extra replica
/// of a surge that does not serve yet). With the policy's parallelism `p`, the lowest
/// `p − busy` outdated replicas may be replaced (the window), provided every other outdated
/// replica is running: so at most `p` wanted replicas are down at once, and none is
/// replaced while the extra replica of a surge does not serve.
///
/// Workers judging from records of different ages never replace more than `p` between them:
/// every replica below the highest one being replaced was, in the record that highest one
/// was judged from, either in its window (outdated, lower) or busy — a record shows a
/// replica off the outdated ones only once it is reported on the new template.
pub fn replicas_to_roll(record: &GatewayRecord) -> BTreeSet<u32> {
    let Some(spec) = record.intent.spec() else {
        return BTreeSet::new();
    };
    let rollout = record.intent.rollout();
    // A paused update replaces no more replicas.
    if rollout.is_some_and(|rollout| rollout.paused.is_some()) {
        return BTreeSet::new();
    }
    let parallelism = rollout.map_or(1, |rollout| rollout.policy.parallelism_for(spec.replicas));
    let template = spec.template();
    let seen = |replica: u32| {
        let host = record.intent.host_of(replica)?;
        record.observed(replica, host)
    };
    let running = |replica: u32| seen(replica).is_some_and(|s| s.state == ObservedState::Running);
    let outdated: Vec<u32> = (0..spec.replicas)
        .filter(|replica| seen(*replica).is_none_or(|s| s.template != template))
        .collect();
    let busy = (0..record.intent.wanted_replicas())
        .filter(|replica| !outdated.contains(replica) && !running(*replica))
        .count();
    let free = usize::try_from(parallelism)
        .unwrap_or(1)
        .saturating_sub(busy);
    let (window, rest) = outdated.split_at(free.min(outdated.len()));
    if rest.iter().all(|replica| running(*replica)) {
        window.iter().copied().collect()
    } else {
        BTreeSet::new()
    }
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

    /// What h1 last said of one replica in the update tests below.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Seen {
        Nothing,
        OldRunning,
        OldStarting,
        NewRunning,
        NewStarting,
    }

    const EVERY_SEEN: [Seen; 5] = [
        Seen::Nothing,
        Seen::OldRunning,
        Seen::OldStarting,
        Seen::NewRunning,
        Seen::NewStarting,
    ];

    fn policy(parallelism: u32, max_surge: u32) -> UpdatePolicy {
        UpdatePolicy {
            parallelism,
            max_surge,
            ..UpdatePolicy::default()
        }
    }

    /// An update of `replicas` from img:1 to img:2 with `policy`, every wanted replica (the
    /// extra one of a surge included) placed on h1, which said `seen[r]` of replica `r`.
    fn updating(replicas: u32, policy: UpdatePolicy, seen: &[Seen]) -> GatewayRecord {
        let old = spec(replicas, "img:1");
        let rollout = Rollout {
            policy,
            previous: Some(Box::new(old.clone())),
            ..Rollout::default()
        };
        let wanted = replicas + rollout.surge();
        let placement = vec!["h1".to_string(); wanted as usize];
        let command = Command::create_with(spec(replicas, "img:2"), placement, rollout);
        let mut record = GatewayRecord::apply_command(None, 1, &command);
        for (replica, seen) in seen.iter().enumerate() {
            let (template, state) = match seen {
                Seen::Nothing => continue,
                Seen::OldRunning => (old.template(), ContainerState::Running),
                Seen::OldStarting => (old.template(), ContainerState::Created),
                Seen::NewRunning => (spec(replicas, "img:2").template(), ContainerState::Running),
                Seen::NewStarting => (spec(replicas, "img:2").template(), ContainerState::Created),
            };
            let replica = replica as u32;
            let fact = observed_fact(
                &key(),
                replica,
                &container(replica, &template, state),
                &host(),
            );
            record = GatewayRecord::apply_event(record, u64::from(replica) + 1, &fact);
        }
        record.expect("record")
    }

    fn rolls(replicas: u32, policy: UpdatePolicy, seen: &[Seen]) -> Vec<u32> {
        replicas_to_roll(&updating(replicas, policy, seen))
            .into_iter()
            .collect()
    }

    use Seen::*;
    use krane_core::command::Command;
    use krane_core::rollout::{Rollout, UpdatePolicy};

    #[test]
    fn with_parallelism_the_lowest_replicas_are_replaced_that_many_at_once() {
        let all_old = [OldRunning; 4];
        assert_eq!(rolls(4, policy(2, 0), &all_old), vec![0, 1]);
        assert_eq!(rolls(4, policy(4, 0), &all_old), vec![0, 1, 2, 3]);
        let record = updating(4, policy(2, 0), &all_old);
        let old = spec(4, "img:1").template();
        let observed: Vec<_> = (0..4)
            .map(|r| container(r, &old, ContainerState::Running))
            .collect();
        let planned = plan(&key(), &Desired::all_replicas(&spec(4, "img:2")), &observed);
        let (ready, waiting) = gate_rollout(planned, Some(&record));
        assert_eq!(waiting, 2);
        assert_eq!(
            ready.iter().filter_map(Action::replica).collect::<Vec<_>>(),
            vec![0, 1]
        );
    }

    #[test]
    fn a_replica_still_starting_holds_its_place_until_it_serves() {
        let p2 = policy(2, 0);
        // Replica 0 starts on the new template: one more may go.
        assert_eq!(
            rolls(4, p2, &[NewStarting, OldRunning, OldRunning, OldRunning]),
            vec![1]
        );
        // Nothing said of replica 1 yet (a host it moved to): it takes its place in the window.
        assert_eq!(
            rolls(4, p2, &[NewStarting, Nothing, OldRunning, OldRunning]),
            vec![1]
        );
        assert_eq!(
            rolls(4, p2, &[NewStarting, NewStarting, OldRunning, OldRunning]),
            Vec::<u32>::new()
        );
        assert_eq!(
            rolls(4, p2, &[NewRunning, NewStarting, OldRunning, OldRunning]),
            vec![2]
        );
    }

    #[test]
    fn an_old_replica_that_does_not_serve_holds_the_update() {
        assert_eq!(
            rolls(
                4,
                policy(2, 0),
                &[OldRunning, OldRunning, OldRunning, OldStarting]
            ),
            Vec::<u32>::new()
        );
        // Inside the window it is simply replaced.
        assert_eq!(
            rolls(
                4,
                policy(2, 0),
                &[OldStarting, OldRunning, OldRunning, OldRunning]
            ),
            vec![0, 1]
        );
    }

    #[test]
    fn nothing_is_replaced_before_the_extra_replica_of_a_surge_serves() {
        let surge = policy(1, 1);
        let none: Vec<u32> = Vec::new();
        assert_eq!(rolls(2, surge, &[OldRunning, OldRunning, Nothing]), none);
        assert_eq!(
            rolls(2, surge, &[OldRunning, OldRunning, NewStarting]),
            none
        );
        assert_eq!(
            rolls(2, surge, &[OldRunning, OldRunning, NewRunning]),
            vec![0]
        );
        assert_eq!(
            rolls(2, surge, &[NewStarting, OldRunning, NewRunning]),
            none
        );
        assert_eq!(
            rolls(2, surge, &[NewRunning, OldRunning, NewRunning]),
            vec![1]
        );
        // With parallelism 2 as well: two at once once the extra replica serves.
        assert_eq!(
            rolls(
                3,
                policy(2, 1),
                &[OldRunning, OldRunning, OldRunning, NewRunning]
            ),
            vec![0, 1]
        );
    }

    #[test]
    fn the_extra_replica_of_a_surge_is_never_held_back() {
        // A scale-down to 2 with a new image left replica 2's old container where the extra
        // replica goes: replacing it takes nothing from the gateway.
        let record = updating(2, policy(1, 1), &[OldRunning, OldRunning, OldRunning]);
        let old = spec(2, "img:1").template();
        let observed: Vec<_> = (0..3)
            .map(|r| container(r, &old, ContainerState::Running))
            .collect();
        let desired = Desired::for_host(Some(&record.intent), "h1");
        let (ready, waiting) = gate_rollout(plan(&key(), &desired, &observed), Some(&record));
        assert_eq!(
            ready,
            vec![
                Action::Roll {
                    replica: 0,
                    container: key().container_name(0)
                },
                Action::Roll {
                    replica: 2,
                    container: key().container_name(2)
                }
            ]
        );
        assert_eq!(waiting, 1);
    }

    /// Every combination of what h1 said of each wanted replica, for every gateway of up to
    /// 4 replicas, parallelism and surge: what may roll is the lowest outdated replicas, never
    /// more than leave `wanted − p` serving, and something rolls whenever everything serves.
    #[test]
    fn the_gate_keeps_its_promise_in_every_state() {
        for replicas in 1..=4u32 {
            for parallelism in 1..=replicas {
                for max_surge in 0..=1 {
                    let policy = policy(parallelism, max_surge);
                    let wanted = replicas + max_surge;
                    let mut states = vec![Nothing; wanted as usize];
                    let combinations = EVERY_SEEN.len().pow(wanted);
                    for mut n in 0..combinations {
                        for state in states.iter_mut() {
                            *state = EVERY_SEEN[n % EVERY_SEEN.len()];
                            n /= EVERY_SEEN.len();
                        }
                        check_gate(replicas, policy, &states);
                    }
                }
            }
        }
    }

    fn check_gate(replicas: u32, policy: UpdatePolicy, states: &[Seen]) {
        let rolling = rolls(replicas, policy, states);
        let wanted = states.len();
        let context = format!("{replicas} replicas, {policy:?}, {states:?}: {rolling:?}");
        let outdated: Vec<u32> = (0..replicas)
            .filter(|r| !matches!(states[*r as usize], NewRunning | NewStarting))
            .collect();
        assert!(
            outdated.starts_with(&rolling),
            "only the lowest outdated replicas roll: {context}"
        );
        let running = |r: usize| matches!(states[r], OldRunning | NewRunning);
        let down = (0..wanted)
            .filter(|r| !running(*r) || rolling.contains(&(*r as u32)))
            .count();
        if !rolling.is_empty() {
            assert!(
                down <= policy.parallelism as usize,
                "at most parallelism replicas down: {context}"
            );
            if policy.max_surge == 1 && policy.parallelism == 1 {
                assert!(wanted - down >= replicas as usize, "{context}");
            }
        }
        if (0..wanted).all(running) && !outdated.is_empty() {
            assert!(
                !rolling.is_empty(),
                "an update that can go on does: {context}"
            );
        }
    }

    /// What is true of one replica in the simulation below, whatever the record says yet.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Truth {
        /// Serving the old template (or, for the extra replica, not created yet).
        Old,
        /// Its container was just replaced (or created); nobody reported it yet.
        Replaced,
        Starting,
        Serving,
    }

    /// Workers on one host per replica, each judging from a record of any age (a slow KV, a
    /// worker paused between its read and its roll), replace only replicas they hold on the
    /// old template; reports reach the record in any order. In thousands of random schedules
    /// no more than `parallelism` wanted replicas are ever down at once, and every update
    /// finishes.
    #[test]
    fn workers_judging_from_records_of_any_age_never_replace_more_than_the_parallelism() {
        let mut random = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |bound: usize| {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            usize::try_from(random % bound as u64).unwrap_or(0)
        };
        for replicas in 1..=4u32 {
            for parallelism in 1..=replicas {
                for max_surge in 0..=1 {
                    for _ in 0..300 {
                        simulate(replicas, policy(parallelism, max_surge), &mut next);
                    }
                }
            }
        }
    }

    fn simulate(replicas: u32, policy: UpdatePolicy, next: &mut impl FnMut(usize) -> usize) {
        let wanted = (replicas + policy.max_surge) as usize;
        let mut truth = vec![Truth::Old; wanted];
        // What the record says of each replica, after every report so far.
        let said = |truth: &[Truth], reported: &[bool]| -> Vec<Seen> {
            (0..wanted)
                .map(|r| match (truth[r], reported[r], r >= replicas as usize) {
                    (_, false, true) => Nothing,
                    (_, false, false) => OldRunning,
                    (Truth::Serving, true, _) => NewRunning,
                    _ => NewStarting,
                })
                .collect()
        };
        let mut reported = vec![false; wanted];
        let mut history = vec![said(&truth, &reported)];
        for _ in 0..400 {
            if truth.iter().all(|t| *t == Truth::Serving) && reported.iter().all(|r| *r) {
                return;
            }
            let replica = next(wanted);
            let extra = replica >= replicas as usize;
            match truth[replica] {
                Truth::Old => {
                    let record = &history[next(history.len())];
                    if extra || rolls(replicas, policy, record).contains(&(replica as u32)) {
                        truth[replica] = Truth::Replaced;
                    }
                }
                Truth::Replaced => {
                    truth[replica] = Truth::Starting;
                    reported[replica] = true;
                }
                Truth::Starting => truth[replica] = Truth::Serving,
                Truth::Serving => {}
            }
            history.push(said(&truth, &reported));
            let down = truth
                .iter()
                .enumerate()
                .filter(|(r, t)| match t {
                    Truth::Old => *r >= replicas as usize,
                    Truth::Replaced | Truth::Starting => true,
                    Truth::Serving => false,
                })
                .count();
            assert!(
                down <= policy.parallelism as usize,
                "{down} down: {replicas} replicas, {policy:?}, {truth:?}"
            );
        }
        panic!("the update did not finish: {replicas} replicas, {policy:?}, {truth:?}");
    }
}
