//! The projection: one `GatewayRecord` per gateway in the `krane_gateways` bucket, folded from
//! both streams with the pure functions of `krane_core::record`. Writes are compare-and-set on
//! the key's revision, so concurrent writers (the API, every worker) never lose each other's
//! updates; [`Store::rebuild_projection`] folds the streams again from scratch. Reads (Get,
//! List, Watch, the workers' scans) come from here.

use crate::{Result, Store, StoreError, encode, unavailable};
use async_nats::jetstream::{consumer, kv, stream};
use futures::StreamExt;
use krane_core::codec;
use krane_core::command::Command;
use krane_core::event::InstanceObserved;
use krane_core::names::{self, GatewayKey};
use krane_core::record::GatewayRecord;
use krane_platform::metrics::register;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::SystemTime;
use tracing::info;

/// Compare-and-set attempts before giving up on a contended KV key.
const CAS_ATTEMPTS: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// This process's record writes, `krane_store_record_writes_total{outcome}`: `written`, or
/// `conflict` (another writer was first; the record is read again and the fold retried).
/// Every written record change reaches every worker's record index, so this says what the
/// projection costs per gateway. Both counters are made with the family, so both are listed
/// from the start and a write costs no label lookup.
struct RecordWrites {
    written: Counter,
    conflicts: Counter,
}

static RECORD_WRITES: LazyLock<RecordWrites> = LazyLock::new(|| {
    let family: Family<OutcomeLabel, Counter> = register(
        "store_record_writes",
        "Compare-and-set writes of gateway records, by outcome (written, conflict)",
        Family::default(),
    );
    RecordWrites {
        written: family.get_or_create_owned(&OutcomeLabel { outcome: "written" }),
        conflicts: family.get_or_create_owned(&OutcomeLabel {
            outcome: "conflict",
        }),
    }
});

/// Registers the record write metric, so it is listed before the first write.
pub fn register_metrics() {
    LazyLock::force(&RECORD_WRITES);
}

/// This process's record writes so far: (written, conflicts). For benchmarks and tests; an
/// operator reads `krane_store_record_writes_total`.
pub fn record_writes() -> (u64, u64) {
    (RECORD_WRITES.written.get(), RECORD_WRITES.conflicts.get())
}

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

impl Store {
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
            if let Some(record) = self.load_readable_record(gateway).await? {
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

    /// Folds into the record by compare-and-set, reading it again after a conflict; returns
    /// what is stored afterwards.
    pub(crate) async fn update_record(
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
            let value = encode("gateway record", &record)?;
            let written = if stored.revision == 0 {
                self.gateways.create(&kv_key, value).await.map_err(|error| {
                    let text = error.to_string();
                    (
                        matches!(error.kind(), kv::CreateErrorKind::AlreadyExists)
                            || lost_a_race(&text),
                        text,
                    )
                })
            } else {
                self.gateways
                    .update(&kv_key, value, stored.revision)
                    .await
                    .map_err(|error| {
                        let text = error.to_string();
                        (
                            matches!(error.kind(), kv::UpdateErrorKind::WrongLastRevision)
                                || lost_a_race(&text),
                            text,
                        )
                    })
            };
            match written {
                Ok(revision) => {
                    RECORD_WRITES.written.inc();
                    return Ok(StoredRecord {
                        record: Some(record),
                        revision,
                    });
                }
                Err((true, _conflict)) => {
                    RECORD_WRITES.conflicts.inc();
                    continue;
                }
                Err((false, error)) => return Err(StoreError::Unavailable(error)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "record {kv_key} stayed contended for {CAS_ATTEMPTS} attempts"
        )))
    }

    /// A record for a scan or listing: one that does not decode is skipped (counted, logged
    /// once) rather than failing the scan of every other gateway.
    async fn load_readable_record(&self, key: &GatewayKey) -> Result<Option<GatewayRecord>> {
        match self.load_record(key).await {
            Ok(stored) => Ok(stored.record),
            Err(StoreError::Corrupt { location, reason }) => {
                crate::undecodable::skipped("record", &location, &reason);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Every record in the bucket, keyed by KV key (for resync and for comparing after replay).
    pub async fn all_records(&self) -> Result<BTreeMap<String, GatewayRecord>> {
        self.ensure_connected()?;
        let mut records = BTreeMap::new();
        for key in keys_of(&self.gateways, ">").await? {
            let Some(gateway) = GatewayKey::from_kv_key(&key) else {
                continue;
            };
            if let Some(record) = self.load_readable_record(&gateway).await? {
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
            let location = format!("{} seq {}", names::COMMANDS_STREAM, message.sequence);
            match codec::decode::<Command>(&message.payload) {
                Ok(command) => replay(command.key().kv_key(), &|record| {
                    GatewayRecord::apply_command(record, message.sequence, &command)
                }),
                Err(error) => crate::undecodable::skipped("command", &location, &error),
            }
        }
        for message in self.read_all(&self.events).await? {
            let location = format!("{} seq {}", names::EVENTS_STREAM, message.sequence);
            match codec::decode::<InstanceObserved>(&message.payload) {
                Ok(event) => replay(event.key().kv_key(), &|record| {
                    GatewayRecord::apply_event(record, message.sequence, &event)
                }),
                Err(error) => crate::undecodable::skipped("event", &location, &error),
            }
        }
        let existing = self.all_records().await?;
        for key in existing.keys().filter(|key| !records.contains_key(*key)) {
            self.gateways.purge(key).await.map_err(unavailable)?;
        }
        for (key, record) in &records {
            self.gateways
                .put(key, encode("gateway record", record)?)
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
        read_messages(&stream, String::new()).await
    }
}

/// Reads every message of `stream` on `subject` (all of them for an empty subject), in
/// sequence order. There must be at least one, or this waits for it.
pub(crate) async fn read_messages(
    stream: &stream::Stream,
    subject: String,
) -> Result<Vec<StoredMessage>> {
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: subject,
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
        let time = SystemTime::from(info.published);
        read.push(StoredMessage {
            sequence,
            time,
            payload: message.message.payload,
        });
        if pending == 0 {
            break;
        }
    }
    Ok(read)
}

/// The keys of a bucket matching `pattern` (a KV key with `*`/`>` wildcards), read from the
/// subjects of the bucket's stream. (Listing through `kv::Store::keys` can miss a key that is
/// being written at the same moment; the stream's subject index does not.) Deleted keys may
/// still be listed; loading them yields nothing.
pub(crate) async fn keys_of(store: &kv::Store, pattern: &str) -> Result<Vec<String>> {
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

/// A KV entry of the gateways bucket as a record (`None` for a delete or purge marker).
fn stored_of(entry: &kv::Entry) -> Result<StoredRecord> {
    let record = match entry.operation {
        kv::Operation::Put => Some(codec::decode::<GatewayRecord>(&entry.value).map_err(
            |error| StoreError::Corrupt {
                location: format!("{} key {}", names::GATEWAYS_BUCKET, entry.key),
                reason: error.to_string(),
            },
        )?),
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    Ok(StoredRecord {
        record,
        revision: entry.revision,
    })
}

/// A message read back from a stream.
pub(crate) struct StoredMessage {
    pub sequence: u64,
    /// When the server stored it.
    pub time: SystemTime,
    pub payload: bytes::Bytes,
}

/// Whether a failed compare-and-set lost a race with another writer. Replicated buckets can
/// answer a lost race with JetStream's error 10164 ("wrong last sequence"), which async-nats
/// does not map to `WrongLastRevision` but to `Other`; only its text tells it apart.
fn lost_a_race(error: &str) -> bool {
    error.contains("wrong last sequence")
}

#[cfg(test)]
mod race_tests {
    use super::lost_a_race;

    #[test]
    fn a_lost_race_is_told_by_the_servers_words() {
        assert!(lost_a_race(
            "failed getting entry: publish failed: wrong last sequence (code 400, error code 10164)"
        ));
        assert!(!lost_a_race("failed getting entry: timed out"));
    }
}
