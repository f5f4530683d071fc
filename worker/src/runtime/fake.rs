//! `FakeRuntime`: an in-memory `ContainerRuntime` with the same idempotency rules as Docker.
//! Used by unit tests of the reconcile loop, by end-to-end tests that need no engine, and by the
//! pipeline and memory benchmarks. Compiled only with the `fake-runtime` feature (or in tests).

use super::{
    ContainerRuntime, ContainerState, ObservedContainer, PullProgress, PullProgressSender,
    Readiness, ReplicaContainer, RuntimeError,
};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use krane_core::names::{self, GatewayKey};
use krane_core::placement::Resources;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
    /// Calls of `list_gateway` so far (what a real engine answers with a `ContainerList`).
    gateway_listings: AtomicU64,
}

#[derive(Default)]
struct FakeState {
    containers: BTreeMap<String, (ReplicaContainer, ContainerState, u16)>,
    /// Container names by gateway (as Docker's label filter would find them), so listing one
    /// gateway does not scan every container.
    by_gateway: HashMap<GatewayKey, BTreeSet<String>>,
    images: BTreeSet<String>,
    /// Images whose containers always fail to start, with the error they fail with.
    failing: BTreeMap<String, RuntimeError>,
    /// Images whose containers start but never serve (they keep exiting), with the reason.
    crashing: BTreeMap<String, String>,
    /// Images a pull brings, with the progress it reports, one step per interval.
    pullable: BTreeMap<String, (Vec<PullProgress>, Duration)>,
    /// Images whose containers take this long to create and start.
    slow_creates: BTreeMap<String, Duration>,
    next_port: u16,
    /// When set, every call fails as if the engine were down.
    down: bool,
}

impl FakeRuntime {
    /// A runtime on which exactly `images` are present.
    pub fn with_images(images: &[&str]) -> Self {
        let runtime = Self::default();
        if let Ok(mut state) = runtime.state.lock() {
            state.images = images.iter().map(|image| image.to_string()).collect();
            state.next_port = 30000;
        }
        runtime
    }

    /// Makes every container of `image` fail to start with `error` (a poison gateway).
    pub fn fail_image(&self, image: &str, error: RuntimeError) {
        if let Ok(mut state) = self.state.lock() {
            state.images.insert(image.to_string());
            state.failing.insert(image.to_string(), error);
        }
    }

    /// Makes every container of `image` start but keep exiting: it never serves, and says
    /// `reason` (an image that crash-loops).
    pub fn crash_image(&self, image: &str, reason: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.images.insert(image.to_string());
            state.crashing.insert(image.to_string(), reason.to_string());
        }
    }

    /// Makes `image` missing but pullable: a pull reports each of `steps`, `each` apart, then
    /// the image is there.
    pub fn pull_slowly(&self, image: &str, steps: Vec<PullProgress>, each: Duration) {
        if let Ok(mut state) = self.state.lock() {
            state.images.remove(image);
            state.pullable.insert(image.to_string(), (steps, each));
        }
    }

    /// Makes creating and starting a container of `image` take `delay` (a large image
    /// unpacked, a slow engine).
    pub fn create_slowly(&self, image: &str, delay: Duration) {
        if let Ok(mut state) = self.state.lock() {
            state.slow_creates.insert(image.to_string(), delay);
        }
    }

    /// How many times one gateway's containers were listed (`list_gateway`), failed calls
    /// included.
    pub fn gateway_listings(&self) -> u64 {
        self.gateway_listings.load(Ordering::Relaxed)
    }

    pub fn set_down(&self, down: bool) {
        if let Ok(mut state) = self.state.lock() {
            state.down = down;
        }
    }

    /// Names of the running containers, for assertions.
    pub fn running_names(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|state| {
                state
                    .containers
                    .iter()
                    .filter(|(_, (_, container_state, _))| {
                        *container_state == ContainerState::Running
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of every container, for assertions.
    pub fn container_names(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|state| state.containers.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn list_where(
        &self,
        wanted: impl Fn(&ReplicaContainer) -> bool,
    ) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.with_state(|state| {
            Ok(state
                .containers
                .values()
                .filter(|(container, _, _)| wanted(container))
                .map(|entry| observed(state, entry))
                .collect())
        })
    }
    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut FakeState) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| RuntimeError::Unavailable("fake runtime poisoned".into()))?;
        if state.down {
            return Err(RuntimeError::Unavailable("engine is down".into()));
        }
        f(&mut state)
    }
}

fn label(container: &ReplicaContainer, name: &str) -> String {
    container.labels.get(name).cloned().unwrap_or_default()
}

/// A container as the engine shows it; one of a crashing image keeps restarting.
fn observed(
    fake: &FakeState,
    (container, state, port): &(ReplicaContainer, ContainerState, u16),
) -> ObservedContainer {
    let crashing = fake.crashing.get(&container.image);
    let state = match crashing {
        Some(_) if *state == ContainerState::Running => ContainerState::Restarting,
        _ => *state,
    };
    ObservedContainer {
        name: container.name.clone(),
        gateway: container.gateway(),
        replica: label(container, names::LABEL_REPLICA).parse().ok(),
        template: label(container, names::LABEL_TEMPLATE),
        state,
        host_port: (state == ContainerState::Running).then_some(*port),
        readiness: match crashing {
            Some(reason) => Readiness::Failing(reason.clone()),
            None => Readiness::Ready,
        },
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.with_state(|_| Ok(()))
    }

    /// A machine large enough for any test: 64 CPUs, 256 GiB.
    async fn capacity(&self) -> Result<Resources, RuntimeError> {
        self.with_state(|_| {
            Ok(Resources {
                millicores: 64_000,
                mib: 256 * 1024,
            })
        })
    }

    async fn ensure_image(
        &self,
        image: &str,
        progress: &PullProgressSender,
    ) -> Result<(), RuntimeError> {
        let pull = self.with_state(|state| {
            if state.images.contains(image) {
                Ok(None)
            } else if let Some(pull) = state.pullable.get(image) {
                Ok(Some(pull.clone()))
            } else {
                Err(RuntimeError::ImageUnavailable {
                    image: image.into(),
                    reason: "not found".into(),
                })
            }
        })?;
        let Some((steps, each)) = pull else {
            return Ok(());
        };
        for step in steps {
            progress.send_replace(Some(step));
            tokio::time::sleep(each).await;
        }
        self.with_state(|state| {
            state.images.insert(image.to_string());
            Ok(())
        })
    }

    async fn list_gateway(&self, key: &GatewayKey) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.gateway_listings.fetch_add(1, Ordering::Relaxed);
        self.with_state(|state| {
            let names = state.by_gateway.get(key).into_iter().flatten();
            Ok(names
                .filter_map(|name| state.containers.get(name))
                .map(|entry| observed(state, entry))
                .collect())
        })
    }

    async fn create_and_start(&self, container: &ReplicaContainer) -> Result<(), RuntimeError> {
        let delay = self
            .state
            .lock()
            .ok()
            .and_then(|state| state.slow_creates.get(&container.image).copied());
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.with_state(|state| {
            if !state.images.contains(&container.image) {
                return Err(RuntimeError::ImageUnavailable {
                    image: container.image.clone(),
                    reason: "not found".into(),
                });
            }
            if let Some(error) = state.failing.get(&container.image) {
                return Err(error.clone());
            }
            state.next_port = state.next_port.wrapping_add(1);
            let port = state.next_port;
            let entry = state
                .containers
                .entry(container.name.clone())
                .or_insert_with(|| (container.clone(), ContainerState::Created, port));
            entry.1 = ContainerState::Running;
            state
                .by_gateway
                .entry(container.gateway())
                .or_default()
                .insert(container.name.clone());
            Ok(())
        })
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.with_state(|state| match state.containers.get_mut(name) {
            Some(entry) => {
                entry.1 = ContainerState::Running;
                Ok(())
            }
            None => Err(RuntimeError::Rejected(format!("no such container {name}"))),
        })
    }

    async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        self.with_state(|state| {
            if let Some(entry) = state.containers.get_mut(name) {
                entry.1 = ContainerState::Exited;
            }
            Ok(())
        })
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.with_state(|state| {
            if let Some((container, _, _)) = state.containers.remove(name) {
                let gateway = container.gateway();
                if let Some(names) = state.by_gateway.get_mut(&gateway) {
                    names.remove(name);
                    if names.is_empty() {
                        state.by_gateway.remove(&gateway);
                    }
                }
            }
            Ok(())
        })
    }

    async fn list_owned(&self, host_id: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.list_where(|container| {
            container
                .labels
                .get(names::LABEL_HOST_ID)
                .map(String::as_str)
                == Some(host_id)
        })
    }

    fn changes(&self, _host_id: &str) -> BoxStream<'static, Result<GatewayKey, RuntimeError>> {
        // The fake changes only through the worker itself: nothing to follow.
        futures::stream::pending().boxed()
    }
}
