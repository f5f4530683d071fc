//! The exported log's format: JSON Lines, one `krane.v1.LogEntry` a line in the proto3 JSON
//! mapping, `version` 1; blank lines are allowed. Reading names the line of any problem.

use anyhow::{Context, bail};
use krane_proto::krane::v1::LogEntry;
use std::path::Path;

/// The format's version this CLI writes and reads.
pub const VERSION: u32 = 1;

/// A file's entries with their line numbers (from 1), in file order.
pub fn read(path: &Path) -> anyhow::Result<Vec<(usize, LogEntry)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a krane log", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<Vec<(usize, LogEntry)>> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let entry: LogEntry = serde_json::from_str(line)
            .with_context(|| format!("line {number}: not a krane.v1.LogEntry"))?;
        if entry.version != VERSION {
            bail!(
                "line {number}: format version {} (this krane reads version {VERSION})",
                entry.version
            );
        }
        entries.push((number, entry));
    }
    Ok(entries)
}

/// One entry as a line (without its newline).
pub fn line(entry: &LogEntry) -> anyhow::Result<String> {
    serde_json::to_string(entry).context("cannot encode a log entry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_problems_name_their_line() {
        let entry = LogEntry {
            version: VERSION,
            subject: "krane.commands.ns.gw".into(),
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            event: None,
        };
        let text = format!(
            "{}\n\n{}\n",
            line(&entry).expect("a line"),
            line(&entry).expect("a line")
        );
        let read = parse(&text).expect("valid");
        assert_eq!(read.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(read[0].1, entry);

        let error = parse("{}\nnot json\n").expect_err("line 2 is bad");
        assert!(
            format!("{error:#}").contains("line 1: format version 0"),
            "{error:#}"
        );
        let error = parse(&format!("{}\nnot json\n", line(&entry).expect("a line")))
            .expect_err("line 2 is bad");
        assert!(format!("{error:#}").starts_with("line 2"), "{error:#}");
    }
}
