//! gRPC health (`grpc.health.v1.Health`): `krane.v1.GatewayService` and the server as a whole
//! (`""`) are SERVING while the API is connected to NATS and NOT_SERVING while it is not (calls
//! would fail with `unavailable` then). The NATS connection is looked at every second.

use krane_store::Store;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tracing::info;

/// The services health is reported for.
pub const SERVICES: [&str; 2] = ["", "krane.v1.GatewayService"];

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The health service, kept up to date with the NATS connection until `stop` fires.
pub async fn service(store: Store, stop: CancellationToken) -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    report(&reporter, connected(&store)).await;
    tokio::spawn(follow(reporter, store, stop));
    service
}

fn connected(store: &Store) -> bool {
    store.is_connected()
}

async fn report(reporter: &HealthReporter, connected: bool) {
    let status = if connected {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

async fn follow(reporter: HealthReporter, store: Store, stop: CancellationToken) {
    let mut was = connected(&store);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let now = connected(&store);
        if now != was {
            info!(serving = now, "health changed with the NATS connection");
            report(&reporter, now).await;
            was = now;
        }
    }
}
