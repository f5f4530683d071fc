//! The events stream: what workers observed of each replica, one subject per replica and host.
//! Each batch of observations is stored, then folded into the gateway's record.

use crate::{Result, Store, StoredRecord, encode, unavailable};
use krane_core::command::Command;
use krane_core::event::InstanceObserved;
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;

impl Store {
    /// Durably stores an observation; returns its sequence on the events stream.
    async fn publish_event(&self, event: &InstanceObserved) -> Result<u64> {
        self.ensure_connected()?;
        let ack = self
            .jetstream
            .publish(
                event.key().event_subject(event.replica, &event.host_id),
                encode("event", event)?,
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(ack.sequence)
    }

    /// Stores events of one gateway (concurrently: at most one per replica and host, so
    /// their order does not matter) and folds them into its record in one compare-and-set,
    /// starting from `known` if the caller has a recent read (a conflict reads again).
    /// Returns the record as stored.
    pub async fn append_events(
        &self,
        key: &GatewayKey,
        known: Option<StoredRecord>,
        events: &[InstanceObserved],
    ) -> Result<Option<StoredRecord>> {
        if events.is_empty() {
            return Ok(known);
        }
        let seqs = self.publish_events(events).await?;
        let stored = self
            .update_record(key, known, |record| fold_events(record, &seqs, events))
            .await?;
        Ok(Some(stored))
    }

    /// Stores events (concurrently, as [`Self::append_events`]) without folding them; returns
    /// their sequences, in order. The caller folds them with [`Self::fold_into_record`].
    pub async fn publish_events(&self, events: &[InstanceObserved]) -> Result<Vec<u64>> {
        futures::future::try_join_all(events.iter().map(|event| self.publish_event(event))).await
    }

    /// Folds a stored command (if any) and stored events into the gateway's record in one
    /// compare-and-set, starting from `known` if the caller has a recent read: one write,
    /// and one change for every watcher of the bucket, where two folds would make two.
    pub async fn fold_into_record(
        &self,
        key: &GatewayKey,
        known: Option<StoredRecord>,
        command: Option<(u64, &Command)>,
        events: &[(u64, InstanceObserved)],
    ) -> Result<StoredRecord> {
        let (seqs, events): (Vec<u64>, Vec<InstanceObserved>) = events.iter().cloned().unzip();
        self.update_record(key, known, |record| {
            let record = match command {
                Some((seq, command)) => GatewayRecord::apply_command(record, seq, command),
                None => record,
            };
            fold_events(record, &seqs, &events)
        })
        .await
    }
}

/// `record` with the events (stored at `seqs`) folded in.
fn fold_events(
    record: Option<GatewayRecord>,
    seqs: &[u64],
    events: &[InstanceObserved],
) -> Option<GatewayRecord> {
    seqs.iter()
        .zip(events)
        .fold(record, |record, (seq, event)| {
            GatewayRecord::apply_event(record, *seq, event)
        })
}
