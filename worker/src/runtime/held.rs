//! Which gateways this worker last saw its engine hold containers of ([`HeldGateways`]), kept
//! by [`Remembering`], a runtime that passes every call through and notes what it shows.
//!
//! Every host's consumer receives every command; most concern other hosts. For one that places
//! nothing here and that the records show nothing of here, a container of the gateway may
//! still be here (the records lag, or a replica moved away). Asking the engine each time would
//! cost one `ContainerList` per host per command: each host's engine load would grow with the
//! whole fleet's commands. With this memory the answer comes from what the engine showed
//! last; the engine is asked only when the memory cannot rule a container out.
//!
//! The memory errs only towards "may hold": a gateway is noted as held when a container of it
//! is created, listed, or changes on the engine, and forgotten only when listing that gateway
//! shows none and nothing noted it held while the listing ran. Nothing is ruled out before the
//! first listing of this host's containers (the resync's). A container this worker never saw
//! created (another worker process of the same host made it, or someone by hand) is found by
//! the next resync (`--resync-interval`), as any drift is.

use super::{
    ContainerRuntime, ObservedContainer, PullProgressSender, ReplicaContainer, RuntimeError,
};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use krane_core::names::GatewayKey;
use krane_core::placement::Resources;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The gateways this worker last saw its engine hold containers of (shared, cheap to clone).
#[derive(Clone, Default)]
pub struct HeldGateways {
    state: Arc<Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    /// Gateways that may have containers here, each with the mark that last noted it.
    marked: HashMap<GatewayKey, u64>,
    /// The last mark handed out.
    last_mark: u64,
    /// Whether this host's containers were listed once (before that, nothing is ruled out).
    listed: bool,
}

impl Held {
    fn mark(&mut self, key: GatewayKey) {
        self.last_mark += 1;
        self.marked.insert(key, self.last_mark);
    }
}

impl HeldGateways {
    /// True when the engine surely holds no container of `key`, as far as this worker saw:
    /// this host's containers were listed, and nothing of `key` was seen since.
    pub fn surely_none_of(&self, key: &GatewayKey) -> bool {
        self.state
            .lock()
            .is_ok_and(|held| held.listed && !held.marked.contains_key(key))
    }

    fn note(&self, key: GatewayKey) {
        if let Ok(mut held) = self.state.lock() {
            held.mark(key);
        }
    }

    /// The mark `key` has now (`None`: not held); compared after a listing of it.
    fn mark_of(&self, key: &GatewayKey) -> Option<u64> {
        self.state.lock().ok()?.marked.get(key).copied()
    }

    /// A listing of `key` that began when its mark was `before` showed `containers`.
    fn listed_gateway(
        &self,
        key: &GatewayKey,
        before: Option<u64>,
        containers: &[ObservedContainer],
    ) {
        let Ok(mut held) = self.state.lock() else {
            return;
        };
        if !containers.is_empty() {
            held.mark(key.clone());
        } else if held.marked.get(key).copied() == before {
            // Nothing noted it meanwhile (a create while listing would have): none is there.
            held.marked.remove(key);
        }
    }

    /// A listing of this host's containers showed `containers` (gateways not among them are
    /// kept: one may have been created while it ran).
    fn listed_host(&self, containers: &[ObservedContainer]) {
        let Ok(mut held) = self.state.lock() else {
            return;
        };
        for container in containers {
            held.mark(container.gateway.clone());
        }
        held.listed = true;
    }
}

/// A runtime that notes in [`HeldGateways`] what passes through it.
pub struct Remembering {
    inner: Arc<dyn ContainerRuntime>,
    held: HeldGateways,
}

impl Remembering {
    /// `inner` wrapped, and the memory the wrapper keeps (the two belong together: the memory
    /// knows only what passes through this wrapper).
    pub fn wrap(inner: Arc<dyn ContainerRuntime>) -> (Arc<dyn ContainerRuntime>, HeldGateways) {
        let held = HeldGateways::default();
        let wrapped = Self {
            inner,
            held: held.clone(),
        };
        (Arc::new(wrapped), held)
    }
}

#[async_trait]
impl ContainerRuntime for Remembering {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.inner.ping().await
    }

    async fn capacity(&self) -> Result<Resources, RuntimeError> {
        self.inner.capacity().await
    }

    async fn ensure_image(
        &self,
        image: &str,
        progress: &PullProgressSender,
    ) -> Result<(), RuntimeError> {
        self.inner.ensure_image(image, progress).await
    }

    async fn list_gateway(&self, key: &GatewayKey) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let before = self.held.mark_of(key);
        let containers = self.inner.list_gateway(key).await?;
        self.held.listed_gateway(key, before, &containers);
        Ok(containers)
    }

    async fn create_and_start(&self, container: &ReplicaContainer) -> Result<(), RuntimeError> {
        // Noted before it exists: a listing running meanwhile must not forget it.
        self.held.note(container.gateway());
        self.inner.create_and_start(container).await
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.inner.start(name).await
    }

    async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        self.inner.stop(name).await
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.inner.remove(name).await
    }

    async fn list_owned(&self, host_id: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let containers = self.inner.list_owned(host_id).await?;
        self.held.listed_host(&containers);
        Ok(containers)
    }

    fn changes(&self, host_id: &str) -> BoxStream<'static, Result<GatewayKey, RuntimeError>> {
        let held = self.held.clone();
        self.inner
            .changes(host_id)
            .inspect(move |change| {
                if let Ok(key) = change {
                    held.note(key.clone());
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use krane_core::spec::GatewaySpec;

    fn spec(gateway: &str) -> GatewaySpec {
        GatewaySpec {
            gateway_id: gateway.into(),
            ..crate::reconcile::fixtures::spec(1, "img:1")
        }
    }

    fn remembering() -> (Arc<FakeRuntime>, Arc<dyn ContainerRuntime>, HeldGateways) {
        let fake = Arc::new(FakeRuntime::with_images(&["img:1"]));
        let (runtime, held) = Remembering::wrap(fake.clone());
        (fake, runtime, held)
    }

    #[tokio::test]
    async fn nothing_is_ruled_out_before_this_hosts_containers_were_listed() {
        let (_, runtime, held) = remembering();
        let key = spec("a").key();
        runtime.list_gateway(&key).await.expect("listed");
        assert!(
            !held.surely_none_of(&key),
            "one gateway's listing is not the host's"
        );
        runtime.list_owned("h1").await.expect("listed");
        assert!(held.surely_none_of(&key));
    }

    #[tokio::test]
    async fn a_created_or_listed_gateway_may_be_held_until_listing_it_shows_none() {
        let (fake, runtime, held) = remembering();
        let (a, b) = (spec("a"), spec("b"));
        fake.create_and_start(&ReplicaContainer::for_replica(&a, 0, "h1"))
            .await
            .expect("created behind the worker's back");
        runtime.list_owned("h1").await.expect("listed");
        assert!(!held.surely_none_of(&a.key()), "listed");
        runtime
            .create_and_start(&ReplicaContainer::for_replica(&b, 0, "h1"))
            .await
            .expect("created");
        assert!(!held.surely_none_of(&b.key()), "created");
        assert!(
            held.surely_none_of(&spec("c").key()),
            "neither listed nor created"
        );
        // Removing alone does not forget it; listing the gateway afterwards does.
        runtime
            .remove(&b.key().container_name(0))
            .await
            .expect("removed");
        assert!(!held.surely_none_of(&b.key()));
        let listed = runtime.list_gateway(&b.key()).await.expect("listed");
        assert!(listed.is_empty());
        assert!(held.surely_none_of(&b.key()));
        // A failed listing forgets nothing.
        fake.set_down(true);
        assert!(runtime.list_gateway(&a.key()).await.is_err());
        assert!(!held.surely_none_of(&a.key()));
    }

    #[test]
    fn a_listing_does_not_forget_a_gateway_noted_while_it_ran() {
        let held = HeldGateways::default();
        held.listed_host(&[]);
        let key = spec("a").key();
        let before = held.mark_of(&key);
        // A create of the gateway starts while its listing runs; the listing shows none.
        held.note(key.clone());
        held.listed_gateway(&key, before, &[]);
        assert!(!held.surely_none_of(&key));
        // Listed again with nothing noted meanwhile: forgotten.
        let before = held.mark_of(&key);
        held.listed_gateway(&key, before, &[]);
        assert!(held.surely_none_of(&key));
    }
}
