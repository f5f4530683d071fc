//! Connecting to NATS: the flags both binaries share ([`NatsArgs`]) and [`connect`], which
//! opens the [`Store`] on the connection.

use crate::{Result, Store, StoreError};
use async_nats::jetstream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to reach NATS; shared by both binaries' command lines.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL; several, comma-separated, for a cluster (the client picks one and
    /// fails over to the others).
    #[arg(long, env = "KRANE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Replicas of krane's streams and buckets: 1 on a single server, 3 (or 5) on a cluster.
    /// Existing streams and buckets are changed to it (or the start fails saying what to do).
    #[arg(
        long,
        env = "KRANE_STREAM_REPLICAS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub stream_replicas: u8,

    /// NATS user name (with --nats-password).
    #[arg(long, env = "KRANE_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// NATS password.
    #[arg(long, env = "KRANE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, env = "KRANE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// CA certificate (PEM) to verify the NATS server with; implies TLS.
    #[arg(long, env = "KRANE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(long, env = "KRANE_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "KRANE_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// Require TLS even without a CA or client certificate given.
    #[arg(long, env = "KRANE_NATS_TLS")]
    pub nats_tls: bool,
}

impl NatsArgs {
    /// Just a URL, no credentials or TLS (tests, tools).
    pub fn url(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            stream_replicas: 1,
            nats_user: None,
            nats_password: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls: false,
        }
    }

    async fn options(&self) -> Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(creds) = &self.nats_creds {
            options = options.credentials_file(creds).await.map_err(|error| {
                StoreError::Unavailable(format!("cannot read {}: {error}", creds.display()))
            })?;
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        if self.nats_tls {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// Connects to NATS and opens the log. Fails (rather than retrying forever) when the server
/// cannot be reached at start, so a misconfigured binary says so at once; once connected, the
/// client reconnects on its own and JetStream calls fail fast (`request_timeout`) meanwhile.
pub async fn connect(
    nats: &NatsArgs,
    client_name: &str,
    request_timeout: Duration,
) -> Result<Store> {
    let nats_url = &nats.nats_url;
    let servers: Vec<&str> = nats_url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect();
    let connected_at = Arc::new(Mutex::new(std::time::Instant::now()));
    let on_connect = connected_at.clone();
    let client = nats
        .options()
        .await?
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let connected_at = on_connect.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    async_nats::Event::Connected => {
                        if let Ok(mut at) = connected_at.lock() {
                            *at = std::time::Instant::now();
                        }
                        tracing::info!("connected to NATS");
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        })
        .connect(servers)
        .await
        .map_err(|error| {
            StoreError::Unavailable(format!("cannot connect to {nats_url}: {error}"))
        })?;
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(request_timeout)
        .build(client);
    let mut store = Store::open(jetstream, usize::from(nats.stream_replicas)).await?;
    store.connected_at = connected_at;
    Ok(store)
}
