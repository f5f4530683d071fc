//! The one seam between the worker's logic and a container engine: the [`ContainerRuntime`]
//! trait and the types it speaks. Everything above it is engine-agnostic.
//!
//! - [`docker`]: `DockerRuntime`, the trait on a real engine through bollard.
//! - [`instrumented`]: any runtime with a `docker` span, latency and errors per call.
//! - [`held`]: any runtime, remembering which gateways it was last seen to hold containers of.
//! - [`readiness`]: whether a running container serves (health checks, port probes, exits).
//! - [`pull`]: pulls, pure: how far one got, whose credentials go to which registry.
//! - `fake` (feature `fake-runtime`, and in unit tests): `FakeRuntime`, in memory, with
//!   Docker's idempotency rules; for tests and benchmarks, never in the shipped binary.

pub mod docker;
#[cfg(any(test, feature = "fake-runtime"))]
pub mod fake;
pub mod held;
pub mod instrumented;
pub mod pull;
pub mod readiness;

use async_trait::async_trait;
use futures::stream::BoxStream;
use krane_core::names::{self, GatewayKey};
use krane_core::placement::Resources;
use krane_core::spec::GatewaySpec;
use std::collections::BTreeMap;

/// Everything the engine needs to run one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaContainer {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub env: Vec<String>,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

impl ReplicaContainer {
    pub fn for_replica(spec: &GatewaySpec, replica: u32, host_id: &str) -> Self {
        let key = spec.key();
        let labels = [
            (names::LABEL_GATEWAY_ID, spec.gateway_id.clone()),
            (names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE.to_string()),
            (names::LABEL_NAMESPACE, spec.namespace.clone()),
            (names::LABEL_WORKSPACE_ID, spec.workspace_id.clone()),
            (names::LABEL_REPLICA, replica.to_string()),
            (names::LABEL_TEMPLATE, spec.template()),
            (names::LABEL_HOST_ID, host_id.to_string()),
        ]
        .into_iter()
        .map(|(label, value)| (label.to_string(), value))
        .collect();
        Self {
            name: key.container_name(replica),
            image: spec.image.clone(),
            labels,
            env: vec![
                format!("UNKEY_WORKSPACE_ID={}", spec.workspace_id),
                format!("UNKEY_GATEWAY_ID={}", spec.gateway_id),
                format!("UNKEY_IMAGE={}", spec.image),
            ],
            nano_cpus: spec.nano_cpus(),
            memory_bytes: spec.memory_bytes(),
        }
    }

    /// The gateway it belongs to, from its namespace and gateway labels.
    pub fn gateway(&self) -> GatewayKey {
        let label = |name: &str| self.labels.get(name).cloned().unwrap_or_default();
        GatewayKey::new(
            label(names::LABEL_NAMESPACE),
            label(names::LABEL_GATEWAY_ID),
        )
    }
}

/// Engine-reported state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
    Unknown,
}

/// A krane-managed container as the engine lists it (what the worker observed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub name: String,
    /// The gateway it belongs to, from its namespace and gateway labels.
    pub gateway: GatewayKey,
    /// From the replica label; `None` if the label is missing or garbled.
    pub replica: Option<u32>,
    /// From the template label; empty if missing.
    pub template: String,
    pub state: ContainerState,
    /// Host port published for the gateway port, once the engine assigned one.
    pub host_port: Option<u16>,
    /// Whether it serves (see [`readiness`]); what a runtime that cannot tell says is `Ready`.
    pub readiness: Readiness,
}

/// Whether a container serves, as far as its health check, a probe of its port and its exits
/// tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Serving: healthy, or (without a health check) its published port answers.
    Ready,
    /// Not serving yet; the reason says what it waits for.
    Starting(String),
    /// Not serving and not about to: it keeps exiting (the reason has its exit code and last
    /// log lines) or its health check fails.
    Failing(String),
}

/// How far a pull got: bytes of the image's layers downloaded, of those whose size is known
/// (layers the engine has already count for nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub downloaded: u64,
    pub total: u64,
}

/// Where a pull tells how far it got; the latest value is all that counts.
pub type PullProgressSender = tokio::sync::watch::Sender<Option<PullProgress>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not present and could not be pulled: the registry refused the pull (no
    /// such image, no access) or the reference is not allowed. Retrying will not help.
    #[error("image {image} is not available: {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// A pull that did not get through this time (it timed out, or a layer failed mid-way);
    /// the registry may answer next time.
    #[error("image {image} could not be pulled: {reason}")]
    PullFailed { image: String, reason: String },
    /// The engine refused the request as invalid; repeating it will not help.
    #[error("Docker engine refused the request: {0}")]
    Rejected(String),
    /// The engine could not be reached or failed; a retry may succeed.
    #[error("Docker engine unavailable: {0}")]
    Unavailable(String),
}

impl RuntimeError {
    /// True when retrying the same request cannot succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Unavailable(_) | Self::PullFailed { .. })
    }

    /// The metric label of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Rejected(_) => "rejected",
            Self::ImageUnavailable { .. } => "image_unavailable",
            Self::PullFailed { .. } => "pull_failed",
        }
    }
}

/// The container engine as the worker uses it. Every method is idempotent: creating a
/// container that exists, starting a running one or removing a missing one succeeds.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Checks that the engine answers at all (tells an engine outage from a failing gateway).
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// The CPUs (as millicores) and memory (MiB) of the engine's machine.
    async fn capacity(&self) -> Result<Resources, RuntimeError>;
    /// Makes sure `image` is present, pulling it if missing; while it pulls, `progress` is told
    /// how far it got.
    async fn ensure_image(
        &self,
        image: &str,
        progress: &PullProgressSender,
    ) -> Result<(), RuntimeError>;
    /// Every container (running or not) labelled as belonging to the gateway.
    async fn list_gateway(&self, key: &GatewayKey) -> Result<Vec<ObservedContainer>, RuntimeError>;
    /// Creates the container unless it exists, then starts it unless it runs.
    async fn create_and_start(&self, container: &ReplicaContainer) -> Result<(), RuntimeError>;
    /// Starts an existing container.
    async fn start(&self, name: &str) -> Result<(), RuntimeError>;
    /// Stops a running container (it stays, to be started again) unless it is stopped or gone.
    async fn stop(&self, name: &str) -> Result<(), RuntimeError>;
    /// Removes a container (forcefully, with its anonymous volumes) unless it is gone.
    async fn remove(&self, name: &str) -> Result<(), RuntimeError>;
    /// Every krane container this host owns (its `krane.host.id` label), for the resync.
    async fn list_owned(&self, host_id: &str) -> Result<Vec<ObservedContainer>, RuntimeError>;
    /// Gateways whose containers owned by `host_id` changed state on the engine (died,
    /// stopped, removed …), as it happens. The stream ends (or errs) when the engine goes away.
    fn changes(&self, host_id: &str) -> BoxStream<'static, Result<GatewayKey, RuntimeError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_containers_carry_labels_env_and_limits() {
        let spec = GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: "img:1".into(),
            replicas: 2,
            cpu_millicores: 500,
            memory_mib: 128,
        };
        let container = ReplicaContainer::for_replica(&spec, 1, "h1");
        assert_eq!(container.name, spec.key().container_name(1));
        assert_eq!(container.labels["unkey.gateway.id"], "gw");
        assert_eq!(container.labels["unkey.managed.by"], "krane");
        assert_eq!(container.labels["unkey.replica"], "1");
        assert_eq!(container.labels["krane.template"], spec.template());
        assert_eq!(container.labels["krane.host.id"], "h1");
        assert!(container.env.contains(&"UNKEY_WORKSPACE_ID=ws".to_string()));
        assert!(container.env.contains(&"UNKEY_GATEWAY_ID=gw".to_string()));
        assert!(container.env.contains(&"UNKEY_IMAGE=img:1".to_string()));
        assert_eq!(container.nano_cpus, 500_000_000);
        assert_eq!(container.memory_bytes, 128 << 20);
    }
}
