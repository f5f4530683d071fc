//! The worker's intake, from two durable JetStream pull consumers: the dispatch (shared by
//! every worker: each command once, addressed to the hosts it concerns, see [`super::dispatch`])
//! and this host's work (workers of the same host share it, so each piece of work is handled
//! once per host). Each message is kept alive with in-progress acks while Docker works and
//! answered only after its effects are done and reported; what to answer is
//! [`policy::decide`]'s call, carried out here.
//!
//! Shutdown: when `stop` fires, no new message is taken; in-flight ones get `grace` to finish,
//! then are handed back (`nak`) for another worker or the next start.

use super::policy::{self, Decision, Handled, History, RetryReason};
use crate::context::Worker;
use crate::metrics;
use crate::reconcile::{Outcome, Reconciler};
use async_nats::jetstream::{AckKind, Message, consumer};
use futures::StreamExt;
use krane_core::codec;
use krane_core::command::Command;
use krane_core::event::ObservedState;
use krane_core::names::GatewayKey;
use krane_store::{StoreError, work};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable consumer name; workers with the same name share the work.
    pub durable_name: String,
    /// Commands handled at once (for different gateways).
    pub concurrency: usize,
    /// Real attempts of a failing command before it is marked FAILED and acknowledged.
    pub max_attempts: u32,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Time in-flight work gets to finish on shutdown before it is handed back.
    pub grace: Duration,
}

/// Where deliveries come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The dispatch consumer: any command, to address to the hosts it concerns.
    Dispatch,
    /// This host's work consumer: commands addressed to this host.
    Work,
}

/// Consumes this host's work and takes part in the dispatch until `stop` fires; returns after
/// in-flight work finished or was handed back. Both share the `--concurrency` slots. NATS
/// outages (at start or later) are waited out: each consumer is reopened with backoff.
pub async fn run(
    worker: Worker,
    reconciler: Arc<Reconciler>,
    settings: ConsumerSettings,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let tracker = TaskTracker::new();
    let handler = Arc::new(Handler {
        worker: worker.clone(),
        reconciler,
        settings: settings.clone(),
        hand_back: CancellationToken::new(),
        attempts: Attempts::default(),
        legacy_removed: AtomicBool::new(false),
    });
    let (work, dispatch) = tokio::join!(
        consume(Source::Work, &handler, &permits, &tracker, &stop),
        consume(Source::Dispatch, &handler, &permits, &tracker, &stop),
    );
    info!(
        in_flight = tracker.len(),
        "stopping intake; finishing in-flight commands"
    );
    tracker.close();
    if tokio::time::timeout(settings.grace, tracker.wait())
        .await
        .is_err()
    {
        warn!("grace period over; handing in-flight commands back");
        handler.hand_back.cancel();
        tracker.wait().await;
    }
    work.and(dispatch)
}

/// Pulls from one source until `stop` fires, each delivery handled in a task of its own
/// once a slot is free.
async fn consume(
    source: Source,
    handler: &Arc<Handler>,
    permits: &Arc<Semaphore>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut reopen_delay = Duration::from_millis(500);
    'intake: loop {
        let mut messages = match handler.open(source).await {
            Ok(messages) => {
                match source {
                    Source::Dispatch => info!("consuming commands to dispatch"),
                    Source::Work => info!("consuming the work addressed to this host"),
                }
                reopen_delay = Duration::from_millis(500);
                messages
            }
            Err(error) => {
                warn!(%error, ?source, retry_in = ?reopen_delay, "cannot open the consumer");
                tokio::select! {
                    _ = stop.cancelled() => break 'intake,
                    _ = tokio::time::sleep(reopen_delay) => {}
                }
                reopen_delay = (reopen_delay * 2).min(Duration::from_secs(10));
                continue 'intake;
            }
        };
        loop {
            // The message first, then a slot: a source with nothing to deliver holds no slot
            // the other one could use.
            let next = tokio::select! {
                _ = stop.cancelled() => break 'intake,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    // Missed heartbeats and the like while NATS is away; the stream recovers.
                    warn!(%error, ?source, "pulling failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                None => {
                    warn!(?source, "the consumer ended; reopening it");
                    continue 'intake;
                }
            };
            let permit = tokio::select! {
                _ = stop.cancelled() => {
                    ack(&message, AckKind::Nak(None)).await;
                    break 'intake;
                }
                permit = permits.clone().acquire_owned() => permit?,
            };
            let handler = handler.clone();
            tracker.spawn(async move {
                match source {
                    Source::Work => handler.handle(message, permit).await,
                    Source::Dispatch => handler.dispatch(message, permit).await,
                }
            });
        }
    }
    Ok(())
}

pub(super) struct Handler {
    pub(super) worker: Worker,
    pub(super) reconciler: Arc<Reconciler>,
    pub(super) settings: ConsumerSettings,
    pub(super) hand_back: CancellationToken,
    attempts: Attempts,
    /// Set once the per-host consumer of the commands stream an earlier krane made is gone.
    legacy_removed: AtomicBool,
}

impl Handler {
    /// Opens the consumer of `source`. The work consumer replaces the per-host consumer of
    /// the commands stream an earlier krane made, which is removed the first time it opened.
    async fn open(&self, source: Source) -> Result<consumer::pull::Stream, StoreError> {
        let store = &self.worker.store;
        let batch = fetch_batch(self.settings.concurrency);
        match source {
            Source::Dispatch => store.dispatch_intake(self.settings.ack_wait, batch).await,
            Source::Work => {
                let max_ack_pending = i64::try_from(self.settings.concurrency * 4).unwrap_or(1024);
                let name = &self.settings.durable_name;
                let messages = store
                    .work_intake(
                        name,
                        &self.worker.host.host_id,
                        self.settings.ack_wait,
                        max_ack_pending,
                        batch,
                    )
                    .await?;
                if !self.legacy_removed.load(Ordering::Relaxed) {
                    store.remove_legacy_intake(name).await?;
                    self.legacy_removed.store(true, Ordering::Relaxed);
                }
                Ok(messages)
            }
        }
    }

    /// Handles one delivery; `slot` (one of `--concurrency`) is held while it is worked on,
    /// and given up before a final answer is confirmed by the server: waiting for that
    /// round trip (long on a busy cluster) must not keep the next delivery waiting.
    async fn handle(&self, message: Message, slot: OwnedSemaphorePermit) {
        let _in_flight = metrics::in_flight();
        let deliveries = match message.info() {
            Ok(info) => {
                metrics::delivered(info.delivered, info.pending);
                info.delivered
            }
            Err(_) => 1,
        };
        // The command's sequence on the commands stream (0: unknown, always reconciled).
        let seq = work::command_seq(message.headers.as_ref()).unwrap_or(0);
        let Some(command) = self.decoded(&message, seq, deliveries).await else {
            return;
        };
        let key = command.key();
        // A child of the dispatch that addressed the work.
        let span = info_span!(
            "command",
            otel.kind = "consumer",
            stage = "work",
            namespace = %key.namespace,
            gateway = %key.gateway_id,
            seq,
            delivered = deliveries,
        );
        krane_platform::telemetry::set_parent_from(&span, message.headers.as_ref());
        let delivery = Delivery {
            message: &message,
            command: &command,
            key: &key,
            seq,
            deliveries,
        };
        self.handle_command(&delivery, slot).instrument(span).await;
    }

    async fn handle_command(&self, delivery: &Delivery<'_>, slot: OwnedSemaphorePermit) {
        let Delivery {
            message,
            command,
            key,
            seq,
            deliveries,
        } = *delivery;
        let reconcile = self.reconciler.reconcile_command(key, seq, command);
        let result = tokio::select! {
            result = keep_alive(message, self.settings.ack_wait, reconcile) => result,
            _ = self.hand_back.cancelled() => {
                metrics::command("handed_back");
                ack(message, AckKind::Nak(None)).await;
                return;
            }
        };
        let (handled, reason) = match result {
            Ok(outcome) => {
                let reason = match &outcome {
                    Outcome::Failed { reason, .. } => reason.clone(),
                    _ => String::new(),
                };
                (Handled::Reconciled(outcome), reason)
            }
            Err(error) => {
                warn!(%error, "reconcile interrupted; retrying later");
                (Handled::Interrupted, error.to_string())
            }
        };
        let mut history = self.history(seq, deliveries);
        let mut engine_error = None;
        if let Handled::Reconciled(Outcome::Failed {
            permanent: false, ..
        }) = &handled
            && let Err(error) = self.worker.runtime.ping().await
        {
            history.engine_up = false;
            engine_error = Some(error);
        }
        let decision = policy::decide(&handled, history);
        if decision.is_final() {
            drop(slot);
        }
        self.carry_out(delivery, decision, &reason, engine_error)
            .await;
    }

    /// The command a delivery carries; `None` when it does not decode: then the delivery is
    /// terminated (not ours to fix by retrying; the message stays in its stream, and nothing
    /// is removed on a guess).
    pub(super) async fn decoded(
        &self,
        message: &Message,
        seq: u64,
        deliveries: i64,
    ) -> Option<Command> {
        match codec::decode(&message.payload) {
            Ok(command) => Some(command),
            Err(error) => {
                error!(subject = %message.subject, %error, "undecodable command; terminating its delivery");
                let decision = policy::decide(&Handled::Undecodable, self.history(seq, deliveries));
                metrics::command(decision.label());
                ack(message, AckKind::Term).await;
                None
            }
        }
    }

    fn history(&self, seq: u64, deliveries: i64) -> History {
        History {
            attempts: self.attempts.get(seq),
            max_attempts: self.settings.max_attempts,
            deliveries,
            engine_up: true,
        }
    }

    async fn carry_out(
        &self,
        delivery: &Delivery<'_>,
        decision: Decision,
        reason: &str,
        engine_error: Option<crate::runtime::RuntimeError>,
    ) {
        let Delivery {
            message,
            command,
            key,
            seq,
            ..
        } = *delivery;
        let mut label = decision.label();
        match decision {
            Decision::Done => {
                self.attempts.forget(seq);
                if let Err(error) = message.double_ack().await {
                    warn!(%error, "ack not confirmed; the command will be redelivered (harmless)");
                }
            }
            Decision::Failed => {
                warn!(%reason, "gateway failed; not retrying");
                self.attempts.forget(seq);
                ack(message, AckKind::Ack).await;
            }
            Decision::Terminate => {
                self.attempts.forget(seq);
                ack(message, AckKind::Term).await;
            }
            Decision::Retry { after, reason: why } => {
                match why {
                    RetryReason::Waiting | RetryReason::Interrupted => {}
                    RetryReason::EngineDown => {
                        let engine = engine_error
                            .map(|error| error.to_string())
                            .unwrap_or_default();
                        warn!(%engine, delay = ?after, "Docker engine unavailable; waiting for it");
                        let note = format!("waiting for the Docker engine: {engine}");
                        self.report_quietly(key, command, &note, ObservedState::Pending)
                            .await;
                    }
                    RetryReason::Failing { attempt } => {
                        self.attempts.set(seq, attempt);
                        let max = self.settings.max_attempts;
                        info!(attempt, delay = ?after, %reason, "retrying later");
                        let note = format!("retrying (attempt {attempt} of {max}): {reason}");
                        self.report_quietly(key, command, &note, ObservedState::Pending)
                            .await;
                    }
                }
                ack(message, AckKind::Nak(Some(after))).await;
            }
            Decision::GiveUp { attempts } => {
                warn!(attempts, %reason, "giving up; marking the gateway FAILED");
                let note = format!("gave up after {attempts} attempts: {reason}");
                match self
                    .reconciler
                    .report_unresolved(key, command, &note, ObservedState::Failed)
                    .await
                {
                    Ok(()) => {
                        self.attempts.forget(seq);
                        ack(message, AckKind::Ack).await;
                    }
                    Err(error) => {
                        warn!(%error, "could not record the failure; retrying later");
                        label = "interrupted";
                        let after = policy::backoff(i64::from(attempts));
                        ack(message, AckKind::Nak(Some(after))).await;
                    }
                }
            }
        }
        metrics::command(label);
    }

    /// Tells callers why the gateway is not there yet; failing to is not worth a retry.
    async fn report_quietly(
        &self,
        key: &GatewayKey,
        command: &Command,
        note: &str,
        state: ObservedState,
    ) {
        let _ = self
            .reconciler
            .report_unresolved(key, command, note, state)
            .await;
    }
}

/// One delivered, decoded command.
struct Delivery<'a> {
    message: &'a Message,
    command: &'a Command,
    key: &'a GatewayKey,
    /// The command's stream sequence (0 if unknown: then it is always reconciled).
    seq: u64,
    /// JetStream's delivery count.
    deliveries: i64,
}

/// Real attempts per command (by stream sequence), counted by this worker: only failures that
/// count (see [`policy`]). In memory: after a restart a command starts again at zero, which
/// costs retries, never a premature FAILED.
#[derive(Default)]
struct Attempts {
    by_seq: Mutex<HashMap<u64, u32>>,
}

impl Attempts {
    /// Commands remembered at most; a full map is cleared.
    const MAX_COMMANDS: usize = 100_000;

    fn get(&self, seq: u64) -> u32 {
        self.by_seq
            .lock()
            .ok()
            .and_then(|by_seq| by_seq.get(&seq).copied())
            .unwrap_or(0)
    }

    fn set(&self, seq: u64, attempts: u32) {
        if let Ok(mut by_seq) = self.by_seq.lock() {
            if by_seq.len() >= Self::MAX_COMMANDS {
                by_seq.clear();
            }
            by_seq.insert(seq, attempts);
        }
    }

    fn forget(&self, seq: u64) {
        if let Ok(mut by_seq) = self.by_seq.lock() {
            by_seq.remove(&seq);
        }
    }
}

/// Messages pulled at a time: twice what is worked at once, so the next ones are at hand when
/// a slot frees up but none waits in the client's buffer for long (its `ack_wait` runs from
/// delivery). At least 4: tiny pulls are renewed late by the client library.
fn fetch_batch(concurrency: usize) -> usize {
    (concurrency * 2).max(4)
}

/// Runs `work`, telling the server every third of `ack_wait` that the message is still in
/// progress, so long Docker work is never redelivered to someone else mid-way.
pub(super) async fn keep_alive<T>(
    message: &Message,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    let mut ticker = tokio::time::interval(ack_wait / 3);
    ticker.tick().await;
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticker.tick() => ack(message, AckKind::Progress).await,
        }
    }
}

pub(super) async fn ack(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        warn!(%error, ?kind, "could not answer the server; it will redeliver after ack_wait");
    }
}
