//! What the benchmarks run on: a nats-server of their own (temporary store, default or
//! per-write fsync), the API in-process, Connect clients, and helpers to wait for gateways.

use anyhow::Context;
use futures::StreamExt;
use krane_core::names;
use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_proto::krane::v1::CreateGatewayRequest;
use krane_proto::krane::v1::gateway_service_connect_client::GatewayServiceClient;
use krane_store::{NatsArgs, Store};
use krane_tests::{NatsCluster, NatsServer};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use krane_tests::TEST_IMAGE;
pub use krane_tests::client::gateway_request;

/// When JetStream flushes its files to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// nats-server's default (`sync_interval` 2 minutes: writes reach the OS page cache).
    Default,
    /// `jetstream { sync_interval: always }`: fsync after every write.
    Always,
}

/// Where the benchmark's NATS runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Broker {
    /// One nats-server.
    Single,
    /// Three nats-servers in a cluster on loopback, streams and buckets with three replicas.
    Cluster,
}

/// A nats-server (or a 3-node cluster) with its configuration file (kept alive as long as the
/// servers).
pub struct Nats {
    servers: Servers,
    _config: Option<tempfile::NamedTempFile>,
}

enum Servers {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    pub async fn start(fsync: Fsync) -> anyhow::Result<Self> {
        match fsync {
            Fsync::Default => Ok(Self {
                servers: Servers::Single(NatsServer::start().await),
                _config: None,
            }),
            Fsync::Always => {
                let config = tempfile::Builder::new().suffix(".conf").tempfile()?;
                std::fs::write(config.path(), "jetstream {\n  sync_interval: always\n}\n")?;
                let path = config.path().to_string_lossy().into_owned();
                Ok(Self {
                    servers: Servers::Single(NatsServer::start_with(&["-c", &path]).await),
                    _config: Some(config),
                })
            }
        }
    }

    /// One server or a 3-node cluster (default fsync).
    pub async fn start_on(broker: Broker) -> anyhow::Result<Self> {
        match broker {
            Broker::Single => Self::start(Fsync::Default).await,
            Broker::Cluster => {
                let nats = Self {
                    servers: Servers::Cluster(NatsCluster::start(3).await),
                    _config: None,
                };
                // The first store opened creates the R3 streams, once the cluster has elected
                // its JetStream leader.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    match nats.log().await {
                        Ok(_) => break,
                        Err(error) if tokio::time::Instant::now() < deadline => {
                            eprintln!("waiting for the cluster's JetStream: {error:#}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(error) => return Err(error),
                    }
                }
                Ok(nats)
            }
        }
    }

    /// Every server's URL, comma-separated.
    pub fn url(&self) -> String {
        match &self.servers {
            Servers::Single(server) => server.url(),
            Servers::Cluster(cluster) => cluster.urls(),
        }
    }

    /// Replicas of the streams and buckets on these servers.
    pub fn replicas(&self) -> u8 {
        match &self.servers {
            Servers::Single(_) => 1,
            Servers::Cluster(cluster) => u8::try_from(cluster.nodes.len()).unwrap_or(3),
        }
    }

    /// The flags a worker needs for these servers, besides `--nats-url`.
    pub fn worker_args(&self) -> Vec<String> {
        vec!["--stream-replicas".into(), self.replicas().to_string()]
    }

    pub async fn log(&self) -> anyhow::Result<Store> {
        let args = NatsArgs {
            stream_replicas: self.replicas(),
            ..NatsArgs::url(self.url())
        };
        krane_store::connect(&args, "krane-bench", Duration::from_secs(10))
            .await
            .context("open the JetStream log")
    }
}

/// Where the release `krane-api` and `krane-worker` binaries are: `dir` if given, else next to
/// this binary (build them with `cargo build --release -p krane-api -p krane-worker`).
pub fn bin_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir.to_path_buf()),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow::anyhow!("no directory for this binary")),
    }
}

/// The API served in-process on a free loopback port.
pub struct Api {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Api {
    pub async fn start(log: Store) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(krane_api::serve(
            listener,
            log,
            Default::default(),
            stop.clone(),
        ));
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// A Connect client speaking binary protobuf (one connection pool per client).
    pub fn client(&self) -> anyhow::Result<GatewayServiceClient> {
        client_for(self.addr)
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn client_for(addr: SocketAddr) -> anyhow::Result<GatewayServiceClient> {
    GatewayServiceClient::builder(format!("http://{addr}"))
        .timeout(Duration::from_secs(30))
        .use_proto()
        .build()
        .map_err(|error| anyhow::anyhow!("build the Connect client: {error}"))
}

/// Worker flags that size a simulated host (an in-memory runtime) for every replica a
/// benchmark places on it: placement by resources is not what these benchmarks measure, and
/// the in-memory runtime's own figures (64 CPUs, 256 GiB) hold only 640 replicas of the
/// benchmarks' 100 millicores.
pub const LARGE_HOST_ARGS: [&str; 4] =
    ["--cpu-millicores", "100000000", "--memory-mib", "100000000"];

/// Starts an in-process worker for `host_id` on `runtime`, on `nats`; cancel `stop` to end it.
pub fn start_worker(
    nats: &Nats,
    host_id: &str,
    log: Store,
    runtime: std::sync::Arc<dyn krane_worker::runtime::ContainerRuntime>,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let extra = nats.worker_args();
    let extra: Vec<&str> = extra
        .iter()
        .map(String::as_str)
        .chain(LARGE_HOST_ARGS)
        .collect();
    let config = krane_tests::worker_config(&nats.url(), host_id, &extra);
    tokio::spawn(async move { krane_worker::run(&config, log, runtime, stop).await })
}

/// Waits until `count` hosts heartbeat (workers announce themselves at start), then long
/// enough for every worker to have refreshed its view of live hosts (placement uses it).
pub async fn wait_for_hosts(log: &Store, count: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.live_hosts().await?.len() < count {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{count} workers did not heartbeat within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    Ok(())
}

/// Follows the gateways bucket until `count` distinct records are RUNNING; returns when so.
/// Start it (spawn it) before the creates so no update is missed.
pub async fn watch_running(log: Store, count: usize) -> anyhow::Result<()> {
    let bucket = log
        .jetstream()
        .get_key_value(names::GATEWAYS_BUCKET)
        .await
        .context("open the gateways bucket")?;
    let mut updates = bucket.watch_all().await.context("watch the bucket")?;
    let mut running = HashSet::new();
    while running.len() < count {
        let Some(entry) = updates.next().await else {
            anyhow::bail!("the bucket watch ended");
        };
        let entry = entry?;
        if let Ok(record) = krane_core::codec::decode::<GatewayRecord>(&entry.value)
            && record.overall_status() == InstanceStatus::Running
        {
            running.insert(entry.key);
        }
    }
    Ok(())
}

/// Runs `count` jobs with at most `concurrency` at once, failing on the first error.
pub async fn for_each_concurrent<F, Fut>(
    count: usize,
    concurrency: usize,
    job: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter((0..count).map(job))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Removes every container of a namespace (best effort, through the docker CLI).
pub use krane_tests::docker::remove_namespace_containers;

/// The local Docker engine through krane's own runtime (version-negotiated bollard).
pub async fn docker_runtime() -> anyhow::Result<krane_worker::runtime::docker::DockerRuntime> {
    krane_worker::runtime::docker::DockerRuntime::connect(
        None,
        Default::default(),
        Duration::from_secs(60),
    )
    .await
    .context("connect to the Docker engine")
}

/// Creates gateways `<prefix>0` … in namespace `bench` through the API, `concurrency` at once.
pub async fn create_many(
    client: &GatewayServiceClient,
    prefix: &str,
    count: usize,
    replicas: u32,
    concurrency: usize,
) -> anyhow::Result<()> {
    for_each_concurrent(count, concurrency, |i| async move {
        let request = CreateGatewayRequest {
            gateway: Some(gateway_request("bench", &format!("{prefix}{i}"), replicas)),
        };
        client
            .create_gateway(&request)
            .await
            .map_err(|error| anyhow::anyhow!("CreateGateway: {error}"))?;
        Ok(())
    })
    .await
}

/// [`create_many`], then waits until every one of them is RUNNING in KV.
pub async fn create_and_wait(
    log: &Store,
    client: &GatewayServiceClient,
    prefix: &str,
    count: usize,
    replicas: u32,
    concurrency: usize,
) -> anyhow::Result<()> {
    let running = tokio::spawn(watch_running(log.clone(), count));
    create_many(client, prefix, count, replicas, concurrency).await?;
    tokio::time::timeout(Duration::from_secs(300), running)
        .await
        .context("gateways not RUNNING within 300 s")???;
    Ok(())
}

/// NATS, the API and one in-process worker for `host_id` on `runtime`.
pub struct Stack {
    /// Kept so the server lives as long as the stack.
    _nats: Nats,
    pub log: Store,
    pub api: Api,
    stop: CancellationToken,
    worker: JoinHandle<anyhow::Result<()>>,
}

impl Stack {
    pub async fn start(
        host_id: &str,
        runtime: std::sync::Arc<dyn krane_worker::runtime::ContainerRuntime>,
    ) -> anyhow::Result<Self> {
        let nats = Nats::start(Fsync::Default).await?;
        let log = nats.log().await?;
        // Each part on a NATS connection of its own, as the separate processes would be.
        let api = Api::start(nats.log().await?).await?;
        let stop = CancellationToken::new();
        let worker = start_worker(&nats, host_id, nats.log().await?, runtime, stop.clone());
        wait_for_hosts(&log, 1).await?;
        Ok(Self {
            _nats: nats,
            log,
            api,
            stop,
            worker,
        })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.worker.await;
        self.api.stop().await;
    }
}
