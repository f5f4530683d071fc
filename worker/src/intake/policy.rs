//! The retry policy, pure: given how handling one delivered command ended, what to answer the
//! server (ack, retry after a delay, give up, terminate). The consumer carries the decision
//! out; nothing here does I/O, so every case is unit-tested.
//!
//! Only real attempts count towards `--max-attempts`: a rollout waiting for its turn, an engine
//! outage or NATS trouble retry without using one up.

use crate::reconcile::Outcome;
use std::time::Duration;

/// How handling a delivered command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The payload is not a command this worker can read.
    Undecodable,
    /// The reconcile ran to this outcome.
    Reconciled(Outcome),
    /// The store failed mid-way (NATS trouble): not the gateway's fault.
    Interrupted,
}

/// What is known of the command's history when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Real attempts before this one (failures that counted).
    pub attempts: u32,
    /// `--max-attempts`.
    pub max_attempts: u32,
    /// JetStream's delivery count (grows with every redelivery, counted or not).
    pub deliveries: i64,
    /// Whether the engine answered a ping after a retryable failure (`true` when not asked).
    pub engine_up: bool,
}

/// Why a command is handed back for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A rolling update waits for its turn.
    Waiting,
    /// The reconcile failed and may succeed later; this was real attempt `attempt`.
    Failing { attempt: u32 },
    /// The engine itself is away.
    EngineDown,
    /// NATS trouble.
    Interrupted,
}

/// The answer to the server about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Converged: acknowledge.
    Done,
    /// Failed for good (the reconcile reported FAILED): acknowledge.
    Failed,
    /// Hand it back to be delivered again after `after`.
    Retry {
        after: Duration,
        reason: RetryReason,
    },
    /// Out of attempts: report FAILED, then acknowledge.
    GiveUp { attempts: u32 },
    /// Never retry, keep it in the stream for inspection.
    Terminate,
}

impl Decision {
    /// True for answers that end the delivery with nothing left to do but tell the server
    /// (acknowledge or terminate).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Terminate)
    }

    /// The `outcome` label of `krane_worker_commands_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Done => "converged",
            Self::Failed => "failed",
            Self::Retry { reason, .. } => match reason {
                RetryReason::Waiting => "waiting",
                RetryReason::Failing { .. } => "retry",
                RetryReason::EngineDown => "engine_unavailable",
                RetryReason::Interrupted => "interrupted",
            },
            Self::GiveUp { .. } => "gave_up",
            Self::Terminate => "undecodable",
        }
    }
}

pub fn decide(handled: &Handled, history: History) -> Decision {
    match handled {
        Handled::Undecodable => Decision::Terminate,
        Handled::Interrupted => Decision::Retry {
            after: backoff(history.deliveries),
            reason: RetryReason::Interrupted,
        },
        Handled::Reconciled(Outcome::Converged) => Decision::Done,
        Handled::Reconciled(Outcome::Requeue { after }) => Decision::Retry {
            after: *after,
            reason: RetryReason::Waiting,
        },
        Handled::Reconciled(Outcome::Failed {
            permanent: true, ..
        }) => Decision::Failed,
        Handled::Reconciled(Outcome::Failed { .. }) if !history.engine_up => Decision::Retry {
            after: backoff(history.deliveries),
            reason: RetryReason::EngineDown,
        },
        Handled::Reconciled(Outcome::Failed { .. }) => {
            let attempt = history.attempts.saturating_add(1);
            if attempt >= history.max_attempts {
                Decision::GiveUp { attempts: attempt }
            } else {
                Decision::Retry {
                    after: backoff(i64::from(attempt)),
                    reason: RetryReason::Failing { attempt },
                }
            }
        }
    }
}

/// 1 s, 2 s, 4 s … capped at 30 s.
pub fn backoff(attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.clamp(1, 6) - 1).unwrap_or(0);
    Duration::from_secs(2u64.pow(exponent).min(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(attempts: u32, deliveries: i64) -> History {
        History {
            attempts,
            max_attempts: 3,
            deliveries,
            engine_up: true,
        }
    }

    fn failing() -> Handled {
        Handled::Reconciled(Outcome::Failed {
            reason: "boom".into(),
            permanent: false,
        })
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(100), Duration::from_secs(30));
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    #[test]
    fn converged_is_acknowledged_and_permanent_failures_too() {
        let converged = Handled::Reconciled(Outcome::Converged);
        assert_eq!(decide(&converged, history(0, 1)), Decision::Done);
        let failed = Handled::Reconciled(Outcome::Failed {
            reason: "no such image".into(),
            permanent: true,
        });
        assert_eq!(decide(&failed, history(0, 1)), Decision::Failed);
    }

    #[test]
    fn undecodable_commands_are_terminated_never_retried() {
        assert_eq!(
            decide(&Handled::Undecodable, history(0, 7)),
            Decision::Terminate
        );
    }

    #[test]
    fn retryable_failures_back_off_then_give_up_at_max_attempts() {
        assert_eq!(
            decide(&failing(), history(0, 1)),
            Decision::Retry {
                after: Duration::from_secs(1),
                reason: RetryReason::Failing { attempt: 1 }
            }
        );
        assert_eq!(
            decide(&failing(), history(1, 2)),
            Decision::Retry {
                after: Duration::from_secs(2),
                reason: RetryReason::Failing { attempt: 2 }
            }
        );
        assert_eq!(
            decide(&failing(), history(2, 3)),
            Decision::GiveUp { attempts: 3 }
        );
    }

    #[test]
    fn only_real_attempts_count_not_deliveries() {
        // Forty redeliveries during an outage, then the first real failure: retried, not FAILED.
        let decision = decide(&failing(), history(0, 40));
        assert_eq!(
            decision,
            Decision::Retry {
                after: Duration::from_secs(1),
                reason: RetryReason::Failing { attempt: 1 }
            }
        );
    }

    #[test]
    fn an_engine_outage_uses_no_attempt() {
        let mut down = history(2, 9);
        down.engine_up = false;
        let decision = decide(&failing(), down);
        assert_eq!(
            decision,
            Decision::Retry {
                after: Duration::from_secs(30),
                reason: RetryReason::EngineDown
            }
        );
        assert_eq!(decision.label(), "engine_unavailable");
    }

    #[test]
    fn nats_trouble_uses_no_attempt() {
        assert_eq!(
            decide(&Handled::Interrupted, history(2, 2)),
            Decision::Retry {
                after: Duration::from_secs(2),
                reason: RetryReason::Interrupted
            }
        );
    }

    #[test]
    fn a_waiting_rollout_is_requeued_after_its_delay_and_uses_no_attempt() {
        let waiting = Handled::Reconciled(Outcome::Requeue {
            after: Duration::from_millis(500),
        });
        let decision = decide(&waiting, history(2, 50));
        assert_eq!(
            decision,
            Decision::Retry {
                after: Duration::from_millis(500),
                reason: RetryReason::Waiting
            }
        );
        assert_eq!(decision.label(), "waiting");
    }

    #[test]
    fn only_answers_that_report_nothing_more_are_final() {
        let converged = decide(&Handled::Reconciled(Outcome::Converged), history(0, 1));
        assert!(converged.is_final());
        assert!(decide(&Handled::Undecodable, history(0, 1)).is_final());
        let failing = Handled::Reconciled(Outcome::Failed {
            reason: "boom".into(),
            permanent: false,
        });
        // A retry and giving up both still report to the record before answering.
        assert!(!decide(&failing, history(0, 1)).is_final());
        assert!(!decide(&failing, history(4, 5)).is_final());
        assert!(!decide(&Handled::Interrupted, history(0, 1)).is_final());
    }
}
