//! The intent a reconcile works from: the gateway's latest command, read from the commands
//! stream (never from the projection, never the message that woke us), with its unplaced
//! replicas placed first, folded into the record so the events about it have a record to land
//! in; and this host's share of it.

use super::plan::Desired;
use super::{ReconcileError, Reconciler};
use crate::hosts::placing::{Scope, live_with_self, place_if_needed};
use krane_core::names::GatewayKey;
use krane_store::StoredRecord;
use std::time::Duration;

/// How old the view of live hosts may be when replicas are placed.
const HOSTS_FRESH_FOR_PLACING: Duration = Duration::from_millis(250);

/// The latest command's sequence, this host's share of it, and the record as stored.
pub(super) struct CurrentIntent {
    pub seq: u64,
    pub desired: Desired,
    pub stored: StoredRecord,
}

impl Reconciler {
    pub(super) async fn current_intent(
        &self,
        key: &GatewayKey,
    ) -> Result<CurrentIntent, ReconcileError> {
        let worker = &self.worker;
        match worker.store.latest_command(key).await? {
            Some(latest) => {
                if latest.command.has_unplaced() {
                    // Place on the hosts as they are now, not as the last periodic read saw
                    // them (a burst of creates shares one read).
                    worker
                        .hosts
                        .refresh_if_older_than(&worker.store, HOSTS_FRESH_FOR_PLACING)
                        .await;
                }
                let live = live_with_self(&worker.host, worker.hosts.snapshot());
                let placed = place_if_needed(&worker.store, latest, &live, Scope::Unplaced).await?;
                let stored = match placed.projected {
                    Some(stored) => stored,
                    None => {
                        worker
                            .store
                            .project_command(placed.seq, &placed.command)
                            .await?
                    }
                };
                let desired = Desired::for_host(Some(&placed.command), &worker.host.host_id);
                Ok(CurrentIntent {
                    seq: placed.seq,
                    desired,
                    stored,
                })
            }
            // Never commanded (e.g. a container left from a purged stream): nothing is wanted.
            None => Ok(CurrentIntent {
                seq: 0,
                desired: Desired::nothing(),
                stored: worker.store.load_record(key).await?,
            }),
        }
    }
}
