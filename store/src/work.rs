//! Work addressed to hosts: the dispatch consumer on the commands stream (one delivery of each
//! command to any one worker) and the work stream it writes to, one subject per host and
//! gateway, each host consuming its own. A command reaches only the hosts it concerns
//! (`krane_core::routing`, named by its writer in [`CONCERNS_HEADER`]), so a host's intake
//! follows its own gateways, not the whole fleet's commands.
//!
//! A work message carries the command's body and its sequence on the commands stream
//! ([`COMMAND_SEQ_HEADER`]); the host reconciles to the gateway's latest command anyway.
//! Addressing is idempotent: the message id is the command's sequence and the host, so a
//! dispatch redelivered after a crash stores each message once.

use crate::{Result, Store, StoreError, layout, unavailable};
use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::ConsumerErrorKind;
use bytes::Bytes;
use krane_core::names::GatewayKey;
use krane_core::routing;
use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::time::Duration;
use tracing::{info, warn};

/// Header of a command naming the hosts it concerns (comma-separated, maybe none). A command
/// without it (stored by an earlier krane, or by a tool) goes to the hosts its gateway's
/// record names (the dispatch decides).
pub const CONCERNS_HEADER: &str = "Krane-Concerns";
/// Header of a work message: the command's sequence on the commands stream.
pub const COMMAND_SEQ_HEADER: &str = "Krane-Command-Seq";

/// The hosts a command's headers say it concerns; `None` when they do not say.
pub fn concerns(headers: Option<&HeaderMap>) -> Option<BTreeSet<String>> {
    let value = headers?.get(CONCERNS_HEADER)?;
    Some(routing::hosts_from_header(value.as_str()))
}

/// The command sequence a work message names; `None` when it names none.
pub fn command_seq(headers: Option<&HeaderMap>) -> Option<u64> {
    headers?.get(COMMAND_SEQ_HEADER)?.as_str().parse().ok()
}

impl Store {
    /// Opens (creating it if missing) the dispatch consumer, pulling `batch` at a time.
    pub async fn dispatch_intake(
        &self,
        ack_wait: Duration,
        batch: usize,
    ) -> Result<consumer::pull::Stream> {
        self.ensure_connected()?;
        let consumer: consumer::PullConsumer = self
            .commands
            .get_or_create_consumer(
                layout::DISPATCH_CONSUMER,
                layout::dispatch_consumer(ack_wait),
            )
            .await
            .map_err(unavailable)?;
        pull(consumer, batch).await
    }

    /// Opens (creating it if missing) host `host_id`'s durable consumer of its work,
    /// pulling `batch` messages at a time: no more than the caller works at once, so nothing
    /// waits in the client's buffer while its `ack_wait` runs out.
    pub async fn work_intake(
        &self,
        durable_name: &str,
        host_id: &str,
        ack_wait: Duration,
        max_ack_pending: i64,
        batch: usize,
    ) -> Result<consumer::pull::Stream> {
        self.ensure_connected()?;
        let consumer: consumer::PullConsumer = self
            .work
            .get_or_create_consumer(
                durable_name,
                layout::work_consumer(durable_name, host_id, ack_wait, max_ack_pending),
            )
            .await
            .map_err(unavailable)?;
        pull(consumer, batch).await
    }

    /// Removes a host's consumer of the commands stream as an earlier krane made it (every
    /// command delivered to every host), if there is one: work now comes addressed.
    pub async fn remove_legacy_intake(&self, durable_name: &str) -> Result<()> {
        self.ensure_connected()?;
        match self.commands.delete_consumer(durable_name).await {
            Ok(_) => {
                info!(
                    consumer = durable_name,
                    "removed the per-host consumer of the commands stream"
                );
                Ok(())
            }
            Err(error) => match error.kind() {
                ConsumerErrorKind::JetStream(inner)
                    if inner.error_code() == ErrorCode::CONSUMER_NOT_FOUND =>
                {
                    Ok(())
                }
                _ => Err(unavailable(error)),
            },
        }
    }

    /// Addresses the command at `seq` (its stored `body`) to each of `hosts`, returning once
    /// the work stream stored every message (or failing if one was not).
    pub async fn address(
        &self,
        key: &GatewayKey,
        seq: u64,
        body: &Bytes,
        hosts: &BTreeSet<String>,
    ) -> Result<()> {
        if hosts.is_empty() {
            return Ok(());
        }
        self.ensure_connected()?;
        let mut acks = Vec::with_capacity(hosts.len());
        for host in hosts {
            let message = PublishMessage::build()
                .header(COMMAND_SEQ_HEADER, seq.to_string().as_str())
                .message_id(format!("{seq}.{host}"))
                .payload(body.clone());
            let message = krane_platform::telemetry::with_trace_context(message);
            let ack = self
                .jetstream
                .send_publish(key.work_subject(host), message)
                .await
                .map_err(unavailable)?;
            acks.push(ack);
        }
        for ack in futures::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await {
            if let Err(error) = ack {
                warn!(gateway = %key, seq, %error, "work not stored");
                return Err(StoreError::Unavailable(error.to_string()));
            }
        }
        Ok(())
    }
}

async fn pull(consumer: consumer::PullConsumer, batch: usize) -> Result<consumer::pull::Stream> {
    consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .messages()
        .await
        .map_err(unavailable)
}
