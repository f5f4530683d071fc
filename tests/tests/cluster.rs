//! krane on a real three-node NATS cluster (routes between loopback ports, JetStream and a
//! temporary store on each), with every stream and bucket at three replicas: the whole
//! lifecycle, and SIGKILL of the commands stream's leader and then of the gateways bucket's
//! leader under a steady load of creates — no acknowledged command lost, calls answer
//! `unavailable` (never hang) during the election and succeed after it, the worker carries on
//! without a restart, and a restarted node catches up. The worker runs on the in-memory
//! runtime: this is about NATS.

use async_nats::jetstream::stream;
use krane_core::names::{self, GatewayKey};
use krane_proto::krane::v1::GatewayStatus;
use krane_store::{NatsArgs, Store};
use krane_tests::client::{NOT_FOUND, UNAVAILABLE, gateway_request};
use krane_tests::{
    NatsCluster, Protocol, TestClient, eventually, unique_namespace, wait_all_running,
    worker_config,
};
use krane_worker::runtime::fake::FakeRuntime;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const REPLICAS: &str = "3";
const CONVERGE: Duration = Duration::from_secs(60);

/// The cluster, the API and a worker on it.
struct OnCluster {
    cluster: NatsCluster,
    store: Store,
    api: SocketAddr,
    stop: CancellationToken,
}

impl OnCluster {
    async fn start(namespace: &str) -> Self {
        let cluster = NatsCluster::start(3).await;
        let args = NatsArgs {
            stream_replicas: 3,
            ..NatsArgs::url(cluster.urls())
        };
        // The first connection creates the R3 streams once the cluster has elected its leaders.
        let store = eventually("JetStream ready on the cluster", CONVERGE, || async {
            krane_store::connect(&args, "cluster-test", Duration::from_secs(5))
                .await
                .ok()
        })
        .await;
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the API");
        let api = listener.local_addr().expect("API address");
        tokio::spawn(krane_api::serve(
            listener,
            store.clone(),
            Default::default(),
            stop.clone(),
        ));
        let config = worker_config(&cluster.urls(), namespace, &["--stream-replicas", REPLICAS]);
        let worker_store = krane_store::connect(&args, "cluster-worker", Duration::from_secs(5))
            .await
            .expect("the worker's store");
        let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
        let worker_stop = stop.clone();
        tokio::spawn(async move {
            krane_worker::run(&config, worker_store, runtime, worker_stop).await
        });
        Self {
            cluster,
            store,
            api,
            stop,
        }
    }

    fn client(&self) -> TestClient {
        TestClient::new(Protocol::ConnectJson, self.api)
    }

    async fn stream_info(&self, name: &str) -> Option<stream::Info> {
        let mut stream = self.store.jetstream().get_stream(name).await.ok()?;
        stream.info().await.ok().cloned()
    }

    /// The node leading `stream` now.
    async fn leader_of(&self, name: &str) -> String {
        eventually(&format!("a leader of {name}"), CONVERGE, || async {
            self.stream_info(name).await?.cluster?.leader
        })
        .await
    }

    /// Waits until every replica of `stream` is current.
    async fn wait_caught_up(&self, name: &str) {
        eventually(
            &format!("every replica of {name} current"),
            CONVERGE,
            || async {
                let cluster = self.stream_info(name).await?.cluster?;
                let all = cluster.replicas.len() == 2
                    && cluster
                        .replicas
                        .iter()
                        .all(|peer| peer.current && peer.lag.unwrap_or(0) == 0);
                all.then_some(())
            },
        )
        .await
    }
}

impl Drop for OnCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const STORES: [&str; 5] = [
    names::COMMANDS_STREAM,
    names::EVENTS_STREAM,
    names::WORK_STREAM,
    "KV_krane_gateways",
    "KV_krane_hosts",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_runs_on_three_replicas() {
    let namespace = unique_namespace("cluster");
    let on = OnCluster::start(&namespace).await;
    for name in STORES {
        let info = on.stream_info(name).await.expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }
    let client = on.client();
    let request = gateway_request(&namespace, "life", 2);
    client.create(Some(request.clone())).await.expect("create");
    wait_all_running(&client, &namespace, "life", 2, CONVERGE).await;
    client
        .create(Some(request.clone()))
        .await
        .expect("the same again");
    client.delete(&namespace, "life").await.expect("delete");
    eventually("deleted", CONVERGE, || async {
        let error = client.get(&namespace, "life").await.err()?;
        (error.code == NOT_FOUND).then_some(())
    })
    .await;
    // The same spec again, well inside the dedup window: it comes back.
    client.create(Some(request)).await.expect("create again");
    wait_all_running(&client, &namespace, "life", 2, CONVERGE).await;
}

/// One create of the steady load.
#[derive(Debug, Clone)]
struct Call {
    gateway: String,
    at: Instant,
    took: Duration,
    code: Option<i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_leaders_under_load_loses_no_acknowledged_command() {
    let namespace = unique_namespace("leaders");
    let mut on = OnCluster::start(&namespace).await;
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let load_stop = CancellationToken::new();
    let load = {
        let (client, calls, stop, namespace) = (
            on.client(),
            calls.clone(),
            load_stop.clone(),
            namespace.clone(),
        );
        tokio::spawn(async move {
            let mut next = 0;
            while !stop.is_cancelled() {
                let gateway = format!("load{next}");
                next += 1;
                let at = Instant::now();
                let result = client
                    .create(Some(gateway_request(&namespace, &gateway, 1)))
                    .await;
                let call = Call {
                    gateway,
                    at,
                    took: at.elapsed(),
                    code: result.err().map(|error| error.code),
                };
                calls.lock().expect("calls").push(call);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut kills = Vec::new();
    for name in [names::COMMANDS_STREAM, "KV_krane_gateways"] {
        let leader = on.leader_of(name).await;
        eprintln!("killing {leader}, leader of {name}");
        kills.push(Instant::now());
        on.cluster.node(&leader).kill();
        tokio::time::sleep(Duration::from_secs(6)).await;
        on.cluster.node(&leader).restart().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    load_stop.cancel();
    load.await.expect("load task");
    let calls = calls.lock().expect("calls").clone();
    let ok: Vec<&Call> = calls.iter().filter(|call| call.code.is_none()).collect();
    let failed: Vec<&Call> = calls.iter().filter(|call| call.code.is_some()).collect();
    eprintln!(
        "{} creates: {} acknowledged, {} refused; slowest {:?}",
        calls.len(),
        ok.len(),
        failed.len(),
        calls.iter().map(|call| call.took).max()
    );
    // Calls answer (never hang), and what fails fails as `unavailable`.
    for call in &calls {
        assert!(call.took < Duration::from_secs(9), "{call:?} hung");
    }
    for call in &failed {
        assert_eq!(call.code, Some(UNAVAILABLE), "{call:?}");
    }
    // Calls succeed again after each election.
    for killed in &kills {
        let after = ok
            .iter()
            .any(|call| call.at > *killed + Duration::from_secs(1));
        assert!(after, "no create succeeded after the kill at {killed:?}");
    }
    // Zero acknowledged commands lost, and the worker (never restarted) runs them all.
    let client = on.client();
    for call in &ok {
        let key = GatewayKey::new(&namespace, &call.gateway);
        let latest = on.store.latest_command(&key).await.expect("read");
        assert!(
            latest.is_some(),
            "acknowledged create of {} lost",
            call.gateway
        );
    }
    for call in &ok {
        eventually(&format!("{} RUNNING", call.gateway), CONVERGE, || async {
            let got = client.get(&namespace, &call.gateway).await.ok()?;
            let first = got.instances.first()?;
            (first.status == GatewayStatus::Running as i32).then_some(())
        })
        .await;
    }
    // The restarted nodes caught up.
    for name in STORES {
        on.wait_caught_up(name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_made_with_one_replica_are_moved_to_three() {
    let cluster = NatsCluster::start(3).await;
    let one = NatsArgs::url(cluster.urls());
    let three = NatsArgs {
        stream_replicas: 3,
        ..NatsArgs::url(cluster.urls())
    };
    eventually("R1 streams made", CONVERGE, || async {
        krane_store::connect(&one, "cluster-test", Duration::from_secs(5))
            .await
            .ok()
    })
    .await;
    let store = krane_store::connect(&three, "cluster-test", Duration::from_secs(5))
        .await
        .expect("opened with three replicas");
    for name in STORES {
        let mut stream = store.jetstream().get_stream(name).await.expect("stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_refuses_three_replicas_saying_what_to_do() {
    let nats = krane_tests::NatsServer::start().await;
    let three = NatsArgs {
        stream_replicas: 3,
        ..NatsArgs::url(nats.url())
    };
    let refused = krane_store::connect(&three, "cluster-test", Duration::from_secs(5)).await;
    let Err(error) = refused else {
        panic!("a single server cannot hold three replicas");
    };
    let message = error.to_string();
    assert!(message.contains(names::COMMANDS_STREAM), "{message}");
    assert!(message.contains("--stream-replicas"), "{message}");
}
