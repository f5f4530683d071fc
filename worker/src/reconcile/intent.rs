//! The intent a reconcile works from: the gateway's latest command, read from the commands
//! stream (never from the projection, never the message that woke us), with its unplaced
//! replicas placed first, folded into the record so the events about it have a record to land
//! in; and this host's share of it.

use super::plan::Desired;
use super::{ReconcileError, Reconciler};
use crate::hosts::placing::{Placed, Scope, live_with_self, place_if_needed};
use krane_core::names::GatewayKey;
use krane_store::StoredRecord;

/// The latest command's sequence, this host's share of it, and the record as stored.
pub(super) struct CurrentIntent {
    pub seq: u64,
    pub desired: Desired,
    pub stored: StoredRecord,
}

impl Reconciler {
    /// Reads the latest command and makes sure the record holds it. `known` is the record as
    /// this reconcile last wrote it, if it wrote one: folding onto it saves a read when the
    /// command is in it already (a conflict on writing reads again).
    pub(super) async fn current_intent(
        &self,
        key: &GatewayKey,
        known: Option<StoredRecord>,
    ) -> Result<CurrentIntent, ReconcileError> {
        let worker = &self.worker;
        match worker.store.latest_command(key).await? {
            Some(latest) => {
                // The view follows the heartbeats as they are written: placing reads memory.
                let live = worker
                    .records
                    .with_reservations(live_with_self(&worker.host, worker.hosts.snapshot()));
                let counted = worker.records.reserved_by(key);
                let placed = place_if_needed(
                    &worker.store,
                    latest,
                    &live,
                    &counted,
                    Scope::Unplaced,
                    &worker.host.author(),
                )
                .await?;
                let stored = match placed.projected {
                    Some(stored) => stored,
                    None => {
                        let known = known.or_else(|| self.indexed_holding(key, &placed));
                        worker
                            .store
                            .project_command_onto(known, placed.seq, &placed.command)
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

    /// The index's copy of the record, when it holds `placed` already and no update rolls:
    /// it saves reading the record. A copy that lags the bucket costs a conflict on the next
    /// write (and a read then); an update's gate reads the other hosts' latest reports.
    fn indexed_holding(&self, key: &GatewayKey, placed: &Placed) -> Option<StoredRecord> {
        if super::rollout::is_updating(&placed.command) {
            return None;
        }
        self.worker.records.stored(key).filter(|stored| {
            stored
                .record
                .as_ref()
                .is_some_and(|r| r.intent_seq >= placed.seq)
        })
    }
}
