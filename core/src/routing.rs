//! Which hosts a command concerns: those whose share of the gateway (the spec, the replicas
//! placed on them, the rollout) differs between the command it replaced and itself. Its writer
//! knows both exactly (a write is stored only on top of the command it read), so it names
//! them with the command; the dispatch addresses work to those hosts alone instead of every
//! host reading every command. Pure.
//!
//! A host whose share did not change has nothing to do about the command: its containers are
//! already what the command asks (or its earlier work, still pending, reconciles to the
//! latest command anyway). A host that held replicas the command removes is concerned, lost
//! or not: its work waits for it.

use crate::command::Command;
use crate::rollout::Rollout;
use crate::spec::GatewaySpec;
use std::collections::BTreeSet;

/// What a new command replaces on its gateway's subject, as its writer read it.
#[derive(Debug, Clone, Copy)]
pub enum Replaced<'a> {
    /// The subject held no command: the gateway is new (or purged).
    Nothing,
    /// The latest decodable command, the one the write was conditional on.
    Command(&'a Command),
    /// The subject holds commands none of which decode: who they concerned is unknown.
    Unreadable,
}

/// The hosts `command` concerns, given what it replaced; `None` when that is unknown (then
/// every host must look).
pub fn concerned_hosts(replaced: Replaced<'_>, command: &Command) -> Option<BTreeSet<String>> {
    let before = match replaced {
        Replaced::Nothing => None,
        Replaced::Command(before) => Some(before),
        Replaced::Unreadable => return None,
    };
    let mut hosts: BTreeSet<&str> = placed_hosts(command).collect();
    hosts.extend(before.into_iter().flat_map(placed_hosts));
    Some(
        hosts
            .into_iter()
            .filter(|host| share(before, host) != share(Some(command), host))
            .map(str::to_string)
            .collect(),
    )
}

/// The hosts `command` places at least one replica on (a host once per replica).
pub fn placed_hosts(command: &Command) -> impl Iterator<Item = &str> {
    (0..command.wanted_replicas()).filter_map(|replica| command.host_of(replica))
}

/// What `command` asks of `host`.
#[derive(Debug, PartialEq)]
struct Share<'a> {
    spec: Option<&'a GatewaySpec>,
    replicas: Vec<u32>,
    rollout: Option<&'a Rollout>,
}

fn share<'a>(command: Option<&'a Command>, host: &str) -> Share<'a> {
    Share {
        spec: command.and_then(Command::spec),
        replicas: command.map(|c| c.replicas_on(host)).unwrap_or_default(),
        rollout: command.and_then(Command::rollout),
    }
}

/// The header value naming `hosts` (comma-separated; empty: none).
pub fn hosts_header(hosts: &BTreeSet<String>) -> String {
    hosts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The hosts a header value names ([`hosts_header`]'s inverse).
pub fn hosts_from_header(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::GatewayKey;

    fn spec(image: &str, replicas: u32) -> GatewaySpec {
        GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: image.into(),
            replicas,
            cpu_millicores: 100,
            memory_mib: 64,
        }
    }

    fn placed(image: &str, hosts: &[&str]) -> Command {
        let replicas = u32::try_from(hosts.len()).expect("few");
        Command::create(
            spec(image, replicas),
            hosts.iter().map(|h| h.to_string()).collect(),
        )
    }

    fn set(hosts: &[&str]) -> Option<BTreeSet<String>> {
        Some(hosts.iter().map(|h| h.to_string()).collect())
    }

    #[test]
    fn a_new_gateway_concerns_nobody_until_placed() {
        let unplaced = Command::create(spec("a:1", 3), Vec::new());
        assert_eq!(concerned_hosts(Replaced::Nothing, &unplaced), set(&[]));
        let placement = placed("a:1", &["h1", "h2", "h1"]);
        assert_eq!(
            concerned_hosts(Replaced::Command(&unplaced), &placement),
            set(&["h1", "h2"])
        );
    }

    #[test]
    fn a_move_concerns_the_host_left_and_the_host_taken_not_the_keepers() {
        let before = placed("a:1", &["h1", "h2", "h3"]);
        let after = placed("a:1", &["h1", "h4", "h3"]);
        assert_eq!(
            concerned_hosts(Replaced::Command(&before), &after),
            set(&["h2", "h4"])
        );
    }

    #[test]
    fn a_new_spec_or_a_delete_concerns_every_host_placed() {
        let before = placed("a:1", &["h1", "h2", "h1"]);
        let update = placed("a:2", &["h1", "h2", "h1"]);
        assert_eq!(
            concerned_hosts(Replaced::Command(&before), &update),
            set(&["h1", "h2"])
        );
        let delete = Command::delete(&GatewayKey::new("ns", "gw"));
        assert_eq!(
            concerned_hosts(Replaced::Command(&before), &delete),
            set(&["h1", "h2"])
        );
        assert_eq!(
            concerned_hosts(Replaced::Command(&delete), &delete),
            set(&[])
        );
    }

    #[test]
    fn an_unreadable_predecessor_concerns_everyone() {
        assert_eq!(
            concerned_hosts(Replaced::Unreadable, &placed("a:1", &["h1"])),
            None
        );
    }

    #[test]
    fn the_header_round_trips() {
        let hosts = set(&["h1", "h-2"]).expect("set");
        assert_eq!(hosts_from_header(&hosts_header(&hosts)), hosts);
        assert!(hosts_from_header("").is_empty());
    }
}
