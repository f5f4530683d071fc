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
use krane_core::log::{EventLog, LogError};
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
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
        crate::metrics::reconciled(&result, started.elapsed());
        span.record("outcome", debug(&result));
        result
    }

    async fn reconcile_locked(
        &self,
        key: &GatewayKey,
        started: Instant,
    ) -> Result<Outcome, ReconcileError> {
        let mut round = 0;
        while round < MAX_ROUNDS {
            let (desired, record) = self.current_intent(key).await?;
            if let Some(spec) = &desired.spec
                && !desired.replicas.is_empty()
                && let Err(error) = self.runtime.ensure_image(&spec.image).await
            {
                return self.report_failure(key, &desired, record, &error).await;
            }
            let observed = match self.runtime.list_gateway(key).await {
                Ok(observed) => observed,
                Err(error) => return self.report_failure(key, &desired, record, &error).await,
            };
            let planned = plan::plan(key, &desired, &observed);
            let (actions, waiting) = plan::gate_rollout(planned, record.as_ref());
            if actions.is_empty() {
                self.report(key, &desired, record.as_ref(), &observed, &BTreeMap::new())
                    .await?;
                if waiting == 0 {
                    debug!(round, "converged");
                    return Ok(Outcome::Converged);
                }
                if started.elapsed() > self.rollout_timeout {
                    return Ok(Outcome::Failed {
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
            self.announce_pending(key, &desired, record.as_ref(), &actions)
                .await?;
            let failures = self.execute(&desired, actions).await;
            let observed = match self.runtime.list_gateway(key).await {
                Ok(observed) => observed,
                Err(error) => return self.report_failure(key, &desired, record, &error).await,
            };
            let record = self.log.load_record(key).await?.record;
            let failed = failures_to_report(&failures);
            self.report(key, &desired, record.as_ref(), &observed, &failed)
                .await?;
            if let Some((_, error)) = failures.iter().next() {
                let permanent = failures.values().all(RuntimeError::is_permanent);
                return Ok(Outcome::Failed {
                    reason: error.to_string(),
                    permanent,
                });
            }
        }
        warn!("still changing after {MAX_ROUNDS} rounds; leaving it to the next delivery");
        Ok(Outcome::Failed {
            reason: format!("did not settle within {MAX_ROUNDS} rounds"),
            permanent: false,
        })
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
        let (desired, record) = self.current_intent(key).await?;
        let failures = failing_all(&desired, reason, state);
        self.report_only_failures(key, &desired, record.as_ref(), &failures)
            .await
    }

    /// This host's share of the latest command, which is folded into the record first so
    /// events about it have a record to land in.
    async fn current_intent(
        &self,
        key: &GatewayKey,
    ) -> Result<(Desired, Option<GatewayRecord>), ReconcileError> {
        match self.log.latest_command(key).await? {
            Some((seq, command)) => {
                if command.has_unplaced() {
                    // Placing is rare (new replicas); read the hosts now, not a second ago.
                    self.hosts.refresh(&self.log).await;
                }
                let live = scheduler::live_with_self(self, self.hosts.snapshot());
                let live = scheduler::unplaced_only(live, &command);
                let (seq, command) =
                    scheduler::place_if_needed(&self.log, seq, &command, &live).await?;
                let record = self.log.project_command(seq, &command).await?;
                let desired = Desired::for_host(Some(&command), &self.host.host_id);
                Ok((desired, Some(record)))
            }
            // Never commanded (e.g. a container left from a purged stream): nothing is wanted.
            None => Ok((Desired::nothing(), self.log.load_record(key).await?.record)),
        }
    }

    async fn report_failure(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        record: Option<GatewayRecord>,
        error: &RuntimeError,
    ) -> Result<Outcome, ReconcileError> {
        let (state, permanent) = if error.is_permanent() {
            (ObservedState::Failed, true)
        } else {
            (ObservedState::Pending, false)
        };
        warn!(%error, permanent, "reconcile failed");
        let failures = failing_all(desired, &error.to_string(), state);
        self.report_only_failures(key, desired, record.as_ref(), &failures)
            .await?;
        Ok(Outcome::Failed {
            reason: error.to_string(),
            permanent,
        })
    }

    /// Before creating or replacing containers, says so: a Delete arriving meanwhile then shows
    /// them as TERMINATING, and other hosts see the replica is not running (rolling updates).
    async fn announce_pending(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        record: Option<&GatewayRecord>,
        actions: &[Action],
    ) -> Result<(), ReconcileError> {
        if desired.spec.is_none() {
            return Ok(());
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
        self.report_only_failures(key, desired, record, &pending)
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

    /// Publishes what changed and folds it into the record.
    async fn report(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        record: Option<&GatewayRecord>,
        observed: &[ObservedContainer],
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<(), ReconcileError> {
        let facts = plan::observations(key, desired, record, observed, failures, &self.host);
        self.publish(key, record, facts).await
    }

    /// Reports only the replicas in `failures`: used when the engine could not be listed, so
    /// nothing is known about the others.
    async fn report_only_failures(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        record: Option<&GatewayRecord>,
        failures: &BTreeMap<u32, FailedReplica>,
    ) -> Result<(), ReconcileError> {
        let facts = plan::observations(key, desired, record, &[], failures, &self.host)
            .into_iter()
            .filter(|fact| failures.contains_key(&fact.replica))
            .collect();
        self.publish(key, record, facts).await
    }

    /// Stores the facts, folds them into the record and updates the instance gauges.
    async fn publish(
        &self,
        key: &GatewayKey,
        record: Option<&GatewayRecord>,
        facts: Vec<InstanceObserved>,
    ) -> Result<(), ReconcileError> {
        self.log.append_events(key, &facts).await?;
        for fact in &facts {
            debug!(replica = fact.replica, state = ?fact.state, "reported");
        }
        crate::metrics::reported(key, &self.host.host_id, record, &facts);
        Ok(())
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
