//! The worker's context: one plain [`Worker`] value, built once in `run` and handed to the
//! intake and the reconcile (the host loops below it take the parts they use). It holds what they
//! share and nothing they decide.

use crate::hosts::HostIdentity;
use crate::hosts::view::HostsView;
use crate::index::RecordIndex;
use crate::runtime::ContainerRuntime;
use crate::runtime::held::HeldGateways;
use krane_core::images::ImagePolicy;
use krane_store::Store;
use std::sync::Arc;

/// What every loop of the worker shares.
#[derive(Clone)]
pub struct Worker {
    /// The streams and buckets in NATS.
    pub store: Store,
    /// This host's container engine.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The gateways `runtime` was last seen to hold containers of (kept by
    /// [`Remembering`](crate::runtime::held::Remembering) around it; never listed, and so
    /// ruling nothing out, when the runtime is not wrapped).
    pub held: HeldGateways,
    /// This host.
    pub host: HostIdentity,
    /// The live hosts, kept by a watch of the hosts bucket.
    pub hosts: HostsView,
    /// Every gateway record, kept by a watch of the gateways bucket (for scans only).
    pub records: RecordIndex,
    /// The images this worker runs (`--allowed-images`).
    pub images: Arc<ImagePolicy>,
}
