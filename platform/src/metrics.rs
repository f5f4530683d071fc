//! Prometheus metrics shared by the binaries: one process-wide registry that each binary's
//! metric families register into (names get the `krane_` prefix), and a small HTTP listener
//! serving it as text at `/metrics` when `--metrics-listen` is set.

use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Metric, Registry};
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Content type of the exposition (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("krane")));

/// Where to serve metrics; shared by both binaries' command lines.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Address to serve Prometheus metrics on (`GET /metrics`); no metrics listener when unset.
    #[arg(long, env = "KRANE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Serves `/metrics` until `stop` when `--metrics-listen` is set (see [`serve`]).
    pub async fn serve(&self, stop: CancellationToken) -> std::io::Result<()> {
        let Some(listen) = self.metrics_listen else {
            return Ok(());
        };
        serve(listen, stop).await.map(|_| ()).map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot serve metrics on {listen}: {error}"),
            )
        })
    }
}

/// Registers `metric` as `krane_<name>` and hands it back (metrics are shared handles).
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: M) -> M {
    match REGISTRY.lock() {
        Ok(mut registry) => registry.register(name, help, metric.clone()),
        Err(_) => warn!(name, "metrics registry poisoned; metric not exposed"),
    }
    metric
}

/// Latency buckets in seconds: 1 ms doubling up to about 65 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// Every registered metric in the text exposition format.
pub fn render() -> String {
    let mut text = String::new();
    if let Ok(registry) = REGISTRY.lock()
        && let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry)
    {
        warn!(%error, "cannot encode metrics");
    }
    text
}

/// Binds `listen` now (so a bad address fails start-up) and serves `/metrics` until `stop`.
/// Returns the bound address.
pub async fn serve(listen: SocketAddr, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            warn!(%error, "metrics listener failed");
        }
    });
    info!(%address, "serving metrics at /metrics");
    Ok(address)
}

async fn scrape() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_metrics_are_rendered_with_the_prefix() {
        let counter = register(
            "test_things",
            "Things counted in a test",
            Counter::<u64>::default(),
        );
        counter.inc();
        let text = render();
        assert!(text.contains("# TYPE krane_test_things counter"), "{text}");
        assert!(text.contains("krane_test_things_total 1"), "{text}");
    }
}
