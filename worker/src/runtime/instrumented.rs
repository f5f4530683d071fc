//! `Instrumented`: a `ContainerRuntime` wrapped so that every call gets a `docker` span (field
//! `call`, and `error` when it fails), a latency observation and, on failure, an error count
//! ([`crate::metrics`]). The binary wraps its `DockerRuntime` in it; the engine event stream
//! (`changes`) is passed through.
//!
//! Calls made outside any span (heartbeats) get a debug-level span, so they do not start
//! traces of their own at the default level.

use super::{
    ContainerRuntime, ObservedContainer, PullProgressSender, ReplicaContainer, RuntimeError,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use krane_core::names::GatewayKey;
use krane_core::placement::Resources;
use std::time::Instant;
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

pub struct Instrumented<R> {
    inner: R,
}

impl<R: ContainerRuntime> Instrumented<R> {
    pub fn new(inner: R) -> Self {
        Self { inner }
    }
}

/// Runs one engine call inside its span, timing and counting it.
async fn timed<T>(
    call: &'static str,
    work: impl Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    let span = if Span::current().is_none() {
        tracing::debug_span!("docker", call, error = Empty, otel.status_code = Empty)
    } else {
        tracing::info_span!("docker", call, error = Empty, otel.status_code = Empty)
    };
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    crate::metrics::docker_call(
        call,
        started.elapsed(),
        result.as_ref().err().map(RuntimeError::kind),
    );
    if let Err(error) = &result {
        span.record("error", display(error));
        span.record("otel.status_code", "ERROR");
    }
    result
}

#[async_trait]
impl<R: ContainerRuntime> ContainerRuntime for Instrumented<R> {
    async fn ping(&self) -> Result<(), RuntimeError> {
        timed("ping", self.inner.ping()).await
    }

    async fn capacity(&self) -> Result<Resources, RuntimeError> {
        timed("capacity", self.inner.capacity()).await
    }

    async fn ensure_image(
        &self,
        image: &str,
        progress: &PullProgressSender,
    ) -> Result<(), RuntimeError> {
        timed("ensure_image", self.inner.ensure_image(image, progress)).await
    }

    async fn list_gateway(&self, key: &GatewayKey) -> Result<Vec<ObservedContainer>, RuntimeError> {
        timed("list_gateway", self.inner.list_gateway(key)).await
    }

    async fn create_and_start(&self, container: &ReplicaContainer) -> Result<(), RuntimeError> {
        timed("create_and_start", self.inner.create_and_start(container)).await
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        timed("start", self.inner.start(name)).await
    }

    async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        timed("stop", self.inner.stop(name)).await
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        timed("remove", self.inner.remove(name)).await
    }

    async fn list_owned(&self, host_id: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        timed("list_owned", self.inner.list_owned(host_id)).await
    }

    fn changes(&self, host_id: &str) -> BoxStream<'static, Result<GatewayKey, RuntimeError>> {
        self.inner.changes(host_id)
    }
}
