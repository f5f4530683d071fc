//! Exporting the log: every stored command and observation of a namespace (or of all), with
//! the gateway and subject of each, oldest first as a gateway's history is (same time:
//! commands first, then by sequence), each command's kind told from the one before it on its
//! subject. What `ExportLog` sends and `krane log export` writes; what `krane log replay`
//! reads back.
//!
//! The export is read whole before it is answered (the namespace's log in memory, bounded by
//! retention): it is an operator's tool, not a hot path.

use crate::history::{self, read_last};
use crate::{Happened, HistoryEntry, Result, Store};
use krane_core::command::Command;
use krane_core::names::{self, GatewayKey};
use std::collections::HashMap;
use std::time::SystemTime;

/// Which entries an export keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Since {
    /// Only entries stored at or after this time.
    pub time: Option<SystemTime>,
    /// Only commands from this sequence of the commands stream on, and observations stored
    /// from that command's time on.
    pub command_sequence: Option<u64>,
}

/// One exported entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub key: GatewayKey,
    pub subject: String,
    pub entry: HistoryEntry,
}

/// An export, oldest first, and how many stored messages could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    pub entries: Vec<Exported>,
    pub undecodable: usize,
}

impl Store {
    /// Everything stored of `namespace` (`None`: of every namespace) that `since` keeps.
    pub async fn export_log(&self, namespace: Option<&str>, since: Since) -> Result<Export> {
        self.ensure_connected()?;
        let (commands_filter, events_filter) = names::namespace_filters(namespace);
        let mut undecodable = 0;
        let mut entries = Vec::new();
        let mut previous: HashMap<String, Option<Command>> = HashMap::new();
        let (commands, _) = read_last(&self.commands, commands_filter, usize::MAX).await?;
        for stored in commands {
            let subject = stored.subject.clone();
            let last = previous.entry(subject.clone()).or_default();
            match history::command_entry(stored, last) {
                Some(entry) => entries.extend(exported(subject, entry)),
                None => undecodable += 1,
            }
        }
        let (events, _) = read_last(&self.events, events_filter, usize::MAX).await?;
        for stored in events {
            let subject = stored.subject.clone();
            match history::event_entry(stored) {
                Some(entry) => entries.extend(exported(subject, entry)),
                None => undecodable += 1,
            }
        }
        entries.sort_by_key(|exported| {
            let entry = &exported.entry;
            (entry.time, entry.what.rank(), entry.sequence)
        });
        let since = Cutoff::of(since, &entries);
        entries.retain(|exported| since.keeps(&exported.entry));
        Ok(Export {
            entries,
            undecodable,
        })
    }
}

fn exported(subject: String, entry: HistoryEntry) -> Option<Exported> {
    let key = names::key_of_subject(&subject)?;
    Some(Exported {
        key,
        subject,
        entry,
    })
}

/// [`Since`] worked out on the entries: the time observations must reach.
struct Cutoff {
    time: Option<SystemTime>,
    command_sequence: Option<u64>,
    /// `Some(None)`: no command at or after the sequence, so nothing is kept.
    observations_from: Option<Option<SystemTime>>,
}

impl Cutoff {
    fn of(since: Since, entries: &[Exported]) -> Self {
        let observations_from = since.command_sequence.map(|first| {
            entries
                .iter()
                .map(|exported| &exported.entry)
                .find(|entry| matches!(entry.what, Happened::Command(_)) && entry.sequence >= first)
                .map(|entry| entry.time)
        });
        Self {
            time: since.time,
            command_sequence: since.command_sequence,
            observations_from,
        }
    }

    fn keeps(&self, entry: &HistoryEntry) -> bool {
        if self.time.is_some_and(|time| entry.time < time) {
            return false;
        }
        match (&entry.what, self.observations_from) {
            (_, None) => true,
            (_, Some(None)) => false,
            (Happened::Command(_), Some(Some(_))) => self
                .command_sequence
                .is_none_or(|first| entry.sequence >= first),
            (Happened::Observation(_), Some(Some(from))) => entry.time >= from,
        }
    }
}
