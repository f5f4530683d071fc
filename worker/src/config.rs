//! `krane-worker` flags; each can also be set through the environment variable named with it.

use clap::{Parser, Subcommand};
use krane_platform::metrics::MetricsArgs;
use krane_store::NatsArgs;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "krane-worker",
    version,
    about = "Reconciles krane gateways on one Docker host"
)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Docker engine address (unix://…, tcp://…); the local socket when unset.
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// Identity of this host; workers with the same id share work. Default: the hostname.
    #[arg(long, env = "KRANE_HOST_ID")]
    pub host_id: Option<String>,

    /// Most krane containers this host accepts; unlimited when unset.
    #[arg(long, env = "KRANE_MAX_CONTAINERS")]
    pub max_containers: Option<u32>,

    /// CPU this host offers to replicas, in millicores; default: the engine's CPUs × 1000.
    /// A replica is placed only where its `cpu_millicores` fit in what is not reserved.
    #[arg(long, env = "KRANE_CPU_MILLICORES")]
    pub cpu_millicores: Option<u64>,

    /// Memory this host offers to replicas, in MiB; default: the engine's total memory.
    #[arg(long, env = "KRANE_MEMORY_MIB")]
    pub memory_mib: Option<u64>,

    /// A host whose heartbeat is older than this is lost and its replicas are placed
    /// elsewhere. Use the same value on every worker.
    #[arg(long, env = "KRANE_HOST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub host_timeout: Duration,

    /// Self-fencing (off by default): when this worker has not reached NATS for this long, it
    /// stops its host's krane containers, since other hosts may run their replicas by now.
    /// Trades availability during a partition for never serving twice.
    #[arg(long, env = "KRANE_FENCE_AFTER", value_parser = humantime::parse_duration)]
    pub fence_after: Option<Duration>,

    /// Longest a rolling update waits for its turn before the command is retried later.
    #[arg(long, env = "KRANE_ROLLOUT_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    pub rollout_timeout: Duration,

    /// Host part of instance addresses (`<advertise host>:<published port>`).
    #[arg(long, env = "KRANE_ADVERTISE_HOST", default_value = "127.0.0.1")]
    pub advertise_host: String,

    /// Commands handled at once (for different gateways).
    #[arg(long, env = "KRANE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// Containers of one gateway created or removed at once.
    #[arg(long, env = "KRANE_REPLICA_PARALLELISM", default_value_t = 16)]
    pub replica_parallelism: usize,

    /// Deliveries of a failing command before the gateway is marked FAILED.
    #[arg(long, env = "KRANE_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// How long NATS waits for an ack before redelivering (kept alive while working).
    #[arg(long, env = "KRANE_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    /// Time in-flight work gets on SIGTERM before it is handed back.
    #[arg(long, env = "KRANE_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Time between full resyncs (drift repair also follows the engine's events).
    #[arg(long, env = "KRANE_RESYNC_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// A fully deleted gateway (its Delete done, no instance left) is purged this long after
    /// its Delete: its commands, events and record are removed. At least 2m (the commands'
    /// dedup window). Use the same value on every worker.
    #[arg(long, env = "KRANE_RETENTION", default_value = "24h", value_parser = parse_retention)]
    pub retention: Duration,

    /// Longest wait for an image pull.
    #[arg(long, env = "KRANE_PULL_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub pull_timeout: Duration,

    /// Where this worker reaches the ports its containers publish, to probe whether they
    /// serve (containers without a health check are RUNNING only once theirs answers).
    /// Default: the advertise host. A worker in a container needs the engine host's address
    /// on its network (e.g. `host.docker.internal` with `host-gateway`).
    #[arg(long, env = "KRANE_PROBE_HOST")]
    pub probe_host: Option<String>,

    /// How often the published ports of running containers are probed.
    #[arg(long, env = "KRANE_PROBE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_interval: Duration,

    /// Most processes one gateway container may run.
    #[arg(long, env = "KRANE_PIDS_LIMIT", default_value_t = 256, value_parser = clap::value_parser!(i64).range(16..))]
    pub pids_limit: i64,

    /// Size at which a gateway container's log is rotated (Docker's json-file `max-size`).
    #[arg(long, env = "KRANE_LOG_MAX_SIZE", default_value = "10m", value_parser = parse_log_size)]
    pub log_max_size: String,

    /// Rotated log files kept per gateway container (Docker's json-file `max-file`).
    #[arg(long, env = "KRANE_LOG_MAX_FILES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_max_files: u32,

    /// Images this worker runs (the API's `--allowed-images`, checked again for commands that
    /// did not come through it): a command for another image is FAILED with the rule's reason.
    #[arg(long, env = "KRANE_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,

    /// Registry user for pulling missing images.
    #[arg(long, env = "KRANE_REGISTRY_USERNAME")]
    pub registry_username: Option<String>,

    /// Registry password (or token) for pulling missing images.
    #[arg(long, env = "KRANE_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,

    /// Registry server the credentials are for.
    #[arg(long, env = "KRANE_REGISTRY_SERVER")]
    pub registry_server: Option<String>,

    /// Benchmarks only (built with the `fake-runtime` feature, never shipped): no Docker
    /// engine; containers live in memory, and only these images exist (comma-separated).
    #[cfg(feature = "fake-runtime")]
    #[arg(long, hide = true, value_delimiter = ',', value_name = "IMAGES")]
    pub in_memory_runtime: Vec<String>,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "KRANE_LOG_JSON", global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WorkerCommand {
    /// Rebuild the krane_gateways KV bucket from the commands and events streams, then exit.
    RebuildProjection,
}

/// `--retention`: a duration no shorter than the commands stream's dedup window. A purge
/// empties the gateway's subject, so a new Create of the same spec is written expecting an
/// empty subject again, with the message id of the gateway's very first Create; inside the
/// window the server would take it for a retry of that one and not store it.
fn parse_retention(text: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    let floor = krane_store::layout::DEDUP_WINDOW;
    if retention < floor {
        return Err(format!(
            "must be at least {} (the commands' dedup window)",
            humantime::format_duration(floor)
        ));
    }
    Ok(retention)
}

/// `--log-max-size`: a number with an optional k, m or g (Docker's json-file `max-size`).
fn parse_log_size(text: &str) -> Result<String, String> {
    let digits = text.trim_end_matches(['k', 'm', 'g']);
    let valid = !digits.is_empty()
        && digits.len() + 1 >= text.len()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0);
    if valid {
        Ok(text.to_string())
    } else {
        Err("must be a positive number with an optional k, m or g (e.g. 10m)".into())
    }
}

impl WorkerConfig {
    /// How gateway containers are confined (`--pids-limit`, `--log-max-size`, `--log-max-files`).
    pub fn hardening(&self) -> crate::runtime::docker::Hardening {
        crate::runtime::docker::Hardening {
            pids_limit: self.pids_limit,
            log_max_size: self.log_max_size.clone(),
            log_max_files: self.log_max_files,
        }
    }

    /// The probe of published ports (see `--probe-host`).
    pub fn probe(&self) -> crate::runtime::readiness::TcpProbe {
        crate::runtime::readiness::TcpProbe {
            host: self
                .probe_host
                .clone()
                .unwrap_or_else(|| self.advertise_host.clone()),
            timeout: Duration::from_secs(1),
        }
    }

    /// The host id, made a safe token (`[a-zA-Z0-9_-]`): it names subjects and KV keys.
    pub fn host_id(&self) -> String {
        let raw = self
            .host_id
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        krane_core::names::host_id(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_defaults_to_a_day_and_is_never_shorter_than_the_dedup_window() {
        let parse = |args: &[&str]| {
            WorkerConfig::try_parse_from([&["krane-worker"], args].concat())
                .map(|config| config.retention)
        };
        assert_eq!(parse(&[]).ok(), Some(Duration::from_secs(24 * 3600)));
        assert_eq!(
            parse(&["--retention", "2m"]).ok(),
            Some(Duration::from_secs(120))
        );
        assert!(parse(&["--retention", "1m"]).is_err());
        assert!(parse(&["--retention", "soon"]).is_err());
    }

    #[test]
    fn containers_are_confined_by_default_and_the_limits_are_checked() {
        let parse = |args: &[&str]| {
            WorkerConfig::try_parse_from([&["krane-worker"], args].concat()).map(|c| c.hardening())
        };
        assert_eq!(
            parse(&[]).ok(),
            Some(crate::runtime::docker::Hardening::default())
        );
        let set = parse(&[
            "--pids-limit",
            "64",
            "--log-max-size",
            "5m",
            "--log-max-files",
            "2",
        ])
        .expect("valid");
        assert_eq!(
            (set.pids_limit, set.log_max_size.as_str(), set.log_max_files),
            (64, "5m", 2)
        );
        for bad in [
            &["--pids-limit", "0"][..],
            &["--log-max-size", "lots"],
            &["--log-max-size", "10mm"],
            &["--log-max-size", "0"],
            &["--log-max-files", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
