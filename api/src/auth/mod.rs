//! Who may call, and what they may do.
//!
//! - [`bearer`]: the `Authorization: Bearer <token>` header and token digests.
//! - [`credentials`]: the tokens and client-certificate identities let in, each with a grant
//!   (`--auth-token`, `--auth-tokens-file`, `--tls-client-ca`).
//! - [`grant`]: what a caller may do (namespaces, read-only or read-write); the [`Caller`]
//!   handlers ask before acting.
//! - [`peer`]: the identity of a verified client certificate (mutual TLS).
//!
//! [`authenticate`] runs in front of every call: it finds the caller's grant (a bearer token
//! first; without one, a verified client certificate) and attaches it to the request, or
//! refuses the call as `unauthenticated` before its body is read. Handlers then refuse calls
//! outside the grant as `permission_denied`. The credentials are replaced whole on
//! [`Authenticator::reload`] (SIGHUP), without touching open connections; a token never
//! appears in a log, a trace or an answer: callers are named by their entry's name.

pub mod bearer;
pub mod credentials;
pub mod grant;
pub mod peer;

pub use grant::{Caller, Operation};

use crate::refusal::Wire;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use bearer::Refusal;
use connectrpc_axum::ConnectError;
use credentials::Credentials;
use grant::Grant;
use peer::ClientIdentity;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

/// What lets callers in, as the flags give it.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// `--auth-token`: one token, read-write on every namespace.
    pub auth_token: Option<String>,
    /// `--auth-tokens-file`: scoped tokens and client identities, reloaded on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// `--tls-client-ca` is set: verified client certificates authenticate callers.
    pub client_certificates: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthSettings")
            .field("auth_token", &self.auth_token.as_ref().map(|_| "…"))
            .field("tokens_file", &self.tokens_file)
            .field("client_certificates", &self.client_certificates)
            .finish()
    }
}

impl AuthSettings {
    /// True when something authenticates callers.
    pub fn authenticates(&self) -> bool {
        self.auth_token.is_some() || self.tokens_file.is_some() || self.client_certificates
    }
}

/// The credentials in force, replaceable while serving.
pub struct Authenticator {
    settings: AuthSettings,
    current: ArcSwap<Credentials>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The grant of every call when nothing authenticates callers (a loopback API, or one behind
/// a proxy that authenticates, `--allow-unauthenticated`).
static UNAUTHENTICATED: LazyLock<Arc<Grant>> =
    LazyLock::new(|| Arc::new(Grant::everything("unauthenticated")));

impl Authenticator {
    /// The authenticator of `settings`, or `None` when nothing authenticates callers. A
    /// credentials file that cannot be read or is not valid is an error.
    pub fn new(settings: AuthSettings) -> anyhow::Result<Option<Arc<Self>>> {
        if !settings.authenticates() {
            return Ok(None);
        }
        let credentials = load(&settings)?;
        let (tokens, clients) = credentials.counts();
        tracing::info!(
            tokens,
            client_identities = clients,
            client_certificates = settings.client_certificates,
            "credentials loaded"
        );
        Ok(Some(Arc::new(Self {
            settings,
            current: ArcSwap::from_pointee(credentials),
        })))
    }

    /// Reads the credentials file again and puts it in force for the calls that follow. On
    /// an error the credentials in force stay as they were.
    pub fn reload(&self) -> anyhow::Result<(usize, usize)> {
        let credentials = load(&self.settings)?;
        let counts = credentials.counts();
        self.current.store(Arc::new(credentials));
        Ok(counts)
    }

    /// Whether a credentials file is configured (something to reload).
    pub fn reloads(&self) -> bool {
        self.settings.tokens_file.is_some()
    }

    /// The caller's grant: by its bearer token if it sends one (a wrong token is refused even
    /// with a good certificate), else by its verified client certificate.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<&ClientIdentity>,
    ) -> Result<Arc<Grant>, Refusal> {
        let credentials = self.current.load();
        if let Some(token) = bearer::bearer_token(headers)? {
            return credentials.token_grant(token).ok_or(Refusal::Wrong);
        }
        match client {
            Some(client) => credentials
                .client_grant(&client.names)
                .ok_or(Refusal::UnknownClient),
            None => Err(Refusal::Missing),
        }
    }
}

fn load(settings: &AuthSettings) -> anyhow::Result<Credentials> {
    let file = match &settings.tokens_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
            anyhow::anyhow!(
                "cannot read the credentials file {}: {error}",
                path.display()
            )
        })?),
        None => None,
    };
    Credentials::new(
        settings.auth_token.as_deref(),
        file.as_deref(),
        settings.client_certificates,
    )
    .map_err(|error| match &settings.tokens_file {
        Some(path) => anyhow::anyhow!("credentials file {}: {error}", path.display()),
        None => anyhow::anyhow!("{error}"),
    })
}

/// Middleware (`axum::middleware::from_fn_with_state`): lets in calls with credentials, as
/// their [`Caller`], and refuses the others as `unauthenticated`.
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request.extensions().get::<ClientIdentity>();
    match authenticator.authenticate(request.headers(), client) {
        Ok(grant) => {
            crate::rpc_telemetry::caller(&grant.name);
            request.extensions_mut().insert(Caller(grant));
            next.run(request).await
        }
        Err(refusal) => {
            tracing::info!(
                path = request.uri().path(),
                reason = refusal.message(),
                "call refused: unauthenticated"
            );
            let error = ConnectError::new_unauthenticated(refusal.message())
                .with_meta(header::WWW_AUTHENTICATE, "Bearer realm=\"krane\"");
            Wire::of(&request).refuse(error)
        }
    }
}

/// Middleware for an API that authenticates nobody: every call may do everything.
pub async fn let_everyone_in(mut request: Request, next: Next) -> Response {
    request
        .extensions_mut()
        .insert(Caller(UNAUTHENTICATED.clone()));
    next.run(request).await
}

/// Reloads the credentials file on every SIGHUP until `stop` fires; a file that does not load
/// is logged and leaves the credentials in force as they were.
pub fn reload_on_hangup(
    authenticator: Arc<Authenticator>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            match authenticator.reload() {
                Ok((tokens, clients)) => {
                    tracing::info!(
                        tokens,
                        client_identities = clients,
                        "credentials reloaded (SIGHUP)"
                    )
                }
                Err(error) => tracing::error!(
                    "credentials NOT reloaded, the previous ones stay in force: {error:#}"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    fn settings(token: Option<&str>, file: Option<PathBuf>, mtls: bool) -> AuthSettings {
        AuthSettings {
            auth_token: token.map(str::to_string),
            tokens_file: file,
            client_certificates: mtls,
        }
    }

    #[test]
    fn nothing_configured_authenticates_nobody() {
        assert!(
            Authenticator::new(AuthSettings::default())
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn a_token_is_needed_and_must_be_right() {
        let auth = Authenticator::new(settings(Some("s3cr3t"), None, false))
            .expect("ok")
            .expect("authenticates");
        assert_eq!(
            auth.authenticate(&bearer("s3cr3t"), None).expect("in").name,
            "auth-token"
        );
        assert_eq!(
            auth.authenticate(&bearer("s3cr3"), None).err(),
            Some(Refusal::Wrong)
        );
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), None).err(),
            Some(Refusal::Missing)
        );
        let client = ClientIdentity {
            names: vec!["spiffe://x".into()],
        };
        assert_eq!(
            auth.authenticate(&HeaderMap::new(), Some(&client)).err(),
            Some(Refusal::UnknownClient),
            "certificates let nobody in without --tls-client-ca"
        );
    }

    #[test]
    fn a_certificate_lets_in_without_a_token_but_a_wrong_token_still_refuses() {
        let auth = Authenticator::new(settings(Some("s3cr3t"), None, true))
            .expect("ok")
            .expect("authenticates");
        let client = ClientIdentity {
            names: vec!["spiffe://unkey/cp".into()],
        };
        assert!(auth.authenticate(&HeaderMap::new(), Some(&client)).is_ok());
        assert_eq!(
            auth.authenticate(&bearer("wrong"), Some(&client)).err(),
            Some(Refusal::Wrong)
        );
    }

    #[test]
    fn a_reload_replaces_the_credentials_and_a_bad_file_keeps_them() {
        let dir = std::env::temp_dir().join(format!("krane-auth-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tokens.toml");
        let entry = |token: &str| {
            format!(
                "[[tokens]]\nname = \"{token}\"\ntoken = \"{token}\"\nnamespaces = [\"*\"]\naccess = \"read-only\"\n"
            )
        };
        std::fs::write(&path, entry("first")).expect("write");
        let auth = Authenticator::new(settings(None, Some(path.clone()), false))
            .expect("ok")
            .expect("authenticates");
        assert!(auth.authenticate(&bearer("first"), None).is_ok());

        std::fs::write(&path, entry("second")).expect("write");
        assert_eq!(auth.reload().expect("reloaded"), (1, 0));
        assert_eq!(
            auth.authenticate(&bearer("first"), None).err(),
            Some(Refusal::Wrong)
        );
        assert!(auth.authenticate(&bearer("second"), None).is_ok());

        std::fs::write(&path, "[[tokens]]\nname = ").expect("write");
        assert!(auth.reload().is_err());
        assert!(
            auth.authenticate(&bearer("second"), None).is_ok(),
            "a bad file leaves the credentials in force"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
