//! Purging what is left of a fully deleted gateway: its events, its commands and its KV record,
//! so storage is bounded by the gateways that exist (the worker's retention loop decides which
//! gateway is due, from the log; this module carries the decision out). Every step is a
//! JetStream purge of one subject (filter) *below a sequence* taken from reads made before
//! the decision, so nothing stored after the decision is removed, and repeating a step (another
//! purger, a retry after a crash) removes nothing more:
//!
//! 1. events: the gateway's subjects up to the events stream's last sequence read before
//!    deciding;
//! 2. commands: the gateway's subject up to and including the Delete decided from;
//! 3. record: the KV key only at the revision read when deciding. It is a purge of the
//!    bucket stream's subject below `revision + 1`, not a KV delete, which would leave a
//!    marker per deleted key for ever; a record written since (a new Create folded in) has a
//!    higher revision and stays.
//!
//! The record goes last: it is what makes a gateway a candidate, so a crash between any two
//! steps leaves the key for the next round to find.

use crate::{Result, Store, unavailable};
use async_nats::jetstream::stream;
use krane_core::names::GatewayKey;
use tracing::debug;

/// What to purge of one gateway, decided from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub key: GatewayKey,
    /// The events stream's last sequence, read before deciding: events up to it go.
    pub events_through: u64,
    /// The Delete decided from: commands up to it go (0: none are left to purge).
    pub commands_through: u64,
    /// The KV revision of the record read when deciding: removed only if still the current one.
    pub record_revision: u64,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub commands: u64,
    /// Whether the record was removed (false: already gone, or written since).
    pub record: bool,
}

impl Store {
    /// The events stream's last sequence (0: none yet). Read before a purge decision: events
    /// stored after it are not purged.
    pub async fn events_last_sequence(&self) -> Result<u64> {
        self.ensure_connected()?;
        let mut events = self.events.clone();
        let info = events.info().await.map_err(unavailable)?;
        Ok(info.state.last_sequence)
    }

    /// Carries out `purge`, events first, then commands, then the record (see the module).
    pub async fn purge_gateway(&self, purge: &Purge) -> Result<Purged> {
        self.ensure_connected()?;
        let key = &purge.key;
        let events = purge_below(&self.events, key.events_filter(), purge.events_through).await?;
        let commands = purge_below(
            &self.commands,
            key.command_subject(),
            purge.commands_through,
        )
        .await?;
        let record_subject = format!("{}{}", self.gateways.prefix, key.kv_key());
        let record =
            purge_below(&self.gateways.stream, record_subject, purge.record_revision).await?;
        let purged = Purged {
            events,
            commands,
            record: record > 0,
        };
        debug!(gateway = %key, ?purged, "gateway purged");
        Ok(purged)
    }
}

/// Removes the messages on `filter` with a sequence up to and including `through` (none when
/// it is 0); returns how many.
async fn purge_below(stream: &stream::Stream, filter: String, through: u64) -> Result<u64> {
    if through == 0 {
        return Ok(0);
    }
    // The server's `seq` is exclusive: "purge below this sequence".
    let response = stream
        .purge()
        .filter(filter)
        .sequence(through.saturating_add(1))
        .await
        .map_err(unavailable)?;
    Ok(response.purged)
}
