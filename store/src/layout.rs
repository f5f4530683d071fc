//! How krane's streams, buckets and the workers' consumers are configured, side by side, so
//! whoever reads a stream sees what keeps it and who consumes it. Names come from
//! `krane_core::names`; `replicas` is `--stream-replicas` (1 on a single server, 3 or 5 on a
//! cluster; the consumer inherits its stream's).

use async_nats::jetstream::{consumer, kv, stream};
use krane_core::names;
use std::time::Duration;

/// Commands kept per gateway: only the last one matters to workers and to the projection;
/// the rest is history for inspection.
const COMMANDS_KEPT_PER_GATEWAY: i64 = 64;
/// Events kept per replica (again only the last one shapes the record).
const EVENTS_KEPT_PER_REPLICA: i64 = 16;
/// Window in which a retried publish with the same `Nats-Msg-Id` is stored once (also the
/// shortest `--retention`: a purged gateway's first Create must be out of it before the same
/// Create, on the emptied subject, could be taken for a retry of it).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// A host whose heartbeat is older than this is lost (its entry expires), unless a worker
/// opened the store with another host timeout.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(15);

/// `KRANE_COMMANDS`: one subject per gateway; direct reads serve "the latest command".
pub fn commands_stream(replicas: usize) -> stream::Config {
    stream::Config {
        name: names::COMMANDS_STREAM.into(),
        description: Some("krane gateway commands, one subject per gateway".into()),
        subjects: vec![format!("{}.>", names::COMMANDS_SUBJECT_PREFIX)],
        storage: stream::StorageType::File,
        max_messages_per_subject: COMMANDS_KEPT_PER_GATEWAY,
        duplicate_window: DEDUP_WINDOW,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Name of the dispatch consumer on the commands stream, shared by every worker.
pub const DISPATCH_CONSUMER: &str = "krane-dispatch";
/// Deliveries of the dispatch consumer awaiting their ack, for all workers together (each
/// worker pulls no more than it works on at once).
const DISPATCH_MAX_ACK_PENDING: i64 = 10_000;
/// How long work addressed to a host waits for it. A host away for longer starts by
/// reconciling every gateway it holds containers of (its first resync) anyway.
const WORK_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// The dispatch consumer: every command is delivered once to one of the workers (any of
/// them), which addresses it to the hosts it concerns on [`work_stream`]. A new consumer
/// starts at each gateway's latest command (a fleet that consumed the log per host before
/// resumes from the intents in force, not from their history).
pub fn dispatch_consumer(ack_wait: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(DISPATCH_CONSUMER.to_string()),
        description: Some("krane dispatch: addresses each command to the hosts it concerns".into()),
        filter_subject: format!("{}.>", names::COMMANDS_SUBJECT_PREFIX),
        deliver_policy: consumer::DeliverPolicy::LastPerSubject,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: DISPATCH_MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// `KRANE_WORK`: work addressed to hosts, one subject per host and gateway
/// (`krane.work.<host>.<ns>.<gw>`). A work queue: a message goes once its host acknowledged
/// it; only the latest per subject is kept (a newer command about the same gateway replaces
/// work not yet taken: the host reconciles to the latest command anyway).
pub fn work_stream(replicas: usize) -> stream::Config {
    stream::Config {
        name: names::WORK_STREAM.into(),
        description: Some("krane work addressed to hosts, one subject per host and gateway".into()),
        subjects: vec![format!("{}.>", names::WORK_SUBJECT_PREFIX)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        max_messages_per_subject: 1,
        max_age: WORK_KEPT_FOR,
        duplicate_window: DEDUP_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// The durable pull consumer of one host's workers on [`work_stream`]: the work addressed to
/// the host, acknowledged explicitly after its effects, redelivered after `ack_wait` without
/// an ack.
pub fn work_consumer(
    durable_name: &str,
    host_id: &str,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(durable_name.to_string()),
        description: Some("krane worker intake: the work addressed to one host".into()),
        filter_subject: names::work_filter(host_id),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending,
        ..Default::default()
    }
}

/// `KRANE_EVENTS`: one subject per replica and host.
pub fn events_stream(replicas: usize) -> stream::Config {
    stream::Config {
        name: names::EVENTS_STREAM.into(),
        description: Some("krane instance observations, one subject per replica".into()),
        subjects: vec![format!("{}.>", names::EVENTS_SUBJECT_PREFIX)],
        storage: stream::StorageType::File,
        max_messages_per_subject: EVENTS_KEPT_PER_REPLICA,
        duplicate_window: DEDUP_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// `krane_gateways`: one record per gateway, the projection of both streams.
pub fn gateways_bucket(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: names::GATEWAYS_BUCKET.into(),
        description: "krane gateway records, projected from the streams".into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// `krane_hosts`: one heartbeat per host, expiring after `timeout`.
pub fn hosts_bucket(timeout: Duration, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: names::HOSTS_BUCKET.into(),
        description: "krane worker heartbeats; an entry expires when its host is lost".into(),
        history: 1,
        max_age: timeout,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}
