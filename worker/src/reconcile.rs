//! Reconciling one gateway on this host, level-triggered: read the latest intent from the
//! commands stream (not the message that woke us), take this host's share of it (the replicas
//! placed here), look at the engine, `plan`, act through the `ContainerRuntime`, report what is
//! now true as events, and repeat until the plan is empty. Running it twice, late, or on two
//! workers at once converges to the same containers because container names are deterministic
//! and every runtime call is idempotent. Rolling updates wait here for their turn.

use crate::plan::{self, Action, Desired, FailedReplica, HostIdentity};
use crate::runtime::{ContainerRuntime, ObservedContainer, ReplicaContainer, RuntimeError};
use crate::scheduler;
use futures::StreamExt;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::hosts::HostsView;
use krane_core::log::{EventLog, LogError, StoredRecord};
use krane_core::names::GatewayKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::field::{Empty, debug};
use tracing::{Instrument, debug, info, info_span, warn};

/// Plan/act rounds per reconcile; more means someone keeps changing things under us, and the
/// next delivery (or resync) continues from wherever this one stopped.
const MAX_ROUNDS: usize = 4;
/// How often a rolling update that waits for another replica looks again.
const ROLLOUT_POLL: Duration = Duration::from_millis(500);
/// How old the view of live hosts may be when replicas are placed.
const HOSTS_FRESH_FOR_PLACING: Duration = Duration::from_millis(250);

/// How a reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The engine shows exactly what the latest intent asks of this host.
    Converged,
    /// Some replicas could not be brought up; `permanent` when retrying cannot help.
    Failed { reason: String, permanent: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Log(#[from] LogError),
}

pub struct Reconciler {
    log: EventLog,
    locks: GatewayLocks,
    /// The command each gateway last converged at here (see [`Self::reconcile_command`]).
    converged_at: ConvergedAt,
    runtime: Arc<dyn ContainerRuntime>,
    host: HostIdentity,
    /// Replicas created (or removed) at once.
    parallelism: usize,
    /// Longest wait of a rolling update for its turn before the reconcile gives up for now.
    rollout_timeout: Duration,
    /// Live hosts, for placing replicas that are not placed yet.
    hosts: HostsView,
}

impl Reconciler {
    pub fn new(
        log: EventLog,
        runtime: Arc<dyn ContainerRuntime>,
        host: HostIdentity,
        parallelism: usize,
        rollout_timeout: Duration,
        hosts: HostsView,
    ) -> Self {
        Self {
            log,
            locks: GatewayLocks::default(),
            converged_at: ConvergedAt::default(),
            runtime,
            host,
            parallelism: parallelism.max(1),
            rollout_timeout,
            hosts,
        }
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn runtime(&self) -> &dyn ContainerRuntime {
        self.runtime.as_ref()
    }

    pub fn host(&self) -> &HostIdentity {
        &self.host
    }

    /// Brings this host's containers of the gateway to its latest intent and reports them.
    /// Reconciles of one gateway never overlap within a worker (commands, engine events and
    /// resync share a lock per gateway).
    pub async fn reconcile(&self, key: &GatewayKey) -> Result<Outcome, ReconcileError> {
        let lock = self.locks.lock_for(key);
        let _guard = lock.lock().await;
        self.reconcile_traced(key).await
    }

    /// As [`Self::reconcile`], for the delivery of the command at `seq`: when a reconcile here
    /// already converged at that command or a later one (a redelivery, or the placement this
    /// worker published itself), there is nothing left for this delivery to do. Drift after
    /// that convergence is the business of engine events and resync, which call `reconcile`.
    pub async fn reconcile_command(
        &self,
        key: &GatewayKey,
        seq: u64,
    ) -> Result<Outcome, ReconcileError> {
        let lock = self.locks.lock_for(key);
        let _guard = lock.lock().await;
        if seq > 0 && self.converged_at.get(key).is_some_and(|at| at >= seq) {
            debug!(namespace = %key.namespace, gateway = %key.gateway_id, seq, "already converged at this command or a later one");
            return Ok(Outcome::Converged);
        }
        self.reconcile_traced(key).await
    }

    async fn reconcile_traced(&self, key: &GatewayKey) -> Result<Outcome, ReconcileError> {
        let span = info_span!(
            "reconcile",
            namespace = %key.namespace,
            gateway = %key.gateway_id,
            outcome = Empty,
        );
        let started = Instant::now();
        let result = self
            .reconcile_locked(key, started)
            .instrument(span.clone())
            .await;
        match &result {
            Ok((Outcome::Converged, seq)) => self.converged_at.set(key, *seq),
            _ => self.converged_at.forget(key),
        }
        let result = result.map(|(outcome, _)| outcome);
        crate::metrics::reconciled(&result, started.elapsed());
        span.record("outcome", debug(&result));
        result
    }

    /// Returns how the reconcile ended and the command it last worked from.
    async fn reconcile_locked(
        &self,
        key: &GatewayKey,
        started: Instant,
    ) -> Result<(Outcome, u64), ReconcileError> {
        let mut round = 0;
        while round < MAX_ROUNDS {
            // Read afresh every round: gating a rolling update needs the other hosts' reports.
            let (seq, desired, stored) = self.current_intent(key).await?;
            let ended = |outcome| Ok((outcome, seq));
            if let Some(spec) = &desired.spec
                && !desired.replicas.is_empty()
                && let Err(error) = self.runtime.ensure_image(&spec.image).await
            {
                return ended(self.report_failure(key, &desired, stored, &error).await?);
            }
            let observed = match self.runtime.list_gateway(key).await {
                Ok(observed) => observed,
                Err(error) => {
                    return ended(self.report_failure(key, &desired, stored, &error).await?);
                }
            };
            let planned = plan::plan(key, &desired, &observed);
            let (actions, waiting) = plan::gate_rollout(planned, stored.record.as_ref());
            if actions.is_empty() {
                self.report(key, &desired, stored, &observed, &BTreeMap::new())
                    .await?;
                if waiting == 0 {
                    debug!(round, seq, "converged");
                    return ended(Outcome::Converged);
                }
                if started.elapsed() > self.rollout_timeout {
                    return ended(Outcome::Failed {
                        reason: format!(
                            "rolling update waited {:?} for other replicas",
                            self.rollout_timeout
                        ),
                        permanent: false,
                    });
                }
                // Another replica is being replaced (maybe on another host): our turn comes
                // when it runs again. Waiting is not a round.
                tokio::time::sleep(ROLLOUT_POLL).await;
                continue;
            }
            round += 1;
            info!(round, actions = actions.len(), waiting, "applying plan");
            let stored = self
                .announce_pending(key, &desired, stored, &actions)
                .await?;
            let failures = self.execute(&desired, actions).await;
            let observed = match self.runtime.list_gateway(key).await {
                Ok(observed) => observed,
                Err(error) => {
                    return ended(self.report_failure(key, &desired, stored, &error).await?);
                }
            };
            // Other hosts may have reported meanwhile (rolling updates read their replicas).
            let stored = self.log.load_record(key).await?;
            let failed = failures_to_report(&failures);
            self.report(key, &desired, stored, &observed, &failed)
                .await?;
            if let Some((_, error)) = failures.iter().next() {
                let permanent = failures.values().all(RuntimeError::is_permanent);
                return ended(Outcome::Failed {
                    reason: error.to_string(),
                    permanent,
                });
            }
        }
        warn!("still changing after {MAX_ROUNDS} rounds; leaving it to the next delivery");
        Ok((
            Outcome::Failed {
                reason: format!("did not settle within {MAX_ROUNDS} rounds"),
                permanent: false,
            },
            0,
        ))
    }

    /// Marks every replica wanted here FAILED with `reason` (used when retries are exhausted)
    /// or PENDING with `reason` (while a retry is scheduled).
    pub async fn report_unresolved(
        &self,
        key: &GatewayKey,
        reason: &str,
        state: ObservedState,
    ) -> Result<(), ReconcileError> {
        let lock = self.locks.lock_for(key);
        let _guard = lock.lock().await;
        let (_, desired, stored) = self.current_intent(key).await?;
        let failures = failing_all(&desired, reason, state);
        self.report_only_failures(key, &desired, stored, &failures)
            .await?;
        Ok(())
    }

    /// This host's share of the latest command (and that command's sequence), which is folded
    /// into the record first so events about it have a record to land in; returns the record
    /// as stored.
    async fn current_intent(
        &self,
        key: &GatewayKey,
    ) -> Result<(u64, Desired, StoredRecord), ReconcileError> {
        match self.log.latest_command(key).await? {
            Some((seq, command)) => {
                if command.has_unplaced() {
                    // Place on the hosts as they are now, not as the last periodic read saw
                    // them (a burst of creates shares one read).
                    self.hosts
                        .refresh_if_older_than(&self.log, HOSTS_FRESH_FOR_PLACING)
                        .await;
                }
                let live = scheduler::live_with_self(self, self.hosts.snapshot());
                let live = scheduler::unplaced_only(live, &command);
                let placed = scheduler::place_if_needed(&self.log, seq, &command, &live).await?;
                let stored = match placed.projected {
                    Some(stored) => stored,
                    None => {
                        self.log
                            .project_command(placed.seq, &placed.command)
                            .await?
                    }
                };
                let desired = Desired::for_host(Some(&placed.command), &self.host.host_id);
                Ok((placed.seq, desired, stored))
            }
            // Never commanded (e.g. a container left from a purged stream): nothing is wanted.
            None => Ok((0, Desired::nothing(), self.log.load_record(key).await?)),
        }
    }

    async fn report_failure(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        error: &RuntimeError,
    ) -> Result<Outcome, ReconcileError> {
        let (state, permanent) = if error.is_permanent() {
            (ObservedState::Failed, true)
        } else {
            (ObservedState::Pending, false)
        };
        warn!(%error, permanent, "reconcile failed");
        let failures = failing_all(desired, &error.to_string(), state);
        self.report_only_failures(key, desired, stored, &failures)
            .await?;
        Ok(Outcome::Failed {
            reason: error.to_string(),
            permanent,
        })
    }

    /// Before creating or replacing containers, says so: a Delete arriving meanwhile then shows
    /// them as TERMINATING, and other hosts see the replica is not running (rolling updates).
    /// Returns the record as stored afterwards.
    async fn announce_pending(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        actions: &[Action],
    ) -> Result<StoredRecord, ReconcileError> {
        if desired.spec.is_none() {
            return Ok(stored);
        }
        let pending: BTreeMap<u32, FailedReplica> = actions
            .iter()
            .filter(|action| action.creates())
            .filter_map(Action::replica)
            .map(|replica| {
                let state = FailedReplica {
                    state: ObservedState::Pending,
                    reason: String::new(),
                };
                (replica, state)
            })
            .collect();
        self.report_only_failures(key, desired, stored, &pending)
            .await
    }

    /// Runs the actions, `parallelism` at a time; returns the error of each failed replica.
    async fn execute(
        &self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> BTreeMap<u32, RuntimeError> {
        let results: Vec<_> = futures::stream::iter(actions)
            .map(|action| async move {
                let result = self.apply(desired, &action).await;
                (action, result)
            })
            .buffer_unordered(self.parallelism)
            .collect()
            .await;
        let mut failures = BTreeMap::new();
        for (action, result) in results {
            if let Err(error) = result {
                warn!(?action, %error, "action failed");
                if let Some(replica) = action.replica() {
                    failures.insert(replica, error);
                }
            }
        }
        failures
    }

    async fn apply(&self, desired: &Desired, action: &Action) -> Result<(), RuntimeError> {
        let container_for = |replica: u32| {
            desired
                .spec
                .as_ref()
                .map(|spec| ReplicaContainer::for_replica(spec, replica, &self.host.host_id))
                .ok_or_else(|| RuntimeError::Rejected("no spec to create from".into()))
        };
        match action {
            Action::Create { replica } => {
                self.runtime
                    .create_and_start(&container_for(*replica)?)
                    .await
            }
            Action::Start { container, .. } => self.runtime.start(container).await,
            Action::Replace { replica, container } | Action::Roll { replica, container } => {
                self.runtime.remove(container).await?;
                self.runtime
                    .create_and_start(&container_for(*replica)?)
                    .await
            }
            Action::Remove { container, .. } => self.runtime.remove(container).await,
        }
    }

    /// Publishes what changed since `stored` and folds it into the record.
    async fn report(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        observed: &[ObservedContainer],
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<(), ReconcileError> {
        let facts = plan::observations(
            key,
            desired,
            stored.record.as_ref(),
            observed,
            failures,
            &self.host,
        );
        self.publish(key, stored, facts).await?;
        Ok(())
    }

    /// Reports only the replicas in `failures`: used when the engine could not be listed, so
    /// nothing is known about the others.
    async fn report_only_failures(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<StoredRecord, ReconcileError> {
        let facts = plan::observations(
            key,
            desired,
            stored.record.as_ref(),
            &[],
            failures,
            &self.host,
        )
        .into_iter()
        .filter(|fact| failures.contains_key(&fact.replica))
        .collect();
        self.publish(key, stored, facts).await
    }

    /// Stores the facts, folds them into the record (starting from `stored`) and updates the
    /// instance gauges; returns the record as stored afterwards.
    async fn publish(
        &self,
        key: &GatewayKey,
        stored: StoredRecord,
        facts: Vec<InstanceObserved>,
    ) -> Result<StoredRecord, ReconcileError> {
        let after = self
            .log
            .append_events(key, Some(stored), &facts)
            .await?
            .unwrap_or_else(StoredRecord::absent);
        for fact in &facts {
            debug!(replica = fact.replica, state = ?fact.state, "reported");
        }
        crate::metrics::reported(key, &self.host.host_id, after.record.as_ref(), &facts);
        Ok(after)
    }
}

fn failures_to_report(failures: &BTreeMap<u32, RuntimeError>) -> BTreeMap<u32, FailedReplica> {
    failures
        .iter()
        .map(|(replica, error)| {
            let state = if error.is_permanent() {
                ObservedState::Failed
            } else {
                ObservedState::Pending
            };
            let failure = FailedReplica {
                state,
                reason: error.to_string(),
            };
            (*replica, failure)
        })
        .collect()
}

fn failing_all(
    desired: &Desired,
    reason: &str,
    state: ObservedState,
) -> BTreeMap<u32, FailedReplica> {
    desired
        .replicas
        .iter()
        .map(|replica| {
            let failure = FailedReplica {
                state,
                reason: reason.to_string(),
            };
            (*replica, failure)
        })
        .collect()
}

/// Per gateway, the sequence of the command its last reconcile here converged at. Bounded:
/// forgetting only costs a redundant reconcile.
#[derive(Default)]
struct ConvergedAt {
    seqs: Mutex<HashMap<GatewayKey, u64>>,
}

impl ConvergedAt {
    const MAX_GATEWAYS: usize = 100_000;

    fn get(&self, key: &GatewayKey) -> Option<u64> {
        self.seqs.lock().ok()?.get(key).copied()
    }

    fn set(&self, key: &GatewayKey, seq: u64) {
        if let Ok(mut seqs) = self.seqs.lock() {
            if seqs.len() >= Self::MAX_GATEWAYS {
                seqs.clear();
            }
            seqs.insert(key.clone(), seq);
        }
    }

    fn forget(&self, key: &GatewayKey) {
        if let Ok(mut seqs) = self.seqs.lock() {
            seqs.remove(key);
        }
    }
}

/// One async mutex per gateway, so a worker never runs two reconciles of one gateway at once.
#[derive(Clone, Default)]
struct GatewayLocks {
    locks: Arc<Mutex<HashMap<GatewayKey, Arc<tokio::sync::Mutex<()>>>>>,
}

impl GatewayLocks {
    fn lock_for(&self, key: &GatewayKey) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut locks) = self.locks.lock() else {
            return Arc::default();
        };
        // Forget locks nobody holds, so the map stays as small as the work in flight.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key.clone()).or_default().clone()
    }
}
