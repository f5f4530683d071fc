//! Reconciling one gateway on this host, level-triggered: read the latest intent from the
//! commands stream (not the message that woke us), take this host's share of it (the replicas
//! placed here), look at the engine, `plan`, act through the `ContainerRuntime`, report what is
//! now true as events, and repeat until the plan is empty. Running it twice, late, or on two
//! workers at once converges to the same containers because container names are deterministic
//! and every runtime call is idempotent.
//!
//! A reconcile never sleeps: when a rolling update must wait for other replicas (maybe on
//! other hosts), it reports, releases the gateway's lock and returns [`Outcome::Requeue`];
//! whoever called it (the intake, the resync) asks again after the delay.
//!
//! - [`plan`]: what to do (pure); [`rollout`]: which rolls may run now (pure).
//! - [`report`]: which facts are news (pure) and publishing them.
//! - [`drift`]: whether a gateway needs a reconcile at all, from memory (pure; the resync).
//! - `intent`: the latest command, placed and projected, and this host's share of it.
//! - `image`: the image before the containers (pulled, its progress reported).
//! - `execute`: carrying out actions through the runtime.
//! - `memory`: per-gateway locks, convergence marks and rollout waits, in memory.
//! - `update`: watching an update once this host's replicas are on it (done, rolled back,
//!   paused).

pub(crate) mod drift;
mod execute;
#[cfg(test)]
pub(crate) mod fixtures;
mod image;
mod intent;
mod memory;
pub mod plan;
mod report;
mod rollout;
#[cfg(test)]
mod tests;
mod update;

use crate::context::Worker;
use krane_core::command::Command;
use krane_core::event::ObservedState;
use krane_core::names::GatewayKey;
use krane_store::StoreError;
use memory::{Converged, ConvergedAt, GatewayLocks, RolloutWaits, UpdateMonitor};
use plan::Desired;
use report::failures_to_report;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::field::{Empty, debug};
use tracing::{Instrument, debug, info, info_span, warn};

/// Plan/act rounds per reconcile; more means someone keeps changing things under us, and the
/// next delivery (or resync) continues from wherever this one stopped.
const MAX_ROUNDS: usize = 4;
/// How soon a rolling update that waits for another replica looks again.
pub const ROLLOUT_POLL: Duration = Duration::from_millis(500);

/// How a reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The engine shows exactly what the latest intent asks of this host.
    Converged,
    /// Some replicas could not be brought up; `permanent` when retrying cannot help.
    Failed { reason: String, permanent: bool },
    /// A rolling update waits for its turn: reconcile again after `after`. Nothing (no lock,
    /// no intake permit) is held meanwhile.
    Requeue { after: Duration },
}

impl Outcome {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Failed {
                permanent: true, ..
            } => "failed",
            Self::Failed { .. } => "retryable",
            Self::Requeue { .. } => "waiting",
        }
    }
}

/// A reconcile that could not finish because the store failed (NATS trouble): not the
/// gateway's fault, so callers retry without counting it against the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Reconciler {
    worker: Worker,
    locks: GatewayLocks,
    /// The command each gateway last converged at here (see [`Self::reconcile_command`]).
    converged_at: ConvergedAt,
    rollout_waits: RolloutWaits,
    /// How long the replica being replaced by an update has not served.
    update_monitor: UpdateMonitor,
    /// Replicas created (or removed) at once.
    parallelism: usize,
    /// Longest wait of a rolling update for its turn before the reconcile gives up for now.
    rollout_timeout: Duration,
}

impl Reconciler {
    pub fn new(worker: Worker, parallelism: usize, rollout_timeout: Duration) -> Self {
        Self {
            worker,
            locks: GatewayLocks::default(),
            converged_at: ConvergedAt::default(),
            rollout_waits: RolloutWaits::default(),
            update_monitor: UpdateMonitor::default(),
            parallelism: parallelism.max(1),
            rollout_timeout,
        }
    }

    /// Brings this host's containers of the gateway to its latest intent and reports them.
    /// Reconciles of one gateway never overlap within a worker (commands, engine events and
    /// resync share a lock per gateway).
    pub async fn reconcile(&self, key: &GatewayKey) -> Result<Outcome, ReconcileError> {
        let lock = self.locks.lock_for(key);
        let _guard = lock.lock().await;
        self.reconcile_traced(key).await
    }

    /// As [`Self::reconcile`], for work about `delivered`, the command at `seq` (0: unknown).
    /// When a reconcile here already converged at that command or a later one (a redelivery,
    /// or the placement this worker published itself), there is nothing left for it to do;
    /// nor when it converged at an earlier command that asked the same of this host; nor when
    /// [`drift::triage`] finds, from memory, that nothing of the gateway is here to act on.
    /// Drift after that is the business of engine events and resync, which call `reconcile`.
    pub async fn reconcile_command(
        &self,
        key: &GatewayKey,
        seq: u64,
        delivered: &Command,
    ) -> Result<Outcome, ReconcileError> {
        let lock = self.locks.lock_for(key);
        let _guard = lock.lock().await;
        if let Some(converged) = self.converged_at.get(key) {
            if seq > 0 && converged.seq >= seq {
                debug!(namespace = %key.namespace, gateway = %key.gateway_id, seq, "already converged at this command or a later one");
                return Ok(Outcome::Converged);
            }
            let share = Desired::for_host(Some(delivered), &self.worker.host.host_id);
            if seq > converged.seq && !delivered.has_unplaced() && share == converged.share {
                debug!(namespace = %key.namespace, gateway = %key.gateway_id, seq, "asks of this host what it converged at already");
                self.converged_at.set(key, Converged { seq, share });
                return Ok(Outcome::Converged);
            }
        }
        if self.nothing_here(key, seq, delivered).await {
            return Ok(Outcome::Converged);
        }
        self.reconcile_traced(key).await
    }

    /// True when memory (and, if it cannot tell, the engine) shows that nothing of the
    /// gateway is here to act on and `delivered` places nothing here.
    async fn nothing_here(&self, key: &GatewayKey, seq: u64, delivered: &Command) -> bool {
        let worker = &self.worker;
        let indexed = worker.records.get(key);
        let me = worker.host.host_id.as_str();
        match drift::triage(delivered, indexed.as_deref(), me) {
            drift::Triage::Reconcile => false,
            drift::Triage::NothingHereUnlessEngineSays => {
                if worker.held.surely_none_of(key) {
                    debug!(namespace = %key.namespace, gateway = %key.gateway_id, seq, "nothing of this gateway here since the engine was listed");
                    return true;
                }
                match worker.runtime.list_gateway(key).await {
                    Ok(containers) if containers.is_empty() => {
                        debug!(namespace = %key.namespace, gateway = %key.gateway_id, seq, "nothing of this gateway here");
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    async fn reconcile_traced(&self, key: &GatewayKey) -> Result<Outcome, ReconcileError> {
        let span = info_span!(
            "reconcile",
            namespace = %key.namespace,
            gateway = %key.gateway_id,
            outcome = Empty,
        );
        let started = Instant::now();
        let result = self.reconcile_rounds(key).instrument(span.clone()).await;
        match result {
            Ok((Outcome::Converged, ref converged)) => {
                self.converged_at.set(key, converged.clone())
            }
            _ => self.converged_at.forget(key),
        }
        if !matches!(result, Ok((Outcome::Requeue { .. }, _))) {
            self.rollout_waits.end(key);
        }
        let result = result.map(|(outcome, _)| outcome);
        let label = match &result {
            Ok(outcome) => outcome.label(),
            Err(_) => "error",
        };
        crate::metrics::reconciled(label, started.elapsed());
        span.record("outcome", debug(&result));
        result
    }

    /// Plan/act rounds until nothing is left to do; returns how the reconcile ended and the
    /// command it last worked from, with this host's share of it.
    async fn reconcile_rounds(
        &self,
        key: &GatewayKey,
    ) -> Result<(Outcome, Converged), ReconcileError> {
        let runtime = &self.worker.runtime;
        // The record as this reconcile last wrote it: later rounds start from it.
        let mut written = None;
        for round in 0..MAX_ROUNDS {
            // The latest command, read afresh every round; the record is read afresh in the
            // first round (gating a rolling update needs the other hosts' reports), and later
            // rounds see it as of this reconcile's own last write.
            let intent::CurrentIntent {
                seq,
                desired,
                stored,
            } = self.current_intent(key, written.take()).await?;
            let worked_from = Converged {
                seq,
                share: desired.clone(),
            };
            let ended = |outcome| Ok((outcome, worked_from));
            let observed = match runtime.list_gateway(key).await {
                Ok(observed) => observed,
                Err(error) => {
                    return ended(self.report_failure(key, &desired, stored, &error).await?);
                }
            };
            let planned = plan::plan(key, &desired, &observed);
            let (actions, waiting) = rollout::gate_rollout(planned, stored.record.as_ref());
            if actions.is_empty() {
                let stored = self
                    .report(key, &desired, stored, &observed, &BTreeMap::new())
                    .await?;
                if let Some(record) = stored.record.as_ref() {
                    match self.watch_update(key, seq, record).await? {
                        update::Watched::Ends(outcome) => return ended(outcome),
                        // Plan from the command that marked it done, while rounds are left
                        // (else its own delivery does).
                        update::Watched::MarkedDone if round + 1 < MAX_ROUNDS => continue,
                        _ => {}
                    }
                }
                let paused = stored
                    .record
                    .as_ref()
                    .and_then(|record| record.intent.rollout())
                    .is_some_and(|rollout| rollout.paused.is_some());
                if waiting == 0 || paused {
                    debug!(round, seq, "converged");
                    return ended(Outcome::Converged);
                }
                // Another replica is being replaced (maybe on another host): our turn comes
                // when it runs again.
                return ended(self.wait_for_rollout(key));
            }
            self.rollout_waits.end(key);
            // Only the replicas that must be (re)created wait for the image; removals and
            // starts go ahead without it.
            let image::ImageReady {
                actions,
                mut failures,
                stored,
            } = self
                .with_image(key, &desired, stored, &observed, actions)
                .await;
            info!(round, actions = actions.len(), waiting, "applying plan");
            let (stored, failed) = self
                .execute_announced(key, &desired, stored, actions)
                .await?;
            failures.extend(failed);
            let observed = match runtime.list_gateway(key).await {
                Ok(observed) => observed,
                Err(error) => {
                    return ended(self.report_failure(key, &desired, stored, &error).await?);
                }
            };
            // Only this host reports its replicas, so what is news is judged from the record
            // as announced; should others have written it meanwhile, the fold reads it again.
            let failed = failures_to_report(&failures);
            written = Some(
                self.report(key, &desired, stored, &observed, &failed)
                    .await?,
            );
            if let Some((_, error)) = failures.iter().next() {
                let permanent = failures.values().all(|error| error.is_permanent());
                return ended(Outcome::Failed {
                    reason: error.to_string(),
                    permanent,
                });
            }
            // Done as planned, outside an update (whose watch the next round runs): another
            // round would only read the same command again. A newer one is delivered anyway.
            let updating = written
                .as_ref()
                .and_then(|stored| stored.record.as_ref())
                .is_some_and(|record| rollout::is_updating(&record.intent));
            if waiting == 0 && !updating && plan::plan(key, &desired, &observed).is_empty() {
                debug!(round, seq, "converged as planned");
                return ended(Outcome::Converged);
            }
        }
        warn!("still changing after {MAX_ROUNDS} rounds; leaving it to the next delivery");
        Ok((
            Outcome::Failed {
                reason: format!("did not settle within {MAX_ROUNDS} rounds"),
                permanent: false,
            },
            Converged {
                seq: 0,
                share: Desired::nothing(),
            },
        ))
    }

    /// A rolling update waits for another replica: look again soon, unless it has waited
    /// longer than `--rollout-timeout` already (then it is a retryable failure).
    fn wait_for_rollout(&self, key: &GatewayKey) -> Outcome {
        let since = self.rollout_waits.waiting_since(key);
        if since.elapsed() > self.rollout_timeout {
            return Outcome::Failed {
                reason: format!(
                    "rolling update waited {:?} for other replicas",
                    self.rollout_timeout
                ),
                permanent: false,
            };
        }
        debug!(after = ?ROLLOUT_POLL, "rolling update waits for its turn; requeued");
        Outcome::Requeue {
            after: ROLLOUT_POLL,
        }
    }

    /// Marks every replica wanted here FAILED with `reason` (used when retries are exhausted)
    /// or PENDING with `reason` (while a retry is scheduled), as the outcome of handling
    /// `handled`. Nothing is reported when the gateway's intent has moved on to another spec
    /// meanwhile: that failure is not the current intent's.
    pub async fn report_unresolved(
        &self,
        key: &GatewayKey,
        handled: &Command,
        reason: &str,
        state: ObservedState,
    ) -> Result<(), ReconcileError> {
        let lock = self.locks.lock_for(key);
        let _guard = lock.lock().await;
        let intent = self.current_intent(key, None).await?;
        if intent.desired.spec.as_ref() != handled.spec() {
            debug!("the intent changed meanwhile; not reporting an older failure");
            return Ok(());
        }
        let failures = report::failing_all(&intent.desired, reason, state);
        // What still runs is reported as it runs (see `report::observations`); when the
        // engine cannot be asked, only the failures are known.
        let observed = self
            .worker
            .runtime
            .list_gateway(key)
            .await
            .unwrap_or_default();
        self.report_these(key, &intent.desired, intent.stored, &observed, &failures)
            .await?;
        Ok(())
    }
}
