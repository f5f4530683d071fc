//! Judging hosts lost, pure: a host that heartbeated before and is missing from the hosts
//! bucket now is lost — unless this worker has not had two `--host-timeout`s of good reads
//! since it (or NATS) came back, because a broker outage silences every heartbeat at once and
//! must not be read as the loss of every host; and unless more than half of the known hosts
//! look lost at once, which says more about the network or NATS than about the hosts
//! (Kubernetes' node lifecycle controller stops evicting in a fully disrupted zone for the
//! same reason). A missing host counts as lost only after one heartbeat interval, so hosts
//! that went quiet together are judged together. Hosts not seen for ten host timeouts are
//! forgotten.
//!
//! A host counts as known once this worker saw it heartbeat *or* found it named by a record
//! (a replica placed on it, an instance it reported): a worker started after a host died has
//! never seen its heartbeat, and must still judge it — by the same rules — before its
//! replicas move. Only hosts judged lost lose their replicas; a host that is merely missing
//! from this worker's view keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How many host timeouts a host stays known after its last heartbeat.
const FORGET_AFTER_TIMEOUTS: u32 = 10;
/// How many host timeouts of good reads must follow a reconnect before a missing host is lost:
/// one for the host to heartbeat, one more for its own reconnect, which backs off while the
/// broker is away and may come seconds after this worker's.
const GRACE_TIMEOUTS: u32 = 2;

/// What the scheduler may do about the hosts it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Every known host is live.
    Steady,
    /// These hosts are lost: their replicas may be moved.
    Lost(Vec<String>),
    /// Hosts look lost, but too soon after a reconnect (or failed reads) to tell: move nothing.
    TooSoon(Vec<String>),
    /// More than half of the known hosts look lost: move nothing, say so loudly.
    Disrupted { lost: Vec<String>, known: usize },
}

/// The hosts this worker has seen heartbeat, and when last.
pub struct Liveness {
    host_timeout: Duration,
    known: BTreeMap<String, Instant>,
    /// When each missing host was first seen missing.
    missing_since: BTreeMap<String, Instant>,
}

impl Liveness {
    pub fn new(host_timeout: Duration) -> Self {
        Self {
            host_timeout,
            known: BTreeMap::new(),
            missing_since: BTreeMap::new(),
        }
    }

    /// How long a host must have been missing before it counts as lost: one heartbeat
    /// interval (a third of the host timeout), so hosts that went quiet together — whose
    /// entries expire up to one interval apart — are all missing by then and judged together.
    fn confirm_after(&self) -> Duration {
        self.host_timeout / 3
    }

    /// Makes hosts named by the records known, as if they had been seen `now` (hosts already
    /// known keep their last sighting): a host nobody saw heartbeat is then judged like one
    /// that stopped now, after the same grace and confirmation.
    pub fn learn<'a>(&mut self, named: impl IntoIterator<Item = &'a str>, now: Instant) {
        for host in named {
            if !host.is_empty() && !self.known.contains_key(host) {
                self.known.insert(host.to_string(), now);
            }
        }
    }

    /// Judges the hosts given the `live` ones read `now`, and how long reads of the hosts
    /// bucket have been good without a break (`None`: the last one failed).
    pub fn judge(
        &mut self,
        live: &BTreeSet<String>,
        now: Instant,
        reading_well_for: Option<Duration>,
    ) -> Judgement {
        for host in live {
            self.known.insert(host.clone(), now);
        }
        let forget_after = self.host_timeout * FORGET_AFTER_TIMEOUTS;
        self.known
            .retain(|_, seen| now.saturating_duration_since(*seen) < forget_after);
        let missing: Vec<String> = self
            .known
            .keys()
            .filter(|host| !live.contains(*host))
            .cloned()
            .collect();
        self.missing_since.retain(|host, _| missing.contains(host));
        for host in &missing {
            self.missing_since.entry(host.clone()).or_insert(now);
        }
        if missing.is_empty() {
            return Judgement::Steady;
        }
        if reading_well_for.is_none_or(|good| good < self.host_timeout * GRACE_TIMEOUTS) {
            return Judgement::TooSoon(missing);
        }
        if missing.len() * 2 > self.known.len() {
            return Judgement::Disrupted {
                known: self.known.len(),
                lost: missing,
            };
        }
        let confirm_after = self.confirm_after();
        let lost: Vec<String> = missing
            .iter()
            .filter(|host| {
                self.missing_since
                    .get(*host)
                    .is_some_and(|since| now.saturating_duration_since(*since) >= confirm_after)
            })
            .cloned()
            .collect();
        if lost.is_empty() {
            return Judgement::TooSoon(missing);
        }
        Judgement::Lost(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(4);

    fn hosts(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    fn well() -> Option<Duration> {
        Some(TIMEOUT * (GRACE_TIMEOUTS + 1))
    }

    #[test]
    fn all_known_hosts_live_is_steady() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        assert_eq!(
            liveness.judge(&hosts(&["a", "b"]), now, well()),
            Judgement::Steady
        );
    }

    #[test]
    fn one_host_of_three_missing_is_lost() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        liveness.judge(&hosts(&["a", "b", "c"]), now, well());
        // Just missing: wait one heartbeat interval, others that went quiet with it follow.
        assert_eq!(
            liveness.judge(&hosts(&["a", "b"]), now + TIMEOUT, well()),
            Judgement::TooSoon(vec!["c".into()])
        );
        assert_eq!(
            liveness.judge(&hosts(&["a", "b"]), now + TIMEOUT * 2, well()),
            Judgement::Lost(vec!["c".into()])
        );
    }

    #[test]
    fn hosts_that_go_quiet_together_are_judged_together() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        liveness.judge(&hosts(&["a", "b", "c"]), now, well());
        // b's entry expires first, c's a heartbeat interval later: never moved one by one.
        let first = liveness.judge(&hosts(&["a", "c"]), now + TIMEOUT, well());
        assert_eq!(first, Judgement::TooSoon(vec!["b".into()]));
        let both = liveness.judge(&hosts(&["a"]), now + TIMEOUT + TIMEOUT / 4, well());
        assert!(matches!(both, Judgement::Disrupted { .. }), "{both:?}");
    }

    #[test]
    fn nothing_is_lost_until_two_host_timeouts_after_reconnecting() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        liveness.judge(&hosts(&["a", "b", "c"]), now, well());
        // NATS was away: the heartbeats of b and c expired meanwhile.
        let just_back = Some(TIMEOUT + Duration::from_secs(1));
        assert_eq!(
            liveness.judge(&hosts(&["a"]), now + TIMEOUT, just_back),
            Judgement::TooSoon(vec!["b".into(), "c".into()])
        );
        assert!(matches!(
            liveness.judge(&hosts(&["a"]), now + TIMEOUT, None),
            Judgement::TooSoon(_)
        ));
        // They heartbeat again within the timeout: nothing was ever moved.
        assert_eq!(
            liveness.judge(&hosts(&["a", "b", "c"]), now + TIMEOUT * 2, well()),
            Judgement::Steady
        );
    }

    #[test]
    fn more_than_half_lost_at_once_moves_nothing() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        liveness.judge(&hosts(&["a", "b", "c"]), now, well());
        assert_eq!(
            liveness.judge(&hosts(&["a"]), now + TIMEOUT, well()),
            Judgement::Disrupted {
                lost: vec!["b".into(), "c".into()],
                known: 3
            }
        );
    }

    #[test]
    fn a_host_only_named_by_records_is_judged_like_one_that_stopped_now() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        // A fresh worker: it sees a and b heartbeat; records also name c, which it never saw.
        liveness.learn(["a", "b", "c"], now);
        assert_eq!(
            liveness.judge(&hosts(&["a", "b"]), now, well()),
            Judgement::TooSoon(vec!["c".into()])
        );
        // Learning it again does not restart its clock.
        liveness.learn(["c"], now + TIMEOUT);
        assert_eq!(
            liveness.judge(&hosts(&["a", "b"]), now + TIMEOUT, well()),
            Judgement::Lost(vec!["c".into()])
        );
    }

    #[test]
    fn a_fresh_worker_judges_no_named_host_lost_before_its_grace() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        liveness.learn(["a", "b", "c"], now);
        let just_started = Some(Duration::from_secs(1));
        assert_eq!(
            liveness.judge(&hosts(&["a", "b"]), now + TIMEOUT, just_started),
            Judgement::TooSoon(vec!["c".into()])
        );
    }

    #[test]
    fn hosts_gone_for_long_are_forgotten() {
        let mut liveness = Liveness::new(TIMEOUT);
        let now = Instant::now();
        liveness.judge(&hosts(&["a", "b", "c"]), now, well());
        let later = now + TIMEOUT * (FORGET_AFTER_TIMEOUTS + 1);
        assert_eq!(
            liveness.judge(&hosts(&["a"]), later, well()),
            Judgement::Steady
        );
    }
}
