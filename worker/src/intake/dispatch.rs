//! The dispatch: every command is delivered once to one worker of the fleet (whichever pulls
//! it from the shared dispatch consumer), which addresses it to the hosts it concerns, as its
//! writer named them (`krane_core::routing`), on the work stream. A command that concerns
//! this worker's own host is reconciled here at once instead (addressed to this host only if
//! that did not converge, so its intake retries it under the retry policy), and one with
//! unplaced replicas is reconciled here too, which places them. The dispatch is acknowledged
//! only after the work is stored (and the reconcile here ended), so a worker dying mid-way
//! leaves it to be dispatched again; work is stored once per command and host.
//!
//! So a host receives the commands about its own replicas, not the whole fleet's: a replica
//! moved between two other hosts costs it nothing, and adding hosts does not add to what each
//! one reads.

use super::consumer::{Handler, ack, keep_alive};
use crate::metrics;
use crate::reconcile::Outcome;
use async_nats::jetstream::{AckKind, Message};
use krane_core::command::Command;
use krane_core::names::GatewayKey;
use krane_core::routing;
use krane_store::work;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, info_span, warn};

/// How soon a dispatch whose work could not be stored is tried again.
const RETRY_DISPATCH: Duration = Duration::from_secs(1);

/// Where a dispatched command goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// The other hosts it concerns: work is addressed to each.
    pub elsewhere: BTreeSet<String>,
    /// Reconcile it here: it concerns this host, or it has replicas to place.
    pub here: bool,
}

/// The route of a command that concerns `concerns` (`None`: its writer did not say, so the
/// hosts `everyone` names), dispatched by host `me`.
pub fn route(
    concerns: Option<BTreeSet<String>>,
    everyone: impl FnOnce() -> BTreeSet<String>,
    has_unplaced: bool,
    me: &str,
) -> Route {
    let mut elsewhere = concerns.unwrap_or_else(everyone);
    let concerns_me = elsewhere.remove(me);
    Route {
        elsewhere,
        here: concerns_me || has_unplaced,
    }
}

impl Handler {
    /// Dispatches one delivery of the dispatch consumer; `slot` is held meanwhile.
    pub(super) async fn dispatch(&self, message: Message, slot: OwnedSemaphorePermit) {
        let seq = message.info().map_or(0, |info| info.stream_sequence);
        let Some(command) = self.decoded(&message, seq, 1).await else {
            return;
        };
        let key = command.key();
        // A child of the call (or scheduling decision) that stored the command; the work it
        // addresses carries this span's context on to the hosts.
        let span = info_span!(
            "command",
            otel.kind = "consumer",
            stage = "dispatch",
            namespace = %key.namespace,
            gateway = %key.gateway_id,
            seq,
        );
        krane_platform::telemetry::set_parent_from(&span, message.headers.as_ref());
        self.dispatch_command(&message, &command, &key, seq, slot)
            .instrument(span)
            .await;
    }

    async fn dispatch_command(
        &self,
        message: &Message,
        command: &Command,
        key: &GatewayKey,
        seq: u64,
        slot: OwnedSemaphorePermit,
    ) {
        let me = self.worker.host.host_id.as_str();
        let route = route(
            work::concerns(message.headers.as_ref()),
            || self.everyone(key, command),
            command.has_unplaced(),
            me,
        );
        debug!(elsewhere = ?route.elsewhere, here = route.here, "dispatching");
        let store = &self.worker.store;
        if let Err(error) = store
            .address(key, seq, &message.payload, &route.elsewhere)
            .await
        {
            warn!(%error, "could not address the command; dispatching it again later");
            ack(message, AckKind::Nak(Some(RETRY_DISPATCH))).await;
            return;
        }
        if route.here {
            let reconcile = self.reconciler.reconcile_command(key, seq, command);
            let outcome = tokio::select! {
                outcome = keep_alive(message, self.settings.ack_wait, reconcile) => outcome,
                _ = self.hand_back.cancelled() => {
                    ack(message, AckKind::Nak(None)).await;
                    return;
                }
            };
            if matches!(outcome, Ok(Outcome::Converged)) {
                metrics::command("converged");
            } else {
                // Not done at once (a failure, a rollout's wait, NATS trouble): this host's
                // own intake takes it on, with its retries and delays.
                debug!(
                    ?outcome,
                    "not converged at once; addressing it to this host"
                );
                let here = BTreeSet::from([me.to_string()]);
                if let Err(error) = store.address(key, seq, &message.payload, &here).await {
                    warn!(%error, "could not address the command here; dispatching it again later");
                    ack(message, AckKind::Nak(Some(RETRY_DISPATCH))).await;
                    return;
                }
            }
        }
        drop(slot);
        metrics::dispatched(route.elsewhere.len());
        if let Err(error) = message.double_ack().await {
            warn!(%error, "dispatch ack not confirmed; it will be dispatched again (harmless)");
        }
    }

    /// The hosts a command whose writer did not name them concerns, as far as this worker
    /// knows: those it places replicas on, and those the gateway's record places or reports
    /// replicas on. A host holding a container nothing recorded is found by its own resync.
    fn everyone(&self, key: &GatewayKey, command: &Command) -> BTreeSet<String> {
        let mut hosts: BTreeSet<String> =
            routing::placed_hosts(command).map(str::to_string).collect();
        if let Some(record) = self.worker.records.get(key) {
            hosts.extend(routing::placed_hosts(&record.intent).map(str::to_string));
            hosts.extend(record.live_observations().map(|seen| seen.host_id.clone()));
        }
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn work_goes_to_the_hosts_named_and_this_hosts_share_is_done_here() {
        let routed = route(Some(hosts(&["h1", "h2"])), || hosts(&["all"]), false, "h1");
        assert_eq!(
            routed,
            Route {
                elsewhere: hosts(&["h2"]),
                here: true
            }
        );
        let routed = route(Some(hosts(&["h2"])), || hosts(&["all"]), false, "h1");
        assert!(!routed.here);
    }

    #[test]
    fn unplaced_replicas_are_placed_here_whoever_they_concern() {
        let routed = route(Some(BTreeSet::new()), || hosts(&["all"]), true, "h1");
        assert_eq!(
            routed,
            Route {
                elsewhere: BTreeSet::new(),
                here: true
            }
        );
    }

    #[test]
    fn a_command_that_names_no_hosts_goes_to_everyone() {
        let routed = route(None, || hosts(&["h1", "h2", "h3"]), false, "h2");
        assert_eq!(
            routed,
            Route {
                elsewhere: hosts(&["h1", "h3"]),
                here: true
            }
        );
    }
}
