//! Placement: which live host runs which replica. Pure: a worker places a gateway's unplaced
//! replicas when it handles the gateway's command, and the scheduler moves replicas off lost
//! hosts; both decide with this function and store the result as a new command.
//!
//! Rules: a replica whose host is still live stays where it is (no needless moves); every other
//! replica goes to one of the live hosts with the fewest replicas of this gateway — of two of
//! them picked by a hash of gateway, replica and host, the one with fewer containers (the power
//! of two choices). That spreads a gateway within ±1 across hosts when capacity allows, favours
//! emptier hosts, and spreads a burst of gateways over all hosts even while the hosts'
//! container counts (from their heartbeats) lag it. A host at its `max_containers` takes no
//! more, and a replica goes only where its millicores and MiB fit in what is free: the host's
//! capacity less what krane reserved there and what this same decision already put there
//! (spread first, then fit, as Swarm does with reservations). A replica no host can take stays
//! unplaced (`""`) until one can; [`Placement::waiting`] says what is missing.

use crate::names::{GatewayKey, short_hash};
use crate::spec::GatewaySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a worker announces about its host in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub host_id: String,
    /// Host part of the addresses of the instances it runs.
    pub advertise_host: String,
    /// krane containers on the host when the heartbeat was sent (a placer raises it to the
    /// replicas its record index places there, which lag less).
    pub containers: u32,
    /// Most krane containers it accepts; `None` = unlimited.
    pub max_containers: Option<u32>,
    /// False when its engine did not answer the heartbeat's call in time: the host is alive
    /// (its replicas stay) but takes no new ones. Heartbeats of older workers lack it: true.
    #[serde(default = "answers")]
    pub engine_healthy: bool,
    /// CPUs and memory the host offers (the engine's, or the worker's flags). Heartbeats of
    /// older workers lack it: unknown, and then nothing is refused for want of resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Resources>,
    /// The limits of the replicas placed on the host, summed.
    #[serde(default)]
    pub reserved: Resources,
}

fn answers() -> bool {
    true
}

/// CPU millicores and memory MiB: a replica's limits, a host's capacity or what is reserved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub millicores: u64,
    pub mib: u64,
}

impl Resources {
    /// What a replica of `spec` reserves.
    pub fn of(spec: &GatewaySpec) -> Self {
        Self {
            millicores: u64::from(spec.cpu_millicores),
            mib: spec.memory_mib,
        }
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            millicores: self.millicores.saturating_add(other.millicores),
            mib: self.mib.saturating_add(other.mib),
        }
    }

    pub fn minus(self, other: Self) -> Self {
        Self {
            millicores: self.millicores.saturating_sub(other.millicores),
            mib: self.mib.saturating_sub(other.mib),
        }
    }

    pub fn times(self, count: u64) -> Self {
        Self {
            millicores: self.millicores.saturating_mul(count),
            mib: self.mib.saturating_mul(count),
        }
    }

    /// True when `demand` fits in `self`.
    pub fn holds(self, demand: Self) -> bool {
        demand.millicores <= self.millicores && demand.mib <= self.mib
    }

    /// The larger of each.
    pub fn max(self, other: Self) -> Self {
        Self {
            millicores: self.millicores.max(other.millicores),
            mib: self.mib.max(other.mib),
        }
    }
}

impl HostInfo {
    /// What is not reserved; `None` when the capacity is unknown (no limit).
    pub fn free(&self) -> Option<Resources> {
        self.capacity.map(|capacity| capacity.minus(self.reserved))
    }
}

/// Where each replica goes, and why those left unplaced wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `hosts[i]` runs replica `i`; `""`: no host can take it.
    pub hosts: Vec<String>,
    /// Why unplaced replicas wait, when it is for want of CPU or memory: what they need and
    /// the host with most free (`None` otherwise, or when every replica is placed).
    pub waiting: Option<String>,
}

/// Places the `replicas` replicas of `gateway`, each needing `demand`, keeping `current[i]`
/// where that host is live.
pub fn place(
    gateway: &GatewayKey,
    replicas: u32,
    demand: Resources,
    current: &[String],
    hosts: &[HostInfo],
) -> Placement {
    let gateway_key = gateway.kv_key();
    let live: BTreeMap<&str, &HostInfo> = hosts.iter().map(|h| (h.host_id.as_str(), h)).collect();
    let count = usize::try_from(replicas).unwrap_or(0);
    let mut placement: Vec<String> = (0..count)
        .map(|i| {
            current
                .get(i)
                .filter(|host| live.contains_key(host.as_str()))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    // Replicas of this gateway per host, and containers added by this decision.
    let mut mine: BTreeMap<&str, u32> = live.keys().map(|host| (*host, 0)).collect();
    for host in placement.iter().filter(|host| !host.is_empty()) {
        if let Some(n) = mine.get_mut(host.as_str()) {
            *n += 1;
        }
    }
    let mut added: BTreeMap<&str, u32> = BTreeMap::new();
    for (index, slot) in placement.iter_mut().enumerate() {
        if !slot.is_empty() {
            continue;
        }
        let load = |host: &HostInfo| {
            host.containers + added.get(host.host_id.as_str()).copied().unwrap_or(0)
        };
        let fits =
            |host: &HostInfo| free_now(host, &added, demand).is_none_or(|free| free.holds(demand));
        let eligible: Vec<&HostInfo> = live
            .values()
            .copied()
            .filter(|host| {
                host.engine_healthy
                    && host.max_containers.is_none_or(|max| load(host) < max)
                    && fits(host)
            })
            .collect();
        let fewest = eligible
            .iter()
            .map(|host| mine.get(host.host_id.as_str()).copied().unwrap_or(0))
            .min();
        // Two candidates by hash among the hosts with the fewest replicas of this gateway,
        // the less loaded of the two wins: loads from heartbeats lag a burst of creates, and
        // comparing two hosts instead of all keeps every placer from piling onto the one host
        // that looked emptiest (the power of two choices).
        let slot_key = index.to_string();
        let mut candidates: Vec<(&HostInfo, String)> = eligible
            .into_iter()
            .filter(|host| Some(mine.get(host.host_id.as_str()).copied().unwrap_or(0)) == fewest)
            .map(|host| (host, short_hash(&[&gateway_key, &slot_key, &host.host_id])))
            .collect();
        candidates.sort_by(|a, b| a.1.cmp(&b.1));
        let choice = candidates
            .iter()
            .take(2)
            .min_by_key(|(host, order)| (load(host), order.clone()))
            .map(|(host, _)| *host);
        if let Some(host) = choice {
            let id = host.host_id.as_str();
            *mine.entry(id).or_default() += 1;
            *added.entry(id).or_default() += 1;
            *slot = host.host_id.clone();
        }
    }
    let waiting = placement
        .iter()
        .any(String::is_empty)
        .then(|| waiting_for_resources(demand, &live, &added))
        .flatten();
    Placement {
        hosts: placement,
        waiting,
    }
}

/// What is free on `host` once the replicas this decision put there (`added`, each needing
/// `demand`) are counted; `None` when its capacity is unknown.
fn free_now(host: &HostInfo, added: &BTreeMap<&str, u32>, demand: Resources) -> Option<Resources> {
    let placed_now = added.get(host.host_id.as_str()).copied().unwrap_or(0);
    host.free()
        .map(|free| free.minus(demand.times(u64::from(placed_now))))
}

/// Why a replica waits when the only thing missing is room: among the hosts that would take
/// it but for CPU or memory, none has `demand` free. `None` when no such host exists (no live
/// host, every engine unhealthy or every host at its `max_containers`).
fn waiting_for_resources(
    demand: Resources,
    live: &BTreeMap<&str, &HostInfo>,
    added: &BTreeMap<&str, u32>,
) -> Option<String> {
    let short_of_room: Vec<(&str, Resources)> = live
        .values()
        .filter(|host| host.engine_healthy)
        .filter(|host| {
            host.max_containers.is_none_or(|max| {
                host.containers + added.get(host.host_id.as_str()).copied().unwrap_or(0) < max
            })
        })
        .filter_map(|host| Some((host.host_id.as_str(), free_now(host, added, demand)?)))
        .filter(|(_, free)| !free.holds(demand))
        .collect();
    // Most free: the host that covers the larger share of the scarcer of the two.
    let share = |free: &Resources| {
        let of = |have: u64, need: u64| {
            have.saturating_mul(1000)
                .checked_div(need)
                .unwrap_or(u64::MAX)
        };
        of(free.millicores, demand.millicores).min(of(free.mib, demand.mib))
    };
    let (best, free) = short_of_room
        .iter()
        .max_by(|a, b| share(&a.1).cmp(&share(&b.1)).then(b.0.cmp(a.0)))?;
    Some(format!(
        "no host has {} millicores and {} MiB free (most free: {best} with {} millicores, {} MiB)",
        demand.millicores, demand.mib, free.millicores, free.mib
    ))
}

/// The host that places a new gateway's replicas first: one of the live hosts whose engine
/// answers, chosen by a hash of gateway and host, so every worker that sees the same hosts
/// names the same one and the work of placing spreads evenly over the hosts. The others leave
/// it the first delivery of the command (anyone places it when it comes again).
pub fn placer<'a>(gateway: &GatewayKey, hosts: &'a [HostInfo]) -> Option<&'a str> {
    let gateway_key = gateway.kv_key();
    hosts
        .iter()
        .filter(|host| host.engine_healthy)
        .min_by_key(|host| short_hash(&[&gateway_key, "placer", &host.host_id]))
        .map(|host| host.host_id.as_str())
}

/// `hosts` with what is reserved on each recounted for placing one gateway anew: what their
/// figures hold of this gateway (`counted`, as far as the caller knows) taken out, and the
/// replicas it keeps (`current`, each needing `demand`) put back. Heartbeats and a worker's
/// record index lag the command being placed (a worker may handle a gateway's command before
/// its index has seen it), so the gateway's own replicas are counted from the command itself;
/// a figure that counted them anyway only makes the host look fuller, never emptier.
pub fn recount_own(
    hosts: &[HostInfo],
    counted: &BTreeMap<String, Resources>,
    demand: Resources,
    current: &[String],
) -> Vec<HostInfo> {
    hosts
        .iter()
        .map(|host| {
            let kept = current.iter().filter(|id| **id == host.host_id).count();
            let others = host
                .reserved
                .minus(counted.get(&host.host_id).copied().unwrap_or_default());
            HostInfo {
                reserved: others.plus(demand.times(u64::try_from(kept).unwrap_or(u64::MAX))),
                ..host.clone()
            }
        })
        .collect()
}

/// True when `placement` needs deciding again: a replica is unplaced or on a host not live.
pub fn needs_placing(replicas: u32, placement: &[String], hosts: &[HostInfo]) -> bool {
    (0..usize::try_from(replicas).unwrap_or(0)).any(|i| {
        placement
            .get(i)
            .is_none_or(|host| !hosts.iter().any(|live| &live.host_id == host))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, containers: u32, max: Option<u32>) -> HostInfo {
        HostInfo {
            host_id: id.into(),
            advertise_host: format!("{id}.local"),
            containers,
            max_containers: max,
            engine_healthy: true,
            capacity: None,
            reserved: Resources::default(),
        }
    }

    fn sized(id: &str, millicores: u64, mib: u64) -> HostInfo {
        HostInfo {
            capacity: Some(Resources { millicores, mib }),
            ..host(id, 0, None)
        }
    }

    const SMALL: Resources = Resources {
        millicores: 100,
        mib: 32,
    };

    fn gw() -> GatewayKey {
        GatewayKey::new("ns", "gw")
    }

    fn place(replicas: u32, current: &[String], hosts: &[HostInfo]) -> Vec<String> {
        super::place(&gw(), replicas, SMALL, current, hosts).hosts
    }

    fn place_sized(replicas: u32, demand: Resources, hosts: &[HostInfo]) -> Placement {
        super::place(&gw(), replicas, demand, &[], hosts)
    }

    #[test]
    fn a_gateways_own_replicas_count_even_before_the_figures_show_them() {
        let demand = Resources {
            millicores: 400,
            mib: 100,
        };
        let current: Vec<String> = ["h1", "h2", "h1", "h2", ""].map(String::from).to_vec();
        // The figures lag: nothing of this gateway in them yet, 100m of another on h1.
        let mut lagging = [sized("h1", 1000, 256), sized("h2", 1000, 256)];
        lagging[0].reserved = Resources {
            millicores: 100,
            mib: 0,
        };
        let hosts = recount_own(&lagging, &BTreeMap::new(), demand, &current);
        assert_eq!(hosts[0].reserved.millicores, 900);
        assert_eq!(hosts[1].reserved.millicores, 800);
        let placed = super::place(&gw(), 5, demand, &current, &hosts);
        assert_eq!(placed.hosts[4], "", "the fifth fits nowhere");
        // Figures that count them already: taken out, then put back once.
        let mut current_figures = lagging.clone();
        current_figures[1].reserved = demand.times(2);
        let counted = BTreeMap::from([("h2".to_string(), demand.times(2))]);
        let hosts = recount_own(&current_figures, &counted, demand, &current);
        assert_eq!(hosts[1].reserved, demand.times(2));
    }

    #[test]
    fn a_replica_goes_only_where_its_millicores_and_mib_fit() {
        let demand = Resources {
            millicores: 500,
            mib: 256,
        };
        // a has CPU but not memory, b has memory but not CPU, c has both.
        let hosts = [
            sized("a", 4000, 128),
            sized("b", 200, 4096),
            sized("c", 1000, 1024),
        ];
        let placed = place_sized(1, demand, &hosts);
        assert_eq!(placed.hosts, vec!["c"]);
        assert_eq!(placed.waiting, None);
    }

    #[test]
    fn what_this_decision_placed_counts_against_the_free_room() {
        let demand = Resources {
            millicores: 500,
            mib: 256,
        };
        // Room for two on a and one on b: the fourth replica waits.
        let mut a = sized("a", 1500, 1024);
        a.reserved = Resources {
            millicores: 500,
            mib: 0,
        };
        let hosts = [a, sized("b", 600, 300)];
        let placed = place_sized(4, demand, &hosts);
        let counts = counts(&placed.hosts);
        assert_eq!(counts.get("a"), Some(&2), "{placed:?}");
        assert_eq!(counts.get("b"), Some(&1), "{placed:?}");
        assert_eq!(counts.get(""), Some(&1), "{placed:?}");
        assert_eq!(
            placed.waiting.as_deref(),
            Some(
                "no host has 500 millicores and 256 MiB free (most free: b with 100 millicores, 44 MiB)"
            )
        );
    }

    #[test]
    fn spread_stays_the_first_rule_among_the_hosts_that_fit() {
        let hosts = [
            sized("a", 8000, 8192),
            sized("b", 8000, 8192),
            sized("c", 100, 32),
        ];
        let placed = place_sized(4, SMALL, &hosts);
        let counts = counts(&placed.hosts);
        assert_eq!(counts.len(), 3, "{placed:?}");
        assert_eq!(counts.get("c"), Some(&1), "c fits one: {placed:?}");
    }

    #[test]
    fn the_reason_names_the_host_with_most_free_and_what_is_missing() {
        let demand = Resources {
            millicores: 500,
            mib: 256,
        };
        let hosts = [sized("h1", 200, 1024), sized("h2", 100, 4096)];
        let placed = place_sized(1, demand, &hosts);
        assert_eq!(placed.hosts, vec![""]);
        assert_eq!(
            placed.waiting.as_deref(),
            Some(
                "no host has 500 millicores and 256 MiB free (most free: h1 with 200 millicores, 1024 MiB)"
            )
        );
    }

    #[test]
    fn unknown_capacity_refuses_nothing_and_other_waits_say_nothing_of_room() {
        let big = Resources {
            millicores: 1_000_000,
            mib: 1_000_000,
        };
        let placed = place_sized(2, big, &[host("old", 0, None)]);
        assert_eq!(placed.hosts, vec!["old", "old"]);
        // No live host, or only full ones: not a matter of CPU or memory.
        assert_eq!(place_sized(1, SMALL, &[]).waiting, None);
        let full = HostInfo {
            max_containers: Some(0),
            ..sized("a", 1000, 1000)
        };
        assert_eq!(place_sized(1, SMALL, &[full]).waiting, None);
    }

    #[test]
    fn heartbeats_of_older_workers_still_decode() {
        let old =
            r#"{"host_id":"a","advertise_host":"a.local","containers":1,"max_containers":null}"#;
        let decoded: HostInfo = serde_json::from_str(old).expect("decodes");
        assert_eq!(decoded.capacity, None);
        assert_eq!(decoded.reserved, Resources::default());
        assert!(decoded.engine_healthy);
    }

    fn counts(placement: &[String]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for host in placement {
            *counts.entry(host.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn every_view_of_the_same_hosts_names_the_same_placer_and_placing_spreads() {
        let hosts = [host("a", 0, None), host("b", 5, None), host("c", 9, None)];
        let reversed: Vec<HostInfo> = hosts.iter().rev().cloned().collect();
        let mut placers = BTreeMap::new();
        for i in 0..300 {
            let gateway = GatewayKey::new("ns", format!("gw{i}"));
            let placer = placer(&gateway, &hosts).expect("a placer");
            assert_eq!(Some(placer), super::placer(&gateway, &reversed));
            *placers.entry(placer.to_string()).or_insert(0) += 1;
        }
        assert_eq!(placers.len(), 3, "{placers:?}");
        assert!(placers.values().all(|n| *n > 60), "{placers:?}");
        let mut unhealthy = hosts.to_vec();
        for host in &mut unhealthy {
            host.engine_healthy = host.host_id == "b";
        }
        assert_eq!(placer(&gw(), &unhealthy), Some("b"));
        assert_eq!(placer(&gw(), &[]), None);
    }

    #[test]
    fn replicas_spread_evenly_across_live_hosts() {
        let hosts = [host("a", 0, None), host("b", 0, None), host("c", 0, None)];
        let three = counts(&place(3, &[], &hosts));
        assert_eq!(three.len(), 3, "one replica per host: {three:?}");
        let seven = counts(&place(7, &[], &hosts));
        assert_eq!(seven.values().copied().max(), Some(3));
        assert_eq!(seven.values().copied().min(), Some(2));
    }

    #[test]
    fn busier_hosts_get_fewer_new_replicas() {
        let hosts = [host("a", 10, None), host("b", 0, None)];
        assert_eq!(place(1, &[], &hosts), vec!["b"]);
        // Balance within the gateway comes first, then overall load.
        assert_eq!(
            counts(&place(4, &[], &hosts))
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![2, 2]
        );
    }

    #[test]
    fn a_burst_with_stale_unequal_loads_does_not_pile_onto_the_emptiest_host() {
        // Every placer sees the same stale loads during a burst: 0, 10, 20 … containers.
        let hosts: Vec<_> = (0..20u32)
            .map(|i| host(&format!("h{i:02}"), i * 10, None))
            .collect();
        let mut total: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..1000 {
            let gateway = GatewayKey::new("ns", format!("gw{i}"));
            for host in super::place(&gateway, 3, SMALL, &[], &hosts).hosts {
                *total.entry(host).or_default() += 1;
            }
        }
        let average = 3000 / 20;
        assert!(
            total.values().all(|n| *n <= average * 5 / 2),
            "no host takes more than 2.5× its share: {total:?}"
        );
        assert!(
            total.get("h00").copied().unwrap_or(0) > total.get("h19").copied().unwrap_or(0),
            "the less loaded take more: {total:?}"
        );
    }

    #[test]
    fn a_host_at_capacity_takes_no_more() {
        let hosts = [host("a", 2, Some(2)), host("b", 0, Some(1))];
        assert_eq!(place(3, &[], &hosts), vec!["b", "", ""]);
        assert!(needs_placing(3, &place(3, &[], &hosts), &hosts));
    }

    #[test]
    fn live_replicas_stay_and_lost_ones_move() {
        let hosts = [host("a", 1, None), host("c", 0, None)];
        let current = ["a".to_string(), "b".to_string(), "c".to_string()];
        let placed = place(3, &current, &hosts);
        assert_eq!(placed[0], "a");
        assert_eq!(placed[2], "c");
        assert!(placed[1] == "a" || placed[1] == "c");
        assert!(needs_placing(3, &current, &hosts));
        assert!(!needs_placing(3, &placed, &hosts));
    }

    #[test]
    fn scaling_keeps_the_lower_replicas_in_place() {
        let hosts = [host("a", 0, None), host("b", 0, None)];
        let three = place(3, &[], &hosts);
        let five = place(5, &three, &hosts);
        assert_eq!(&five[..3], &three[..]);
        assert_eq!(place(1, &five, &hosts), vec![three[0].clone()]);
    }

    #[test]
    fn a_burst_of_gateways_uses_every_host_even_with_stale_loads() {
        let hosts: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| host(id, 0, None))
            .collect();
        let mut total: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..400 {
            let gateway = GatewayKey::new("ns", format!("gw{i}"));
            for host in super::place(&gateway, 3, SMALL, &[], &hosts).hosts {
                *total.entry(host).or_default() += 1;
            }
        }
        assert_eq!(total.len(), 4, "{total:?}");
        assert!(total.values().all(|n| (250..=350).contains(n)), "{total:?}");
    }

    #[test]
    fn without_live_hosts_nothing_is_placed() {
        assert_eq!(place(2, &["gone".into()], &[]), vec!["", ""]);
    }

    #[test]
    fn a_host_whose_engine_hangs_keeps_its_replicas_but_takes_no_new_ones() {
        let mut sick = host("b", 0, None);
        sick.engine_healthy = false;
        let hosts = [host("a", 5, None), sick];
        let kept = place(2, &["b".to_string()], &hosts);
        assert_eq!(kept, vec!["b".to_string(), "a".to_string()]);
        let fresh = place(2, &[], &hosts);
        assert_eq!(fresh, vec!["a".to_string(), "a".to_string()]);
    }
}
