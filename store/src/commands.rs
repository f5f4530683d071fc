//! The commands stream: every intent a caller (or a worker placing replicas) stored, one subject
//! per gateway. Storing is either plain (deduplicated by message id against retries of the same
//! decision) or conditional on the gateway's latest command; the latest command is read
//! directly from the stream, never from the projection. Workers take it through the dispatch
//! consumer (`work`), which addresses it to the hosts it concerns.

use crate::work::CONCERNS_HEADER;
use crate::{Result, Store, StoreError, encode, unavailable};
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::{self, stream};
use krane_core::codec;
use krane_core::command::Command;
use krane_core::names::{self, GatewayKey, short_hash};
use krane_core::routing::{self, Replaced};
use std::time::SystemTime;
use tracing::debug;

/// `Nats-Msg-Id` of `body` written on top of `base` (the expected last sequence): a retried
/// publish of the same decision is stored once, while the same command issued again later
/// (Create → Delete → Create) gets a new id because the base moved on.
pub fn message_id(body: &[u8], base: u64) -> String {
    short_hash(&[&String::from_utf8_lossy(body), &base.to_string()])
}

/// A gateway's latest decodable command, as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// Its sequence on the commands stream.
    pub seq: u64,
    pub command: Command,
    /// Sequence of the last message on the gateway's subject: what a write conditional on
    /// "nothing newer" must expect. Above `seq` only when undecodable messages follow it.
    pub last_seq: u64,
}

/// Header naming who stored a command: the API caller's name (as its credentials name it), or
/// `worker <host>` for a command a worker stored (a placement, a rollback, an update done).
/// History shows it; nothing decides by it.
pub const AUTHOR_HEADER: &str = "Krane-Author";

/// `author` as a header value may carry it: line breaks and other control characters become
/// spaces.
fn header_safe(author: &str) -> String {
    author
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn command_location(seq: u64) -> String {
    format!("{} seq {seq}", names::COMMANDS_STREAM)
}

impl Store {
    /// Durably stores a command unconditionally (tools and tests that replay or duplicate
    /// commands); `salt` makes its message id: the same command with the same salt within the
    /// dedup window is stored once. krane's own writes use [`Self::publish_command_expecting`].
    pub async fn publish_command(&self, command: &Command, salt: u64) -> Result<u64> {
        let body = encode("command", command)?;
        let message = PublishMessage::build()
            .message_id(message_id(&body, salt))
            .payload(body);
        let ack = self.send_command(command, message).await?;
        Ok(ack.sequence)
    }

    /// Stores `command` only if the last message on the gateway's subject is still the one at
    /// `expected_last_seq` (0: the subject is empty), the server checking the condition, so a
    /// decision taken from the log is never stored on top of a newer one. Returns its sequence,
    /// or `Ok(None)` when someone else wrote first (read the latest command and decide again).
    ///
    /// The message id is made of the body and the expected sequence: a retry of this very
    /// write is stored once, and no other write shares it. A duplicate answer counts as this
    /// write only if what it names is still the subject's last message and has this body;
    /// otherwise (a server that checks duplicates before the condition, an id seen long ago)
    /// it is treated as superseded. `author` names who asked ([`AUTHOR_HEADER`]); `replaced`
    /// is the command the decision was taken from (the one at `expected_last_seq`, or the
    /// latest decodable before it), which says the hosts the command concerns
    /// ([`crate::work::CONCERNS_HEADER`]).
    pub async fn publish_command_expecting(
        &self,
        command: &Command,
        expected_last_seq: u64,
        author: &str,
        replaced: Replaced<'_>,
    ) -> Result<Option<u64>> {
        let body = encode("command", command)?;
        let mut message = PublishMessage::build().header(AUTHOR_HEADER, header_safe(author));
        if let Some(hosts) = routing::concerned_hosts(replaced, command) {
            message = message.header(CONCERNS_HEADER, routing::hosts_header(&hosts).as_str());
        }
        let message = message
            .message_id(message_id(&body, expected_last_seq))
            .payload(body.clone())
            .expected_last_subject_sequence(expected_last_seq);
        let ack = match self.send_command(command, message).await {
            Ok(ack) => ack,
            Err(StoreError::Superseded(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        if !ack.duplicate {
            return Ok(Some(ack.sequence));
        }
        let Some(last) = self
            .last_on_subject(&command.key().command_subject())
            .await?
        else {
            return Ok(None);
        };
        if last.sequence == ack.sequence && last.payload == body {
            Ok(Some(ack.sequence))
        } else {
            debug!(gateway = %command.key(), duplicate_of = ack.sequence, last = last.sequence, "a duplicate of an older write; not this one");
            Ok(None)
        }
    }

    async fn send_command(
        &self,
        command: &Command,
        message: PublishMessage,
    ) -> Result<jetstream::publish::PublishAck> {
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
        Ok(ack)
    }

    /// The gateway's latest command krane can read, straight from the log (`None`: never
    /// commanded). Undecodable messages after it are skipped (counted and logged once): the
    /// latest decodable intent stands. When the subject holds no decodable command at all the
    /// answer is `Corrupt`, so nobody acts on a guess.
    pub async fn latest_command(&self, key: &GatewayKey) -> Result<Option<Latest>> {
        Ok(self.latest_command_at(key).await?.map(|(latest, _)| latest))
    }

    /// As [`Self::latest_command`], with the time the server stored that command (its stream
    /// timestamp, carried by the direct get's answer): how old a Delete is, for retention.
    pub async fn latest_command_at(
        &self,
        key: &GatewayKey,
    ) -> Result<Option<(Latest, SystemTime)>> {
        self.ensure_connected()?;
        let Some(last) = self.last_on_subject(&key.command_subject()).await? else {
            return Ok(None);
        };
        match codec::decode::<Command>(&last.payload) {
            Ok(command) => Ok(Some((
                Latest {
                    seq: last.sequence,
                    command,
                    last_seq: last.sequence,
                },
                SystemTime::from(last.time),
            ))),
            Err(error) => {
                let location = command_location(last.sequence);
                crate::undecodable::skipped("command", &location, &error);
                self.latest_decodable(key, last.sequence).await
            }
        }
    }

    /// The last message on a subject of the commands stream, read so that it cannot be stale:
    /// with one replica a direct get (answered by the stream itself, not queued behind the
    /// server's JetStream API requests); with several, a get from the stream's leader, since
    /// a direct get may be answered by a follower that has not caught up.
    async fn last_on_subject(&self, subject: &str) -> Result<Option<StreamMessage>> {
        if self.replicas == 1 {
            return match self.commands.direct_get_last_for_subject(subject).await {
                Ok(message) => Ok(Some(message)),
                Err(error) if matches!(error.kind(), stream::DirectGetErrorKind::NotFound) => {
                    Ok(None)
                }
                Err(error) => Err(unavailable(error)),
            };
        }
        match self.commands.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some(message)),
            Err(error)
                if matches!(
                    error.kind(),
                    stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Sequence of the last message on the gateway's subject, decodable or not (0: none): what
    /// a write must expect when no command on the subject can be read.
    pub async fn last_sequence(&self, key: &GatewayKey) -> Result<u64> {
        self.ensure_connected()?;
        let last = self.last_on_subject(&key.command_subject()).await?;
        Ok(last.map_or(0, |message| message.sequence))
    }

    /// The slow path of [`Self::latest_command`]: reads the subject's kept commands in order
    /// and keeps the last one that decodes.
    async fn latest_decodable(
        &self,
        key: &GatewayKey,
        last_seq: u64,
    ) -> Result<Option<(Latest, SystemTime)>> {
        let mut latest = None;
        for message in
            crate::projection::read_messages(&self.commands, key.command_subject()).await?
        {
            match codec::decode::<Command>(&message.payload) {
                Ok(command) => latest = Some((message.sequence, command, message.time)),
                Err(error) => {
                    let location = command_location(message.sequence);
                    crate::undecodable::skipped("command", &location, &error);
                }
            }
        }
        match latest {
            Some((seq, command, time)) => Ok(Some((
                Latest {
                    seq,
                    command,
                    last_seq,
                },
                time,
            ))),
            None => Err(StoreError::Corrupt {
                location: format!(
                    "{} subject {}",
                    names::COMMANDS_STREAM,
                    key.command_subject()
                ),
                reason: "no command on the subject can be decoded".into(),
            }),
        }
    }
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
