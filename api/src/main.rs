//! `krane-api`: connects to NATS (exiting with a clear message when it cannot), then serves
//! GatewayService until SIGTERM/SIGINT, finishing requests already under way.

use clap::Parser;
use krane_api::config::ApiConfig;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// JetStream calls give up after this, so callers get `unavailable` fast while NATS is away.
const NATS_REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

#[tokio::main]
async fn main() -> ExitCode {
    let config = ApiConfig::parse();
    krane_core::telemetry::init_logging(config.log_json);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            eprintln!("krane-api: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ApiConfig) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    krane_core::shutdown::cancel_on_signal(stop.clone());
    let log = krane_core::log::connect(&config.nats, "krane-api", NATS_REQUEST_TIMEOUT)
        .await
        .map_err(|error| {
            anyhow::anyhow!("NATS at {} is not usable: {error}", config.nats.nats_url)
        })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;
    let options = krane_api::ApiOptions {
        auth_token: config.auth_token,
    };
    krane_api::serve(listener, log, options, stop).await?;
    info!("krane-api stopped");
    Ok(())
}
