//! Rollouts: how a change of template rolls through a gateway's replicas, and what protects the
//! running version. A Create that changes the template carries the spec it replaces
//! (`previous`); while that is set the update is in progress and watched. When a replica of the
//! new template fails, or does not serve within the policy's monitor window, the update is
//! rolled back to `previous` (or paused, as the policy says) by a new command that says why;
//! once every replica serves the new template, a command without `previous` marks it done.
//!
//! [`verdict`] is the pure judgement; the worker acts on it, and every such act is a command
//! stored only if the gateway's latest command is still the one judged.

use crate::event::{InstanceObserved, ObservedState};
use crate::record::GatewayRecord;
use crate::spec::{FieldError, GatewaySpec};
use serde::{Deserialize, Serialize};

/// Longest monitor window a policy may ask for.
pub const MAX_MONITOR_SECONDS: u32 = 3600;
/// The monitor window when the request gives none.
pub const DEFAULT_MONITOR_SECONDS: u32 = 30;

/// What to do when an update fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Go back to the previous spec (Swarm's `--update-failure-action rollback`).
    #[default]
    Rollback,
    /// Stop replacing replicas and leave the rest serving the previous spec.
    Pause,
}

/// How an update rolls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// How long a new replica has to serve before the update counts as failed.
    pub monitor_seconds: u32,
    pub on_failure: FailureAction,
    /// How many replicas are replaced at once (at least 1). Commands stored before it
    /// existed replace one at a time.
    #[serde(
        default = "default_parallelism",
        skip_serializing_if = "is_default_parallelism"
    )]
    pub parallelism: u32,
    /// Extra replicas of the new template run while the update rolls: 0 or 1
    /// ([`MAX_SURGE`]). Commands stored before it existed surge none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_surge: u32,
}

/// Most extra replicas an update may run.
pub const MAX_SURGE: u32 = 1;

fn default_parallelism() -> u32 {
    1
}

fn is_default_parallelism(parallelism: &u32) -> bool {
    *parallelism == default_parallelism()
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            monitor_seconds: DEFAULT_MONITOR_SECONDS,
            on_failure: FailureAction::Rollback,
            parallelism: default_parallelism(),
            max_surge: 0,
        }
    }
}

/// An update policy as a request gives it: zeros mean the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyRequest {
    pub monitor_seconds: u32,
    pub pause: bool,
    pub parallelism: u32,
    pub max_surge: u32,
}

impl UpdatePolicy {
    /// A policy from a request for a gateway of `replicas`: zero means the default; the error
    /// names the request field.
    pub fn from_request(request: PolicyRequest, replicas: u32) -> Result<Self, FieldError> {
        let monitor_seconds = match request.monitor_seconds {
            0 => DEFAULT_MONITOR_SECONDS,
            seconds if seconds > MAX_MONITOR_SECONDS => {
                return Err(FieldError::new(
                    "gateway.update_policy.monitor_seconds",
                    format!("must be at most {MAX_MONITOR_SECONDS}"),
                ));
            }
            seconds => seconds,
        };
        let parallelism = match request.parallelism {
            0 => default_parallelism(),
            parallelism if parallelism > replicas => {
                return Err(FieldError::new(
                    "gateway.update_policy.parallelism",
                    format!("must be between 1 and {replicas}"),
                ));
            }
            parallelism => parallelism,
        };
        if request.max_surge > MAX_SURGE {
            return Err(FieldError::new(
                "gateway.update_policy.max_surge",
                format!("must be 0 or {MAX_SURGE}"),
            ));
        }
        let on_failure = if request.pause {
            FailureAction::Pause
        } else {
            FailureAction::Rollback
        };
        Ok(Self {
            monitor_seconds,
            on_failure,
            parallelism,
            max_surge: request.max_surge,
        })
    }

    /// How many replicas of a gateway of `replicas` may be replaced at once: the policy's
    /// parallelism, within 1 and `replicas` (a stored policy may predate a scale-down).
    pub fn parallelism_for(&self, replicas: u32) -> u32 {
        self.parallelism.clamp(1, replicas.max(1))
    }
}

/// The rollout part of a Create: its policy and where the update stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(default)]
    pub policy: UpdatePolicy,
    /// The last spec that rolled out completely, while an update away from it is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<GatewaySpec>>,
    /// Why a failed update was rolled back (set on the command that rolled it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// Why a failed update was paused (set on the command that paused it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

impl Rollout {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The rollout of a new command for `spec` with `policy`, after `latest` (the gateway's
    /// spec and rollout in force, if any): a new template starts an update from the last spec
    /// that rolled out completely; the same template carries an update in progress on.
    pub fn after(
        latest: Option<(&GatewaySpec, &Rollout)>,
        spec: &GatewaySpec,
        policy: UpdatePolicy,
    ) -> Self {
        let previous = match latest {
            None => None,
            Some((current, rollout)) if current.template() == spec.template() => {
                rollout.previous.clone()
            }
            Some((current, rollout)) => {
                let completed = rollout
                    .previous
                    .clone()
                    .unwrap_or_else(|| Box::new(current.clone()));
                // Back to the spec that runs already: nothing to roll back to.
                (completed.template() != spec.template()).then_some(completed)
            }
        };
        Self {
            policy,
            previous,
            rolled_back: None,
            paused: None,
        }
    }

    /// Extra replicas wanted now: the policy's surge while an update rolls (not once it is
    /// done, rolled back or paused: then the extra replica is removed).
    pub fn surge(&self) -> u32 {
        let rolling =
            self.previous.is_some() && self.paused.is_none() && self.rolled_back.is_none();
        if rolling {
            self.policy.max_surge.min(MAX_SURGE)
        } else {
            0
        }
    }

    /// What callers are told: `rolling`, `rolled_back`, `paused` or nothing, and why.
    pub fn status(&self, spec: &GatewaySpec) -> (&'static str, String) {
        if let Some(reason) = &self.rolled_back {
            return ("rolled_back", reason.clone());
        }
        if let Some(reason) = &self.paused {
            return ("paused", reason.clone());
        }
        match &self.previous {
            Some(previous) => (
                "rolling",
                format!("from {} to {}", previous.image, spec.image),
            ),
            None => ("", String::new()),
        }
    }
}

/// Where an update stands, judged from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No update in progress (none asked, rolled back, or paused).
    Idle,
    /// Every replica of the spec serves the new template: the update is done (an extra
    /// replica of a surge is removed then, whatever it does).
    Done,
    /// Replicas are on their way to the new template; `starting` are those that run the new
    /// template but do not serve yet, lowest first (the monitor window applies to each: with
    /// parallelism or a surge, several start at once); empty while the next replicas wait
    /// for their turn.
    InProgress { starting: Vec<u32> },
    /// A replica of the new template failed: the update failed now.
    Failed(String),
}

/// Judges the update of the record's intent. `Failed` as soon as a replica of the new
/// template (the extra one of a surge included) is FAILED on its host; the caller turns an
/// `InProgress` whose `starting` replica has not served for the monitor window into a
/// failure (see [`not_serving_reason`]). A replica still on the previous template, waiting
/// for its turn, never counts against it.
pub fn verdict(record: &GatewayRecord) -> Verdict {
    let Some((spec, rollout)) = record.intent.spec().zip(record.intent.rollout()) else {
        return Verdict::Idle;
    };
    if rollout.previous.is_none() || rollout.paused.is_some() {
        return Verdict::Idle;
    }
    let template = spec.template();
    let mut all_serving = true;
    let mut starting = Vec::new();
    for replica in 0..record.intent.wanted_replicas() {
        let extra = replica >= spec.replicas;
        if extra && all_serving {
            return Verdict::Done;
        }
        match on_template(record, replica, &template) {
            Some(seen) if seen.state == ObservedState::Failed => {
                return Verdict::Failed(format!(
                    "{} of {} failed: {}",
                    replica_name(spec, replica),
                    spec.image,
                    seen.reason
                ));
            }
            Some(seen) if seen.state == ObservedState::Running => {}
            Some(_) => {
                all_serving &= extra;
                starting.push(replica);
            }
            None => all_serving &= extra,
        }
    }
    if all_serving {
        Verdict::Done
    } else {
        Verdict::InProgress { starting }
    }
}

/// `replica 2`, or `extra replica 3` for the one a surge adds.
fn replica_name(spec: &GatewaySpec, replica: u32) -> String {
    if replica >= spec.replicas {
        format!("extra replica {replica}")
    } else {
        format!("replica {replica}")
    }
}

/// What the host `replica` is placed on last said of it, if that is about `template`.
fn on_template<'a>(
    record: &'a GatewayRecord,
    replica: u32,
    template: &str,
) -> Option<&'a InstanceObserved> {
    record
        .intent
        .host_of(replica)
        .and_then(|host| record.observed(replica, host))
        .filter(|seen| seen.template == template)
}

/// Why an update still in progress failed when `replica` of the new template did not serve
/// within the monitor window, with what it says.
pub fn not_serving_reason(record: &GatewayRecord, replica: u32) -> String {
    let Some(spec) = record.intent.spec() else {
        return String::new();
    };
    let monitor = record
        .intent
        .rollout()
        .map_or(DEFAULT_MONITOR_SECONDS, |rollout| {
            rollout.policy.monitor_seconds
        });
    let said = on_template(record, replica, &spec.template())
        .map(|seen| seen.reason.as_str())
        .filter(|reason| !reason.is_empty());
    let name = replica_name(spec, replica);
    match said {
        Some(reason) => format!(
            "{name} of {} not serving within {monitor}s: {reason}",
            spec.image
        ),
        None => format!("{name} of {} not serving within {monitor}s", spec.image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn spec(image: &str, replicas: u32) -> GatewaySpec {
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

    #[test]
    fn a_new_template_starts_an_update_from_the_last_spec_that_rolled_out() {
        let policy = UpdatePolicy::default();
        let v1 = spec("img:1", 2);
        let done = Rollout::default();
        let to_v2 = Rollout::after(Some((&v1, &done)), &spec("img:2", 2), policy);
        assert_eq!(to_v2.previous.as_deref(), Some(&v1));
        // Scaling during the update carries it on; a third image still returns to v1.
        let scaled = Rollout::after(Some((&spec("img:2", 2), &to_v2)), &spec("img:2", 3), policy);
        assert_eq!(scaled.previous.as_deref(), Some(&v1));
        let to_v3 = Rollout::after(
            Some((&spec("img:2", 3), &scaled)),
            &spec("img:3", 3),
            policy,
        );
        assert_eq!(to_v3.previous.as_deref(), Some(&v1));
        // Going back to what runs is no update; a first Create or a scale of a settled
        // gateway neither.
        assert_eq!(
            Rollout::after(Some((&spec("img:2", 2), &to_v2)), &spec("img:1", 2), policy).previous,
            None
        );
        assert_eq!(Rollout::after(None, &v1, policy).previous, None);
        assert_eq!(
            Rollout::after(Some((&v1, &done)), &spec("img:1", 5), policy).previous,
            None
        );
    }

    #[test]
    fn policies_from_requests_default_and_are_bounded() {
        assert_eq!(
            UpdatePolicy::from_request(PolicyRequest::default(), 3),
            Ok(UpdatePolicy::default())
        );
        let request = PolicyRequest {
            monitor_seconds: 10,
            pause: true,
            parallelism: 3,
            max_surge: 1,
        };
        let policy = UpdatePolicy::from_request(request, 3).expect("valid");
        assert_eq!(
            (
                policy.monitor_seconds,
                policy.on_failure,
                policy.parallelism,
                policy.max_surge
            ),
            (10, FailureAction::Pause, 3, 1)
        );
        let too_long = PolicyRequest {
            monitor_seconds: MAX_MONITOR_SECONDS + 1,
            ..PolicyRequest::default()
        };
        let error = UpdatePolicy::from_request(too_long, 3).expect_err("too long");
        assert_eq!(error.field, "gateway.update_policy.monitor_seconds");
        let too_parallel = PolicyRequest {
            parallelism: 4,
            ..PolicyRequest::default()
        };
        let error = UpdatePolicy::from_request(too_parallel, 3).expect_err("too parallel");
        assert_eq!(
            error.to_string(),
            "gateway.update_policy.parallelism: must be between 1 and 3"
        );
        let too_much_surge = PolicyRequest {
            max_surge: 2,
            ..PolicyRequest::default()
        };
        let error = UpdatePolicy::from_request(too_much_surge, 3).expect_err("surge of 2");
        assert_eq!(
            error.to_string(),
            "gateway.update_policy.max_surge: must be 0 or 1"
        );
    }

    #[test]
    fn policies_stored_before_parallelism_and_surge_read_as_one_at_a_time_without_surge() {
        let stored = br#"{"monitor_seconds":5,"on_failure":"pause"}"#;
        let policy: UpdatePolicy = crate::codec::decode(stored).expect("decodes");
        assert_eq!((policy.parallelism, policy.max_surge), (1, 0));
        // Policies that use neither are stored as before, byte for byte.
        let encoded = crate::codec::encode(&policy).expect("encodes");
        assert_eq!(encoded.as_slice(), stored.as_slice());
        let surging = UpdatePolicy {
            parallelism: 2,
            max_surge: 1,
            ..policy
        };
        let encoded = crate::codec::encode(&surging).expect("encodes");
        assert_eq!(
            crate::codec::decode::<UpdatePolicy>(&encoded).ok(),
            Some(surging)
        );
    }

    #[test]
    fn parallelism_is_kept_within_the_replicas() {
        let policy = UpdatePolicy {
            parallelism: 3,
            ..UpdatePolicy::default()
        };
        assert_eq!(policy.parallelism_for(5), 3);
        assert_eq!(policy.parallelism_for(2), 2, "scaled down since");
        let zero = UpdatePolicy {
            parallelism: 0,
            ..UpdatePolicy::default()
        };
        assert_eq!(zero.parallelism_for(2), 1);
    }

    #[test]
    fn the_extra_replica_is_wanted_only_while_the_update_rolls() {
        let surging = Rollout {
            policy: UpdatePolicy {
                max_surge: 1,
                ..UpdatePolicy::default()
            },
            previous: Some(Box::new(spec("img:1", 2))),
            ..Rollout::default()
        };
        assert_eq!(surging.surge(), 1);
        let done = Rollout {
            previous: None,
            ..surging.clone()
        };
        let paused = Rollout {
            paused: Some("replica 0 failed".into()),
            ..surging.clone()
        };
        let rolled_back = Rollout {
            previous: None,
            rolled_back: Some("replica 0 failed".into()),
            ..surging.clone()
        };
        for over in [done, paused, rolled_back] {
            assert_eq!(over.surge(), 0, "{over:?}");
        }
        let without = Rollout {
            policy: UpdatePolicy::default(),
            ..surging
        };
        assert_eq!(without.surge(), 0);
    }

    fn updating(replicas: u32) -> Command {
        let rollout = Rollout {
            previous: Some(Box::new(spec("img:1", replicas))),
            ..Rollout::default()
        };
        let placement = vec!["h1".to_string(); replicas as usize];
        Command::create_with(spec("img:2", replicas), placement, rollout)
    }

    fn seen(replica: u32, template: &str, state: ObservedState, reason: &str) -> InstanceObserved {
        InstanceObserved {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            replica,
            template: template.into(),
            state,
            address: String::new(),
            reason: reason.into(),
            host_id: "h1".into(),
        }
    }

    #[test]
    fn an_update_fails_when_a_new_replica_fails_and_is_done_when_all_serve() {
        let new = spec("img:2", 2).template();
        let old = spec("img:1", 2).template();
        let record = GatewayRecord::apply_command(None, 1, &updating(2));
        let record = GatewayRecord::apply_event(
            record,
            1,
            &seen(0, &new, ObservedState::Pending, "starting"),
        );
        let record =
            GatewayRecord::apply_event(record, 2, &seen(1, &old, ObservedState::Running, ""));
        let in_progress = record.clone().expect("record");
        assert_eq!(
            verdict(&in_progress),
            Verdict::InProgress { starting: vec![0] }
        );
        assert_eq!(
            not_serving_reason(&in_progress, 0),
            "replica 0 of img:2 not serving within 30s: starting"
        );
        let failed = GatewayRecord::apply_event(
            record.clone(),
            3,
            &seen(0, &new, ObservedState::Failed, "exited with code 3"),
        )
        .expect("record");
        assert_eq!(
            verdict(&failed),
            Verdict::Failed("replica 0 of img:2 failed: exited with code 3".into())
        );
        let record =
            GatewayRecord::apply_event(record, 4, &seen(0, &new, ObservedState::Running, ""));
        // Replica 1 waits for its turn on the old template: nothing is starting.
        assert_eq!(
            verdict(&record.clone().expect("record")),
            Verdict::InProgress { starting: vec![] }
        );
        let record =
            GatewayRecord::apply_event(record, 5, &seen(1, &new, ObservedState::Running, ""));
        assert_eq!(verdict(&record.expect("record")), Verdict::Done);
    }

    /// An update of `replicas` with `policy`, every replica (and the extra one) on h1.
    fn updating_with(replicas: u32, policy: UpdatePolicy) -> Command {
        let rollout = Rollout {
            policy,
            previous: Some(Box::new(spec("img:1", replicas))),
            ..Rollout::default()
        };
        let wanted = replicas + rollout.surge();
        let placement = vec!["h1".to_string(); wanted as usize];
        Command::create_with(spec("img:2", replicas), placement, rollout)
    }

    fn with_events(command: &Command, events: &[InstanceObserved]) -> GatewayRecord {
        let mut record = GatewayRecord::apply_command(None, 1, command);
        for (seq, event) in events.iter().enumerate() {
            record = GatewayRecord::apply_event(record, seq as u64 + 1, event);
        }
        record.expect("record")
    }

    #[test]
    fn the_extra_replica_of_a_surge_is_watched_but_not_waited_for_once_the_rest_serve() {
        let new = spec("img:2", 2).template();
        let old = spec("img:1", 2).template();
        let surge = UpdatePolicy {
            max_surge: 1,
            ..UpdatePolicy::default()
        };
        let command = updating_with(2, surge);
        assert_eq!(command.wanted_replicas(), 3);
        let old_running = [
            seen(0, &old, ObservedState::Running, ""),
            seen(1, &old, ObservedState::Running, ""),
        ];
        // Not placed or not reported yet: nothing starts, nothing fails.
        assert_eq!(
            verdict(&with_events(&command, &old_running)),
            Verdict::InProgress { starting: vec![] }
        );
        let extra_starting = [
            old_running.as_slice(),
            &[seen(2, &new, ObservedState::Pending, "starting")],
        ]
        .concat();
        let record = with_events(&command, &extra_starting);
        assert_eq!(verdict(&record), Verdict::InProgress { starting: vec![2] });
        assert_eq!(
            not_serving_reason(&record, 2),
            "extra replica 2 of img:2 not serving within 30s: starting"
        );
        let extra_failed = [
            old_running.as_slice(),
            &[seen(2, &new, ObservedState::Failed, "exited with code 3")],
        ]
        .concat();
        assert_eq!(
            verdict(&with_events(&command, &extra_failed)),
            Verdict::Failed("extra replica 2 of img:2 failed: exited with code 3".into())
        );
        // Every replica of the spec serves the new template: done, whatever the extra one
        // does (it is removed with the command that marks the update done).
        for extra in [ObservedState::Running, ObservedState::Failed] {
            let rolled = [
                seen(0, &new, ObservedState::Running, ""),
                seen(1, &new, ObservedState::Running, ""),
                seen(2, &new, extra, ""),
            ];
            assert_eq!(verdict(&with_events(&command, &rolled)), Verdict::Done);
        }
    }

    #[test]
    fn every_replica_replaced_at_once_has_its_own_window() {
        let new = spec("img:2", 3).template();
        let old = spec("img:1", 3).template();
        let parallel = UpdatePolicy {
            parallelism: 2,
            ..UpdatePolicy::default()
        };
        let record = with_events(
            &updating_with(3, parallel),
            &[
                seen(0, &new, ObservedState::Pending, "starting"),
                seen(1, &new, ObservedState::Pending, "starting"),
                seen(2, &old, ObservedState::Running, ""),
            ],
        );
        assert_eq!(
            verdict(&record),
            Verdict::InProgress {
                starting: vec![0, 1]
            }
        );
        assert_eq!(
            not_serving_reason(&record, 1),
            "replica 1 of img:2 not serving within 30s: starting"
        );
    }

    #[test]
    fn nothing_is_watched_without_an_update_or_once_it_was_rolled_back_or_paused() {
        let settled = Command::create(spec("img:1", 1), vec!["h1".into()]);
        let record = GatewayRecord::apply_command(None, 1, &settled).expect("record");
        assert_eq!(verdict(&record), Verdict::Idle);
        let paused = Command::create_with(
            spec("img:2", 1),
            vec!["h1".into()],
            Rollout {
                previous: Some(Box::new(spec("img:1", 1))),
                paused: Some("replica 0 failed".into()),
                ..Rollout::default()
            },
        );
        let record = GatewayRecord::apply_command(None, 1, &paused).expect("record");
        assert_eq!(verdict(&record), Verdict::Idle);
        assert_eq!(
            record
                .intent
                .rollout()
                .map(|r| r.status(&spec("img:2", 1)).0),
            Some("paused")
        );
    }
}
