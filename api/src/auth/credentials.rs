//! The credentials the API lets in, as one immutable set: bearer tokens (kept only as SHA-256
//! digests) and client-certificate identities, each with its [`Grant`]. Built from the flags
//! and the credentials file (`--auth-tokens-file`, TOML) and replaced whole on reload, so a
//! bad file is refused with the entry and field at fault and never half-loaded.
//!
//! ```toml
//! [[tokens]]
//! name = "control-plane"          # shown in logs and refusals, never the token
//! token_sha256 = "9f86d0…"        # hex SHA-256 of the token (or `token = "…"` in clear)
//! namespaces = ["prod-*", "staging"]
//! access = "read-write"           # or "read-only"
//!
//! [[clients]]                     # with --tls-client-ca: verified client certificates
//! name = "deployer"
//! identity = "spiffe://unkey/deployer"   # a URI or DNS name of the certificate, or its CN
//! namespaces = ["*"]
//! access = "read-only"
//! ```

use super::bearer::{Digest, digest};
use super::grant::{Access, Grant, Namespaces};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The name the single `--auth-token` goes by in logs.
pub const AUTH_TOKEN_NAME: &str = "auth-token";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: Option<String>,
    token_sha256: Option<String>,
    namespaces: Vec<String>,
    access: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    name: String,
    identity: String,
    namespaces: Vec<String>,
    access: Access,
}

/// Everything that lets a caller in.
#[derive(Debug, Default)]
pub struct Credentials {
    tokens: Vec<(Digest, Arc<Grant>)>,
    clients: HashMap<String, Arc<Grant>>,
    /// What a verified client certificate without an entry of its own may do: everything
    /// when mutual TLS is on and no credentials file says otherwise, else nothing.
    any_client: Option<Arc<Grant>>,
}

impl Credentials {
    /// The credentials of the flags: the single `--auth-token` (read-write everywhere), the
    /// credentials file's text, and whether verified client certificates count (mutual TLS).
    pub fn new(
        auth_token: Option<&str>,
        file: Option<&str>,
        client_certificates: bool,
    ) -> Result<Self, String> {
        let mut credentials = match file {
            Some(text) => Self::parse(text)?,
            None => Self::default(),
        };
        if let Some(token) = auth_token {
            if token.is_empty() {
                return Err("the auth token must not be empty".to_string());
            }
            let digest = digest(token.as_bytes());
            if credentials.tokens.iter().any(|(known, _)| *known == digest) {
                return Err("--auth-token is also a token of the credentials file".to_string());
            }
            let grant = Arc::new(Grant::everything(AUTH_TOKEN_NAME));
            credentials.tokens.push((digest, grant));
        }
        if client_certificates && file.is_none() {
            credentials.any_client = Some(Arc::new(Grant::everything("client certificate")));
        }
        Ok(credentials)
    }

    /// The credentials file's entries; the error names the entry and field at fault.
    fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|error| error.to_string())?;
        let mut credentials = Self::default();
        let mut names = std::collections::HashSet::new();
        for (index, entry) in file.tokens.into_iter().enumerate() {
            let at = |field: &str| format!("tokens[{index}] ({:?}).{field}", entry.name);
            check_name(&entry.name, &mut names)
                .map_err(|error| format!("{}: {error}", at("name")))?;
            let digest = match (&entry.token, &entry.token_sha256) {
                (Some(token), None) if !token.is_empty() => digest(token.as_bytes()),
                (None, Some(hex)) => parse_digest(hex)
                    .ok_or_else(|| format!("{}: must be 64 hex digits", at("token_sha256")))?,
                (Some(_), None) => return Err(format!("{}: must not be empty", at("token"))),
                _ => {
                    return Err(format!(
                        "{}: give exactly one of `token` and `token_sha256`",
                        at("token")
                    ));
                }
            };
            if credentials.tokens.iter().any(|(known, _)| *known == digest) {
                return Err(format!("{}: the same token is listed twice", at("token")));
            }
            let namespaces =
                namespaces(&entry.namespaces).map_err(|e| format!("{}: {e}", at("namespaces")))?;
            let grant = Grant::new(entry.name, namespaces, entry.access);
            credentials.tokens.push((digest, Arc::new(grant)));
        }
        for (index, entry) in file.clients.into_iter().enumerate() {
            let at = |field: &str| format!("clients[{index}] ({:?}).{field}", entry.name);
            check_name(&entry.name, &mut names)
                .map_err(|error| format!("{}: {error}", at("name")))?;
            if entry.identity.trim().is_empty() {
                return Err(format!("{}: must not be empty", at("identity")));
            }
            if credentials.clients.contains_key(&entry.identity) {
                return Err(format!("{}: listed twice", at("identity")));
            }
            let namespaces =
                namespaces(&entry.namespaces).map_err(|e| format!("{}: {e}", at("namespaces")))?;
            let grant = Grant::new(entry.name, namespaces, entry.access);
            credentials.clients.insert(entry.identity, Arc::new(grant));
        }
        Ok(credentials)
    }

    /// How many tokens and client identities are let in (for the log line of a (re)load).
    pub fn counts(&self) -> (usize, usize) {
        (self.tokens.len(), self.clients.len())
    }

    /// The grant of a presented bearer token. Every known digest is compared, in constant
    /// time, whichever matches, so the answer's timing tells nothing about the tokens.
    pub fn token_grant(&self, presented: &[u8]) -> Option<Arc<Grant>> {
        let presented = digest(presented);
        let mut found = None;
        for (known, grant) in &self.tokens {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// The grant of a verified client certificate with these identities (URI and DNS names,
    /// then the common name): the first with an entry, else the default for certificates.
    pub fn client_grant(&self, identities: &[String]) -> Option<Arc<Grant>> {
        identities
            .iter()
            .find_map(|identity| self.clients.get(identity).cloned())
            .or_else(|| self.any_client.clone())
    }
}

fn check_name(name: &str, seen: &mut std::collections::HashSet<String>) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    if !seen.insert(name.to_string()) {
        return Err("names another entry too (names tell callers apart in logs)".to_string());
    }
    Ok(())
}

fn namespaces(patterns: &[String]) -> Result<Namespaces, String> {
    if patterns.is_empty() {
        return Err("must list at least one namespace (`*` for all)".to_string());
    }
    Namespaces::new(patterns)
}

fn parse_digest(text: &str) -> Option<Digest> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::grant::Operation;

    const FILE: &str = r#"
        [[tokens]]
        name = "writer"
        token = "w-token"
        namespaces = ["prod-*"]
        access = "read-write"

        [[tokens]]
        name = "reader"
        # sha256("r-token")
        token_sha256 = "6e5ee4bd5c4dd2a2bbe4bb0f1e1bbf04b7b5d15a0fa3e3bd4f02e9bff40c2d5c"
        namespaces = ["*"]
        access = "read-only"

        [[clients]]
        name = "deployer"
        identity = "spiffe://unkey/deployer"
        namespaces = ["staging"]
        access = "read-write"
    "#;

    fn file_with_real_digest() -> String {
        FILE.replace(
            "6e5ee4bd5c4dd2a2bbe4bb0f1e1bbf04b7b5d15a0fa3e3bd4f02e9bff40c2d5c",
            &hex::encode(digest(b"r-token")),
        )
    }

    #[test]
    fn tokens_in_clear_and_as_digests_get_their_grants() {
        let credentials =
            Credentials::new(None, Some(&file_with_real_digest()), false).expect("a valid file");
        let writer = credentials.token_grant(b"w-token").expect("writer");
        assert_eq!(writer.name, "writer");
        assert_eq!(writer.allows(Operation::Write, "prod-eu"), Ok(()));
        assert!(writer.allows(Operation::Read, "staging").is_err());
        let reader = credentials.token_grant(b"r-token").expect("reader");
        assert_eq!(reader.allows(Operation::Read, "staging"), Ok(()));
        assert!(reader.allows(Operation::Write, "staging").is_err());
        assert!(credentials.token_grant(b"w-token ").is_none());
        assert!(credentials.token_grant(b"").is_none());
        assert_eq!(credentials.counts(), (2, 1));
    }

    #[test]
    fn the_single_auth_token_is_read_write_everywhere() {
        let credentials = Credentials::new(Some("admin"), None, false).expect("token");
        let admin = credentials.token_grant(b"admin").expect("admin");
        assert_eq!(admin.name, AUTH_TOKEN_NAME);
        assert_eq!(admin.allows(Operation::Write, "any"), Ok(()));
        assert!(Credentials::new(Some(""), None, false).is_err());
        assert!(
            Credentials::new(Some("w-token"), Some(FILE), false).is_err(),
            "the flag's token may not also be a scoped one"
        );
    }

    #[test]
    fn client_certificates_are_trusted_whole_only_without_a_file() {
        let identities = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let open = Credentials::new(None, None, true).expect("mTLS alone");
        assert!(open.client_grant(&identities(&["anyone"])).is_some());
        let no_mtls = Credentials::new(None, None, false).expect("nothing");
        assert!(no_mtls.client_grant(&identities(&["anyone"])).is_none());

        let scoped = Credentials::new(None, Some(FILE), true).expect("file and mTLS");
        assert!(
            scoped
                .client_grant(&identities(&["spiffe://other"]))
                .is_none()
        );
        let deployer = scoped
            .client_grant(&identities(&["dns.example", "spiffe://unkey/deployer"]))
            .expect("deployer by its URI");
        assert_eq!(deployer.name, "deployer");
        assert!(deployer.allows(Operation::Write, "prod").is_err());
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry_and_field() {
        let cases = [
            (
                "[[tokens]]\nname = \"a\"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "tokens[0] (\"a\").token",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\ntoken_sha256 = \"00\"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "exactly one",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken_sha256 = \"abc\"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "64 hex digits",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"\"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "token: must not be empty",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nnamespaces = []\naccess = \"read-only\"",
                "namespaces: must list",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nnamespaces = [\"*\"]\naccess = \"admin\"",
                "access",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nnamespaces = [\"*\"]\naccess = \"read-only\"\ncolour = 1",
                "colour",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nnamespaces = [\"*\"]\naccess = \"read-only\"\n[[tokens]]\nname = \"b\"\ntoken = \"x\"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "listed twice",
            ),
            (
                "[[tokens]]\nname = \"a\"\ntoken = \"x\"\nnamespaces = [\"*\"]\naccess = \"read-only\"\n[[clients]]\nname = \"a\"\nidentity = \"c\"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "clients[0] (\"a\").name",
            ),
            (
                "[[clients]]\nname = \"c\"\nidentity = \" \"\nnamespaces = [\"*\"]\naccess = \"read-only\"",
                "identity: must not be empty",
            ),
            ("tokens = 3", "invalid type"),
        ];
        for (text, expected) in cases {
            let error = Credentials::new(None, Some(text), false).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
