//! Carrying out a plan through the `ContainerRuntime`, `parallelism` actions at a time. Every
//! runtime call is idempotent, so an action repeated after a crash does no harm.

use super::Reconciler;
use super::plan::{Action, Desired};
use crate::runtime::{ReplicaContainer, RuntimeError};
use futures::StreamExt;
use std::collections::BTreeMap;
use tracing::warn;

impl Reconciler {
    /// Runs the actions; returns the error of each replica whose action failed.
    pub(super) async fn execute(
        &self,
        desired: &Desired,
        actions: Vec<Action>,
    ) -> BTreeMap<u32, RuntimeError> {
        let results: Vec<_> = futures::stream::iter(actions)
            .map(|action| async move {
                let result = self.apply(desired, &action).await;
                (action, result)
            })
            .buffer_unordered(self.parallelism)
            .collect()
            .await;
        let mut failures = BTreeMap::new();
        for (action, result) in results {
            if let Err(error) = result {
                warn!(?action, %error, "action failed");
                if let Some(replica) = action.replica() {
                    failures.insert(replica, error);
                }
            }
        }
        failures
    }

    async fn apply(&self, desired: &Desired, action: &Action) -> Result<(), RuntimeError> {
        let runtime = &self.worker.runtime;
        let container_for = |replica: u32| {
            desired
                .spec
                .as_ref()
                .map(|spec| ReplicaContainer::for_replica(spec, replica, &self.worker.host.host_id))
                .ok_or_else(|| RuntimeError::Rejected("no spec to create from".into()))
        };
        match action {
            Action::Create { replica } => runtime.create_and_start(&container_for(*replica)?).await,
            Action::Start { container, .. } => runtime.start(container).await,
            Action::Replace { replica, container } | Action::Roll { replica, container } => {
                runtime.remove(container).await?;
                runtime.create_and_start(&container_for(*replica)?).await
            }
            Action::Remove { container, .. } => runtime.remove(container).await,
        }
    }
}
