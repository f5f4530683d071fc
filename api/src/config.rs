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

    /// Require `Authorization: Bearer <token>` on every call (unset: no authentication).
    #[arg(
        long,
        env = "KRANE_AUTH_TOKEN",
        hide_env_values = true,
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub auth_token: Option<String>,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "KRANE_LOG_JSON")]
    pub log_json: bool,
}
