//! Judging hosts lost, pure, from when each host was last heard. A host unheard for a
//! `--host-timeout` is lost — unless this worker has not had two host timeouts of good reads
//! since it (or NATS) came back, because a broker outage silences every heartbeat at once and
//! must not be read as the loss of every host; and unless more than half of the known hosts
//! have gone *quiet* (unheard for half a host timeout, more than one heartbeat interval) at
//! once, which says more about the network or NATS than about the hosts (Kubernetes' node
//! lifecycle controller stops evicting in a fully disrupted zone for the same reason). After a
//! disruption, no host is lost for one more host timeout: the quiet hosts come back one by one
//! (each at its next heartbeat), and the last ones must not be judged lost, alone, in between.
//!
//! Counting quiet hosts, not only expired ones, is what judges hosts that went quiet together
//! together without waiting: their last heartbeats are up to one interval apart, so when the
//! first one expires the others have been unheard for at least two thirds of the timeout and
//! already count as quiet. A lone dead host is therefore lost the moment its heartbeat is a
//! host timeout old. Hosts not heard of for ten host timeouts are forgotten.
//!
//! A host counts as known once this worker heard it heartbeat *or* found it named by a record
//! (a replica placed on it, an instance it reported): a worker started after a host died has
//! never heard it, and must still judge it — by the same rules, as if last heard when it was
//! learnt — before its replicas move. Only hosts judged lost lose their replicas.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How many host timeouts a host stays known after it was last heard.
const FORGET_AFTER_TIMEOUTS: u32 = 10;
/// How many host timeouts of good reads must follow a reconnect before a missing host is lost:
/// one for the host to heartbeat, one more for its own reconnect, which backs off while the
/// broker is away and may come seconds after this worker's.
const GRACE_TIMEOUTS: u32 = 2;

/// What the scheduler may do about the hosts it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Every known host is live.
    Steady,
    /// These hosts are lost: their replicas may be moved.
    Lost(Vec<String>),
    /// Hosts look lost, but too soon after a reconnect (or failed reads) to tell: move nothing.
    TooSoon(Vec<String>),
    /// More than half of the known hosts are quiet: move nothing, say so loudly.
    Disrupted { quiet: Vec<String>, known: usize },
}

/// The hosts this worker knows, and when each was last heard.
pub struct Liveness {
    host_timeout: Duration,
    last_heard: BTreeMap<String, Instant>,
    /// When a judgement last found the known hosts disrupted.
    last_disrupted: Option<Instant>,
}

impl Liveness {
    pub fn new(host_timeout: Duration) -> Self {
        Self {
            host_timeout,
            last_heard: BTreeMap::new(),
            last_disrupted: None,
        }
    }

    /// Unheard this long, a host is quiet: more than one heartbeat interval (a third of the
    /// timeout) with room for a late heartbeat.
    fn quiet_after(&self) -> Duration {
        self.host_timeout / 2
    }

    /// Notes heartbeats: each host was heard at the instant given (a later one wins).
    pub fn heard<'a>(&mut self, heard: impl IntoIterator<Item = (&'a str, Instant)>) {
        for (host, at) in heard {
            let last = self.last_heard.entry(host.to_string()).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// Makes hosts named by the records known, as if heard `now` (hosts already known keep
    /// their last heartbeat): a host nobody heard is then judged like one that stopped now.
    pub fn learn<'a>(&mut self, named: impl IntoIterator<Item = &'a str>, now: Instant) {
        for host in named {
            if !host.is_empty() && !self.last_heard.contains_key(host) {
                self.last_heard.insert(host.to_string(), now);
            }
        }
    }

    /// How long from `now` until the next known host that has not expired yet would (if not
    /// heard again): the scheduler looks again at that moment rather than up to a whole
    /// interval later. `None` when no host is waiting to expire.
    pub fn until_next_expiry(&self, now: Instant) -> Option<Duration> {
        self.last_heard
            .values()
            .map(|heard| (*heard + self.host_timeout).saturating_duration_since(now))
            .filter(|left| !left.is_zero())
            .min()
    }

    /// Judges the known hosts at `now`, given how long reads of the hosts have been good
    /// without a break (`None`: they are not now).
    pub fn judge(&mut self, now: Instant, reading_well_for: Option<Duration>) -> Judgement {
        let forget_after = self.host_timeout * FORGET_AFTER_TIMEOUTS;
        self.last_heard
            .retain(|_, heard| now.saturating_duration_since(*heard) < forget_after);
        let unheard_for = |heard: &Instant| now.saturating_duration_since(*heard);
        let expired: Vec<String> = self
            .last_heard
            .iter()
            .filter(|(_, heard)| unheard_for(heard) >= self.host_timeout)
            .map(|(host, _)| host.clone())
            .collect();
        if expired.is_empty() {
            return Judgement::Steady;
        }
        if reading_well_for.is_none_or(|good| good < self.host_timeout * GRACE_TIMEOUTS) {
            return Judgement::TooSoon(expired);
        }
        let quiet: Vec<String> = self
            .last_heard
            .iter()
            .filter(|(_, heard)| unheard_for(heard) >= self.quiet_after())
            .map(|(host, _)| host.clone())
            .collect();
        if quiet.len() * 2 > self.last_heard.len() {
            self.last_disrupted = Some(now);
            return Judgement::Disrupted {
                known: self.last_heard.len(),
                quiet,
            };
        }
        if self
            .last_disrupted
            .is_some_and(|at| now.saturating_duration_since(at) < self.host_timeout)
        {
            return Judgement::TooSoon(expired);
        }
        Judgement::Lost(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(6);

    fn well() -> Option<Duration> {
        Some(TIMEOUT * (GRACE_TIMEOUTS + 1))
    }

    /// Liveness that heard each host at `start + offset`.
    fn heard_at(start: Instant, hosts: &[(&str, Duration)]) -> Liveness {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.heard(hosts.iter().map(|(host, offset)| (*host, start + *offset)));
        liveness
    }

    const ZERO: Duration = Duration::ZERO;

    #[test]
    fn the_next_expiry_is_that_of_the_host_heard_least_recently_but_not_expired() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let liveness = heard_at(start, &[("a", ZERO), ("b", second), ("c", second * 2)]);
        assert_eq!(liveness.until_next_expiry(start), Some(TIMEOUT));
        assert_eq!(
            liveness.until_next_expiry(start + second / 2),
            Some(TIMEOUT - second / 2)
        );
        // a expired already (judging it is the scheduler's): b is next.
        assert_eq!(liveness.until_next_expiry(start + TIMEOUT), Some(second));
        assert_eq!(liveness.until_next_expiry(start + TIMEOUT * 2), None);
        assert_eq!(Liveness::new(TIMEOUT).until_next_expiry(start), None);
    }

    #[test]
    fn hosts_heard_within_the_timeout_are_steady() {
        let start = Instant::now();
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO)]);
        let later = start + TIMEOUT - Duration::from_millis(1);
        assert_eq!(liveness.judge(later, well()), Judgement::Steady);
    }

    #[test]
    fn a_lone_host_unheard_for_the_timeout_is_lost_at_once() {
        let start = Instant::now();
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", ZERO)]);
        // a and b keep heartbeating; c stopped.
        liveness.heard([("a", start + TIMEOUT), ("b", start + TIMEOUT)]);
        assert_eq!(
            liveness.judge(start + TIMEOUT, well()),
            Judgement::Lost(vec!["c".into()])
        );
    }

    #[test]
    fn hosts_that_go_quiet_together_are_judged_together() {
        let start = Instant::now();
        // b and c die together; b's last heartbeat was one interval before c's.
        let interval = TIMEOUT / 3;
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", interval)]);
        liveness.heard([("a", start + TIMEOUT)]);
        // When b expires, c is quiet already: two of three, a disruption, nothing moves.
        let judged = liveness.judge(start + TIMEOUT, well());
        assert_eq!(
            judged,
            Judgement::Disrupted {
                quiet: vec!["b".into(), "c".into()],
                known: 3
            }
        );
    }

    #[test]
    fn a_late_heartbeat_is_not_quiet() {
        let start = Instant::now();
        let late = TIMEOUT / 3 + Duration::from_millis(500);
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", TIMEOUT - late)]);
        liveness.heard([("a", start + TIMEOUT)]);
        // b is lost; c heartbeats late but is not quiet; a disruption it is not.
        assert_eq!(
            liveness.judge(start + TIMEOUT, well()),
            Judgement::Lost(vec!["b".into()])
        );
    }

    #[test]
    fn nothing_is_lost_until_two_host_timeouts_after_reconnecting() {
        let start = Instant::now();
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", ZERO)]);
        liveness.heard([("a", start + TIMEOUT)]);
        // NATS was away: every heartbeat stopped; this worker is back for a moment only.
        let just_back = Some(TIMEOUT + Duration::from_secs(1));
        assert_eq!(
            liveness.judge(start + TIMEOUT, just_back),
            Judgement::TooSoon(vec!["b".into(), "c".into()])
        );
        assert!(matches!(
            liveness.judge(start + TIMEOUT, None),
            Judgement::TooSoon(_)
        ));
        // They heartbeat again within the grace: nothing was ever moved.
        liveness.heard([("b", start + TIMEOUT * 2), ("c", start + TIMEOUT * 2)]);
        liveness.heard([("a", start + TIMEOUT * 2)]);
        assert_eq!(
            liveness.judge(start + TIMEOUT * 2, well()),
            Judgement::Steady
        );
    }

    #[test]
    fn more_than_half_quiet_moves_nothing() {
        let start = Instant::now();
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", ZERO)]);
        liveness.heard([("a", start + TIMEOUT)]);
        assert_eq!(
            liveness.judge(start + TIMEOUT, well()),
            Judgement::Disrupted {
                quiet: vec!["b".into(), "c".into()],
                known: 3
            }
        );
    }

    #[test]
    fn hosts_back_from_a_disruption_one_by_one_leave_the_last_a_host_timeout() {
        let start = Instant::now();
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", ZERO)]);
        liveness.heard([("a", start + TIMEOUT)]);
        let disrupted = start + TIMEOUT;
        assert!(matches!(
            liveness.judge(disrupted, well()),
            Judgement::Disrupted { .. }
        ));
        // b heartbeats again; c not yet: one quiet host of three is no disruption, but c
        // was quiet with the others and gets a host timeout to come back.
        let b_back = disrupted + TIMEOUT / 3;
        liveness.heard([("a", b_back), ("b", b_back)]);
        assert_eq!(
            liveness.judge(b_back, well()),
            Judgement::TooSoon(vec!["c".into()])
        );
        // Still unheard a host timeout after the disruption: c is lost.
        let later = disrupted + TIMEOUT;
        liveness.heard([("a", later), ("b", later)]);
        assert_eq!(
            liveness.judge(later, well()),
            Judgement::Lost(vec!["c".into()])
        );
    }

    #[test]
    fn a_host_only_named_by_records_is_judged_like_one_that_stopped_when_learnt() {
        let start = Instant::now();
        // A fresh worker hears a, b and d; records also name c, which it never heard.
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("d", ZERO)]);
        liveness.learn(["a", "b", "c", "d"], start);
        let beat = |liveness: &mut Liveness, at: Instant| {
            liveness.heard([("a", at), ("b", at), ("d", at)]);
        };
        beat(&mut liveness, start + TIMEOUT / 2);
        assert_eq!(
            liveness.judge(start + TIMEOUT / 2, well()),
            Judgement::Steady
        );
        // Learning it again does not restart its clock.
        liveness.learn(["c"], start + TIMEOUT / 2);
        beat(&mut liveness, start + TIMEOUT);
        assert_eq!(
            liveness.judge(start + TIMEOUT, well()),
            Judgement::Lost(vec!["c".into()])
        );
    }

    #[test]
    fn a_fresh_worker_judges_no_named_host_lost_before_its_grace() {
        let start = Instant::now();
        let mut liveness = heard_at(start + TIMEOUT, &[("a", ZERO), ("b", ZERO), ("d", ZERO)]);
        liveness.learn(["c"], start);
        let just_started = Some(Duration::from_secs(1));
        assert_eq!(
            liveness.judge(start + TIMEOUT, just_started),
            Judgement::TooSoon(vec!["c".into()])
        );
    }

    #[test]
    fn hosts_gone_for_long_are_forgotten() {
        let start = Instant::now();
        let mut liveness = heard_at(start, &[("a", ZERO), ("b", ZERO), ("c", ZERO)]);
        let later = start + TIMEOUT * (FORGET_AFTER_TIMEOUTS + 1);
        liveness.heard([("a", later)]);
        assert_eq!(liveness.judge(later, well()), Judgement::Steady);
    }
}
