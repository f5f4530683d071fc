//! The commands stream: every intent a caller (or a worker placing replicas) stored, one subject
//! per gateway. Storing is either plain (deduplicated by message id against retries of the same
//! decision) or conditional on the gateway's latest command; the latest command is read
//! directly from the stream, never from the projection. Workers consume it through [`intake`].
//!
//! [`intake`]: Store::intake

use crate::{Result, Store, StoreError, encode, layout, unavailable};
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use krane_core::codec;
use krane_core::command::Command;
use krane_core::names::{self, GatewayKey, short_hash};
use std::time::Duration;
use tracing::{debug, info};

/// `Nats-Msg-Id` for publishing `body` on top of the record revision the caller saw: a retried
/// publish of the same decision is stored once, while the same command issued again later
/// (Create → Delete → Create) gets a new id because the revision moved on.
pub fn message_id(body: &[u8], seen_revision: u64) -> String {
    short_hash(&[&String::from_utf8_lossy(body), &seen_revision.to_string()])
}

impl Store {
    /// Durably stores a command decided on top of the record at `seen_revision`; returns its
    /// sequence on the commands stream. A retry of the same decision within the dedup window
    /// returns the sequence of the first copy.
    pub async fn publish_command(&self, command: &Command, seen_revision: u64) -> Result<u64> {
        let body = encode("command", command)?;
        let message = PublishMessage::build()
            .message_id(message_id(&body, seen_revision))
            .payload(body);
        self.send_command(command, message).await
    }

    /// Stores a command only if the gateway's latest command is still the one at
    /// `based_on_seq` (optimistic concurrency): a reschedule never overrides a newer intent.
    /// Returns `Ok(None)` when someone else got there first.
    pub async fn publish_command_if_latest(
        &self,
        command: &Command,
        based_on_seq: u64,
    ) -> Result<Option<u64>> {
        let message = PublishMessage::build()
            .payload(encode("command", command)?)
            .expected_last_subject_sequence(based_on_seq);
        self.send_conditional_command(command, message).await
    }

    /// Stores the first command a gateway ever gets: only if its subject holds no command yet
    /// (the server checks, so no read is needed first). Returns `Ok(None)` when the gateway
    /// has history; the caller then reads its record and decides as for any later command. A
    /// retry within the dedup window is stored once.
    pub async fn publish_first_command(&self, command: &Command) -> Result<Option<u64>> {
        let body = encode("command", command)?;
        let message = PublishMessage::build()
            .message_id(message_id(&body, 0))
            .payload(body)
            .expected_last_subject_sequence(0);
        self.send_conditional_command(command, message).await
    }

    /// Sends a command published with a condition; a failed condition is `Ok(None)`.
    async fn send_conditional_command(
        &self,
        command: &Command,
        message: PublishMessage,
    ) -> Result<Option<u64>> {
        match self.send_command(command, message).await {
            Ok(seq) => Ok(Some(seq)),
            Err(StoreError::Superseded(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn send_command(&self, command: &Command, message: PublishMessage) -> Result<u64> {
        self.ensure_connected()?;
        // The caller's trace context travels with the command, to the worker that handles it.
        let message = krane_platform::telemetry::with_trace_context(message);
        let ack = self
            .jetstream
            .send_publish(command.key().command_subject(), message)
            .await
            .map_err(unavailable)?
            .await
            .map_err(|error| match error.kind() {
                jetstream::context::PublishErrorKind::WrongLastSequence => {
                    StoreError::Superseded(error.to_string())
                }
                _ => unavailable(error),
            })?;
        debug!(gateway = %command.key(), seq = ack.sequence, duplicate = ack.duplicate, "command stored");
        Ok(ack.sequence)
    }

    /// The gateway's latest command and its sequence: the current intent, straight from the log.
    pub async fn latest_command(&self, key: &GatewayKey) -> Result<Option<(u64, Command)>> {
        self.ensure_connected()?;
        // A direct get is answered by the stream itself, not queued behind the server's
        // JetStream API requests (which made this read take tens of ms under load).
        match self
            .commands
            .direct_get_last_for_subject(key.command_subject())
            .await
        {
            Ok(message) => {
                let command =
                    codec::decode(&message.payload).map_err(|error| StoreError::Corrupt {
                        location: format!("{} seq {}", names::COMMANDS_STREAM, message.sequence),
                        reason: error.to_string(),
                    })?;
                Ok(Some((message.sequence, command)))
            }
            Err(error) if matches!(error.kind(), stream::DirectGetErrorKind::NotFound) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Creates (or finds) a host's durable intake consumer ([`layout::intake_consumer`]) and
    /// starts pulling from it.
    pub async fn intake(
        &self,
        durable_name: &str,
        ack_wait: Duration,
        max_ack_pending: i64,
    ) -> Result<consumer::pull::Stream> {
        let consumer: consumer::PullConsumer = self
            .commands
            .get_or_create_consumer(
                durable_name,
                layout::intake_consumer(durable_name, ack_wait, max_ack_pending),
            )
            .await
            .map_err(unavailable)?;
        consumer.messages().await.map_err(unavailable)
    }
}

/// Turns on direct reads of a stream created before krane asked for them (other settings
/// are kept).
pub(crate) async fn allow_direct_reads(
    jetstream: &jetstream::Context,
    mut stream: stream::Stream,
) -> Result<stream::Stream> {
    if stream.cached_info().config.allow_direct {
        return Ok(stream);
    }
    let config = stream::Config {
        allow_direct: true,
        ..stream.cached_info().config.clone()
    };
    jetstream
        .update_stream(&config)
        .await
        .map_err(unavailable)?;
    stream.info().await.map_err(unavailable)?;
    info!(stream = %config.name, "direct reads turned on");
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_dedups_retries_but_not_later_repeats() {
        let create = br#"{"kind":"create"}"#;
        let delete = br#"{"kind":"delete"}"#;
        assert_eq!(message_id(create, 7), message_id(create, 7));
        assert_ne!(message_id(create, 7), message_id(create, 9));
        assert_ne!(message_id(create, 7), message_id(delete, 7));
    }
}
