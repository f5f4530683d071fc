//! Commands: what a caller asked for, stored durably on the commands stream before the API
//! answers. A worker never trusts the command it was handed to be current: it reads the latest
//! command of the gateway (level-triggered), so late, duplicated or replayed deliveries do no harm.

use crate::names::GatewayKey;
use crate::rollout::Rollout;
use crate::spec::GatewaySpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Run `spec.replicas` containers of `spec`; replaces any earlier intent for the gateway.
    /// `placement[i]` is the host that runs replica `i` ("" or missing: not placed yet),
    /// the extra replica of an update that surges included (`wanted_replicas`).
    Create {
        spec: GatewaySpec,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        placement: Vec<String>,
        /// How a change of template rolls out, and where the update stands.
        #[serde(default, skip_serializing_if = "Rollout::is_default")]
        rollout: Rollout,
        /// Why the unplaced replicas wait, when the placer knows (no host has room for them);
        /// shown as their reason. Set only by a placement.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        waiting: String,
    },
    /// Remove every container of the gateway.
    Delete {
        namespace: String,
        gateway_id: String,
    },
}

impl Command {
    pub fn delete(key: &GatewayKey) -> Self {
        Self::Delete {
            namespace: key.namespace.clone(),
            gateway_id: key.gateway_id.clone(),
        }
    }

    pub fn create(spec: GatewaySpec, placement: Vec<String>) -> Self {
        Self::create_with(spec, placement, Rollout::default())
    }

    pub fn create_with(spec: GatewaySpec, placement: Vec<String>, rollout: Rollout) -> Self {
        Self::Create {
            spec,
            placement,
            rollout,
            waiting: String::new(),
        }
    }

    /// The same command with another placement (its spec and rollout kept).
    pub fn with_placement(&self, placement: Vec<String>) -> Self {
        self.placed_waiting(placement, String::new())
    }

    /// The same command with another placement, and why its unplaced replicas wait.
    pub fn placed_waiting(&self, placement: Vec<String>, waiting: String) -> Self {
        match self {
            Self::Create { spec, rollout, .. } => Self::Create {
                spec: spec.clone(),
                placement,
                rollout: rollout.clone(),
                waiting,
            },
            delete => delete.clone(),
        }
    }

    /// Why the unplaced replicas wait, as the last placement said ("" when it did not say).
    pub fn waiting(&self) -> &str {
        match self {
            Self::Create { waiting, .. } => waiting,
            Self::Delete { .. } => "",
        }
    }

    /// The rollout of a Create.
    pub fn rollout(&self) -> Option<&Rollout> {
        match self {
            Self::Create { rollout, .. } => Some(rollout),
            Self::Delete { .. } => None,
        }
    }

    pub fn key(&self) -> GatewayKey {
        match self {
            Self::Create { spec, .. } => spec.key(),
            Self::Delete {
                namespace,
                gateway_id,
            } => GatewayKey::new(namespace, gateway_id),
        }
    }

    /// The spec this command asks for, or `None` when the gateway should not exist.
    pub fn spec(&self) -> Option<&GatewaySpec> {
        match self {
            Self::Create { spec, .. } => Some(spec),
            Self::Delete { .. } => None,
        }
    }

    /// The host of each replica (empty for a Delete).
    pub fn placement(&self) -> &[String] {
        match self {
            Self::Create { placement, .. } => placement,
            Self::Delete { .. } => &[],
        }
    }

    /// The replicas wanted: the spec's, then (while an update that surges rolls) the extra
    /// ones of the new template, numbered from `spec.replicas` on. Zero for a Delete.
    pub fn wanted_replicas(&self) -> u32 {
        match self {
            Self::Create { spec, rollout, .. } => spec.replicas + rollout.surge(),
            Self::Delete { .. } => 0,
        }
    }

    /// True for an extra replica of an update that surges (not one of the spec's).
    pub fn is_surge(&self, replica: u32) -> bool {
        self.spec().is_some_and(|spec| replica >= spec.replicas) && replica < self.wanted_replicas()
    }

    /// The host that should run `replica`, if it is wanted and placed.
    pub fn host_of(&self, replica: u32) -> Option<&str> {
        if replica >= self.wanted_replicas() {
            return None;
        }
        let host = self.placement().get(usize::try_from(replica).ok()?)?;
        (!host.is_empty()).then_some(host.as_str())
    }

    /// True when some wanted replica has no host yet.
    pub fn has_unplaced(&self) -> bool {
        (0..self.wanted_replicas()).any(|replica| self.host_of(replica).is_none())
    }

    /// The replicas placed on `host_id`.
    pub fn replicas_on(&self, host_id: &str) -> Vec<u32> {
        (0..self.wanted_replicas())
            .filter(|replica| self.host_of(*replica) == Some(host_id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn spec() -> GatewaySpec {
        GatewaySpec {
            namespace: "ns".into(),
            gateway_id: "gw".into(),
            workspace_id: "ws".into(),
            image: "img:1".into(),
            replicas: 2,
            cpu_millicores: 100,
            memory_mib: 32,
        }
    }

    #[test]
    fn commands_round_trip_through_json() {
        for command in [
            Command::create(spec(), vec!["h1".into(), "h2".into()]),
            Command::delete(&GatewayKey::new("ns", "gw")),
        ] {
            let bytes = codec::encode(&command).expect("encodes");
            assert_eq!(codec::decode::<Command>(&bytes).ok(), Some(command));
        }
    }

    #[test]
    fn placement_says_which_host_runs_which_replica() {
        let create = Command::create(spec(), vec!["h1".into(), String::new(), "h1".into()]);
        assert_eq!(create.host_of(0), Some("h1"));
        assert_eq!(create.host_of(1), None, "not placed");
        assert_eq!(create.host_of(2), None, "spec has 2 replicas only");
        assert_eq!(create.replicas_on("h1"), vec![0]);
        assert!(create.has_unplaced());
        assert!(Command::delete(&create.key()).replicas_on("h1").is_empty());
    }

    #[test]
    fn an_update_that_surges_wants_one_extra_replica_placed_like_the_others() {
        let policy = crate::rollout::UpdatePolicy {
            max_surge: 1,
            ..Default::default()
        };
        let rolling = Rollout {
            policy,
            previous: Some(Box::new(GatewaySpec {
                image: "img:0".into(),
                ..spec()
            })),
            ..Rollout::default()
        };
        let surging = Command::create_with(spec(), vec!["h1".into(), "h2".into()], rolling);
        assert_eq!(surging.wanted_replicas(), 3);
        assert!(surging.is_surge(2) && !surging.is_surge(1) && !surging.is_surge(3));
        assert!(surging.has_unplaced(), "the extra replica needs a host");
        let placed = surging.with_placement(vec!["h1".into(), "h2".into(), "h2".into()]);
        assert!(!placed.has_unplaced());
        assert_eq!(placed.replicas_on("h2"), vec![1, 2]);
        // Once the update is over the extra replica is no longer wanted anywhere.
        let done = Command::create_with(
            spec(),
            placed.placement().to_vec(),
            Rollout {
                policy,
                ..Rollout::default()
            },
        );
        assert_eq!(done.wanted_replicas(), 2);
        assert_eq!(done.replicas_on("h2"), vec![1]);
        assert_eq!(done.host_of(2), None);
        assert_eq!(Command::delete(&done.key()).wanted_replicas(), 0);
    }

    #[test]
    fn commands_without_placement_still_decode() {
        let legacy = br#"{"kind":"create","spec":{"namespace":"ns","gateway_id":"gw","workspace_id":"","image":"i","replicas":1,"cpu_millicores":10,"memory_mib":6}}"#;
        let command: Command = codec::decode(legacy).expect("decodes");
        assert!(command.placement().is_empty());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(codec::decode::<Command>(b"{\"kind\":\"explode\"}").is_err());
        assert!(codec::decode::<Command>(b"\xff").is_err());
    }
}
