//! `krane-api`: connects to NATS (exiting with a clear message when it cannot), then serves
//! GatewayService until SIGTERM/SIGINT, finishing requests already under way.

use clap::Parser;
use krane_api::config::ApiConfig;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// JetStream calls give up after this, so callers get `unavailable` fast while NATS is away.
const NATS_REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

#[tokio::main]
async fn main() -> ExitCode {
    krane_platform::crypto::install_default_provider();
    let config = ApiConfig::parse();
    let telemetry = match krane_platform::telemetry::init(config.log_json, "krane-api") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("krane-api: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            eprintln!("krane-api: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans (the calls drained at shutdown) are sent before exiting.
    telemetry.shutdown();
    code
}

async fn run(config: ApiConfig) -> anyhow::Result<()> {
    let open = krane_api::config::check_exposure(
        config.listen,
        config.authenticates(),
        config.allow_unauthenticated,
    )
    .map_err(|refusal| anyhow::anyhow!(refusal))?;
    if open {
        warn!(listen = %config.listen, "serving WITHOUT authentication on a non-loopback address (--allow-unauthenticated): anyone who reaches it can run containers on every Docker host");
    }
    let stop = CancellationToken::new();
    krane_platform::shutdown::cancel_on_signal(stop.clone());
    krane_api::rpc_telemetry::register_metrics();
    krane_store::register_metrics();
    config.metrics.serve(stop.clone()).await?;
    let store = krane_store::connect(&config.nats, "krane-api", NATS_REQUEST_TIMEOUT)
        .await
        .map_err(|error| {
            anyhow::anyhow!("NATS at {} is not usable: {error}", config.nats.nats_url)
        })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;
    let allowed_images = krane_core::images::ImagePolicy::new(&config.allowed_images)
        .map_err(|error| anyhow::anyhow!("--allowed-images: {error}"))?;
    let tls = config.tls();
    let options = krane_api::ApiOptions {
        tls,
        auth_token: config.auth_token,
        auth_tokens_file: config.auth_tokens_file,
        allowed_images,
    };
    krane_api::serve(listener, store, options, stop).await?;
    info!("krane-api stopped");
    Ok(())
}
