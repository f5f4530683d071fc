//! Properties of the projection's fold: the order in which live writers and a replay apply a
//! gateway's commands and events does not change the record (as long as some command comes
//! first: events never create a record).

use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
use krane_core::record::GatewayRecord;
use krane_core::spec::GatewaySpec;
use proptest::prelude::*;

/// One stored message with its stream sequence.
#[derive(Debug, Clone)]
enum Stored {
    Command(u64, Command),
    Event(u64, InstanceObserved),
}

fn command() -> impl Strategy<Value = Command> {
    let create = (
        1u32..5,
        prop::sample::select(vec!["img:1", "img:2"]),
        prop::collection::vec(prop::sample::select(vec!["h1", "h2", ""]), 0..5),
    )
        .prop_map(|(replicas, image, hosts)| {
            let spec = GatewaySpec {
                namespace: "ns".into(),
                gateway_id: "gw".into(),
                workspace_id: "ws".into(),
                image: image.into(),
                replicas,
                cpu_millicores: 100,
                memory_mib: 32,
            };
            Command::create(spec, hosts.into_iter().map(String::from).collect())
        });
    prop_oneof![
        3 => create,
        1 => Just(Command::delete(&GatewayKey::new("ns", "gw"))),
    ]
}

fn event() -> impl Strategy<Value = InstanceObserved> {
    let state = prop::sample::select(vec![
        ObservedState::Pending,
        ObservedState::Running,
        ObservedState::Failed,
        ObservedState::Gone,
    ]);
    (
        0u32..5,
        prop::sample::select(vec!["h1", "h2"]),
        state,
        prop::sample::select(vec!["t1", "t2"]),
    )
        .prop_map(|(replica, host, state, template)| InstanceObserved {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            replica,
            template: template.into(),
            state,
            address: if state == ObservedState::Running {
                format!("{host}:{}", 30000 + replica)
            } else {
                String::new()
            },
            reason: String::new(),
            host_id: host.into(),
        })
}

/// A gateway's log: commands and events, each stream with its own increasing sequences.
fn log() -> impl Strategy<Value = Vec<Stored>> {
    (
        prop::collection::vec(command(), 1..6),
        prop::collection::vec(event(), 0..12),
    )
        .prop_map(|(commands, events)| {
            let commands = commands
                .into_iter()
                .enumerate()
                .map(|(i, command)| Stored::Command(i as u64 + 1, command));
            let events = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| Stored::Event(i as u64 + 1, event));
            commands.chain(events).collect()
        })
}

fn fold(messages: &[Stored]) -> Option<GatewayRecord> {
    messages.iter().fold(None, |record, message| match message {
        Stored::Command(seq, command) => GatewayRecord::apply_command(record, *seq, command),
        Stored::Event(seq, event) => GatewayRecord::apply_event(record, *seq, event),
    })
}

proptest! {
    #[test]
    fn any_order_with_a_command_first_folds_to_the_same_record(
        (log, order) in log().prop_flat_map(|log| {
            let order = Just((0..log.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just(log), order)
        })
    ) {
        // The replay's order: every command, then every event, each by sequence.
        let replayed = fold(&log);
        let mut shuffled: Vec<Stored> = order.iter().map(|i| log[*i].clone()).collect();
        // A live writer always folds a command before its first event.
        let first_command = shuffled
            .iter()
            .position(|message| matches!(message, Stored::Command(..)))
            .expect("the log has a command");
        shuffled.swap(0, first_command);
        prop_assert_eq!(fold(&shuffled), replayed);
    }

    #[test]
    fn only_hosts_that_may_hold_a_container_stay_observed(log in log()) {
        if let Some(record) = fold(&log) {
            for (replica, hosts) in &record.replicas {
                for (host, seen) in hosts {
                    prop_assert_ne!(seen.event.state, ObservedState::Gone);
                    let closed = record.closed.get(replica).and_then(|h| h.get(host));
                    prop_assert!(closed.is_none(), "{replica} on {host} both observed and closed");
                }
            }
        }
    }

    #[test]
    fn folding_a_message_twice_changes_nothing(log in log(), again in any::<prop::sample::Index>()) {
        let once = fold(&log);
        let mut twice = log.clone();
        let repeated = log[again.index(log.len())].clone();
        twice.push(repeated);
        prop_assert_eq!(fold(&twice), once);
    }
}
