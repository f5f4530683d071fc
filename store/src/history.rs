//! A gateway's history as the two streams keep it: its commands (its subject of the commands
//! stream) and the observations of its replicas (`krane.events.<ns>.<gw>.>`), each with its
//! stream sequence and the time the server stored it, merged oldest first. Each subject is read
//! by one ordered consumer filtered by the server; at most `limit` entries are kept, the most
//! recent. Undecodable messages are skipped and counted, never failing the listing. A history
//! can also be followed: read, then every message stored after it.

use crate::commands::AUTHOR_HEADER;
use crate::{Result, Store, unavailable};
use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use futures::stream::BoxStream;
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
    Command(Asked),
    /// What a worker saw of one replica.
    Observation(InstanceObserved),
}

impl Happened {
    /// Commands sort before events stored at the same instant.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Self::Command(..) => 0,
            Self::Observation(_) => 1,
        }
    }
}

/// A command as history tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// What it changed, told from the command before it.
    pub kind: CommandKind,
    pub command: Command,
    /// Who stored it ([`crate::commands::AUTHOR_HEADER`]); empty when nobody was named.
    pub author: String,
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
        Ok(self.read_history(key, limit).await?.0)
    }

    /// The gateway's history as [`Self::gateway_history`] answers it, then every command and
    /// observation stored after it, as it is stored (the stream never ends by itself; NATS
    /// errors end it). Nothing falls between the two: the follow starts right after the last
    /// message read on each stream.
    pub async fn follow_gateway_history(
        &self,
        key: &GatewayKey,
        limit: usize,
    ) -> Result<(History, BoxStream<'static, Result<HistoryEntry>>)> {
        let (history, seen) = self.read_history(key, limit).await?;
        let commands = read_from(&self.commands, key.command_subject(), seen.commands + 1)
            .await?
            .scan(seen.last_command, |previous, stored| {
                let entry = match stored {
                    Ok(stored) => Ok(command_entry(stored, previous)),
                    Err(error) => Err(error),
                };
                std::future::ready(Some(entry))
            });
        let events = read_from(&self.events, key.events_filter(), seen.events + 1)
            .await?
            .map(|stored| stored.map(event_entry));
        let entries = futures::stream::select(commands, events).filter_map(|entry| {
            std::future::ready(match entry {
                Ok(Some(entry)) => Some(Ok(entry)),
                Ok(None) => None,
                Err(error) => Some(Err(error)),
            })
        });
        Ok((history, entries.boxed()))
    }

    async fn read_history(&self, key: &GatewayKey, limit: usize) -> Result<(History, Seen)> {
        self.ensure_connected()?;
        let mut undecodable = 0;
        let mut previous: Option<Command> = None;
        let (commands, commands_seen) =
            read_last(&self.commands, key.command_subject(), limit).await?;
        let mut command_entries = Vec::with_capacity(commands.len());
        for stored in commands {
            match command_entry(stored, &mut previous) {
                Some(entry) => command_entries.push(entry),
                None => undecodable += 1,
            }
        }
        let (events, events_seen) = read_last(&self.events, key.events_filter(), limit).await?;
        let mut event_entries = Vec::with_capacity(events.len());
        for stored in events {
            match event_entry(stored) {
                Some(entry) => event_entries.push(entry),
                None => undecodable += 1,
            }
        }
        let history = History {
            entries: merge(command_entries, event_entries, limit),
            undecodable,
        };
        let seen = Seen {
            commands: commands_seen,
            events: events_seen,
            last_command: previous,
        };
        Ok((history, seen))
    }
}

/// How far reading a history got: the last sequence read on each stream (0: none), and the
/// last command read, to tell the kind of the next one.
struct Seen {
    commands: u64,
    events: u64,
    last_command: Option<Command>,
}

/// One stored message of a history subject.
pub(crate) struct Stored {
    pub(crate) subject: String,
    sequence: u64,
    time: SystemTime,
    payload: bytes::Bytes,
    author: String,
}

impl Stored {
    fn of(message: async_nats::jetstream::Message) -> Result<Self> {
        let info = message.info().map_err(unavailable)?;
        let (sequence, time) = (info.stream_sequence, SystemTime::from(info.published));
        let author = message
            .message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(AUTHOR_HEADER))
            .map(|author| author.as_str().to_string())
            .unwrap_or_default();
        Ok(Self {
            subject: message.message.subject.to_string(),
            sequence,
            time,
            payload: message.message.payload,
            author,
        })
    }
}

/// The entry of a stored command (`None`, skipped and counted, when it does not decode);
/// `previous` is the command read before it and becomes this one.
pub(crate) fn command_entry(
    stored: Stored,
    previous: &mut Option<Command>,
) -> Option<HistoryEntry> {
    match codec::decode::<Command>(&stored.payload) {
        Ok(command) => {
            let kind = CommandKind::of(previous.as_ref(), &command);
            *previous = Some(command.clone());
            Some(HistoryEntry {
                time: stored.time,
                sequence: stored.sequence,
                what: Happened::Command(Asked {
                    kind,
                    command,
                    author: stored.author,
                }),
            })
        }
        Err(error) => {
            let location = format!("{} seq {}", names::COMMANDS_STREAM, stored.sequence);
            crate::undecodable::skipped("command", &location, &error);
            None
        }
    }
}

/// The entry of a stored observation (`None`, skipped and counted, when it does not decode).
pub(crate) fn event_entry(stored: Stored) -> Option<HistoryEntry> {
    match codec::decode::<InstanceObserved>(&stored.payload) {
        Ok(event) => Some(HistoryEntry {
            time: stored.time,
            sequence: stored.sequence,
            what: Happened::Observation(event),
        }),
        Err(error) => {
            let location = format!("{} seq {}", names::EVENTS_STREAM, stored.sequence);
            crate::undecodable::skipped("event", &location, &error);
            None
        }
    }
}

/// The last `limit` messages of `stream` on `subject`, in sequence order, read by one ordered
/// consumer, and the sequence of the last one read (0: none); nothing (and no waiting) when
/// the subject holds none.
pub(crate) async fn read_last(
    stream: &stream::Stream,
    subject: String,
    limit: usize,
) -> Result<(Vec<Stored>, u64)> {
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    if reader.cached_info().num_pending == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut messages = reader.messages().await.map_err(unavailable)?;
    let mut kept = VecDeque::with_capacity(limit.min(1024));
    let mut last = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(unavailable)?;
        let pending = message.info().map_err(unavailable)?.pending;
        let stored = Stored::of(message)?;
        last = stored.sequence;
        if kept.len() == limit {
            kept.pop_front();
        }
        if limit > 0 {
            kept.push_back(stored);
        }
        if pending == 0 {
            break;
        }
    }
    Ok((kept.into(), last))
}

/// Every message of `stream` on `subject` from sequence `start` on, as it is stored.
async fn read_from(
    stream: &stream::Stream,
    subject: String,
    start: u64,
) -> Result<BoxStream<'static, Result<Stored>>> {
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    let messages = reader.messages().await.map_err(unavailable)?;
    Ok(messages
        .map(|message| message.map_err(unavailable).and_then(Stored::of))
        .boxed())
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
            what: Happened::Command(Asked {
                kind: CommandKind::Create,
                command: create,
                author: "someone".into(),
            }),
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
