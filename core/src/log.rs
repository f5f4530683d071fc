//! The durable side of krane on NATS JetStream: the commands stream, the events stream and the
//! `krane_gateways` KV bucket projected from them. Both binaries open it with [`EventLog::open`],
//! which creates what is missing (idempotently), so either may start first.
//!
//! Writes to the bucket are compare-and-set on the key's revision and fold messages with the
//! pure functions of [`crate::record`], so concurrent writers never lose each other's updates.

use crate::command::Command;
use crate::event::InstanceObserved;
use crate::names::{self, GatewayKey};
use crate::placement::HostInfo;
use crate::record::GatewayRecord;
use async_nats::jetstream::{self, consumer, kv, message::PublishMessage, stream};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{debug, info};

/// Commands kept per gateway: only the last one matters to workers and to the projection;
/// the rest is history for inspection.
const COMMANDS_KEPT_PER_GATEWAY: i64 = 64;
/// Events kept per replica (again only the last one shapes the record).
const EVENTS_KEPT_PER_REPLICA: i64 = 16;
/// Window in which a retried publish with the same `Nats-Msg-Id` is stored once.
const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Compare-and-set attempts before giving up on a contended KV key.
const CAS_ATTEMPTS: usize = 32;
/// A host whose heartbeat is older than this is lost (its entry expires), unless a worker
/// opened the log with another `host_timeout`.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// NATS could not be reached or did not answer in time; retrying later may succeed.
    #[error("NATS JetStream unavailable: {0}")]
    Unavailable(String),
    /// A conditional write lost to a newer one (the gateway got a newer command meanwhile).
    #[error("superseded by a newer command: {0}")]
    Superseded(String),
    /// A stored message or record could not be decoded.
    #[error("corrupt message in {location}: {reason}")]
    Corrupt { location: String, reason: String },
}

fn unavailable(error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(error.to_string())
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// A stored record with the KV revision it was read at (0 = no such key).
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub record: Option<GatewayRecord>,
    pub revision: u64,
}

impl StoredRecord {
    /// No record under the key (as read for a key never written).
    pub fn absent() -> Self {
        Self {
            record: None,
            revision: 0,
        }
    }
}

/// Handles on the streams and the bucket.
#[derive(Clone)]
pub struct EventLog {
    jetstream: jetstream::Context,
    commands: stream::Stream,
    events: stream::Stream,
    gateways: kv::Store,
    hosts: kv::Store,
}

impl EventLog {
    /// Creates the streams and the buckets if missing and returns handles on them.
    pub async fn open(jetstream: jetstream::Context) -> Result<Self> {
        let commands = jetstream
            .get_or_create_stream(stream::Config {
                name: names::COMMANDS_STREAM.into(),
                description: Some("krane gateway commands, one subject per gateway".into()),
                subjects: vec![format!("{}.>", names::COMMANDS_SUBJECT_PREFIX)],
                storage: stream::StorageType::File,
                max_messages_per_subject: COMMANDS_KEPT_PER_GATEWAY,
                duplicate_window: DEDUP_WINDOW,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let commands = allow_direct_reads(&jetstream, commands).await?;
        let events = jetstream
            .get_or_create_stream(stream::Config {
                name: names::EVENTS_STREAM.into(),
                description: Some("krane instance observations, one subject per replica".into()),
                subjects: vec![format!("{}.>", names::EVENTS_SUBJECT_PREFIX)],
                storage: stream::StorageType::File,
                max_messages_per_subject: EVENTS_KEPT_PER_REPLICA,
                duplicate_window: DEDUP_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let gateways = match jetstream.get_key_value(names::GATEWAYS_BUCKET).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(kv::Config {
                    bucket: names::GATEWAYS_BUCKET.into(),
                    description: "krane gateway records, projected from the streams".into(),
                    history: 1,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?,
        };
        let hosts = match jetstream.get_key_value(names::HOSTS_BUCKET).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(hosts_bucket(DEFAULT_HOST_TIMEOUT))
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

    /// Sets how long a host stays live without a heartbeat (the hosts bucket's entry TTL).
    pub async fn set_host_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.hosts = self
            .jetstream
            .update_key_value(hosts_bucket(timeout))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Announces (or renews) a host; it stays live until its entry expires.
    pub async fn heartbeat(&self, host: &HostInfo) -> Result<()> {
        self.ensure_connected()?;
        self.hosts
            .put(&host.host_id, host.encode().into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Every host whose heartbeat has not expired, by id.
    pub async fn live_hosts(&self) -> Result<Vec<HostInfo>> {
        self.ensure_connected()?;
        let mut hosts = Vec::new();
        for key in keys_of(&self.hosts, ">").await? {
            let value = self.hosts.get(&key).await.map_err(unavailable)?;
            if let Some(host) = value.and_then(|value| HostInfo::decode(&value).ok()) {
                hosts.push(host);
            }
        }
        hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        Ok(hosts)
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Fails at once while the client is disconnected, instead of waiting for a request
    /// timeout: callers learn `unavailable` fast, and the client reconnects on its own.
    fn ensure_connected(&self) -> Result<()> {
        match self.jetstream.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(LogError::Unavailable(format!(
                "not connected to NATS ({state})"
            ))),
        }
    }

    pub fn commands_stream(&self) -> &stream::Stream {
        &self.commands
    }

    /// Durably stores a command; returns its sequence on the commands stream. A retry with the
    /// same `message_id` within the dedup window returns the sequence of the first copy.
    pub async fn publish_command(&self, command: &Command, message_id: &str) -> Result<u64> {
        let message = PublishMessage::build()
            .payload(command.encode().into())
            .message_id(message_id);
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
            .payload(command.encode().into())
            .expected_last_subject_sequence(based_on_seq);
        self.send_conditional_command(command, message).await
    }

    /// Stores the first command a gateway ever gets: only if its subject holds no command yet
    /// (the server checks, so no read is needed first). Returns `Ok(None)` when the gateway
    /// has history; the caller then reads its record and decides as for any later command. A
    /// retry with the same `message_id` within the dedup window is stored once.
    pub async fn publish_first_command(
        &self,
        command: &Command,
        message_id: &str,
    ) -> Result<Option<u64>> {
        let message = PublishMessage::build()
            .payload(command.encode().into())
            .message_id(message_id)
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
            Err(LogError::Superseded(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn send_command(&self, command: &Command, message: PublishMessage) -> Result<u64> {
        self.ensure_connected()?;
        // The caller's trace context travels with the command, to the worker that handles it.
        let message = crate::telemetry::with_trace_context(message);
        let ack = self
            .jetstream
            .send_publish(command.key().command_subject(), message)
            .await
            .map_err(unavailable)?
            .await
            .map_err(|error| match error.kind() {
                jetstream::context::PublishErrorKind::WrongLastSequence => {
                    LogError::Superseded(error.to_string())
                }
                _ => unavailable(error),
            })?;
        debug!(gateway = %command.key(), seq = ack.sequence, duplicate = ack.duplicate, "command stored");
        Ok(ack.sequence)
    }

    /// Durably stores an observation; returns its sequence on the events stream.
    async fn publish_event(&self, event: &InstanceObserved) -> Result<u64> {
        self.ensure_connected()?;
        let ack = self
            .jetstream
            .publish(
                event.key().event_subject(event.replica, &event.host_id),
                event.encode().into(),
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
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
                    Command::decode(&message.payload).map_err(|error| LogError::Corrupt {
                        location: format!("{} seq {}", names::COMMANDS_STREAM, message.sequence),
                        reason: error.to_string(),
                    })?;
                Ok(Some((message.sequence, command)))
            }
            Err(error) if matches!(error.kind(), stream::DirectGetErrorKind::NotFound) => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Reads a gateway's record with its revision.
    pub async fn load_record(&self, key: &GatewayKey) -> Result<StoredRecord> {
        self.ensure_connected()?;
        let entry = self
            .gateways
            .entry(key.kv_key())
            .await
            .map_err(unavailable)?;
        let Some(entry) = entry else {
            return Ok(StoredRecord::absent());
        };
        stored_of(&entry)
    }

    /// The gateway's record after every change made after `revision` (from
    /// [`Self::load_record`]), as it is written; `record: None` once its key is deleted. Ends
    /// only when the caller drops it (or with an error when the watch breaks).
    pub async fn watch_record(
        &self,
        key: &GatewayKey,
        revision: u64,
    ) -> Result<impl futures::Stream<Item = Result<StoredRecord>> + Send + 'static> {
        self.ensure_connected()?;
        let changes = self
            .gateways
            .watch_from_revision(key.kv_key(), revision + 1)
            .await
            .map_err(unavailable)?;
        Ok(changes.map(|entry| stored_of(&entry.map_err(unavailable)?)))
    }

    /// The records of one namespace (deleted keys left out), ordered by gateway id. The keys
    /// come from the bucket stream's subjects, filtered by the server: unlike a KV key listing,
    /// that misses no key while others are being written.
    pub async fn namespace_records(&self, namespace: &str) -> Result<Vec<GatewayRecord>> {
        self.ensure_connected()?;
        let pattern = GatewayKey::new(namespace, "*").kv_key();
        let mut gateways = BTreeMap::new();
        for key in keys_of(&self.gateways, &pattern).await? {
            if let Some(gateway) = GatewayKey::from_kv_key(&key)
                && gateway.namespace == namespace
            {
                gateways.insert(gateway.gateway_id.clone(), gateway);
            }
        }
        let mut records = Vec::with_capacity(gateways.len());
        for gateway in gateways.values() {
            if let Some(record) = self.load_record(gateway).await?.record {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Folds a command into the gateway's record (compare-and-set); returns the record as
    /// stored, with its revision.
    pub async fn project_command(&self, seq: u64, command: &Command) -> Result<StoredRecord> {
        self.project_command_onto(None, seq, command).await
    }

    /// As [`Self::project_command`], starting from a record the caller has just read (saving
    /// a read when nobody wrote it meanwhile; a conflict falls back to reading again).
    pub async fn project_command_onto(
        &self,
        known: Option<StoredRecord>,
        seq: u64,
        command: &Command,
    ) -> Result<StoredRecord> {
        self.update_record(&command.key(), known, |record| {
            GatewayRecord::apply_command(record, seq, command)
        })
        .await
    }

    /// Stores events of one gateway (concurrently: at most one per replica and host, so
    /// their order does not matter) and folds them into its record in one compare-and-set,
    /// starting from `known` if the caller has a recent read (a conflict reads again).
    /// Returns the record as stored.
    pub async fn append_events(
        &self,
        key: &GatewayKey,
        known: Option<StoredRecord>,
        events: &[InstanceObserved],
    ) -> Result<Option<StoredRecord>> {
        if events.is_empty() {
            return Ok(known);
        }
        let seqs =
            futures::future::try_join_all(events.iter().map(|event| self.publish_event(event)))
                .await?;
        let stored = self
            .update_record(key, known, |record| {
                seqs.iter()
                    .zip(events)
                    .fold(record, |record, (seq, event)| {
                        GatewayRecord::apply_event(record, *seq, event)
                    })
            })
            .await?;
        Ok(Some(stored))
    }

    /// Folds into the record by compare-and-set, reading it again after a conflict; returns
    /// what is stored afterwards.
    async fn update_record(
        &self,
        key: &GatewayKey,
        mut known: Option<StoredRecord>,
        fold: impl Fn(Option<GatewayRecord>) -> Option<GatewayRecord>,
    ) -> Result<StoredRecord> {
        let kv_key = key.kv_key();
        for _ in 0..CAS_ATTEMPTS {
            let stored = match known.take() {
                Some(stored) => stored,
                None => self.load_record(key).await?,
            };
            let next = fold(stored.record.clone());
            let Some(record) = next.filter(|next| Some(next) != stored.record.as_ref()) else {
                // Nothing to write (unchanged, or events without a record to land in).
                return Ok(stored);
            };
            let written = if stored.revision == 0 {
                self.gateways
                    .create(&kv_key, record.encode().into())
                    .await
                    .map_err(|error| {
                        (
                            matches!(error.kind(), kv::CreateErrorKind::AlreadyExists),
                            error.to_string(),
                        )
                    })
            } else {
                self.gateways
                    .update(&kv_key, record.encode().into(), stored.revision)
                    .await
                    .map_err(|error| {
                        (
                            matches!(error.kind(), kv::UpdateErrorKind::WrongLastRevision),
                            error.to_string(),
                        )
                    })
            };
            match written {
                Ok(revision) => {
                    return Ok(StoredRecord {
                        record: Some(record),
                        revision,
                    });
                }
                Err((true, _conflict)) => continue,
                Err((false, error)) => return Err(LogError::Unavailable(error)),
            }
        }
        Err(LogError::Unavailable(format!(
            "record {kv_key} stayed contended for {CAS_ATTEMPTS} attempts"
        )))
    }

    /// Every record in the bucket, keyed by KV key (for resync and for comparing after replay).
    pub async fn all_records(&self) -> Result<BTreeMap<String, GatewayRecord>> {
        self.ensure_connected()?;
        let mut records = BTreeMap::new();
        for key in keys_of(&self.gateways, ">").await? {
            let Some(gateway) = GatewayKey::from_kv_key(&key) else {
                continue;
            };
            if let Some(record) = self.load_record(&gateway).await?.record {
                records.insert(key, record);
            }
        }
        Ok(records)
    }

    /// Rebuilds the bucket from the two streams: folds every stored command, then every stored
    /// event, and writes the result, removing keys the streams do not explain. Because the
    /// fold is order-insensitive the result equals what live writers produced.
    pub async fn rebuild_projection(&self) -> Result<usize> {
        let mut records: BTreeMap<String, GatewayRecord> = BTreeMap::new();
        let mut replay =
            |key: String, fold: &dyn Fn(Option<GatewayRecord>) -> Option<GatewayRecord>| {
                let next = fold(records.remove(&key));
                if let Some(record) = next {
                    records.insert(key, record);
                }
            };
        for message in self.read_all(&self.commands).await? {
            let command = Command::decode(&message.payload).map_err(|error| LogError::Corrupt {
                location: format!("{} seq {}", names::COMMANDS_STREAM, message.sequence),
                reason: error.to_string(),
            })?;
            replay(command.key().kv_key(), &|record| {
                GatewayRecord::apply_command(record, message.sequence, &command)
            });
        }
        for message in self.read_all(&self.events).await? {
            let event =
                InstanceObserved::decode(&message.payload).map_err(|error| LogError::Corrupt {
                    location: format!("{} seq {}", names::EVENTS_STREAM, message.sequence),
                    reason: error.to_string(),
                })?;
            replay(event.key().kv_key(), &|record| {
                GatewayRecord::apply_event(record, message.sequence, &event)
            });
        }
        let existing = self.all_records().await?;
        for key in existing.keys().filter(|key| !records.contains_key(*key)) {
            self.gateways.purge(key).await.map_err(unavailable)?;
        }
        for (key, record) in &records {
            self.gateways
                .put(key, record.encode().into())
                .await
                .map_err(unavailable)?;
        }
        info!(
            records = records.len(),
            "projection rebuilt from the streams"
        );
        Ok(records.len())
    }

    /// Reads every message currently stored in a stream, in sequence order.
    async fn read_all(&self, stream: &stream::Stream) -> Result<Vec<StoredMessage>> {
        let mut stream = stream.clone();
        let stored = stream.info().await.map_err(unavailable)?.state.messages;
        if stored == 0 {
            return Ok(Vec::new());
        }
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut messages = reader.messages().await.map_err(unavailable)?;
        let mut read = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(unavailable)?;
            let info = message.info().map_err(unavailable)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            read.push(StoredMessage {
                sequence,
                payload: message.message.payload,
            });
            if pending == 0 {
                break;
            }
        }
        Ok(read)
    }
}

/// The keys of a bucket matching `pattern` (a KV key with `*`/`>` wildcards), read from the
/// subjects of the bucket's stream. (Listing through `kv::Store::keys` can miss a key that is
/// being written at the same moment; the stream's subject index does not.) Deleted keys may
/// still be listed; loading them yields nothing.
async fn keys_of(store: &kv::Store, pattern: &str) -> Result<Vec<String>> {
    let filter = format!("{}{pattern}", store.prefix);
    let mut subjects = store
        .stream
        .info_with_subjects(&filter)
        .await
        .map_err(unavailable)?;
    let mut keys = Vec::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _count) = subject.map_err(unavailable)?;
        if let Some(key) = subject.strip_prefix(&store.prefix) {
            keys.push(key.to_string());
        }
    }
    keys.sort();
    Ok(keys)
}

/// Turns on direct reads of a stream created before krane asked for them (other settings
/// are kept).
async fn allow_direct_reads(
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

fn hosts_bucket(timeout: Duration) -> kv::Config {
    kv::Config {
        bucket: names::HOSTS_BUCKET.into(),
        description: "krane worker heartbeats; an entry expires when its host is lost".into(),
        history: 1,
        max_age: timeout,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// A KV entry of the gateways bucket as a record (`None` for a delete or purge marker).
fn stored_of(entry: &kv::Entry) -> Result<StoredRecord> {
    let record = match entry.operation {
        kv::Operation::Put => {
            Some(
                GatewayRecord::decode(&entry.value).map_err(|error| LogError::Corrupt {
                    location: format!("{} key {}", names::GATEWAYS_BUCKET, entry.key),
                    reason: error.to_string(),
                })?,
            )
        }
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    Ok(StoredRecord {
        record,
        revision: entry.revision,
    })
}

/// A message read back from a stream.
struct StoredMessage {
    sequence: u64,
    payload: bytes::Bytes,
}

/// How to reach NATS; shared by both binaries' command lines.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "KRANE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS user name (with --nats-password).
    #[arg(long, env = "KRANE_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// NATS password.
    #[arg(long, env = "KRANE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, env = "KRANE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// CA certificate (PEM) to verify the NATS server with; implies TLS.
    #[arg(long, env = "KRANE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(long, env = "KRANE_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "KRANE_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// Require TLS even without a CA or client certificate given.
    #[arg(long, env = "KRANE_NATS_TLS")]
    pub nats_tls: bool,
}

impl NatsArgs {
    /// Just a URL, no credentials or TLS (tests, tools).
    pub fn url(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_user: None,
            nats_password: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls: false,
        }
    }

    async fn options(&self) -> Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(creds) = &self.nats_creds {
            options = options.credentials_file(creds).await.map_err(|error| {
                LogError::Unavailable(format!("cannot read {}: {error}", creds.display()))
            })?;
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        if self.nats_tls {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// Connects to NATS and opens the log. Fails (rather than retrying forever) when the server
/// cannot be reached at start, so a misconfigured binary says so at once; once connected, the
/// client reconnects on its own and JetStream calls fail fast (`request_timeout`) meanwhile.
pub async fn connect(
    nats: &NatsArgs,
    client_name: &str,
    request_timeout: Duration,
) -> Result<EventLog> {
    let nats_url = &nats.nats_url;
    let client = nats
        .options()
        .await?
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(nats_url)
        .await
        .map_err(|error| LogError::Unavailable(format!("cannot connect to {nats_url}: {error}")))?;
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(request_timeout)
        .build(client);
    EventLog::open(jetstream).await
}
