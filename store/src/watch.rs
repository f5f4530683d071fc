//! Following a whole bucket: its current state first (the last value of every key), then
//! every change as it is written, with a marker between the two. The workers keep their
//! in-memory views (gateway records, live hosts) with this instead of reading every key again
//! and again, so what they read follows what changes, not how much was ever stored.
//!
//! Built on an ordered push consumer of the bucket's stream (as `kv::Store::watch_with_history`
//! is), because a view must know when the initial state is complete, also for an empty bucket,
//! which that watch does not tell.

use crate::{Result, Store, unavailable};
use async_nats::jetstream::{consumer, kv};
use futures::{Stream, StreamExt};
use krane_core::codec;
use krane_core::names;
use krane_core::placement::HostInfo;
use krane_core::record::GatewayRecord;
use serde::de::DeserializeOwned;
use std::time::SystemTime;

/// One step of a bucket watch.
#[derive(Debug, Clone)]
pub enum BucketChange<T> {
    /// The key holds this value (as of `revision`, written at `written`).
    Put {
        key: String,
        value: T,
        revision: u64,
        written: SystemTime,
    },
    /// The key was deleted or purged, or its value does not decode (skipped and counted).
    Removed { key: String },
    /// Everything stored when the watch began has been delivered; changes follow.
    Current,
}

impl Store {
    /// The gateway records, from the bucket's current state on (see [`BucketChange`]).
    pub async fn watch_records(
        &self,
    ) -> Result<impl Stream<Item = Result<BucketChange<GatewayRecord>>> + Send + use<>> {
        let changes = watch_bucket(&self.jetstream.client(), &self.gateways).await?;
        Ok(changes
            .map(|change| change.map(|change| decoded(change, "record", names::GATEWAYS_BUCKET))))
    }

    /// The hosts' heartbeats, from the bucket's current state on (see [`BucketChange`]).
    pub async fn watch_hosts(
        &self,
    ) -> Result<impl Stream<Item = Result<BucketChange<HostInfo>>> + Send + use<>> {
        let changes = watch_bucket(&self.jetstream.client(), &self.hosts).await?;
        Ok(changes
            .map(|change| change.map(|change| decoded(change, "heartbeat", names::HOSTS_BUCKET))))
    }
}

/// A raw change with its value decoded; a value that does not decode is skipped (counted,
/// logged once) and stands for the key's removal, so a view never acts on a guess.
fn decoded<T: DeserializeOwned>(
    change: BucketChange<bytes::Bytes>,
    kind: &'static str,
    bucket: &str,
) -> BucketChange<T> {
    match change {
        BucketChange::Put {
            key,
            value,
            revision,
            written,
        } => match codec::decode::<T>(&value) {
            Ok(value) => BucketChange::Put {
                key,
                value,
                revision,
                written,
            },
            Err(error) => {
                let location = format!("{bucket} key {key}");
                crate::undecodable::skipped(kind, &location, &error);
                BucketChange::Removed { key }
            }
        },
        BucketChange::Removed { key } => BucketChange::Removed { key },
        BucketChange::Current => BucketChange::Current,
    }
}

async fn watch_bucket(
    client: &async_nats::Client,
    bucket: &kv::Store,
) -> Result<impl Stream<Item = Result<BucketChange<bytes::Bytes>>> + Send + use<>> {
    let prefix = bucket.prefix.clone();
    let consumer = bucket
        .stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("krane bucket watch".into()),
            filter_subject: format!("{prefix}>"),
            replay_policy: consumer::ReplayPolicy::Instant,
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    let empty = consumer.cached_info().num_pending == 0;
    let messages = consumer.messages().await.map_err(unavailable)?;
    let mut current = empty;
    let head = futures::stream::iter(empty.then_some(Ok(BucketChange::Current)));
    let changes = messages.flat_map(move |message| {
        let steps: Vec<Result<BucketChange<bytes::Bytes>>> = match message {
            Err(error) => vec![Err(unavailable(error))],
            Ok(message) => match message.info() {
                Err(error) => vec![Err(unavailable(error))],
                Ok(info) => {
                    let pending = info.pending;
                    let revision = info.stream_sequence;
                    let written = SystemTime::from(info.published);
                    let key = message
                        .subject
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(message.subject.as_str())
                        .to_string();
                    let removed = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get("KV-Operation"))
                        .is_some_and(|operation| operation.as_str() != "PUT");
                    let change = if removed {
                        BucketChange::Removed { key }
                    } else {
                        BucketChange::Put {
                            key,
                            value: message.payload.clone(),
                            revision,
                            written,
                        }
                    };
                    let mut steps = vec![Ok(change)];
                    if !current && pending == 0 {
                        current = true;
                        steps.push(Ok(BucketChange::Current));
                    }
                    steps
                }
            },
        };
        futures::stream::iter(steps)
    });
    Ok(head.chain(changes))
}
