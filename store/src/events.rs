//! The events stream: what workers observed of each replica, one subject per replica and host.
//! Each batch of observations is stored, then folded into the gateway's record.

use crate::{Result, Store, StoredRecord, encode, unavailable};
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
        let seqs =
            futures::future::try_join_all(events.iter().map(|event| self.publish_event(event)))
                .await?;
        let stored = self
            .update_record(key, known, |record| {
                seqs.iter()
                    .zip(events)
                    .fold(record, |record, (seq, event)| {
                        GatewayRecord::apply_event(record, *seq, event)
                    })
            })
            .await?;
        Ok(Some(stored))
    }
}
