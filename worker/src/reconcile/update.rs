//! Watching an update after a reconcile brought this host's replicas to it: while replicas of
//! the new template are on their way the reconcile is requeued (this host keeps looking); when
//! one fails, or none serves within the policy's monitor window, the update is rolled back to
//! the last spec that rolled out (or paused); once every replica serves, the update is marked
//! done. Each of these is a command stored only if the gateway's latest command is still the
//! one judged (`krane_core::rollout::verdict`), so hosts judging at once write it once.

use super::{Outcome, ROLLOUT_POLL, ReconcileError, Reconciler};
use krane_core::command::Command;
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_core::rollout::{self, FailureAction, Rollout, Verdict};
use krane_core::routing::Replaced;
use std::time::Duration;
use tracing::{info, warn};

/// What watching an update leaves the reconcile to do.
pub(super) enum Watched {
    /// No update in progress.
    Nothing,
    /// The update was marked done by a newer command (or a newer one came first): plan again
    /// from it (it may ask to remove the extra replica of a surge here).
    MarkedDone,
    /// The reconcile ends so.
    Ends(Outcome),
}

impl Reconciler {
    /// What the update of `record`'s intent (the command at `seq`) needs now.
    pub(super) async fn watch_update(
        &self,
        key: &GatewayKey,
        seq: u64,
        record: &GatewayRecord,
    ) -> Result<Watched, ReconcileError> {
        let verdict = rollout::verdict(record);
        if !matches!(verdict, Verdict::InProgress { .. }) {
            self.update_monitor.forget(key);
        }
        let failure = match verdict {
            Verdict::Idle => return Ok(Watched::Nothing),
            Verdict::Done => {
                self.write_after_update(key, seq, &record.intent, done(&record.intent))
                    .await?;
                return Ok(Watched::MarkedDone);
            }
            Verdict::Failed(reason) => reason,
            Verdict::InProgress { starting } => {
                let monitor = record
                    .intent
                    .rollout()
                    .map_or(rollout::DEFAULT_MONITOR_SECONDS, |rollout| {
                        rollout.policy.monitor_seconds
                    });
                // The window runs for each replica of the new template while it does not
                // serve; it starts again for the next ones.
                match self.update_monitor.longest_not_serving(key, &starting) {
                    Some((replica, waited))
                        if waited >= Duration::from_secs(u64::from(monitor)) =>
                    {
                        rollout::not_serving_reason(record, replica)
                    }
                    _ => {
                        return Ok(Watched::Ends(Outcome::Requeue {
                            after: ROLLOUT_POLL,
                        }));
                    }
                }
            }
        };
        let Some(command) = failed(&record.intent, &failure) else {
            return Ok(Watched::Nothing);
        };
        warn!(namespace = %key.namespace, gateway = %key.gateway_id, reason = %failure, "update failed");
        self.write_after_update(key, seq, &record.intent, command)
            .await?;
        // The command just stored (or a newer one) is the intent now: look again soon.
        Ok(Watched::Ends(Outcome::Requeue {
            after: ROLLOUT_POLL,
        }))
    }

    /// Stores `command` if the command at `seq` (`replaced`) is still the latest, and folds it in.
    async fn write_after_update(
        &self,
        key: &GatewayKey,
        seq: u64,
        replaced: &Command,
        command: Command,
    ) -> Result<(), ReconcileError> {
        let store = &self.worker.store;
        match store
            .publish_command_expecting(
                &command,
                seq,
                &self.worker.host.author(),
                Replaced::Command(replaced),
            )
            .await?
        {
            Some(stored) => {
                store.project_command(stored, &command).await?;
                let (state, reason) = command
                    .spec()
                    .zip(command.rollout())
                    .map(|(spec, rollout)| rollout.status(spec))
                    .unwrap_or_default();
                info!(namespace = %key.namespace, gateway = %key.gateway_id, seq = stored, state, reason, "update");
            }
            // A newer command came first: its own delivery carries on from there.
            None => {
                info!(namespace = %key.namespace, gateway = %key.gateway_id, "update changed meanwhile")
            }
        }
        Ok(())
    }
}

/// The command that marks the update of `intent` done: the same, without the spec to return
/// to (and so without the extra replica of a surge, which its host removes then).
fn done(intent: &Command) -> Command {
    let rollout = intent.rollout().cloned().unwrap_or_default();
    let (Some(spec), placement) = (intent.spec(), intent.placement()) else {
        return intent.clone();
    };
    without_unwanted_hosts(Command::create_with(
        spec.clone(),
        placement.to_vec(),
        Rollout {
            previous: None,
            ..rollout
        },
    ))
}

/// The command a failed update of `intent` leads to, as its policy says: back to the previous
/// spec (keeping the placement), or the same, paused; neither keeps the extra replica of a
/// surge. `None` if there is nothing to go back to.
fn failed(intent: &Command, reason: &str) -> Option<Command> {
    let rollout = intent.rollout()?;
    let spec = intent.spec()?;
    let placement = intent.placement().to_vec();
    let command = match rollout.policy.on_failure {
        FailureAction::Rollback => Command::create_with(
            *rollout.previous.clone()?,
            placement,
            Rollout {
                policy: rollout.policy,
                previous: None,
                rolled_back: Some(reason.to_string()),
                paused: None,
            },
        ),
        FailureAction::Pause => Command::create_with(
            spec.clone(),
            placement,
            Rollout {
                paused: Some(reason.to_string()),
                ..rollout.clone()
            },
        ),
    };
    Some(without_unwanted_hosts(command))
}

/// `command` naming hosts only for the replicas it wants: the host of an extra replica whose
/// update is over is forgotten with it.
fn without_unwanted_hosts(command: Command) -> Command {
    let wanted = usize::try_from(command.wanted_replicas()).unwrap_or(usize::MAX);
    if command.placement().len() <= wanted {
        return command;
    }
    let placement = command.placement()[..wanted].to_vec();
    command.with_placement(placement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::spec;
    use krane_core::rollout::UpdatePolicy;

    fn updating(on_failure: FailureAction) -> Command {
        Command::create_with(
            spec(2, "img:2"),
            vec!["h1".into(), "h2".into()],
            Rollout {
                policy: UpdatePolicy {
                    monitor_seconds: 5,
                    on_failure,
                    ..UpdatePolicy::default()
                },
                previous: Some(Box::new(spec(2, "img:1"))),
                ..Rollout::default()
            },
        )
    }

    #[test]
    fn a_failed_update_goes_back_to_the_previous_spec_where_its_replicas_run() {
        let back =
            failed(&updating(FailureAction::Rollback), "replica 0 failed").expect("a command");
        assert_eq!(back.spec(), Some(&spec(2, "img:1")));
        assert_eq!(back.placement(), ["h1", "h2"]);
        let rollout = back.rollout().expect("a rollout");
        assert_eq!(rollout.rolled_back.as_deref(), Some("replica 0 failed"));
        assert_eq!(rollout.previous, None, "a rollback is not watched itself");
        assert_eq!(rollout.policy.monitor_seconds, 5);
    }

    #[test]
    fn a_paused_update_keeps_its_spec_and_says_why() {
        let paused =
            failed(&updating(FailureAction::Pause), "replica 0 failed").expect("a command");
        assert_eq!(paused.spec(), Some(&spec(2, "img:2")));
        let rollout = paused.rollout().expect("a rollout");
        assert_eq!(rollout.paused.as_deref(), Some("replica 0 failed"));
        assert_eq!(rollout.previous.as_deref(), Some(&spec(2, "img:1")));
    }

    #[test]
    fn a_done_update_forgets_where_it_came_from_and_keeps_the_rest() {
        let finished = done(&updating(FailureAction::Rollback));
        assert_eq!(finished.spec(), Some(&spec(2, "img:2")));
        assert_eq!(finished.placement(), ["h1", "h2"]);
        let rollout = finished.rollout().expect("a rollout");
        assert_eq!(rollout.previous, None);
        assert_eq!(rollout.policy.monitor_seconds, 5);
    }

    /// An update that surges, its extra replica (2) placed on h3.
    fn surging(on_failure: FailureAction) -> Command {
        let update = updating(on_failure);
        let mut rollout = update.rollout().cloned().expect("a rollout");
        rollout.policy.max_surge = 1;
        let placement = vec!["h1".into(), "h2".into(), "h3".into()];
        Command::create_with(spec(2, "img:2"), placement, rollout)
    }

    #[test]
    fn the_extra_replica_and_its_host_are_dropped_however_the_update_ends() {
        assert_eq!(surging(FailureAction::Rollback).wanted_replicas(), 3);
        let ended = [
            done(&surging(FailureAction::Rollback)),
            failed(&surging(FailureAction::Rollback), "replica 2 failed").expect("rolled back"),
            failed(&surging(FailureAction::Pause), "replica 2 failed").expect("paused"),
        ];
        for command in ended {
            assert_eq!(command.wanted_replicas(), 2, "{command:?}");
            assert_eq!(command.placement(), ["h1", "h2"]);
            assert!(command.replicas_on("h3").is_empty());
            // The policy is kept: the next update surges again.
            let policy = command.rollout().map(|rollout| rollout.policy.max_surge);
            assert_eq!(policy, Some(1));
        }
    }
}
