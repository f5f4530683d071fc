//! Carrying out a plan through the `ContainerRuntime`, `parallelism` actions at a time. Every
//! runtime call is idempotent, so an action repeated after a crash does no harm.
//!
//! Before acting, the replicas about to be created are announced PENDING, unless the plan
//! only creates missing replicas of a gateway that is not being updated: then the
//! announcement waits [`ANNOUNCE_AFTER`] and is made only if the actions are still running.
//! Most creates finish sooner and are reported once, RUNNING, which saves a record write
//! (and its delivery to every worker's index) per host and gateway.

use super::Reconciler;
use super::plan::{Action, Desired};
use crate::runtime::{ReplicaContainer, RuntimeError};
use futures::StreamExt;
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_store::StoredRecord;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::warn;

/// How long creating missing replicas may run before they are announced PENDING.
pub(super) const ANNOUNCE_AFTER: Duration = Duration::from_millis(200);

/// Whether announcing `actions` may wait: they only create replicas that have no container
/// (nothing serving is taken down), and no update is rolling (its gate counts replicas
/// reported on the new template, so a replacement is announced before it starts).
pub(super) fn announcement_may_wait(actions: &[Action], record: Option<&GatewayRecord>) -> bool {
    let only_creates = actions
        .iter()
        .all(|action| matches!(action, Action::Create { .. }));
    let updating = record.is_some_and(|record| super::rollout::is_updating(&record.intent));
    only_creates && !updating
}

impl Reconciler {
    /// Announces the replicas `actions` create (at once, or after [`ANNOUNCE_AFTER`] if they
    /// still run then, see [`announcement_may_wait`]) and runs the actions. Returns the record
    /// as stored afterwards and the error of each replica whose action failed.
    pub(super) async fn execute_announced(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        actions: Vec<Action>,
    ) -> Result<(StoredRecord, BTreeMap<u32, RuntimeError>), super::ReconcileError> {
        if !announcement_may_wait(&actions, stored.record.as_ref()) {
            let stored = self
                .announce_pending(key, desired, stored, &actions)
                .await?;
            return Ok((stored, self.execute(desired, actions).await));
        }
        let announced = actions.clone();
        let execution = self.execute(desired, actions);
        tokio::pin!(execution);
        tokio::select! {
            failures = &mut execution => return Ok((stored, failures)),
            _ = tokio::time::sleep(ANNOUNCE_AFTER) => {}
        }
        let announcing = self.announce_pending(key, desired, stored, &announced);
        let (stored, failures) = tokio::join!(announcing, execution);
        Ok((stored?, failures))
    }

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
