//! The image before the containers: when a plan creates containers, their image must be on
//! the engine first. While it pulls, the replicas waiting for it are reported PENDING with how
//! far the pull got (`pulling <image>: 12.3 MB of 40.0 MB`), at most once per
//! [`PROGRESS_EVERY`]; a replica whose container still serves is reported as it runs, with
//! that reason. When the image cannot be had, only the creations fail: removals and starts go
//! ahead without it.

use super::Reconciler;
use super::plan::{Action, Desired};
use super::report::FailedReplica;
use crate::runtime::{ObservedContainer, PullProgress, RuntimeError, pull};
use krane_core::event::ObservedState;
use krane_core::names::GatewayKey;
use krane_store::StoredRecord;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Least time between two reports of a pull's progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The actions that can go ahead, the failures of the replicas whose image could not be had,
/// and the record as stored after the progress reports.
pub(super) struct ImageReady {
    pub actions: Vec<Action>,
    pub failures: BTreeMap<u32, RuntimeError>,
    pub stored: StoredRecord,
}

impl Reconciler {
    /// Makes sure the image is there when some action creates a container; when it cannot be
    /// had, those actions are dropped and returned as failures of their replicas.
    pub(super) async fn with_image(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        stored: StoredRecord,
        observed: &[ObservedContainer],
        actions: Vec<Action>,
    ) -> ImageReady {
        let ready = |actions, stored| ImageReady {
            actions,
            failures: BTreeMap::new(),
            stored,
        };
        let Some(spec) = desired.spec.as_ref() else {
            return ready(actions, stored);
        };
        if !actions.iter().any(Action::creates) {
            return ready(actions, stored);
        }
        let waiting: Vec<u32> = actions
            .iter()
            .filter(|action| action.creates())
            .filter_map(Action::replica)
            .collect();
        // A command that did not come through the API's image policy is refused here too.
        let (result, stored) = match self.worker.images.check(&spec.image) {
            Ok(()) => {
                self.pull_reporting(key, desired, stored, observed, &spec.image, &waiting)
                    .await
            }
            Err(refusal) => (
                Err(RuntimeError::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: refusal.message,
                }),
                stored,
            ),
        };
        let Err(error) = result else {
            return ready(actions, stored);
        };
        warn!(%error, "image not available; only removals and starts go ahead");
        let (creating, others): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(Action::creates);
        let failures = creating
            .iter()
            .filter_map(Action::replica)
            .map(|replica| (replica, error.clone()))
            .collect();
        ImageReady {
            actions: others,
            failures,
            stored,
        }
    }

    /// Ensures the image, reporting the `waiting` replicas as pulling while it pulls.
    async fn pull_reporting(
        &self,
        key: &GatewayKey,
        desired: &Desired,
        mut stored: StoredRecord,
        observed: &[ObservedContainer],
        image: &str,
        waiting: &[u32],
    ) -> (Result<(), RuntimeError>, StoredRecord) {
        let (progress, mut updates) = tokio::sync::watch::channel(None::<PullProgress>);
        let ensured = self.worker.runtime.ensure_image(image, &progress);
        tokio::pin!(ensured);
        let mut unreported = false;
        let mut next_report = Instant::now();
        loop {
            tokio::select! {
                result = &mut ensured => return (result, stored),
                changed = updates.changed(), if !unreported => {
                    // The sender lives as long as this loop; an error cannot happen.
                    unreported = changed.is_ok();
                }
                () = tokio::time::sleep_until(next_report), if unreported => {
                    let latest = *updates.borrow_and_update();
                    let reason = pull::pulling_reason(image, latest);
                    let pulling: BTreeMap<u32, FailedReplica> = waiting
                        .iter()
                        .map(|replica| {
                            let state = FailedReplica {
                                state: ObservedState::Pending,
                                reason: reason.clone(),
                            };
                            (*replica, state)
                        })
                        .collect();
                    // Progress is news, not a promise: a store that fails now leaves the
                    // reason as it was, and the pull goes on.
                    match self
                        .report_these(key, desired, stored.clone(), observed, &pulling)
                        .await
                    {
                        Ok(after) => stored = after,
                        Err(error) => debug!(%error, "could not report the pull's progress"),
                    }
                    unreported = false;
                    next_report = Instant::now() + PROGRESS_EVERY;
                }
            }
        }
    }
}
