//! The worker's intake: a durable JetStream pull consumer on the commands stream, one per host
//! (workers of the same host share it, so each command is handled once per host). Each message
//! is kept alive with in-progress acks while Docker works, and
//! acknowledged only after its effects are done and reported. Failures back off with `nak`
//! delays and give up (FAILED, message kept in the stream) after `max_attempts`.
//!
//! Shutdown: when `stop` fires, no new message is taken; in-flight ones get `grace` to finish,
//! then are handed back (`nak`) for another worker or the next start.

use crate::metrics;
use crate::reconcile::{Outcome, Reconciler};
use async_nats::jetstream::{AckKind, Message, consumer};
use futures::StreamExt;
use krane_core::command::Command;
use krane_core::event::ObservedState;
use krane_core::names::{self, GatewayKey};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable consumer name; workers with the same name share the work.
    pub durable_name: String,
    /// Commands handled at once (for different gateways).
    pub concurrency: usize,
    /// Deliveries of a failing command before it is marked FAILED and acknowledged.
    pub max_attempts: u32,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Time in-flight work gets to finish on shutdown before it is handed back.
    pub grace: Duration,
}

/// Consumes commands until `stop` fires; returns after in-flight work finished or was handed
/// back. NATS outages (at start or later) are waited out: the consumer is reopened with backoff.
pub async fn run(
    reconciler: Arc<Reconciler>,
    settings: ConsumerSettings,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let tracker = TaskTracker::new();
    let hand_back = CancellationToken::new();
    let mut reopen_delay = Duration::from_millis(500);
    'intake: loop {
        let mut messages = match open(&reconciler, &settings).await {
            Ok(messages) => {
                info!(consumer = %settings.durable_name, "consuming commands");
                reopen_delay = Duration::from_millis(500);
                messages
            }
            Err(error) => {
                warn!(%error, retry_in = ?reopen_delay, "cannot open the commands consumer");
                tokio::select! {
                    _ = stop.cancelled() => break 'intake,
                    _ = tokio::time::sleep(reopen_delay) => {}
                }
                reopen_delay = (reopen_delay * 2).min(Duration::from_secs(10));
                continue 'intake;
            }
        };
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => break 'intake,
                permit = permits.clone().acquire_owned() => permit?,
            };
            let next = tokio::select! {
                _ = stop.cancelled() => break 'intake,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    // Missed heartbeats and the like while NATS is away; the stream recovers.
                    warn!(%error, "pulling commands failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                None => {
                    warn!("the commands consumer ended; reopening it");
                    continue 'intake;
                }
            };
            let handler = Handler {
                reconciler: reconciler.clone(),
                settings: settings.clone(),
                hand_back: hand_back.clone(),
            };
            tracker.spawn(async move {
                handler.handle(message).await;
                drop(permit);
            });
        }
    }
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
        hand_back.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// Creates (or finds) the host's durable consumer and starts pulling from it.
async fn open(
    reconciler: &Reconciler,
    settings: &ConsumerSettings,
) -> anyhow::Result<consumer::pull::Stream> {
    let consumer: consumer::PullConsumer = reconciler
        .log()
        .commands_stream()
        .get_or_create_consumer(
            &settings.durable_name,
            consumer::pull::Config {
                durable_name: Some(settings.durable_name.clone()),
                description: Some("krane worker intake".into()),
                filter_subject: format!("{}.>", names::COMMANDS_SUBJECT_PREFIX),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_ack_pending: i64::try_from(settings.concurrency * 4).unwrap_or(1024),
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer.messages().await?)
}

struct Handler {
    reconciler: Arc<Reconciler>,
    settings: ConsumerSettings,
    hand_back: CancellationToken,
}

impl Handler {
    async fn handle(&self, message: Message) {
        let _in_flight = metrics::in_flight();
        let (seq, delivered) = match message.info() {
            Ok(info) => {
                metrics::delivered(info.delivered, info.pending);
                (info.stream_sequence, info.delivered)
            }
            Err(_) => (0, 1),
        };
        let command = match Command::decode(&message.payload) {
            Ok(command) => command,
            Err(error) => {
                // Not ours to fix by retrying; terminate it and keep it in the stream.
                error!(subject = %message.subject, %error, "undecodable command; terminating it");
                metrics::command("undecodable");
                ack(&message, AckKind::Term).await;
                return;
            }
        };
        let key = command.key();
        // A child of the call (or scheduling decision) that stored the command.
        let span = info_span!(
            "command",
            otel.kind = "consumer",
            namespace = %key.namespace,
            gateway = %key.gateway_id,
            seq,
            delivered,
        );
        krane_core::telemetry::set_parent_from(&span, message.headers.as_ref());
        self.handle_command(&message, &key, seq)
            .instrument(span)
            .await;
    }

    /// `seq`: the command's stream sequence (0 if unknown: then it is always reconciled).
    async fn handle_command(&self, message: &Message, key: &GatewayKey, seq: u64) {
        let reconcile = self.reconciler.reconcile_command(key, seq);
        let outcome = tokio::select! {
            outcome = keep_alive(message, self.settings.ack_wait, reconcile) => outcome,
            _ = self.hand_back.cancelled() => {
                metrics::command("handed_back");
                ack(message, AckKind::Nak(None)).await;
                return;
            }
        };
        let attempt = message.info().map(|info| info.delivered).unwrap_or(1);
        match outcome {
            Ok(Outcome::Converged) => {
                metrics::command("converged");
                if let Err(error) = message.double_ack().await {
                    warn!(%error, "ack not confirmed; the command will be redelivered (harmless)");
                }
            }
            Ok(Outcome::Failed {
                reason,
                permanent: true,
            }) => {
                warn!(%reason, "gateway failed; not retrying");
                metrics::command("failed");
                ack(message, AckKind::Ack).await;
            }
            Ok(Outcome::Failed {
                reason,
                permanent: false,
            }) => self.retry_or_give_up(message, key, &reason, attempt).await,
            Err(error) => {
                // NATS trouble is not the gateway's fault: retry without counting towards FAILED.
                warn!(%error, "reconcile interrupted; retrying later");
                metrics::command("interrupted");
                ack(message, AckKind::Nak(Some(backoff(attempt)))).await;
            }
        }
    }

    async fn retry_or_give_up(
        &self,
        message: &Message,
        key: &GatewayKey,
        reason: &str,
        attempt: i64,
    ) {
        let max = i64::from(self.settings.max_attempts);
        if let Err(engine) = self.reconciler.runtime().ping().await {
            // The engine itself is away: not this gateway's fault, so this attempt does not
            // count towards FAILED; wait for the engine with backoff and show why.
            let delay = backoff(attempt);
            warn!(%engine, ?delay, "Docker engine unavailable; waiting for it");
            metrics::command("engine_unavailable");
            let reason = format!("waiting for the Docker engine: {engine}");
            let _ = self
                .reconciler
                .report_unresolved(key, &reason, ObservedState::Pending)
                .await;
            ack(message, AckKind::Nak(Some(delay))).await;
            return;
        }
        if attempt >= max {
            warn!(attempt, %reason, "giving up; marking the gateway FAILED");
            let reason = format!("gave up after {attempt} attempts: {reason}");
            if let Err(error) = self
                .reconciler
                .report_unresolved(key, &reason, ObservedState::Failed)
                .await
            {
                warn!(%error, "could not record the failure; retrying later");
                metrics::command("interrupted");
                ack(message, AckKind::Nak(Some(backoff(attempt)))).await;
                return;
            }
            metrics::command("gave_up");
            ack(message, AckKind::Ack).await;
        } else {
            let delay = backoff(attempt);
            info!(attempt, ?delay, %reason, "retrying later");
            metrics::command("retry");
            let reason = format!("retrying (attempt {attempt} of {max}): {reason}");
            let _ = self
                .reconciler
                .report_unresolved(key, &reason, ObservedState::Pending)
                .await;
            ack(message, AckKind::Nak(Some(delay))).await;
        }
    }
}

/// Runs `work`, telling the server every third of `ack_wait` that the message is still in
/// progress, so long Docker work is never redelivered to someone else mid-way.
async fn keep_alive<T>(message: &Message, ack_wait: Duration, work: impl Future<Output = T>) -> T {
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

async fn ack(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        warn!(%error, ?kind, "could not answer the server; it will redeliver after ack_wait");
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

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(100), Duration::from_secs(30));
        assert_eq!(backoff(0), Duration::from_secs(1));
    }
}
