//! Test harness for krane's end-to-end tests. Everything here is real: a `nats-server` started
//! on a free port with a temporary store, the machine's Docker engine, and the API and worker
//! running in-process on top of them. Nothing skips: a missing server binary, engine or test
//! image fails the test with a message saying how to get it (`scripts/test.sh` installs all).

pub mod client;
pub mod docker;
pub mod engines;
pub mod nats;
pub mod otlp;
pub mod process;
pub mod registry;
pub mod tls;
pub mod workers;

pub use client::{Protocol, RpcError, TestClient};
pub use nats::{NatsCluster, NatsServer};

use clap::Parser;
use krane_store::Store;
use krane_worker::config::WorkerConfig;
use krane_worker::runtime::ContainerRuntime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Image of the test gateway (answers HTTP on 8040), built by `scripts/build-images.sh`.
pub const TEST_IMAGE: &str = "krane-test-gateway:dev";

/// A namespace no other test (or test run) uses, so tests can share one Docker engine.
pub fn unique_namespace(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        prefix
    )
}

/// A whole krane: NATS, the API and one worker on the local Docker engine.
pub struct Krane {
    pub nats: NatsServer,
    pub api_addr: SocketAddr,
    pub store: Store,
    pub namespace: String,
    stop: CancellationToken,
    worker_stop: Option<CancellationToken>,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
    api: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Krane {
    /// Starts everything; `namespace` labels this test's containers (removed on drop).
    pub async fn start(namespace: &str) -> Self {
        let mut krane = Self::start_without_worker(namespace).await;
        krane.start_worker(&[]).await;
        krane
    }

    /// Starts NATS and the API only; the test runs workers itself (in-process or as processes).
    pub async fn start_without_worker(namespace: &str) -> Self {
        if std::env::var_os("KRANE_TEST_LOG").is_some() {
            krane_platform::telemetry::init_logging(false);
        }
        docker::require_test_image().await;
        let nats = NatsServer::start().await;
        let store = krane_store::connect(
            &krane_store::NatsArgs::url(nats.url()),
            "krane-test",
            Duration::from_secs(5),
        )
        .await
        .expect("open the JetStream store");
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port for the API");
        let api_addr = listener.local_addr().expect("API address");
        let api = tokio::spawn(krane_api::serve(
            listener,
            store.clone(),
            Default::default(),
            stop.clone(),
        ));
        Self {
            nats,
            api_addr,
            store,
            namespace: namespace.to_string(),
            stop,
            worker_stop: None,
            worker: None,
            api: Some(api),
        }
    }

    /// Another API on this test's NATS, served with `options` on a free loopback port until
    /// the returned token is cancelled (or the harness stops).
    pub async fn serve_api(
        &self,
        options: krane_api::ApiOptions,
    ) -> (SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port for the API");
        let address = listener.local_addr().expect("API address");
        let stop = self.stop.child_token();
        let store = self.store.clone();
        let serving = stop.clone();
        tokio::spawn(async move {
            if let Err(error) = krane_api::serve(listener, store, options, serving).await {
                panic!("the API stopped with an error: {error:#}");
            }
        });
        (address, stop)
    }

    /// The `krane-worker` binary as a process on this test's NATS and host id.
    pub fn worker_process(&self, extra_args: &[&str]) -> process::ServiceProcess {
        let mut args: Vec<String> = [
            "--nats-url",
            &self.nats.url(),
            "--host-id",
            &self.host_id(),
            "--advertise-host",
            "127.0.0.1",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let log = std::env::temp_dir().join(format!("{}-worker.log", self.namespace));
        process::ServiceProcess::spawn("krane-worker", args, log)
    }

    /// Stops the in-process worker as SIGTERM would and waits for it to exit cleanly.
    pub async fn shutdown_worker(&mut self) {
        if let Some(stop) = self.worker_stop.take() {
            stop.cancel();
        }
        if let Some(worker) = self.worker.take() {
            tokio::time::timeout(Duration::from_secs(30), worker)
                .await
                .expect("worker stops within 30 s")
                .expect("worker task did not panic")
                .expect("worker exits cleanly");
        }
    }

    /// Starts the worker (again) on the local Docker engine, with extra `krane-worker` flags
    /// (the registry's credentials and the pull timeout among them).
    pub async fn start_worker(&mut self, extra_args: &[&str]) {
        let config = worker_config(&self.nats.url(), &self.host_id(), extra_args);
        let auth = krane_worker::runtime::docker::RegistryAuth {
            username: config.registry_username.clone(),
            password: config.registry_password.clone(),
            server: config.registry_server.clone(),
        };
        let runtime =
            krane_worker::runtime::docker::DockerRuntime::connect(None, auth, config.pull_timeout)
                .await
                .expect("connect to the Docker engine");
        self.start_worker_on(Arc::new(runtime), extra_args);
    }

    /// Starts the worker (again) on any container runtime (e.g. the in-memory fake).
    pub fn start_worker_on(&mut self, runtime: Arc<dyn ContainerRuntime>, extra_args: &[&str]) {
        let config = worker_config(&self.nats.url(), &self.host_id(), extra_args);
        let store = self.store.clone();
        let stop = self.stop.child_token();
        self.worker_stop = Some(stop.clone());
        self.worker = Some(tokio::spawn(async move {
            krane_worker::run(&config, store, runtime, stop).await
        }));
    }

    /// The worker's host id: the test's namespace, so a worker's resync and event follower
    /// only ever see the containers of its own test (tests share one engine).
    pub fn host_id(&self) -> String {
        self.namespace.clone()
    }

    pub fn client(&self, protocol: Protocol) -> TestClient {
        TestClient::new(protocol, self.api_addr)
    }

    /// Stores `payload` as it is on `subject`, past krane's encoder (a message from another
    /// version, or garbage); returns its stream sequence.
    pub async fn publish_raw(&self, subject: String, payload: &'static str) -> u64 {
        self.store
            .jetstream()
            .publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored")
            .sequence
    }

    /// Restarts the in-process API abruptly (its task is aborted, as by SIGKILL) and serves it
    /// again on the same address.
    pub async fn restart_api(&mut self) {
        if let Some(api) = self.api.take() {
            api.abort();
            let _ = api.await;
        }
        let mut attempts = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.api_addr).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(%error, "the API address is not free yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot bind the API to {} again: {error}", self.api_addr),
            }
        };
        self.api = Some(tokio::spawn(krane_api::serve(
            listener,
            self.store.clone(),
            Default::default(),
            self.stop.clone(),
        )));
    }

    /// Stops API and worker the way SIGTERM would, and waits for both.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        for handle in [self.worker.take(), self.api.take()].into_iter().flatten() {
            let result = tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("shutdown within 30 s")
                .expect("task did not panic");
            result.expect("clean exit");
        }
    }
}

impl Drop for Krane {
    fn drop(&mut self) {
        self.stop.cancel();
        docker::remove_namespace_containers(&self.namespace);
    }
}

/// An HTTP client for tests (reqwest; TLS through the process's rustls provider).
pub fn http_client() -> reqwest::Client {
    krane_platform::crypto::install_default_provider();
    reqwest::Client::new()
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The worker's configuration, parsed from flags exactly as the binary would.
pub fn worker_config(nats_url: &str, host_id: &str, extra_args: &[&str]) -> WorkerConfig {
    let mut args = vec![
        "krane-worker",
        "--nats-url",
        nats_url,
        "--host-id",
        host_id,
        "--ack-wait",
        "10s",
        "--shutdown-grace",
        "5s",
    ];
    // A test may ask for its own pull timeout (a flag given twice is refused).
    if !extra_args.contains(&"--pull-timeout") {
        args.extend_from_slice(&["--pull-timeout", "20s"]);
    }
    args.extend_from_slice(extra_args);
    WorkerConfig::parse_from(args)
}

/// GETs `/` of a gateway instance; retried for a few seconds because a container is RUNNING a
/// moment before the process inside listens.
pub async fn fetch_instance(address: &str) -> String {
    let http = crate::http_client();
    eventually(
        &format!("{address} answers HTTP"),
        Duration::from_secs(10),
        || async {
            let response = http
                .get(format!("http://{address}/"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            response.text().await.ok()
        },
    )
    .await
}

/// One GET of `path` on an instance, no retry: a RUNNING instance answers at once.
pub async fn answers_at_once(address: &str, path: &str) -> bool {
    let response = crate::http_client()
        .get(format!("http://{address}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    response.is_ok_and(|response| response.status().is_success())
}

/// Waits until the gateway has exactly `replicas` instances, all RUNNING, and returns them.
pub async fn wait_all_running(
    client: &TestClient,
    namespace: &str,
    gateway_id: &str,
    replicas: usize,
    within: Duration,
) -> krane_proto::krane::v1::GetGatewayResponse {
    use krane_proto::krane::v1::GatewayStatus;
    let what = format!("{replicas} instances of {namespace}/{gateway_id} RUNNING");
    eventually(&what, within, || async {
        let got = client.get(namespace, gateway_id).await.ok()?;
        let all_running = got.instances.len() == replicas
            && got
                .instances
                .iter()
                .all(|i| i.status == GatewayStatus::Running as i32);
        all_running.then_some(got)
    })
    .await
}

/// While the gateway's engine is down: its instances soon say they wait for the engine, and stay
/// PENDING (never FAILED) for longer than a few `--max-attempts` deliveries would take.
pub async fn assert_engine_outage_is_waited_out(
    client: &TestClient,
    namespace: &str,
    gateway_id: &str,
    within: Duration,
) {
    use krane_proto::krane::v1::GatewayStatus;
    let waiting = eventually("the engine outage is shown", within, || async {
        let got = client.get(namespace, gateway_id).await.ok()?;
        let first = got.instances.first()?.clone();
        first
            .reason
            .contains("waiting for the Docker engine")
            .then_some(first)
    })
    .await;
    assert_eq!(waiting.status, GatewayStatus::Pending as i32);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = client.get(namespace, gateway_id).await.expect("get");
    assert!(
        got.instances
            .iter()
            .all(|i| i.status == GatewayStatus::Pending as i32),
        "an engine outage must not fail the gateway: {got:?}"
    );
}
