//! krane-store: everything krane keeps in NATS JetStream, behind one handle, [`Store`]. Both
//! binaries open it with [`connect`], which creates what is missing (idempotently), so either
//! may start first.
//!
//! - [`layout`]: the configuration of both streams, both buckets and the workers' consumer.
//! - [`connect`](mod@connect): the NATS flags both binaries share, and connecting.
//! - [`commands`]: the commands stream: storing a command (plainly, or only if the gateway's
//!   latest command is still the one the caller decided from), reading the latest one, and the
//!   workers' intake consumer.
//! - [`events`]: the events stream: storing observations and folding them into the record.
//! - [`projection`]: the `krane_gateways` records: reads, watches, listings, the
//!   compare-and-set fold, and the rebuild from both streams.
//! - [`hosts`]: the `krane_hosts` bucket: heartbeats and the live hosts.
//! - [`undecodable`]: skipping (and counting) stored values that do not decode.
//!
//! Every payload is encoded with `krane_core::codec`; an encoding error is an error, never an
//! empty message.

pub mod commands;
pub mod connect;
pub mod events;
pub mod hosts;
pub mod layout;
pub mod projection;
pub mod undecodable;

pub use commands::Latest;
pub use connect::{NatsArgs, connect};
pub use projection::StoredRecord;

use async_nats::jetstream::{self, kv, stream};
use krane_core::codec::CodecError;
use tracing::info;

/// Why a store call failed; callers branch on it (retry later, give up, or answer `internal`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// NATS could not be reached or did not answer in time; retrying later may succeed.
    #[error("NATS JetStream unavailable: {0}")]
    Unavailable(String),
    /// A conditional write lost to a newer one (the gateway got a newer command meanwhile).
    #[error("superseded by a newer command: {0}")]
    Superseded(String),
    /// A stored message or record could not be decoded.
    #[error("corrupt message in {location}: {reason}")]
    Corrupt { location: String, reason: String },
    /// A value could not be encoded (a bug: nothing was stored).
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

pub(crate) fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<bytes::Bytes> {
    krane_core::codec::encode(value)
        .map(bytes::Bytes::from)
        .map_err(|error: CodecError| StoreError::Encode {
            what,
            reason: error.to_string(),
        })
}

/// Handles on the streams and the buckets.
#[derive(Clone)]
pub struct Store {
    jetstream: jetstream::Context,
    commands: stream::Stream,
    events: stream::Stream,
    gateways: kv::Store,
    hosts: kv::Store,
}

impl Store {
    /// Creates the streams and the buckets if missing and returns handles on them.
    pub async fn open(jetstream: jetstream::Context) -> Result<Self> {
        let commands = jetstream
            .get_or_create_stream(layout::commands_stream())
            .await
            .map_err(unavailable)?;
        let commands = commands::allow_direct_reads(&jetstream, commands).await?;
        let events = jetstream
            .get_or_create_stream(layout::events_stream())
            .await
            .map_err(unavailable)?;
        let gateways = match jetstream
            .get_key_value(krane_core::names::GATEWAYS_BUCKET)
            .await
        {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(layout::gateways_bucket())
                .await
                .map_err(unavailable)?,
        };
        let hosts = match jetstream
            .get_key_value(krane_core::names::HOSTS_BUCKET)
            .await
        {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(layout::hosts_bucket(layout::DEFAULT_HOST_TIMEOUT))
                .await
                .map_err(unavailable)?,
        };
        info!("JetStream streams and KV buckets ready");
        Ok(Self {
            jetstream,
            commands,
            events,
            gateways,
            hosts,
        })
    }

    /// The JetStream context underneath, for tools and tests that write raw messages (a
    /// garbage command, an old version's stream). krane's own code goes through `Store`.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// True while the client is connected to a server (health checks).
    pub fn is_connected(&self) -> bool {
        self.jetstream.client().connection_state() == async_nats::connection::State::Connected
    }

    /// Fails at once while the client is disconnected, instead of waiting for a request
    /// timeout: callers learn `unavailable` fast, and the client reconnects on its own.
    fn ensure_connected(&self) -> Result<()> {
        match self.jetstream.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(StoreError::Unavailable(format!(
                "not connected to NATS ({state})"
            ))),
        }
    }
}
