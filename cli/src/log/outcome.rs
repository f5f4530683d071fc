//! What a recording asks for and what it ended with, without any I/O.
//!
//! - [`steps`]: the calls to re-issue, in order with their recorded times: each command a
//!   caller stored (create, update, retry, delete). Commands a worker stored (placements,
//!   rollbacks, pauses, updates marked done) and observations are outcomes, never re-issued.
//! - [`expected`]: per gateway, the outcome recorded: gone when its last command is a delete,
//!   else its spec and the last observed state of each replica it keeps.
//! - [`differences`]: how what a stack shows of a gateway differs from that.

use krane_proto::krane::v1::gateway_event::What;
use krane_proto::krane::v1::{GatewayRequest, GatewayStatus, GetGatewayResponse, LogEntry};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A gateway, as `namespace/id`.
pub type Key = (String, String);

/// A call to re-issue.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Create(GatewayRequest),
    Update(GatewayRequest),
    Delete(Key),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When the command was stored.
    pub at: SystemTime,
    /// Its line in the file.
    pub line: usize,
    pub call: Call,
}

/// The calls a recording asks for, in file order, and how many commands it leaves out (a
/// worker's).
pub fn steps(entries: &[(usize, LogEntry)]) -> anyhow::Result<(Vec<Step>, usize)> {
    let mut steps = Vec::new();
    let mut left_out = 0;
    for (line, entry) in entries {
        let Some(event) = &entry.event else { continue };
        let Some(What::Command(command)) = &event.what else {
            continue;
        };
        if command.author.starts_with("worker ") {
            left_out += 1;
            continue;
        }
        let at = humantime::parse_rfc3339_weak(&event.time)
            .map_err(|error| anyhow::anyhow!("line {line}: time {:?}: {error}", event.time))?;
        let key = (entry.namespace.clone(), entry.gateway_id.clone());
        let call = match (command.kind.as_str(), &command.gateway) {
            ("delete", _) => Call::Delete(key),
            ("create" | "retry", Some(gateway)) => Call::Create(gateway.clone()),
            ("update", Some(gateway)) => Call::Update(gateway.clone()),
            ("placement" | "rollback" | "pause", _) => {
                left_out += 1;
                continue;
            }
            (kind, _) => anyhow::bail!("line {line}: a {kind:?} command without its gateway"),
        };
        steps.push(Step {
            at,
            line: *line,
            call,
        });
    }
    Ok((steps, left_out))
}

/// The outcome recorded for one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Deleted last.
    Gone,
    Present {
        image: String,
        replicas: u32,
        /// The last observed state of each replica below `replicas` ("running", "failed",
        /// "pending"; replicas last seen gone or never seen are left out).
        states: BTreeMap<u32, String>,
    },
}

/// Per gateway named by the recording, the outcome it recorded.
pub fn expected(entries: &[(usize, LogEntry)]) -> BTreeMap<Key, Expected> {
    let mut outcomes: BTreeMap<Key, Expected> = BTreeMap::new();
    for (_, entry) in entries {
        let Some(what) = entry.event.as_ref().and_then(|event| event.what.as_ref()) else {
            continue;
        };
        let key = (entry.namespace.clone(), entry.gateway_id.clone());
        match what {
            What::Command(command) => match (&command.gateway, command.kind.as_str()) {
                (_, "delete") | (None, _) => {
                    outcomes.insert(key, Expected::Gone);
                }
                (Some(gateway), kind) => {
                    let outcome = outcomes.entry(key).or_insert(Expected::Gone);
                    let states = match outcome {
                        // A new life after a delete starts with no observations.
                        Expected::Present { states, .. } if kind != "create" => {
                            std::mem::take(states)
                        }
                        _ => BTreeMap::new(),
                    };
                    *outcome = Expected::Present {
                        image: gateway.image.clone(),
                        replicas: gateway.replicas,
                        states,
                    };
                }
            },
            What::Observation(seen) => {
                if let Some(Expected::Present { states, .. }) = outcomes.get_mut(&key) {
                    if seen.state == "gone" {
                        states.remove(&seen.replica);
                    } else {
                        states.insert(seen.replica, seen.state.clone());
                    }
                }
            }
        }
    }
    for outcome in outcomes.values_mut() {
        if let Expected::Present {
            replicas, states, ..
        } = outcome
        {
            states.retain(|replica, _| replica < replicas);
        }
    }
    outcomes
}

/// What a stack shows of a gateway: `None` when it does not exist.
pub type Actual = Option<GetGatewayResponse>;

/// True when nothing more is on its way: the gateway is absent, or no update is rolling and
/// none of its instances is pending or terminating.
pub fn settled(actual: &Actual) -> bool {
    actual.as_ref().is_none_or(|gateway| {
        let rolling = gateway
            .rollout
            .as_ref()
            .is_some_and(|rollout| rollout.state == "rolling");
        !rolling
            && gateway.instances.iter().all(|instance| {
                !matches!(
                    GatewayStatus::try_from(instance.status),
                    Ok(GatewayStatus::Pending | GatewayStatus::Terminating)
                )
            })
    })
}

/// True when the recorded outcome has replicas still pending: a stack matching it has no
/// reason to settle further.
pub fn expects_pending(expected: &Expected) -> bool {
    matches!(expected, Expected::Present { states, .. } if states.values().any(|s| s == "pending"))
}

/// How `actual` differs from `expected`, one sentence each; empty when it matches. Hosts,
/// addresses and reasons are left out: a fresh stack has its own.
pub fn differences(expected: &Expected, actual: &Actual) -> Vec<String> {
    match (expected, actual) {
        (Expected::Gone, None) => Vec::new(),
        (Expected::Gone, Some(gateway)) => vec![format!(
            "expected gone, but it exists with {} instances ({})",
            gateway.instances.len(),
            counts(&actual_states(gateway))
        )],
        (Expected::Present { .. }, None) => vec!["expected to exist, but it does not".into()],
        (
            Expected::Present {
                image,
                replicas,
                states,
            },
            Some(gateway),
        ) => {
            let mut found = Vec::new();
            let spec = gateway.gateway.as_ref();
            let shown_image = spec.map(|spec| spec.image.as_str()).unwrap_or_default();
            if shown_image != image {
                found.push(format!("image: expected {image:?}, got {shown_image:?}"));
            }
            let shown_replicas = spec.map_or(0, |spec| spec.replicas);
            if shown_replicas != *replicas {
                found.push(format!(
                    "replicas: expected {replicas}, got {shown_replicas}"
                ));
            }
            if gateway.instances.len() != *replicas as usize {
                found.push(format!(
                    "instances: expected {replicas}, got {}",
                    gateway.instances.len()
                ));
            }
            let wanted = tally(states.values().cloned());
            let shown = actual_states(gateway);
            let short = wanted
                .iter()
                .any(|(state, count)| shown.get(state).copied().unwrap_or(0) < *count);
            if short {
                found.push(format!(
                    "states: expected {}, got {}",
                    counts(&wanted),
                    counts(&shown)
                ));
            }
            found
        }
    }
}

/// One line for what a stack shows of a gateway: `gone`, or its image, replicas, the count of
/// its instances in each state and of the hosts they are on (no host names, addresses or ids:
/// they differ between stacks).
pub fn describe(actual: &Actual) -> String {
    match actual {
        None => "gone".into(),
        Some(gateway) => {
            let spec = gateway.gateway.as_ref();
            let hosts: std::collections::BTreeSet<&str> = gateway
                .instances
                .iter()
                .map(|instance| instance.host_id.as_str())
                .filter(|host| !host.is_empty())
                .collect();
            format!(
                "image={} replicas={}: {} on {} hosts",
                spec.map(|spec| spec.image.as_str()).unwrap_or_default(),
                spec.map_or(0, |spec| spec.replicas),
                counts(&actual_states(gateway)),
                hosts.len()
            )
        }
    }
}

fn actual_states(gateway: &GetGatewayResponse) -> BTreeMap<String, usize> {
    tally(gateway.instances.iter().map(|instance| {
        match GatewayStatus::try_from(instance.status) {
            Ok(GatewayStatus::Running) => "running",
            Ok(GatewayStatus::Failed) => "failed",
            Ok(GatewayStatus::Pending) => "pending",
            Ok(GatewayStatus::Terminating) => "terminating",
            _ => "unknown",
        }
        .to_string()
    }))
}

fn tally(states: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for state in states {
        *counts.entry(state).or_insert(0) += 1;
    }
    counts
}

fn counts(states: &BTreeMap<String, usize>) -> String {
    if states.is_empty() {
        return "nothing".into();
    }
    states
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_proto::krane::v1::{
        GatewayCommand, GatewayEvent, GatewayInstance, InstanceObservation,
    };

    fn gateway(replicas: u32) -> GatewayRequest {
        GatewayRequest {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            image: "img:1".into(),
            replicas,
            ..Default::default()
        }
    }

    fn command(second: u64, kind: &str, gateway: Option<GatewayRequest>, author: &str) -> LogEntry {
        entry(
            second,
            What::Command(GatewayCommand {
                kind: kind.into(),
                gateway,
                author: author.into(),
                ..Default::default()
            }),
        )
    }

    fn seen(second: u64, replica: u32, state: &str) -> LogEntry {
        entry(
            second,
            What::Observation(InstanceObservation {
                replica,
                state: state.into(),
                ..Default::default()
            }),
        )
    }

    fn entry(second: u64, what: What) -> LogEntry {
        LogEntry {
            version: 1,
            subject: String::new(),
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            event: Some(GatewayEvent {
                time: format!("2026-01-01T00:00:{second:02}Z"),
                what: Some(what),
                ..Default::default()
            }),
        }
    }

    fn numbered(entries: Vec<LogEntry>) -> Vec<(usize, LogEntry)> {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i + 1, e))
            .collect()
    }

    fn get(states: &[GatewayStatus], replicas: u32) -> Actual {
        Some(GetGatewayResponse {
            instances: states
                .iter()
                .map(|status| GatewayInstance {
                    status: *status as i32,
                    ..Default::default()
                })
                .collect(),
            gateway: Some(gateway(replicas)),
            rollout: None,
        })
    }

    #[test]
    fn only_callers_commands_are_reissued() {
        let log = numbered(vec![
            command(0, "create", Some(gateway(1)), "alice"),
            command(1, "placement", Some(gateway(1)), "worker h1"),
            seen(2, 0, "running"),
            command(3, "update", Some(gateway(3)), "alice"),
            command(4, "retry", Some(gateway(3)), "worker h1"),
            command(5, "delete", None, "bob"),
        ]);
        let (steps, left_out) = steps(&log).expect("valid");
        assert_eq!(left_out, 2);
        let calls: Vec<&Call> = steps.iter().map(|step| &step.call).collect();
        assert_eq!(
            calls,
            [
                &Call::Create(gateway(1)),
                &Call::Update(gateway(3)),
                &Call::Delete(("ns".into(), "gw".into()))
            ]
        );
        assert_eq!(steps.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 4, 6]);
    }

    #[test]
    fn the_outcome_is_the_last_state_of_each_kept_replica() {
        let log = numbered(vec![
            command(0, "create", Some(gateway(3)), "a"),
            seen(1, 0, "pending"),
            seen(2, 0, "running"),
            seen(2, 1, "failed"),
            seen(3, 2, "running"),
            command(4, "update", Some(gateway(2)), "a"),
            seen(5, 2, "gone"),
            seen(6, 1, "running"),
        ]);
        let outcome = expected(&log);
        let wanted = Expected::Present {
            image: "img:1".into(),
            replicas: 2,
            states: BTreeMap::from([(0, "running".into()), (1, "running".into())]),
        };
        assert_eq!(outcome.get(&("ns".into(), "gw".into())), Some(&wanted));
        use GatewayStatus::{Failed, Running};
        assert!(differences(&wanted, &get(&[Running, Running], 2)).is_empty());
        let found = differences(&wanted, &get(&[Running, Failed], 2));
        assert_eq!(
            found,
            ["states: expected 2 running, got 1 failed, 1 running"]
        );
        let found = differences(&wanted, &get(&[Running], 3));
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            differences(&wanted, &None),
            ["expected to exist, but it does not"]
        );
    }

    #[test]
    fn a_delete_last_expects_nothing_and_a_create_after_it_starts_anew() {
        let mut log = vec![
            command(0, "create", Some(gateway(1)), "a"),
            seen(1, 0, "running"),
            command(2, "delete", None, "a"),
            seen(3, 0, "gone"),
        ];
        assert_eq!(
            expected(&numbered(log.clone())).values().next(),
            Some(&Expected::Gone)
        );
        assert!(differences(&Expected::Gone, &None).is_empty());
        assert_eq!(
            differences(&Expected::Gone, &get(&[GatewayStatus::Running], 1)).len(),
            1
        );
        log.push(command(4, "create", Some(gateway(1)), "a"));
        let again = expected(&numbered(log));
        let Some(Expected::Present { states, .. }) = again.values().next() else {
            panic!("created again: {again:?}");
        };
        assert!(
            states.is_empty(),
            "nothing observed of the new life: {states:?}"
        );
    }

    #[test]
    fn settled_means_nothing_pending_or_terminating() {
        use GatewayStatus::{Failed, Pending, Running, Terminating};
        assert!(settled(&None));
        assert!(settled(&get(&[Running, Failed], 2)));
        assert!(!settled(&get(&[Running, Pending], 2)));
        assert!(!settled(&get(&[Terminating], 1)));
        let mut rolling = get(&[Running, Running], 2);
        if let Some(gateway) = rolling.as_mut() {
            gateway.rollout = Some(krane_proto::krane::v1::RolloutStatus {
                state: "rolling".into(),
                reason: String::new(),
            });
        }
        assert!(!settled(&rolling), "an update still rolling");
    }
}
