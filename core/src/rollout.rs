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
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            monitor_seconds: DEFAULT_MONITOR_SECONDS,
            on_failure: FailureAction::Rollback,
        }
    }
}

impl UpdatePolicy {
    /// A policy from a request: zero means the default; the error names the request field.
    pub fn from_request(monitor_seconds: u32, pause: bool) -> Result<Self, FieldError> {
        let monitor_seconds = match monitor_seconds {
            0 => DEFAULT_MONITOR_SECONDS,
            seconds if seconds > MAX_MONITOR_SECONDS => {
                return Err(FieldError::new(
                    "gateway.update_policy.monitor_seconds",
                    format!("must be at most {MAX_MONITOR_SECONDS}"),
                ));
            }
            seconds => seconds,
        };
        let on_failure = if pause {
            FailureAction::Pause
        } else {
            FailureAction::Rollback
        };
        Ok(Self {
            monitor_seconds,
            on_failure,
        })
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
    /// Every replica serves the new template: the update is done.
    Done,
    /// Replicas are on their way to the new template; `starting` is the lowest replica that
    /// runs the new template but does not serve yet (the one the monitor window applies to),
    /// `None` while the next replica waits for its turn.
    InProgress { starting: Option<u32> },
    /// A replica of the new template failed: the update failed now.
    Failed(String),
}

/// Judges the update of the record's intent. `Failed` as soon as a replica of the new
/// template is FAILED on its host; the caller turns an `InProgress` whose `starting` replica
/// has not served for the monitor window into a failure (see [`not_serving_reason`]). A
/// replica still on the previous template, waiting for its turn, never counts against it.
pub fn verdict(record: &GatewayRecord) -> Verdict {
    let Some((spec, rollout)) = record.intent.spec().zip(record.intent.rollout()) else {
        return Verdict::Idle;
    };
    if rollout.previous.is_none() || rollout.paused.is_some() {
        return Verdict::Idle;
    }
    let template = spec.template();
    let mut all_serving = true;
    let mut starting = None;
    for replica in 0..spec.replicas {
        match on_template(record, replica, &template) {
            Some(seen) if seen.state == ObservedState::Failed => {
                return Verdict::Failed(format!(
                    "replica {replica} of {} failed: {}",
                    spec.image, seen.reason
                ));
            }
            Some(seen) if seen.state == ObservedState::Running => {}
            Some(_) => {
                all_serving = false;
                starting = starting.or(Some(replica));
            }
            None => all_serving = false,
        }
    }
    if all_serving {
        Verdict::Done
    } else {
        Verdict::InProgress { starting }
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

/// Why an update still in progress after its monitor window failed: the first replica of the
/// new template that does not serve, and what it says.
pub fn not_serving_reason(record: &GatewayRecord) -> String {
    let Some(spec) = record.intent.spec() else {
        return String::new();
    };
    let template = spec.template();
    let monitor = record
        .intent
        .rollout()
        .map_or(DEFAULT_MONITOR_SECONDS, |rollout| {
            rollout.policy.monitor_seconds
        });
    for replica in 0..spec.replicas {
        match on_template(record, replica, &template) {
            Some(seen) if seen.state == ObservedState::Running => {}
            Some(seen) if !seen.reason.is_empty() => {
                return format!(
                    "replica {replica} of {} not serving within {monitor}s: {}",
                    spec.image, seen.reason
                );
            }
            _ => {
                return format!(
                    "replica {replica} of {} not serving within {monitor}s",
                    spec.image
                );
            }
        }
    }
    String::new()
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
            UpdatePolicy::from_request(0, false),
            Ok(UpdatePolicy::default())
        );
        let pause = UpdatePolicy::from_request(10, true).expect("valid");
        assert_eq!(
            (pause.monitor_seconds, pause.on_failure),
            (10, FailureAction::Pause)
        );
        let error =
            UpdatePolicy::from_request(MAX_MONITOR_SECONDS + 1, false).expect_err("too long");
        assert_eq!(error.field, "gateway.update_policy.monitor_seconds");
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
            Verdict::InProgress { starting: Some(0) }
        );
        assert_eq!(
            not_serving_reason(&in_progress),
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
            Verdict::InProgress { starting: None }
        );
        let record =
            GatewayRecord::apply_event(record, 5, &seen(1, &new, ObservedState::Running, ""));
        assert_eq!(verdict(&record.expect("record")), Verdict::Done);
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
