//! `krane-api` flags; each can also be set through the environment variable named with it.

use clap::Parser;
use krane_platform::metrics::MetricsArgs;
use krane_store::NatsArgs;
use std::net::SocketAddr;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "krane-api",
    version,
    about = "krane GatewayService API (Connect + gRPC)"
)]
pub struct ApiConfig {
    /// Address to serve Connect and gRPC on.
    #[arg(long, env = "KRANE_API_LISTEN", default_value = "0.0.0.0:7070")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// Require `Authorization: Bearer <token>` on every call. Without it the API serves only
    /// on a loopback address, unless `--allow-unauthenticated` says otherwise.
    #[arg(
        long,
        env = "KRANE_AUTH_TOKEN",
        hide_env_values = true,
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub auth_token: Option<String>,

    /// Scoped credentials: a TOML file of bearer tokens (and client-certificate identities),
    /// each with the namespaces it may use (exact or glob) and `read-only` or `read-write`
    /// access (README, "Security"). Reloaded on SIGHUP; a file that does not load then leaves
    /// the credentials in force.
    #[arg(long, env = "KRANE_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<std::path::PathBuf>,

    /// Serve without authentication on a non-loopback address: anyone who reaches the port
    /// can run containers on every Docker host the workers drive. Logged as a warning.
    #[arg(long, env = "KRANE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Images Create and Update may ask for: `registry/repository` patterns, comma-separated
    /// (`*` within a path segment, `**` across: `registry.example.com/unkey/*`). Others are
    /// refused as invalid_argument naming the rule. Unset: any image.
    #[arg(long, env = "KRANE_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,

    /// Serve HTTPS (HTTP/1.1 and h2 by ALPN) with this PEM certificate chain; needs
    /// `--tls-key`.
    #[arg(long, env = "KRANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "KRANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Mutual TLS: client certificates must chain to these PEM CA certificates. A verified
    /// certificate authenticates its caller (as the credentials file's `[[clients]]` say, or
    /// with full access when there is no file); callers without one need a bearer token.
    #[arg(long, env = "KRANE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "KRANE_LOG_JSON")]
    pub log_json: bool,
}

impl ApiConfig {
    /// HTTPS settings, when `--tls-cert` and `--tls-key` are given.
    pub fn tls(&self) -> Option<crate::tls::TlsSettings> {
        Some(crate::tls::TlsSettings {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Whether anything authenticates callers: a token, a credentials file or client
    /// certificates.
    pub fn authenticates(&self) -> bool {
        self.auth_token.is_some() || self.auth_tokens_file.is_some() || self.tls_client_ca.is_some()
    }
}

/// Whether serving on `listen` is allowed with or without a token: `Err` says why not and what
/// to do; `Ok(true)` when it is an open door the operator asked for (to be warned about).
pub fn check_exposure(
    listen: SocketAddr,
    authenticated: bool,
    allow_unauthenticated: bool,
) -> Result<bool, String> {
    if authenticated || listen.ip().is_loopback() {
        return Ok(false);
    }
    if allow_unauthenticated {
        return Ok(true);
    }
    Err(format!(
        "refusing to serve on {listen} without authentication: anyone who reaches it could run \
         containers on every Docker host; set --auth-token (KRANE_AUTH_TOKEN), \
         --auth-tokens-file or --tls-client-ca, listen on a \
         loopback address (--listen 127.0.0.1:{port}), or pass --allow-unauthenticated \
         (KRANE_ALLOW_UNAUTHENTICATED=true) if something in front of it authenticates callers",
        port = listen.port()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_open_door_by_accident() {
        let any: SocketAddr = "0.0.0.0:7070".parse().expect("address");
        let v6: SocketAddr = "[::]:7070".parse().expect("address");
        let loopback: SocketAddr = "127.0.0.1:7070".parse().expect("address");
        let loopback_v6: SocketAddr = "[::1]:7070".parse().expect("address");
        assert_eq!(check_exposure(loopback, false, false), Ok(false));
        assert_eq!(check_exposure(loopback_v6, false, false), Ok(false));
        assert_eq!(check_exposure(any, true, false), Ok(false));
        let refused = check_exposure(any, false, false).expect_err("refused");
        assert!(refused.contains("--auth-token") && refused.contains("--allow-unauthenticated"));
        assert!(check_exposure(v6, false, false).is_err());
        assert_eq!(
            check_exposure(any, false, true),
            Ok(true),
            "asked for: warned"
        );
    }
}
