//! What an authenticated caller may do: a [`Grant`] names the caller (as logs and traces show
//! it, never by its token) and scopes it to namespaces (exact names or globs) with read-only or
//! read-write access. Handlers ask the [`Caller`] of each call before doing anything; a call
//! outside its scope is `permission_denied` and stores nothing.
//!
//! What belongs to no namespace (the hosts, `ListHosts`) is shared by every namespace and
//! tells of the others' load: only a grant covering every namespace (a `*` pattern; read-only
//! is enough) may read it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use connectrpc_axum::ConnectError;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::sync::Arc;
use tracing::info;

/// How much a grant lets its holder do in its namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Get, List, Watch (and the history of gateways).
    ReadOnly,
    /// Everything a read-only grant may, plus Create, Update and Delete.
    ReadWrite,
}

/// What a call does to its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The namespaces a grant covers: exact names or globs (`*`, `?`, `[…]`), `*` for all.
#[derive(Debug, Clone)]
pub struct Namespaces {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Namespaces {
    /// Every namespace.
    pub fn all() -> Self {
        Self::new(&["*".to_string()]).expect("`*` is a valid glob")
    }

    /// The namespaces matching any of `patterns`; the error names the pattern that is not one.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            if pattern.trim().is_empty() {
                return Err("a namespace pattern is empty".to_string());
            }
            let glob = Glob::new(pattern).map_err(|error| format!("{pattern:?}: {error}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|error| error.to_string())?;
        Ok(Self {
            patterns: patterns.to_vec(),
            set,
        })
    }

    pub fn contains(&self, namespace: &str) -> bool {
        self.set.is_match(namespace)
    }

    /// True when one pattern is `*` (or `**`): every namespace, present and future. Globs that
    /// happen to match every name in use do not count.
    pub fn covers_all(&self) -> bool {
        self.patterns
            .iter()
            .any(|pattern| pattern == "*" || pattern == "**")
    }
}

/// Who a caller is and what it may do.
#[derive(Debug)]
pub struct Grant {
    /// The name logs, traces and refusals show (a token's entry name, a certificate identity).
    pub name: String,
    namespaces: Namespaces,
    access: Access,
}

impl Grant {
    pub fn new(name: impl Into<String>, namespaces: Namespaces, access: Access) -> Self {
        Self {
            name: name.into(),
            namespaces,
            access,
        }
    }

    /// Read-write on every namespace (the single `--auth-token`, or no authentication at all).
    pub fn everything(name: impl Into<String>) -> Self {
        Self::new(name, Namespaces::all(), Access::ReadWrite)
    }

    /// `Ok` when this grant allows `operation` on `namespace`; else why not, for the caller.
    pub fn allows(&self, operation: Operation, namespace: &str) -> Result<(), String> {
        if !self.namespaces.contains(namespace) {
            return Err(format!(
                "{:?} may not {} namespace {namespace:?} (it may use: {})",
                self.name,
                operation.verb(),
                self.namespaces.patterns.join(", ")
            ));
        }
        if operation == Operation::Write && self.access == Access::ReadOnly {
            return Err(format!(
                "{:?} is read-only: it may not change namespace {namespace:?}",
                self.name
            ));
        }
        Ok(())
    }

    /// `Ok` when this grant may read what belongs to no namespace (the hosts): it must cover
    /// every namespace; else why not, for the caller.
    pub fn allows_cluster_read(&self) -> Result<(), String> {
        if self.namespaces.covers_all() {
            return Ok(());
        }
        Err(format!(
            "{:?} may not read the hosts: that needs a grant of every namespace (\"*\"), and it \
             may use only: {}",
            self.name,
            self.namespaces.patterns.join(", ")
        ))
    }
}

/// The caller of a call, as authentication found it (an extension on every request; the
/// handlers extract it). A request without one is refused: authorization fails closed.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Grant>);

impl Caller {
    /// The caller's name, as logs, traces and the commands it stores show it.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Refused (logged with the caller's name) unless the caller may do `operation` on
    /// `namespace`. Handlers call it before validating or storing anything else.
    pub fn may(&self, operation: Operation, namespace: &str) -> Result<(), Denied> {
        self.0.allows(operation, namespace).map_err(|reason| {
            info!(caller = %self.0.name, namespace, %reason, "call refused: permission denied");
            Denied(reason)
        })
    }
}

impl Caller {
    /// Refused (logged) unless the caller may read what belongs to no namespace: the hosts.
    pub fn may_read_cluster(&self) -> Result<(), Denied> {
        self.0.allows_cluster_read().map_err(|reason| {
            info!(caller = %self.0.name, %reason, "call refused: permission denied");
            Denied(reason)
        })
    }
}

/// A call outside its caller's grant: `permission_denied`, saying why.
#[derive(Debug)]
pub struct Denied(String);

impl From<Denied> for ConnectError {
    fn from(denied: Denied) -> Self {
        ConnectError::new_permission_denied(denied.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ConnectError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ConnectError::new_unauthenticated("the call was not authenticated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(patterns: &[&str], access: Access) -> Grant {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Grant::new("ci", Namespaces::new(&patterns).expect("patterns"), access)
    }

    #[test]
    fn a_grant_covers_its_namespaces_exactly_or_by_glob() {
        let grant = grant(&["staging", "prod-*"], Access::ReadWrite);
        for namespace in ["staging", "prod-eu", "prod-"] {
            assert_eq!(
                grant.allows(Operation::Write, namespace),
                Ok(()),
                "{namespace}"
            );
        }
        for namespace in ["staging2", "prod", "dev", "xprod-eu"] {
            let refused = grant
                .allows(Operation::Read, namespace)
                .expect_err(namespace);
            assert!(
                refused.contains(namespace) && refused.contains("\"ci\""),
                "{refused}"
            );
        }
    }

    #[test]
    fn read_only_grants_read_and_never_write() {
        let grant = grant(&["*"], Access::ReadOnly);
        assert_eq!(grant.allows(Operation::Read, "anything"), Ok(()));
        let refused = grant
            .allows(Operation::Write, "anything")
            .expect_err("read-only");
        assert!(refused.contains("read-only"), "{refused}");
    }

    #[test]
    fn everything_is_read_write_everywhere() {
        let grant = Grant::everything("admin");
        assert_eq!(grant.allows(Operation::Write, "a"), Ok(()));
        assert_eq!(grant.allows(Operation::Read, "b.c_d-e"), Ok(()));
    }

    #[test]
    fn only_grants_of_every_namespace_read_the_hosts() {
        assert_eq!(
            grant(&["*"], Access::ReadOnly).allows_cluster_read(),
            Ok(())
        );
        assert_eq!(Grant::everything("admin").allows_cluster_read(), Ok(()));
        for patterns in [&["prod-*"][..], &["a", "b"], &["?*"]] {
            let refused = grant(patterns, Access::ReadWrite)
                .allows_cluster_read()
                .expect_err("not every namespace");
            assert!(
                refused.contains("hosts") && refused.contains(patterns[0]),
                "{refused}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(Namespaces::new(&["".to_string()]).is_err());
        let error = Namespaces::new(&["prod-[".to_string()]).expect_err("unclosed class");
        assert!(error.contains("prod-["), "{error}");
    }
}
