//! The projection: one `GatewayRecord` per gateway in the KV bucket, folded from the commands
//! and events streams. It keeps the latest command (by stream sequence) and the latest event per
//! replica and host (by stream sequence), so the result does not depend on the order in which
//! writers apply them: live writes from the API and the workers, and a replay of both streams,
//! agree.
//!
//! A host that no longer holds a replica (its latest event says `Gone`) is dropped from the
//! replica's observations and kept only as a *closed* pair: the `Gone`'s sequence, a few bytes,
//! so that an older event of that pair folded late cannot bring it back. Closed pairs are
//! bounded ([`MAX_CLOSED`] per record, the oldest forgotten first), so a record's size follows
//! the replicas that exist, not every host that ever held one.
//!
//! GetGateway reads only this record; `instances` turns it into what callers see.

use crate::command::Command;
use crate::event::{InstanceObserved, ObservedState};
use crate::names::GatewayKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    pub namespace: String,
    pub gateway_id: String,
    /// Sequence of `intent` on the commands stream; a command with a higher one replaces it.
    pub intent_seq: u64,
    pub intent: Command,
    /// Latest observation of each replica on each host that may still hold its container
    /// (replica → host → event), including replicas no longer wanted and hosts no longer
    /// chosen. Never a `Gone` one: those are in `closed`.
    pub replicas: BTreeMap<u32, BTreeMap<String, Observation>>,
    /// Pairs whose latest event said `Gone` (replica → host → that event's sequence): an
    /// event of the pair at or below it is old news. At most [`MAX_CLOSED`], the lowest
    /// sequences forgotten first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub closed: BTreeMap<u32, BTreeMap<String, u64>>,
}

/// Closed (replica, host) pairs a record remembers. A forgotten one matters only if an event
/// of that pair older than its `Gone` is folded after more than this many newer `Gone`s — a
/// writer stalled between publishing and folding for that long; what it brings back is a
/// host's stale word about a replica, which that host's next report (or the scheduler, for a
/// lost host) closes again.
pub const MAX_CLOSED: usize = 128;

/// An event and its sequence on the events stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub seq: u64,
    pub event: InstanceObserved,
}

/// What callers are told of an instance (and, summed up, of a gateway). The API maps it to the
/// wire's `krane.v1.GatewayStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Wanted, not running (yet): being placed, pulled, created, started, or retried.
    Pending,
    /// Its container runs with the port published.
    Running,
    /// Could not be provisioned; the reason says why.
    Failed,
    /// No longer wanted; its container may still exist until removed.
    Terminating,
}

/// One instance as GetGateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub id: String,
    pub replica: u32,
    pub address: String,
    pub status: InstanceStatus,
    pub reason: String,
    pub host_id: String,
}

impl GatewayRecord {
    pub fn key(&self) -> GatewayKey {
        GatewayKey::new(&self.namespace, &self.gateway_id)
    }

    /// Folds a command (at `seq` on the commands stream) into the record.
    pub fn apply_command(record: Option<Self>, seq: u64, command: &Command) -> Option<Self> {
        match record {
            Some(mut record) => {
                if seq > record.intent_seq {
                    record.intent_seq = seq;
                    record.intent = command.clone();
                }
                Some(record)
            }
            None => {
                let key = command.key();
                Some(Self {
                    namespace: key.namespace,
                    gateway_id: key.gateway_id,
                    intent_seq: seq,
                    intent: command.clone(),
                    replicas: BTreeMap::new(),
                    closed: BTreeMap::new(),
                })
            }
        }
    }

    /// Folds an event (at `seq` on the events stream) into the record. Events never create a
    /// record: a worker applies the command it acts on before it publishes any event.
    pub fn apply_event(record: Option<Self>, seq: u64, event: &InstanceObserved) -> Option<Self> {
        let mut record = record?;
        record.close_gone_observations();
        let (replica, host) = (event.replica, &event.host_id);
        let known = record
            .replicas
            .get(&replica)
            .and_then(|hosts| hosts.get(host))
            .map(|observation| observation.seq)
            .or_else(|| record.closed.get(&replica)?.get(host).copied());
        if known.is_some_and(|known| seq <= known) {
            return Some(record);
        }
        if event.state == ObservedState::Gone {
            record.forget_observation(replica, host);
            record.close(replica, host.clone(), seq);
        } else {
            record.reopen(replica, host);
            let observation = Observation {
                seq,
                event: event.clone(),
            };
            record
                .replicas
                .entry(replica)
                .or_default()
                .insert(host.clone(), observation);
        }
        Some(record)
    }

    /// Records written before closed pairs existed kept `Gone` observations among the others:
    /// they become closed pairs.
    fn close_gone_observations(&mut self) {
        let gone: Vec<(u32, String, u64)> = self
            .replicas
            .iter()
            .flat_map(|(replica, hosts)| {
                hosts
                    .iter()
                    .filter(|(_, seen)| seen.event.state == ObservedState::Gone)
                    .map(|(host, seen)| (*replica, host.clone(), seen.seq))
            })
            .collect();
        for (replica, host, seq) in gone {
            self.forget_observation(replica, &host);
            self.close(replica, host, seq);
        }
    }

    fn forget_observation(&mut self, replica: u32, host: &str) {
        if let Some(hosts) = self.replicas.get_mut(&replica) {
            hosts.remove(host);
            if hosts.is_empty() {
                self.replicas.remove(&replica);
            }
        }
    }

    fn reopen(&mut self, replica: u32, host: &str) {
        if let Some(hosts) = self.closed.get_mut(&replica) {
            hosts.remove(host);
            if hosts.is_empty() {
                self.closed.remove(&replica);
            }
        }
    }

    /// Closes the pair at `seq`, then forgets the oldest closed pairs beyond [`MAX_CLOSED`].
    fn close(&mut self, replica: u32, host: String, seq: u64) {
        self.closed.entry(replica).or_default().insert(host, seq);
        let count: usize = self.closed.values().map(BTreeMap::len).sum();
        if count <= MAX_CLOSED {
            return;
        }
        let mut by_age: Vec<(u64, u32, String)> = self
            .closed
            .iter()
            .flat_map(|(replica, hosts)| {
                hosts
                    .iter()
                    .map(|(host, seq)| (*seq, *replica, host.clone()))
            })
            .collect();
        by_age.sort();
        for (_, replica, host) in by_age.into_iter().take(count - MAX_CLOSED) {
            self.reopen(replica, &host);
        }
    }

    /// The last observation of `replica` on `host_id`, if any.
    pub fn observed(&self, replica: u32, host_id: &str) -> Option<&InstanceObserved> {
        self.replicas
            .get(&replica)?
            .get(host_id)
            .map(|observation| &observation.event)
    }

    /// Every (replica, host) observed with a container that may still exist.
    pub fn live_observations(&self) -> impl Iterator<Item = &InstanceObserved> {
        self.replicas
            .values()
            .flat_map(BTreeMap::values)
            .map(|observation| &observation.event)
            .filter(|event| event.state != ObservedState::Gone)
    }

    /// True once a deletion finished: GetGateway answers `not_found`.
    pub fn is_gone(&self) -> bool {
        self.intent.spec().is_none() && self.instances().is_empty()
    }

    /// What callers see: one instance per wanted replica (the extra one of an update that
    /// surges included), as its placed host reports it
    /// (PENDING until that host shows a container of the current template, except that a
    /// container of the previous template keeps RUNNING until a rolling update replaces it),
    /// plus one
    /// TERMINATING instance per unwanted replica whose container may still exist. A replica is
    /// never listed twice, whatever other hosts still report about it.
    pub fn instances(&self) -> Vec<InstanceView> {
        let key = self.key();
        let wanted = self.intent.spec();
        // The extra replica of an update that surges is listed like the others.
        let replicas = self.intent.wanted_replicas();
        let template = wanted.map(|spec| spec.template());
        let mut views = Vec::new();
        for replica in 0..replicas {
            let host_id = self.intent.host_of(replica).unwrap_or_default().to_string();
            let seen = self.observed(replica, &host_id);
            let current = seen.filter(|seen| Some(&seen.template) == template.as_ref());
            let previous = seen.filter(|seen| seen.state == ObservedState::Running);
            let (status, address, reason) = match (current, previous) {
                (Some(seen), _) => (
                    status_of(seen.state),
                    seen.address.clone(),
                    seen.reason.clone(),
                ),
                // Still serving the previous spec until its turn in a rolling update (or because
                // the update failed, as its reason says): it keeps its address, so callers keep
                // routing to it.
                (None, Some(old)) => (
                    InstanceStatus::Running,
                    old.address.clone(),
                    if old.reason.is_empty() {
                        "running the previous spec until the rolling update replaces it".to_string()
                    } else {
                        format!("running the previous spec: {}", old.reason)
                    },
                ),
                (None, None) if host_id.is_empty() => (
                    InstanceStatus::Pending,
                    String::new(),
                    match self.intent.waiting() {
                        "" => "waiting for a live host to place it on".to_string(),
                        why => why.to_string(),
                    },
                ),
                (None, None) => (InstanceStatus::Pending, String::new(), String::new()),
            };
            views.push(InstanceView {
                id: key.container_name(replica),
                replica,
                address,
                status,
                reason,
                host_id,
            });
        }
        let mut terminating: BTreeMap<u32, &InstanceObserved> = BTreeMap::new();
        for seen in self
            .live_observations()
            .filter(|seen| seen.replica >= replicas)
        {
            terminating.entry(seen.replica).or_insert(seen);
        }
        for (replica, seen) in terminating {
            views.push(InstanceView {
                id: key.container_name(replica),
                replica,
                address: seen.address.clone(),
                status: InstanceStatus::Terminating,
                reason: String::new(),
                host_id: seen.host_id.clone(),
            });
        }
        views
    }

    /// One status for the whole gateway: RUNNING when every instance runs, FAILED when any
    /// failed, TERMINATING while deleting, else PENDING.
    pub fn overall_status(&self) -> InstanceStatus {
        let instances = self.instances();
        if self.intent.spec().is_none() {
            return InstanceStatus::Terminating;
        }
        if instances.iter().any(|i| i.status == InstanceStatus::Failed) {
            InstanceStatus::Failed
        } else if instances
            .iter()
            .all(|i| i.status == InstanceStatus::Running)
        {
            InstanceStatus::Running
        } else {
            InstanceStatus::Pending
        }
    }
}

fn status_of(state: ObservedState) -> InstanceStatus {
    match state {
        ObservedState::Pending | ObservedState::Gone => InstanceStatus::Pending,
        ObservedState::Running => InstanceStatus::Running,
        ObservedState::Failed => InstanceStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GatewaySpec;

    fn spec(replicas: u32, image: &str) -> GatewaySpec {
        GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: image.into(),
            replicas,
            cpu_millicores: 100,
            memory_mib: 32,
        }
    }

    fn create(replicas: u32) -> Command {
        placed(spec(replicas, "img:1"))
    }

    /// Every replica on host h1.
    fn placed(spec: GatewaySpec) -> Command {
        let placement = vec!["h1".to_string(); spec.replicas as usize];
        Command::create(spec, placement)
    }

    fn seen(replica: u32, state: ObservedState, template: &str) -> InstanceObserved {
        InstanceObserved {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            replica,
            template: template.into(),
            state,
            address: match state {
                ObservedState::Running => format!("10.0.0.1:{}", 30000 + replica),
                _ => String::new(),
            },
            reason: match state {
                ObservedState::Failed => "image not found".into(),
                _ => String::new(),
            },
            host_id: "h1".into(),
        }
    }

    fn statuses(record: &GatewayRecord) -> Vec<InstanceStatus> {
        record.instances().iter().map(|i| i.status).collect()
    }

    #[test]
    fn a_new_create_shows_one_pending_instance_per_replica() {
        let record = GatewayRecord::apply_command(None, 1, &create(3)).expect("record");
        assert_eq!(statuses(&record), vec![InstanceStatus::Pending; 3]);
        let ids: Vec<_> = record.instances().into_iter().map(|i| i.id).collect();
        assert_eq!(ids[0], GatewayKey::new("ns", "gw").container_name(0));
        assert!(record.instances().iter().all(|i| i.address.is_empty()));
        assert_eq!(record.overall_status(), InstanceStatus::Pending);
    }

    #[test]
    fn running_events_of_the_current_template_make_instances_running() {
        let template = spec(2, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(2));
        record = GatewayRecord::apply_event(record, 1, &seen(0, ObservedState::Running, &template));
        record = GatewayRecord::apply_event(record, 2, &seen(1, ObservedState::Running, &template));
        let record = record.expect("record");
        assert_eq!(statuses(&record), vec![InstanceStatus::Running; 2]);
        assert_eq!(record.instances()[1].address, "10.0.0.1:30001");
        assert_eq!(record.overall_status(), InstanceStatus::Running);
    }

    #[test]
    fn running_containers_of_an_old_template_keep_serving_until_replaced() {
        let old = spec(1, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(1));
        record = GatewayRecord::apply_event(record, 1, &seen(0, ObservedState::Running, &old));
        let update = placed(spec(1, "img:2"));
        let record = GatewayRecord::apply_command(record, 2, &update);
        let updating = record.clone().expect("record");
        assert_eq!(statuses(&updating), vec![InstanceStatus::Running]);
        assert_eq!(updating.instances()[0].address, "10.0.0.1:30000");
        assert!(updating.instances()[0].reason.contains("previous spec"));
        // Once its replacement is announced, it is PENDING.
        let new = spec(1, "img:2").template();
        let record = GatewayRecord::apply_event(record, 2, &seen(0, ObservedState::Pending, &new))
            .expect("record");
        assert_eq!(statuses(&record), vec![InstanceStatus::Pending]);
    }

    #[test]
    fn the_extra_replica_of_an_update_that_surges_is_an_instance_until_the_update_is_done() {
        let old = spec(1, "img:1").template();
        let new = spec(1, "img:2").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(1));
        record = GatewayRecord::apply_event(record, 1, &seen(0, ObservedState::Running, &old));
        let rollout = crate::rollout::Rollout {
            policy: crate::rollout::UpdatePolicy {
                max_surge: 1,
                ..Default::default()
            },
            previous: Some(Box::new(spec(1, "img:1"))),
            ..Default::default()
        };
        let placement = vec!["h1".to_string(), "h1".to_string()];
        let surging = Command::create_with(spec(1, "img:2"), placement.clone(), rollout.clone());
        record = GatewayRecord::apply_command(record, 2, &surging);
        record = GatewayRecord::apply_event(record, 2, &seen(1, ObservedState::Running, &new));
        let updating = record.clone().expect("record");
        assert_eq!(statuses(&updating), vec![InstanceStatus::Running; 2]);
        assert_eq!(updating.instances()[1].id, updating.key().container_name(1));
        assert_eq!(updating.overall_status(), InstanceStatus::Running);
        // Done: the extra replica is no longer wanted, TERMINATING until its container goes.
        let done = Command::create_with(
            spec(1, "img:2"),
            placement,
            crate::rollout::Rollout {
                previous: None,
                ..rollout
            },
        );
        let record = GatewayRecord::apply_command(record, 3, &done).expect("record");
        assert_eq!(
            statuses(&record),
            vec![InstanceStatus::Running, InstanceStatus::Terminating]
        );
    }

    #[test]
    fn failures_carry_their_reason() {
        let template = spec(1, "img:1").template();
        let record = GatewayRecord::apply_command(None, 1, &create(1));
        let record =
            GatewayRecord::apply_event(record, 1, &seen(0, ObservedState::Failed, &template))
                .expect("record");
        assert_eq!(record.instances()[0].status, InstanceStatus::Failed);
        assert_eq!(record.instances()[0].reason, "image not found");
        assert_eq!(record.overall_status(), InstanceStatus::Failed);
    }

    #[test]
    fn delete_shows_terminating_until_every_container_is_gone() {
        let template = spec(2, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(2));
        record = GatewayRecord::apply_event(record, 1, &seen(0, ObservedState::Running, &template));
        record = GatewayRecord::apply_event(record, 2, &seen(1, ObservedState::Running, &template));
        record =
            GatewayRecord::apply_command(record, 2, &Command::delete(&GatewayKey::new("ns", "gw")));
        let terminating = record.clone().expect("record");
        assert_eq!(statuses(&terminating), vec![InstanceStatus::Terminating; 2]);
        assert!(!terminating.is_gone());
        record = GatewayRecord::apply_event(record, 3, &seen(0, ObservedState::Gone, ""));
        record = GatewayRecord::apply_event(record, 4, &seen(1, ObservedState::Gone, ""));
        assert!(record.expect("record").is_gone());
    }

    #[test]
    fn delete_of_a_gateway_never_seen_is_gone_at_once() {
        let record =
            GatewayRecord::apply_command(None, 5, &Command::delete(&GatewayKey::new("ns", "gw")))
                .expect("record");
        assert!(record.is_gone());
    }

    #[test]
    fn scale_down_shows_surplus_replicas_terminating_until_removed() {
        let template = spec(3, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(3));
        for replica in 0..3 {
            record = GatewayRecord::apply_event(
                record,
                u64::from(replica) + 1,
                &seen(replica, ObservedState::Running, &template),
            );
        }
        record = GatewayRecord::apply_command(record, 2, &create(1));
        let scaled = record.clone().expect("record");
        assert_eq!(
            statuses(&scaled),
            vec![
                InstanceStatus::Running,
                InstanceStatus::Terminating,
                InstanceStatus::Terminating
            ]
        );
        record = GatewayRecord::apply_event(record, 9, &seen(1, ObservedState::Gone, ""));
        record = GatewayRecord::apply_event(record, 10, &seen(2, ObservedState::Gone, ""));
        assert_eq!(
            statuses(&record.expect("record")),
            vec![InstanceStatus::Running]
        );
    }

    #[test]
    fn stale_commands_and_events_change_nothing() {
        let template = spec(1, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 4, &create(1));
        record = GatewayRecord::apply_event(record, 7, &seen(0, ObservedState::Running, &template));
        let before = record.clone();
        record =
            GatewayRecord::apply_command(record, 3, &Command::delete(&GatewayKey::new("ns", "gw")));
        record = GatewayRecord::apply_event(record, 6, &seen(0, ObservedState::Gone, ""));
        assert_eq!(record, before);
        // Redelivery of the very same messages is a no-op too.
        record = GatewayRecord::apply_command(record, 4, &create(1));
        record = GatewayRecord::apply_event(record, 7, &seen(0, ObservedState::Running, &template));
        assert_eq!(record, before);
    }

    #[test]
    fn events_without_a_record_create_nothing() {
        assert_eq!(
            GatewayRecord::apply_event(None, 1, &seen(0, ObservedState::Running, "t")),
            None
        );
    }

    #[test]
    fn any_interleaving_of_the_two_streams_folds_to_the_same_record() {
        let template = spec(2, "img:1").template();
        let commands = [
            (1, create(2)),
            (2, Command::delete(&GatewayKey::new("ns", "gw"))),
            (3, create(2)),
        ];
        let events = [
            (1, seen(0, ObservedState::Pending, &template)),
            (2, seen(0, ObservedState::Running, &template)),
            (3, seen(0, ObservedState::Gone, "")),
            (4, seen(1, ObservedState::Running, &template)),
            (5, seen(0, ObservedState::Running, &template)),
        ];
        // Commands first, then events (a replay) ...
        let mut replay = None;
        for (seq, command) in &commands {
            replay = GatewayRecord::apply_command(replay, *seq, command);
        }
        for (seq, event) in &events {
            replay = GatewayRecord::apply_event(replay, *seq, event);
        }
        // ... equals a live interleaving with events arriving out of order.
        let mut live = GatewayRecord::apply_command(None, 1, &commands[0].1);
        for index in [1, 0, 3, 4, 2] {
            let (seq, event) = &events[index];
            live = GatewayRecord::apply_event(live, *seq, event);
            if index == 3 {
                live = GatewayRecord::apply_command(live, 3, &commands[2].1);
                live = GatewayRecord::apply_command(live, 2, &commands[1].1);
            }
        }
        assert_eq!(live, replay);
        assert_eq!(
            statuses(&live.expect("record")),
            vec![InstanceStatus::Running; 2]
        );
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = GatewayRecord::apply_command(None, 1, &create(2)).expect("record");
        let bytes = crate::codec::encode(&record).expect("encodes");
        assert_eq!(
            crate::codec::decode::<GatewayRecord>(&bytes).ok(),
            Some(record)
        );
    }

    fn seen_on(replica: u32, host: &str, state: ObservedState, template: &str) -> InstanceObserved {
        InstanceObserved {
            host_id: host.into(),
            address: match state {
                ObservedState::Running => format!("{host}:{}", 30000 + replica),
                _ => String::new(),
            },
            ..seen(replica, state, template)
        }
    }

    #[test]
    fn instances_follow_their_placed_host_and_are_never_counted_twice() {
        let spec = spec(2, "img:1");
        let template = spec.template();
        let first = Command::create(spec.clone(), vec!["a".into(), "b".into()]);
        let mut record = GatewayRecord::apply_command(None, 1, &first);
        record = GatewayRecord::apply_event(
            record,
            1,
            &seen_on(0, "a", ObservedState::Running, &template),
        );
        record = GatewayRecord::apply_event(
            record,
            2,
            &seen_on(1, "b", ObservedState::Running, &template),
        );
        // Host b is lost: replica 1 is placed on a. b's last word still says Running.
        let moved = Command::create(spec, vec!["a".into(), "a".into()]);
        record = GatewayRecord::apply_command(record, 2, &moved);
        let pending = record.clone().expect("record");
        let views = pending.instances();
        assert_eq!(views.len(), 2, "replica 1 is listed once: {views:?}");
        assert_eq!(views[1].status, InstanceStatus::Pending);
        assert_eq!(views[1].host_id, "a");
        record = GatewayRecord::apply_event(
            record,
            3,
            &seen_on(1, "a", ObservedState::Running, &template),
        );
        let views = record.expect("record").instances();
        assert_eq!(views[1].status, InstanceStatus::Running);
        assert_eq!(views[1].address, "a:30001");
    }

    #[test]
    fn unplaced_replicas_say_they_wait_for_a_host() {
        let record =
            GatewayRecord::apply_command(None, 1, &Command::create(spec(2, "img:1"), vec![]))
                .expect("record");
        let views = record.instances();
        assert_eq!(views.len(), 2);
        assert!(
            views
                .iter()
                .all(|v| v.status == InstanceStatus::Pending && v.reason.contains("live host"))
        );
    }

    #[test]
    fn unplaced_replicas_show_what_room_they_wait_for() {
        let why = "no host has 500 millicores and 256 MiB free (most free: h1 with 200 millicores, 1024 MiB)";
        let command = Command::create(spec(2, "img:1"), vec![])
            .placed_waiting(vec!["h1".into(), String::new()], why.into());
        let record = GatewayRecord::apply_command(None, 1, &command).expect("record");
        let views = record.instances();
        assert_eq!(views[0].reason, "");
        assert_eq!(views[1].status, InstanceStatus::Pending);
        assert_eq!(views[1].reason, why);
    }

    #[test]
    fn delete_finishes_when_every_host_reported_gone() {
        let template = spec(1, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(1));
        record = GatewayRecord::apply_event(
            record,
            1,
            &seen_on(0, "a", ObservedState::Running, &template),
        );
        record = GatewayRecord::apply_event(
            record,
            2,
            &seen_on(0, "b", ObservedState::Running, &template),
        );
        record =
            GatewayRecord::apply_command(record, 2, &Command::delete(&GatewayKey::new("ns", "gw")));
        assert_eq!(
            record.clone().expect("record").instances().len(),
            1,
            "one id, once"
        );
        record = GatewayRecord::apply_event(record, 3, &seen_on(0, "a", ObservedState::Gone, ""));
        assert!(!record.clone().expect("record").is_gone());
        record = GatewayRecord::apply_event(record, 4, &seen_on(0, "b", ObservedState::Gone, ""));
        assert!(record.expect("record").is_gone());
    }

    #[test]
    fn a_host_that_no_longer_holds_a_replica_is_dropped_from_the_record() {
        let spec = spec(1, "img:1");
        let template = spec.template();
        let mut record =
            GatewayRecord::apply_command(None, 1, &Command::create(spec.clone(), vec!["a".into()]));
        record = GatewayRecord::apply_event(
            record,
            1,
            &seen_on(0, "a", ObservedState::Running, &template),
        );
        record = GatewayRecord::apply_command(record, 2, &Command::create(spec, vec!["b".into()]));
        record = GatewayRecord::apply_event(
            record,
            2,
            &seen_on(0, "b", ObservedState::Running, &template),
        );
        record = GatewayRecord::apply_event(record, 3, &seen_on(0, "a", ObservedState::Gone, ""));
        let record = record.expect("record");
        let hosts: Vec<&String> = record.replicas[&0].keys().collect();
        assert_eq!(hosts, vec!["b"], "only the host that holds it");
        assert_eq!(record.closed[&0].get("a"), Some(&3));
        assert_eq!(record.instances()[0].status, InstanceStatus::Running);
    }

    #[test]
    fn an_older_event_of_a_closed_pair_folded_late_changes_nothing() {
        let template = spec(1, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(1));
        record = GatewayRecord::apply_event(record, 5, &seen(0, ObservedState::Gone, ""));
        let closed = record.clone();
        record = GatewayRecord::apply_event(record, 4, &seen(0, ObservedState::Running, &template));
        assert_eq!(record, closed);
        // A newer event reopens the pair.
        record = GatewayRecord::apply_event(record, 6, &seen(0, ObservedState::Running, &template));
        let record = record.expect("record");
        assert!(record.closed.is_empty());
        assert_eq!(record.instances()[0].status, InstanceStatus::Running);
    }

    #[test]
    fn closed_pairs_are_bounded_and_the_oldest_forgotten_first() {
        let template = spec(1, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(1));
        let hosts = MAX_CLOSED as u64 + 40;
        for n in 0..hosts {
            let host = format!("h{n}");
            let running = seen_on(0, &host, ObservedState::Running, &template);
            record = GatewayRecord::apply_event(record, 2 * n + 1, &running);
            record = GatewayRecord::apply_event(
                record,
                2 * n + 2,
                &seen_on(0, &host, ObservedState::Gone, ""),
            );
        }
        let record = record.expect("record");
        assert!(record.replicas.is_empty(), "no host holds the replica");
        let closed: Vec<u64> = record
            .closed
            .values()
            .flat_map(|h| h.values().copied())
            .collect();
        assert_eq!(closed.len(), MAX_CLOSED);
        assert_eq!(
            closed.iter().min(),
            Some(&(2 * 40 + 2)),
            "the 40 oldest forgotten"
        );
        let bytes = crate::codec::encode(&record).expect("encodes");
        assert!(bytes.len() < 8 * 1024, "{} bytes", bytes.len());
    }

    #[test]
    fn a_record_stored_with_gone_observations_closes_them_on_the_next_fold() {
        let template = spec(2, "img:1").template();
        let mut record = GatewayRecord::apply_command(None, 1, &create(2)).expect("record");
        let gone = Observation {
            seq: 3,
            event: seen(0, ObservedState::Gone, ""),
        };
        record
            .replicas
            .entry(0)
            .or_default()
            .insert("h1".into(), gone);
        let record = GatewayRecord::apply_event(
            Some(record),
            4,
            &seen(1, ObservedState::Running, &template),
        )
        .expect("record");
        assert!(!record.replicas.contains_key(&0));
        assert_eq!(record.closed[&0].get("h1"), Some(&3));
    }
}
