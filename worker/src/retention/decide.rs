//! The pure part of retention: is a gateway due for purging at `now`, from what was read of
//! it, and how often the loop looks. No I/O; unit-tested below.

use krane_core::command::Command;
use krane_core::names::GatewayKey;
use krane_store::{Latest, Purge, StoredRecord};
use std::time::{Duration, SystemTime};

/// Shortest and longest time between two rounds.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// What a round read of one gateway, in this order: the events stream's last sequence, the
/// latest decodable command (with its stream timestamp), the record.
pub struct Seen {
    pub events_through: u64,
    /// `None`: the gateway's commands subject is empty.
    pub latest: Option<(Latest, SystemTime)>,
    pub stored: StoredRecord,
}

/// The purge `seen` calls for at `now`, if any. A gateway is due when its record is gone (a
/// Delete whose containers are all removed) and either
///
/// - the latest command on the log is that very Delete (the record folded exactly it), stored
///   `retention` ago or more; commands up to it go; or
/// - its commands subject is empty: an earlier purge stopped between the commands and the
///   record; the rest (events, record) goes.
///
/// Anything else is kept: a live gateway, a Create after the Delete, a record that lags the
/// log, a Delete from the future (clock skew), and (the caller never gets here) a subject
/// with no decodable command.
pub fn due(key: &GatewayKey, seen: &Seen, now: SystemTime, retention: Duration) -> Option<Purge> {
    let record = seen.stored.record.as_ref()?;
    if !record.is_gone() || &record.key() != key {
        return None;
    }
    let commands_through = match &seen.latest {
        None => 0,
        Some((latest, stored_at)) => {
            let deleted = matches!(latest.command, Command::Delete { .. });
            if !deleted || latest.seq != record.intent_seq {
                return None;
            }
            if now.duration_since(*stored_at).ok()? < retention {
                return None;
            }
            latest.seq
        }
    };
    Some(Purge {
        key: key.clone(),
        events_through: seen.events_through,
        commands_through,
        record_revision: seen.stored.revision,
    })
}

/// Time between rounds: a tenth of the retention, at most 10 minutes, at least 1 second.
pub fn round_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Time before the next round when this one stopped at its purge limit: more are due.
pub fn catch_up_interval() -> Duration {
    MIN_INTERVAL
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_core::event::{InstanceObserved, ObservedState};
    use krane_core::record::GatewayRecord;
    use krane_core::spec::GatewaySpec;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn key() -> GatewayKey {
        GatewayKey::new("ns", "gw")
    }

    fn create() -> Command {
        let spec = GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: "img:1".into(),
            replicas: 1,
            cpu_millicores: 100,
            memory_mib: 32,
        };
        Command::create(spec, vec!["h1".into()])
    }

    fn observed(state: ObservedState) -> InstanceObserved {
        InstanceObserved {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            replica: 0,
            host_id: "h1".into(),
            state,
            address: String::new(),
            reason: String::new(),
            template: String::new(),
        }
    }

    /// Create at 1, Delete at 2, the replica's last event `state`; the record at revision 9.
    fn deleted(state: ObservedState) -> StoredRecord {
        let record = GatewayRecord::apply_command(None, 1, &create());
        let record = GatewayRecord::apply_event(record, 5, &observed(ObservedState::Running));
        let record = GatewayRecord::apply_command(record, 2, &Command::delete(&key()));
        let record = GatewayRecord::apply_event(record, 6, &observed(state));
        StoredRecord {
            record,
            revision: 9,
        }
    }

    fn seen(latest: Option<(u64, Command, SystemTime)>, stored: StoredRecord) -> Seen {
        Seen {
            events_through: 40,
            latest: latest.map(|(seq, command, at)| {
                let latest = Latest {
                    seq,
                    command,
                    last_seq: seq,
                };
                (latest, at)
            }),
            stored,
        }
    }

    fn delete_at(at: SystemTime) -> Option<(u64, Command, SystemTime)> {
        Some((2, Command::delete(&key()), at))
    }

    #[test]
    fn a_finished_delete_older_than_the_retention_is_due_up_to_what_was_read() {
        let now = SystemTime::now();
        let seen = seen(delete_at(now - DAY), deleted(ObservedState::Gone));
        let purge = due(&key(), &seen, now, DAY).expect("due");
        assert_eq!(
            purge,
            Purge {
                key: key(),
                events_through: 40,
                commands_through: 2,
                record_revision: 9,
            }
        );
    }

    #[test]
    fn a_delete_younger_than_the_retention_or_from_the_future_is_kept() {
        let now = SystemTime::now();
        let young = seen(
            delete_at(now - DAY + Duration::from_secs(1)),
            deleted(ObservedState::Gone),
        );
        assert_eq!(due(&key(), &young, now, DAY), None);
        let future = seen(
            delete_at(now + Duration::from_secs(60)),
            deleted(ObservedState::Gone),
        );
        assert_eq!(due(&key(), &future, now, Duration::ZERO), None);
        let zero = seen(delete_at(now), deleted(ObservedState::Gone));
        assert!(due(&key(), &zero, now, Duration::ZERO).is_some());
    }

    #[test]
    fn a_delete_still_removing_containers_is_kept() {
        let now = SystemTime::now();
        let seen = seen(delete_at(now - DAY), deleted(ObservedState::Running));
        assert_eq!(due(&key(), &seen, now, Duration::ZERO), None);
    }

    #[test]
    fn a_create_after_the_delete_or_a_lagging_record_is_kept() {
        let now = SystemTime::now();
        let recreated = seen(Some((3, create(), now - DAY)), deleted(ObservedState::Gone));
        assert_eq!(due(&key(), &recreated, now, Duration::ZERO), None);
        // A second Delete the record has not folded yet.
        let lagging = seen(
            Some((3, Command::delete(&key()), now - DAY)),
            deleted(ObservedState::Gone),
        );
        assert_eq!(due(&key(), &lagging, now, Duration::ZERO), None);
    }

    #[test]
    fn a_live_gateway_or_no_record_is_kept() {
        let now = SystemTime::now();
        let live = StoredRecord {
            record: GatewayRecord::apply_command(None, 1, &create()),
            revision: 3,
        };
        let created = seen(Some((1, create(), now - DAY)), live.clone());
        assert_eq!(due(&key(), &created, now, Duration::ZERO), None);
        let absent = seen(delete_at(now - DAY), StoredRecord::absent());
        assert_eq!(due(&key(), &absent, now, Duration::ZERO), None);
        // A live record with an empty subject is not a half-done purge.
        assert_eq!(due(&key(), &seen(None, live), now, Duration::ZERO), None);
    }

    #[test]
    fn an_empty_subject_under_a_deleted_record_finishes_an_earlier_purge() {
        let now = SystemTime::now();
        let seen = seen(None, deleted(ObservedState::Gone));
        let purge = due(&key(), &seen, now, DAY).expect("due");
        assert_eq!((purge.commands_through, purge.record_revision), (0, 9));
    }

    #[test]
    fn a_record_under_another_key_is_kept() {
        let now = SystemTime::now();
        let seen = seen(delete_at(now - DAY), deleted(ObservedState::Gone));
        assert_eq!(
            due(&GatewayKey::new("ns", "other"), &seen, now, Duration::ZERO),
            None
        );
    }

    #[test]
    fn rounds_run_every_tenth_of_the_retention_within_bounds() {
        assert_eq!(round_interval(DAY), Duration::from_secs(600));
        assert_eq!(
            round_interval(Duration::from_secs(3000)),
            Duration::from_secs(300)
        );
        assert_eq!(
            round_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(round_interval(Duration::ZERO), Duration::from_secs(1));
    }
}
