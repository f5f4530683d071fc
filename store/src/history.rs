//! A gateway's history as the two streams keep it: its commands (its subject of the commands
//! stream) and the observations of its replicas (`krane.events.<ns>.<gw>.>`), each with its
//! stream sequence and the time the server stored it, merged oldest first. Each subject is read
//! by one ordered consumer filtered by the server; at most `limit` entries are kept, the most
//! recent. Undecodable messages are skipped and counted, never failing the listing.

use crate::{Result, Store, unavailable};
use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use krane_core::codec;
use krane_core::command::Command;
use krane_core::event::InstanceObserved;
use krane_core::names::{self, GatewayKey};
use std::collections::VecDeque;
use std::time::SystemTime;

/// Entries kept when the caller names no limit.
pub const DEFAULT_HISTORY_LIMIT: usize = 200;
/// The most a caller may ask for.
pub const MAX_HISTORY_LIMIT: usize = 5_000;

/// One message of a gateway's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When the server stored it.
    pub time: SystemTime,
    /// Its sequence on its stream (commands and events are numbered apart).
    pub sequence: u64,
    pub what: Happened,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A command, with what it did to the intent before it.
    Command(CommandKind, Command),
    /// What a worker saw of one replica.
    Observation(InstanceObserved),
}

impl Happened {
    /// Commands sort before events stored at the same instant.
    fn rank(&self) -> u8 {
        match self {
            Self::Command(..) => 0,
            Self::Observation(_) => 1,
        }
    }
}

/// What a command changed, told from the command before it on the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// The first Create, or one after a Delete.
    Create,
    /// Another spec (replicas, image, limits) or update policy.
    Update,
    /// The same spec on other hosts, or the same hosts with another reason why unplaced
    /// replicas wait (placed by a worker).
    Placement,
    /// A failed update rolled back to the previous spec.
    Rollback,
    /// A failed update paused.
    Pause,
    /// The same command stored again (a FAILED gateway retried).
    Retry,
    Delete,
}

impl CommandKind {
    /// `command`'s kind after `previous` (`None`: the first one read).
    pub fn of(previous: Option<&Command>, command: &Command) -> Self {
        let Command::Create {
            spec,
            placement,
            rollout,
            waiting,
        } = command
        else {
            return Self::Delete;
        };
        let Some(Command::Create {
            spec: old_spec,
            placement: old_placement,
            rollout: old_rollout,
            waiting: old_waiting,
        }) = previous
        else {
            return Self::Create;
        };
        if rollout.rolled_back.is_some() && rollout.rolled_back != old_rollout.rolled_back {
            Self::Rollback
        } else if rollout.paused.is_some() && rollout.paused != old_rollout.paused {
            Self::Pause
        } else if spec != old_spec || rollout.policy != old_rollout.policy {
            Self::Update
        } else if placement != old_placement || waiting != old_waiting {
            Self::Placement
        } else {
            Self::Retry
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Placement => "placement",
            Self::Rollback => "rollback",
            Self::Pause => "pause",
            Self::Retry => "retry",
            Self::Delete => "delete",
        }
    }
}

/// A gateway's history, oldest first, and how many stored messages could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
    pub undecodable: usize,
}

/// Merges commands and observations oldest first (ties: commands first, then by sequence) and
/// keeps the `limit` most recent.
pub fn merge(
    commands: impl IntoIterator<Item = HistoryEntry>,
    events: impl IntoIterator<Item = HistoryEntry>,
    limit: usize,
) -> Vec<HistoryEntry> {
    let mut entries: Vec<HistoryEntry> = commands.into_iter().chain(events).collect();
    entries.sort_by_key(|entry| (entry.time, entry.what.rank(), entry.sequence));
    let excess = entries.len().saturating_sub(limit);
    entries.drain(..excess);
    entries
}

impl Store {
    /// The gateway's history: at most `limit` entries (the most recent), oldest first. A
    /// gateway never commanded (or purged) has an empty history.
    pub async fn gateway_history(&self, key: &GatewayKey, limit: usize) -> Result<History> {
        self.ensure_connected()?;
        let mut undecodable = 0;
        let mut previous: Option<Command> = None;
        let commands = read_last(&self.commands, key.command_subject(), limit).await?;
        let mut command_entries = Vec::with_capacity(commands.len());
        for (sequence, time, payload) in commands {
            match codec::decode::<Command>(&payload) {
                Ok(command) => {
                    let kind = CommandKind::of(previous.as_ref(), &command);
                    previous = Some(command.clone());
                    command_entries.push(HistoryEntry {
                        time,
                        sequence,
                        what: Happened::Command(kind, command),
                    });
                }
                Err(error) => {
                    undecodable += 1;
                    let location = format!("{} seq {sequence}", names::COMMANDS_STREAM);
                    crate::undecodable::skipped("command", &location, &error);
                }
            }
        }
        let events = read_last(&self.events, key.events_filter(), limit).await?;
        let mut event_entries = Vec::with_capacity(events.len());
        for (sequence, time, payload) in events {
            match codec::decode::<InstanceObserved>(&payload) {
                Ok(event) => event_entries.push(HistoryEntry {
                    time,
                    sequence,
                    what: Happened::Observation(event),
                }),
                Err(error) => {
                    undecodable += 1;
                    let location = format!("{} seq {sequence}", names::EVENTS_STREAM);
                    crate::undecodable::skipped("event", &location, &error);
                }
            }
        }
        Ok(History {
            entries: merge(command_entries, event_entries, limit),
            undecodable,
        })
    }
}

/// The last `limit` messages of `stream` on `subject`, in sequence order, read by one ordered
/// consumer; nothing (and no waiting) when the subject holds none.
async fn read_last(
    stream: &stream::Stream,
    subject: String,
    limit: usize,
) -> Result<Vec<(u64, SystemTime, bytes::Bytes)>> {
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    if reader.cached_info().num_pending == 0 || limit == 0 {
        return Ok(Vec::new());
    }
    let mut messages = reader.messages().await.map_err(unavailable)?;
    let mut kept = VecDeque::with_capacity(limit.min(1024));
    while let Some(message) = messages.next().await {
        let message = message.map_err(unavailable)?;
        let info = message.info().map_err(unavailable)?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let time = SystemTime::from(info.published);
        if kept.len() == limit {
            kept.pop_front();
        }
        kept.push_back((sequence, time, message.message.payload));
        if pending == 0 {
            break;
        }
    }
    Ok(kept.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_core::event::ObservedState;
    use krane_core::spec::GatewaySpec;
    use std::time::Duration;

    fn spec(replicas: u32) -> GatewaySpec {
        GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: "img:1".into(),
            replicas,
            cpu_millicores: 100,
            memory_mib: 32,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn command(seconds: u64, sequence: u64) -> HistoryEntry {
        let create = Command::create(spec(1), Vec::new());
        HistoryEntry {
            time: at(seconds),
            sequence,
            what: Happened::Command(CommandKind::Create, create),
        }
    }

    fn event(seconds: u64, sequence: u64) -> HistoryEntry {
        HistoryEntry {
            time: at(seconds),
            sequence,
            what: Happened::Observation(InstanceObserved {
                namespace: "ns".into(),
                gateway_id: "gw".into(),
                replica: 0,
                template: String::new(),
                state: ObservedState::Pending,
                address: String::new(),
                reason: String::new(),
                host_id: "h".into(),
            }),
        }
    }

    fn order(entries: &[HistoryEntry]) -> Vec<(u8, u64)> {
        entries
            .iter()
            .map(|entry| (entry.what.rank(), entry.sequence))
            .collect()
    }

    #[test]
    fn merge_is_by_time_then_commands_first_then_sequence() {
        let merged = merge(
            [command(1, 1), command(3, 2)],
            [event(2, 10), event(3, 9), event(3, 8), event(0, 7)],
            100,
        );
        assert_eq!(
            order(&merged),
            [(1, 7), (0, 1), (1, 10), (0, 2), (1, 8), (1, 9)]
        );
    }

    #[test]
    fn merge_keeps_the_most_recent() {
        let merged = merge(
            [command(1, 1), command(5, 2)],
            [event(2, 3), event(4, 4)],
            2,
        );
        assert_eq!(order(&merged), [(1, 4), (0, 2)]);
    }

    #[test]
    fn kinds_are_told_from_the_command_before() {
        let create = Command::create(spec(1), Vec::new());
        let placed = Command::create(spec(1), vec!["h1".into()]);
        let scaled = Command::create(spec(3), vec!["h1".into()]);
        let delete = Command::delete(&spec(1).key());
        assert_eq!(CommandKind::of(None, &create), CommandKind::Create);
        assert_eq!(
            CommandKind::of(Some(&create), &placed),
            CommandKind::Placement
        );
        assert_eq!(CommandKind::of(Some(&placed), &scaled), CommandKind::Update);
        assert_eq!(CommandKind::of(Some(&scaled), &scaled), CommandKind::Retry);
        assert_eq!(CommandKind::of(Some(&scaled), &delete), CommandKind::Delete);
        assert_eq!(CommandKind::of(Some(&delete), &create), CommandKind::Create);
        let waits = scaled.placed_waiting(vec!["h1".into()], "no host has room".into());
        assert_eq!(
            CommandKind::of(Some(&scaled), &waits),
            CommandKind::Placement
        );
    }
}
