//! Further in-process workers, each with its own host id and Docker engine, for multi-host
//! tests. A worker stopped here stops heartbeating like a lost host would.

use crate::{Krane, worker_config};
use krane_worker::runtime::docker::DockerRuntime;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct HostWorker {
    pub host_id: String,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl HostWorker {
    /// Starts a worker for `host_id` on the engine at `docker_host`, reporting addresses with
    /// `advertise_host`; `extra_args` are further `krane-worker` flags.
    pub async fn start(
        krane: &Krane,
        host_id: &str,
        docker_host: &str,
        advertise_host: &str,
        extra_args: &[&str],
    ) -> Self {
        let mut args = vec![
            "--advertise-host",
            advertise_host,
            "--docker-host",
            docker_host,
        ];
        args.extend_from_slice(extra_args);
        let config = worker_config(&krane.nats.url(), host_id, &args);
        let runtime = DockerRuntime::connect(
            Some(docker_host),
            Default::default(),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|error| panic!("engine {docker_host} for {host_id}: {error}"))
        .with_probe(config.probe(), config.probe_interval)
        .with_hardening(config.hardening());
        let stop = CancellationToken::new();
        let log = krane.store.clone();
        let token = stop.clone();
        let task =
            tokio::spawn(
                async move { krane_worker::run(&config, log, Arc::new(runtime), token).await },
            );
        Self {
            host_id: host_id.to_string(),
            stop,
            task: Some(task),
        }
    }

    /// Stops the worker (its heartbeat stops; the host is lost once the entry expires).
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for HostWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
