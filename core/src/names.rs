//! Every name krane puts on the wire or on the engine: NATS streams, subjects, the KV bucket and
//! its keys, Docker container names and labels. Both binaries import them from here.
//!
//! Namespaces and gateway ids match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. A `.` would split a NATS subject
//! token, so inside subjects and KV keys it is written as `=`, a character ids cannot contain;
//! the mapping is therefore injective and `a.b`/`c` never meets `a`/`b.c`.

use sha2::{Digest, Sha256};
use std::fmt;

/// Stream holding every command (`Create`, `Delete`) per gateway.
pub const COMMANDS_STREAM: &str = "KRANE_COMMANDS";
/// Subject prefix of commands: `krane.commands.<namespace>.<gateway>`.
pub const COMMANDS_SUBJECT_PREFIX: &str = "krane.commands";
/// Stream holding every status event per gateway replica.
pub const EVENTS_STREAM: &str = "KRANE_EVENTS";
/// Subject prefix of events: `krane.events.<namespace>.<gateway>.<replica>.<host>`.
pub const EVENTS_SUBJECT_PREFIX: &str = "krane.events";
/// Stream of work addressed to hosts: a nudge per host and gateway that a command concerns
/// (the command's body, with its sequence on [`COMMANDS_STREAM`]).
pub const WORK_STREAM: &str = "KRANE_WORK";
/// Subject prefix of work: `krane.work.<host>.<namespace>.<gateway>`.
pub const WORK_SUBJECT_PREFIX: &str = "krane.work";
/// KV bucket with one `GatewayRecord` per gateway, keyed `<namespace>.<gateway>`.
pub const GATEWAYS_BUCKET: &str = "krane_gateways";
/// KV bucket of live hosts: each worker's heartbeat, keyed by host id, expiring with its TTL.
pub const HOSTS_BUCKET: &str = "krane_hosts";

/// Docker label carrying the gateway id (the original krane label).
pub const LABEL_GATEWAY_ID: &str = "unkey.gateway.id";
/// Docker label marking containers krane manages; value [`MANAGED_BY_VALUE`].
pub const LABEL_MANAGED_BY: &str = "unkey.managed.by";
pub const MANAGED_BY_VALUE: &str = "krane";
pub const LABEL_NAMESPACE: &str = "unkey.namespace";
pub const LABEL_WORKSPACE_ID: &str = "unkey.workspace.id";
pub const LABEL_REPLICA: &str = "unkey.replica";
/// Hash of everything that shapes a replica's container; a different hash means "replace".
pub const LABEL_TEMPLATE: &str = "krane.template";
/// The worker host (`--host-id`) that owns the container; resync only sweeps its own.
pub const LABEL_HOST_ID: &str = "krane.host.id";

/// The container port every gateway listens on.
pub const GATEWAY_PORT: u16 = 8040;

/// Identifies one gateway: the same id in two namespaces is two gateways.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayKey {
    pub namespace: String,
    pub gateway_id: String,
}

impl GatewayKey {
    pub fn new(namespace: impl Into<String>, gateway_id: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            gateway_id: gateway_id.into(),
        }
    }

    /// Subject of the work for host `host_id` (a token, see [`host_id`]) about this gateway.
    pub fn work_subject(&self, host_id: &str) -> String {
        format!("{WORK_SUBJECT_PREFIX}.{host_id}.{}", self.kv_key())
    }

    /// Key of the gateway's record in [`GATEWAYS_BUCKET`].
    pub fn kv_key(&self) -> String {
        format!(
            "{}.{}",
            subject_token(&self.namespace),
            subject_token(&self.gateway_id)
        )
    }

    /// Subject its commands are published on.
    pub fn command_subject(&self) -> String {
        format!("{COMMANDS_SUBJECT_PREFIX}.{}", self.kv_key())
    }

    /// Subject the events of one replica on one host are published on.
    pub fn event_subject(&self, replica: u32, host_id: &str) -> String {
        format!(
            "{EVENTS_SUBJECT_PREFIX}.{}.{replica}.{host_id}",
            self.kv_key()
        )
    }

    /// Subject filter matching the events of every replica on every host of this gateway,
    /// and of no other gateway (ids cannot contain `=`, so the two tokens are exact).
    pub fn events_filter(&self) -> String {
        format!("{EVENTS_SUBJECT_PREFIX}.{}.>", self.kv_key())
    }

    /// Deterministic container (and instance) name of a replica: readable, unique per engine,
    /// and the same on every delivery of a command so a redelivery finds its own container.
    /// The hash suffix keeps `a-b`/`c` and `a`/`b-c` apart.
    pub fn container_name(&self, replica: u32) -> String {
        format!(
            "{}-{}-{replica}-{}",
            self.namespace,
            self.gateway_id,
            short_hash(&[&self.namespace, &self.gateway_id])
        )
    }

    /// Parses a KV key back into a gateway key.
    pub fn from_kv_key(key: &str) -> Option<Self> {
        let (namespace, gateway_id) = key.split_once('.')?;
        Some(Self::new(
            from_subject_token(namespace),
            from_subject_token(gateway_id),
        ))
    }
}

impl fmt::Display for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.gateway_id)
    }
}

/// Subject filters matching the commands and the events of every gateway of `namespace`
/// (`None`: of every namespace).
pub fn namespace_filters(namespace: Option<&str>) -> (String, String) {
    let scope = namespace.map_or_else(|| ">".to_string(), |ns| format!("{}.>", subject_token(ns)));
    (
        format!("{COMMANDS_SUBJECT_PREFIX}.{scope}"),
        format!("{EVENTS_SUBJECT_PREFIX}.{scope}"),
    )
}

/// Subject filter of every work addressed to host `host_id`.
pub fn work_filter(host_id: &str) -> String {
    format!("{WORK_SUBJECT_PREFIX}.{host_id}.>")
}

/// The gateway a command or event subject belongs to (`None`: not a gateway's subject).
pub fn key_of_subject(subject: &str) -> Option<GatewayKey> {
    let rest = subject
        .strip_prefix(COMMANDS_SUBJECT_PREFIX)
        .or_else(|| subject.strip_prefix(EVENTS_SUBJECT_PREFIX))?
        .strip_prefix('.')?;
    let mut tokens = rest.split('.');
    let (namespace, gateway_id) = (tokens.next()?, tokens.next()?);
    Some(GatewayKey::new(
        from_subject_token(namespace),
        from_subject_token(gateway_id),
    ))
}

fn subject_token(id: &str) -> String {
    id.replace('.', "=")
}

fn from_subject_token(token: &str) -> String {
    token.replace('=', ".")
}

/// Makes any string a valid host id (`[a-zA-Z0-9_-]`, at most 63 chars): host ids are NATS
/// subject tokens and KV keys, so `.` and other characters become `_`.
pub fn host_id(raw: &str) -> String {
    let id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    if id.is_empty() {
        "host".to_string()
    } else {
        id
    }
}

/// First 8 bytes of SHA-256 over the parts (NUL-separated), in hex.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_gateway_and_filters_their_namespace() {
        let key = GatewayKey::new("a.b", "c.d");
        assert_eq!(key_of_subject(&key.command_subject()), Some(key.clone()));
        assert_eq!(key_of_subject(&key.event_subject(2, "h1")), Some(key));
        assert_eq!(key_of_subject("krane.commands"), None);
        assert_eq!(key_of_subject("other.a.b"), None);
        assert_eq!(
            namespace_filters(Some("a.b")),
            (
                "krane.commands.a=b.>".to_string(),
                "krane.events.a=b.>".to_string()
            )
        );
        assert_eq!(
            namespace_filters(None),
            ("krane.commands.>".to_string(), "krane.events.>".to_string())
        );
    }

    #[test]
    fn dots_in_ids_never_make_two_keys_meet() {
        let a = GatewayKey::new("a.b", "c");
        let b = GatewayKey::new("a", "b.c");
        assert_ne!(a.kv_key(), b.kv_key());
        assert_ne!(a.command_subject(), b.command_subject());
        assert_eq!(a.kv_key(), "a=b.c");
        assert_eq!(GatewayKey::from_kv_key(&a.kv_key()), Some(a));
        assert_eq!(GatewayKey::from_kv_key(&b.kv_key()), Some(b));
    }

    #[test]
    fn container_names_are_deterministic_and_apart() {
        let key = GatewayKey::new("ns", "gw");
        assert_eq!(key.container_name(2), key.container_name(2));
        assert_ne!(key.container_name(1), key.container_name(2));
        assert!(key.container_name(0).starts_with("ns-gw-0-"));
        assert_ne!(
            GatewayKey::new("a-b", "c").container_name(0),
            GatewayKey::new("a", "b-c").container_name(0)
        );
    }

    #[test]
    fn host_ids_are_safe_tokens() {
        assert_eq!(host_id("node-1.example.com"), "node-1_example_com");
        assert_eq!(host_id(""), "host");
        assert_eq!(host_id(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn same_gateway_in_two_namespaces_is_two_gateways() {
        let one = GatewayKey::new("team-a", "edge");
        let two = GatewayKey::new("team-b", "edge");
        assert_ne!(one.kv_key(), two.kv_key());
        assert_ne!(one.container_name(0), two.container_name(0));
        assert_ne!(one.event_subject(0, "h"), two.event_subject(0, "h"));
    }

    #[test]
    fn the_events_filter_covers_the_gateways_subjects_only() {
        let key = GatewayKey::new("a.b", "c");
        assert_eq!(key.events_filter(), "krane.events.a=b.c.>");
        let prefix = key.events_filter().trim_end_matches('>').to_string();
        assert!(key.event_subject(3, "h1").starts_with(&prefix));
        let other = GatewayKey::new("a", "b.c");
        assert!(!other.event_subject(3, "h1").starts_with(&prefix));
    }
}
