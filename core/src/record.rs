//! The projection: one `GatewayRecord` per gateway in the KV bucket, folded from the commands
//! and events streams. It keeps the latest command (by stream sequence) and the latest event per
//! replica (by stream sequence), so the result does not depend on the order in which writers
//! apply them: live writes from the API and the workers, and a replay of both streams, agree.
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
    /// Latest observation of each replica on each host ever seen (replica → host → event),
    /// including replicas no longer wanted and hosts no longer chosen.
    pub replicas: BTreeMap<u32, BTreeMap<String, Observation>>,
}

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
                })
            }
        }
    }

    /// Folds an event (at `seq` on the events stream) into the record. Events never create a
    /// record: a worker applies the command it acts on before it publishes any event.
    pub fn apply_event(record: Option<Self>, seq: u64, event: &InstanceObserved) -> Option<Self> {
        let mut record = record?;
        let hosts = record.replicas.entry(event.replica).or_default();
        let newer = hosts
            .get(&event.host_id)
            .is_none_or(|known| seq > known.seq);
        if newer {
            let observation = Observation {
                seq,
                event: event.clone(),
            };
            hosts.insert(event.host_id.clone(), observation);
        }
        Some(record)
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

    /// What callers see: one instance per wanted replica, as its placed host reports it
    /// (PENDING until that host shows a container of the current template, except that a
    /// container of the previous template keeps RUNNING until a rolling update replaces it),
    /// plus one
    /// TERMINATING instance per unwanted replica whose container may still exist. A replica is
    /// never listed twice, whatever other hosts still report about it.
    pub fn instances(&self) -> Vec<InstanceView> {
        let key = self.key();
        let wanted = self.intent.spec();
        let replicas = wanted.map_or(0, |spec| spec.replicas);
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
                    "waiting for a live host to place it on".to_string(),
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
}
