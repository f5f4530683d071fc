//! krane-store: everything krane keeps in NATS JetStream, behind one handle, [`Store`]. Both
//! binaries open it with [`connect`], which creates what is missing (idempotently), so either
//! may start first.
//!
//! - [`layout`]: the configuration of the streams, both buckets and the workers' consumers.
//! - [`connect`](mod@connect): the NATS flags both binaries share, and connecting.
//! - [`commands`]: the commands stream: storing a command (plainly, or only if the gateway's
//!   latest command is still the one the caller decided from), reading the latest one, and the
//!   gateway's latest command.
//! - [`work`](mod@work): the dispatch consumer, and the work it addresses to the hosts a command
//!   concerns (each host's intake).
//! - [`events`]: the events stream: storing observations and folding them into the record.
//! - [`projection`]: the `krane_gateways` records: reads, watches, listings, the
//!   compare-and-set fold, and the rebuild from both streams.
//! - [`history`]: a gateway's commands and observations with their sequence and time, merged
//!   oldest first (what `ListGatewayEvents` answers).
//! - [`export`]: every command and observation of a namespace, oldest first (`ExportLog`).
//! - [`hosts`]: the `krane_hosts` bucket: heartbeats, the live hosts, and every host with when
//!   it was last heard (what `ListHosts` answers).
//! - [`retention`]: purging what is left of a fully deleted gateway, bounded by what the
//!   decision read.
//! - [`undecodable`]: skipping (and counting) stored values that do not decode.
//! - [`watch`](mod@watch): following a whole bucket, its current state then every change (the
//!   workers' in-memory views of the records and the live hosts).
//!
//! Every payload is encoded with `krane_core::codec`; an encoding error is an error, never an
//! empty message.

pub mod commands;
pub mod connect;
pub mod events;
pub mod export;
pub mod history;
pub mod hosts;
pub mod layout;
pub mod projection;
pub mod retention;
pub mod undecodable;
pub mod watch;
pub mod work;

pub use commands::Latest;
pub use connect::{NatsArgs, connect};
pub use history::{Asked, CommandKind, Happened, History, HistoryEntry};
pub use hosts::HeardHost;
pub use projection::StoredRecord;
pub use retention::{Purge, Purged};
pub use watch::BucketChange;

/// Registers the store's metrics (undecodable values skipped, record writes), so they are
/// listed before the first event they count.
pub fn register_metrics() {
    undecodable::register_metrics();
    projection::register_metrics();
}

use async_nats::jetstream::{self, kv, stream};
use krane_core::codec::CodecError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Work addressed to hosts (`work`).
    work: stream::Stream,
    gateways: kv::Store,
    hosts: kv::Store,
    /// Replicas of every stream and bucket (`--stream-replicas`).
    replicas: usize,
    /// When the client last (re)connected to a server.
    connected_at: Arc<Mutex<Instant>>,
}

impl Store {
    /// Creates the streams and the buckets if missing (with `replicas` replicas each) and
    /// returns handles on them. Existing ones with another replica count are changed to it;
    /// when NATS refuses (a single server cannot hold 3 replicas), the error says what to do.
    pub async fn open(jetstream: jetstream::Context, replicas: usize) -> Result<Self> {
        let commands = ensure_stream(&jetstream, layout::commands_stream(replicas)).await?;
        let events = ensure_stream(&jetstream, layout::events_stream(replicas)).await?;
        let work = ensure_stream(&jetstream, layout::work_stream(replicas)).await?;
        let gateways = ensure_bucket(&jetstream, layout::gateways_bucket(replicas)).await?;
        let hosts_config = layout::hosts_bucket(layout::DEFAULT_HOST_TIMEOUT, replicas);
        let hosts = ensure_bucket(&jetstream, hosts_config).await?;
        info!(replicas, "JetStream streams and KV buckets ready");
        Ok(Self {
            jetstream,
            commands,
            events,
            work,
            gateways,
            hosts,
            replicas,
            connected_at: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// The JetStream context underneath, for tools and tests that write raw messages (a
    /// garbage command, an old version's stream). krane's own code goes through `Store`.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// How long the client has been connected since it last (re)connected; `None` while it
    /// is disconnected. A broker outage silences every heartbeat at once: whoever judges
    /// hosts by their heartbeats waits a full host timeout after a reconnect.
    pub fn connected_for(&self) -> Option<Duration> {
        if !self.is_connected() {
            return None;
        }
        let since = *self.connected_at.lock().ok()?;
        Some(since.elapsed())
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

/// Creates the stream, or brings an existing one to the wanted replica count (and direct
/// reads, for streams that want them), keeping its other settings.
async fn ensure_stream(
    jetstream: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream> {
    let name = wanted.name.clone();
    let replicas = wanted.num_replicas;
    let mut stream = jetstream
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|error| refused(&name, None, replicas, error))?;
    let current = stream.cached_info().config.clone();
    let direct = wanted.allow_direct && !current.allow_direct;
    if current.num_replicas == replicas && !direct {
        return Ok(stream);
    }
    let changed = stream::Config {
        num_replicas: replicas,
        allow_direct: current.allow_direct || wanted.allow_direct,
        ..current.clone()
    };
    jetstream
        .update_stream(&changed)
        .await
        .map_err(|error| refused(&name, Some(current.num_replicas), replicas, error))?;
    stream.info().await.map_err(unavailable)?;
    info!(stream = %name, replicas, direct_reads = changed.allow_direct, "stream updated");
    Ok(stream)
}

/// Creates the bucket, or brings an existing one to the wanted replica count (its other
/// settings, such as the hosts bucket's entry TTL, are kept).
async fn ensure_bucket(jetstream: &jetstream::Context, wanted: kv::Config) -> Result<kv::Store> {
    let replicas = wanted.num_replicas;
    let bucket = wanted.bucket.clone();
    let Ok(store) = jetstream.get_key_value(&bucket).await else {
        return jetstream
            .create_key_value(wanted)
            .await
            .map_err(|error| refused(&bucket, None, replicas, error));
    };
    let mut stream = store.stream.clone();
    let current = stream.info().await.map_err(unavailable)?.config.clone();
    if current.num_replicas == replicas {
        return Ok(store);
    }
    let changed = stream::Config {
        num_replicas: replicas,
        ..current.clone()
    };
    jetstream
        .update_stream(&changed)
        .await
        .map_err(|error| refused(&bucket, Some(current.num_replicas), replicas, error))?;
    info!(%bucket, replicas, "bucket updated");
    jetstream.get_key_value(&bucket).await.map_err(unavailable)
}

/// A stream or bucket NATS would not create or change: says what to do about it.
fn refused(
    name: &str,
    current: Option<usize>,
    wanted: usize,
    error: impl std::fmt::Display,
) -> StoreError {
    let what = match current {
        Some(current) => {
            format!("{name} has {current} replica(s); changing it to {wanted} was refused")
        }
        None if wanted > 1 => format!("{name} could not be created with {wanted} replicas"),
        None => return unavailable(format!("{name}: {error}")),
    };
    StoreError::Unavailable(format!(
        "{what}: {error}. --stream-replicas (KRANE_STREAM_REPLICAS) must be at most the number \
         of JetStream servers in the cluster: 1 on a single server, 3 or 5 on a cluster; or \
         change it with `nats stream edit {name} --replicas N` (buckets: KV_<bucket>)"
    ))
}
