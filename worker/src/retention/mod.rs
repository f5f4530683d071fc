//! Retention: a fully deleted gateway's events, commands and KV record are purged once its
//! Delete is `--retention` old, so storage is bounded by the gateways that exist. Every
//! `min(retention / 10, 10 min)` (at least 1 s) a round takes its candidates from a source
//! handed in (the records of the worker's index that are gone), decides each one from the log
//! ([`decide::due`], pure) and carries the purge out with `Store::purge_gateway`, at most
//! [`PURGES_PER_ROUND`] a round.
//!
//! A round reads, per round, the events stream's last sequence, then per gateway the latest
//! command (a direct get, with its timestamp) and the record with its revision; each purge
//! step is bounded by those reads (`krane_store::retention`: events, then commands, then the
//! record), so any worker may run rounds at once and die at any line. Against a concurrent
//! CreateGateway of the same id:
//!
//! - stored before the latest-command read: the latest is a Create, nothing is due;
//! - stored after that read, before the commands purge: it has a higher sequence and stays,
//!   and so do its events (stored after it, so after the events read); the record is removed
//!   only if that Create was not folded into it yet, and the API's fold then finds no key and
//!   creates a fresh record (its compare-and-set on the old revision fails, it reads again);
//! - after the commands purge: the subject is empty, so the API's first write (expecting
//!   sequence 0) or its retry of a write expecting the Delete (which fails) stores it; the
//!   record step is the same as above;
//! - after the purge: a new gateway from scratch.
//!
//! The record goes last because it is what makes a gateway a candidate: a crash after the
//! events leaves the Delete on the log and the next round decides as before; a crash after
//! the commands leaves a gone record over an empty subject, which the next round finishes
//! (`due` says so). Removing the record first would leave the commands and events of a
//! crashed purge where nothing looks for them. A subject with no decodable command is left
//! alone, record and all; undecodable messages after the Delete stay (the purge stops at it).
//!
//! The Delete's age is its stream timestamp (the server's clock) against this worker's clock;
//! a skew between the two shifts the retention by as much. `--retention` is never shorter
//! than the commands' dedup window (`config`), so a Create after a purge is never taken for
//! a retry of the gateway's first Create.

mod decide;
#[cfg(test)]
mod tests;

use crate::index::RecordIndex;
use crate::metrics;
use decide::{Seen, catch_up_interval, due, round_interval};
use futures::future::BoxFuture;
use krane_core::names::GatewayKey;
use krane_store::{Result, Store, StoreError};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most gateways purged in one round, so a backlog does not hog NATS; a round that reaches it
/// is followed by another after a second.
pub const PURGES_PER_ROUND: usize = 256;

/// Where a round takes the gateways it looks at; each call is one round's list.
pub type Candidates = Box<dyn Fn() -> BoxFuture<'static, Result<Vec<GatewayKey>>> + Send + Sync>;

/// The candidates as the worker's record index holds them: every gateway whose record is
/// gone (memory; each is then decided from the log).
pub fn gone_records(records: RecordIndex) -> Candidates {
    Box::new(move || {
        let gone = records
            .records()
            .iter()
            .filter(|record| record.is_gone())
            .map(|record| record.key())
            .collect();
        Box::pin(std::future::ready(Ok(gone)))
    })
}

/// Runs rounds until `stop` fires; the first one after one interval.
pub async fn run(
    store: Store,
    candidates: Candidates,
    retention: Duration,
    stop: CancellationToken,
) {
    let interval = round_interval(retention);
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let keys = match candidates().await {
            Ok(keys) => keys,
            Err(error) => {
                warn!(%error, "retention cannot list candidates; the next round retries");
                wait = interval;
                continue;
            }
        };
        wait = match round(&store, keys, retention, PURGES_PER_ROUND).await {
            Ok(purged) if purged >= PURGES_PER_ROUND => {
                info!(
                    purged,
                    "purged as many gateways as one round may; more in a second"
                );
                catch_up_interval()
            }
            Ok(_) => interval,
            Err(error) => {
                warn!(%error, "retention round failed; the next one retries");
                interval
            }
        };
    }
}

/// One round over `keys`: decides each from the log and purges at most `limit`. Returns how
/// many purges it carried out.
pub(crate) async fn round(
    store: &Store,
    keys: Vec<GatewayKey>,
    retention: Duration,
    limit: usize,
) -> Result<usize> {
    // Read before any decision of this round: events stored after it are not purged.
    let events_through = store.events_last_sequence().await?;
    let mut purged = 0;
    for key in keys {
        if purged >= limit {
            break;
        }
        let latest = match store.latest_command_at(&key).await {
            Ok(latest) => latest,
            Err(StoreError::Corrupt { location, reason }) => {
                debug!(namespace = %key.namespace, gateway = %key.gateway_id, %location, %reason, "no readable command; left alone");
                continue;
            }
            Err(error) => return Err(error),
        };
        let stored = match store.load_record(&key).await {
            Ok(stored) => stored,
            Err(StoreError::Corrupt { .. }) => continue,
            Err(error) => return Err(error),
        };
        let seen = Seen {
            events_through,
            latest,
            stored,
        };
        let Some(purge) = due(&key, &seen, SystemTime::now(), retention) else {
            continue;
        };
        let done = store.purge_gateway(&purge).await?;
        purged += 1;
        if done.record {
            // Counted once, by the purger whose record removal took effect.
            metrics::gateway_purged();
        }
        info!(
            namespace = %key.namespace,
            gateway = %key.gateway_id,
            commands = done.commands,
            events = done.events,
            record = done.record,
            "deleted gateway purged"
        );
    }
    Ok(purged)
}
