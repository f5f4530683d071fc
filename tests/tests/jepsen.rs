//! Jepsen-style: concurrent clients Create, Update and Delete a few gateways while a seeded
//! schedule injects faults — worker SIGKILL and restart, worker SIGSTOP past `--ack-wait`,
//! nats-server SIGKILL and restart on the same store, dockerd SIGSTOP/SIGCONT, an API restart,
//! garbage messages on live subjects — on two engines (the machine's, and one in its own
//! network namespace), one worker process each. Every call is recorded (invoked, ok, failed,
//! indeterminate); after the faults stop and the system settles, every gateway's containers on
//! *both* engines and its GetGateway must equal the spec of a write that may have been the last:
//! one of the last calls that answered OK (none answered OK after it was invoked... after it
//! completed), or any call whose outcome is unknown (an error other than `invalid_argument` /
//! `not_found`, or a timeout: it may have taken effect, as in Jepsen). Zero duplicates (two
//! containers for one replica), zero orphans, zero RUNNING instances whose address does not
//! answer.
//!
//! `KRANE_JEPSEN_SCHEDULES` (default 1) × `KRANE_JEPSEN_OPS` (default 60) is what
//! `scripts/test.sh` runs; the full run is `KRANE_JEPSEN_SCHEDULES=20 KRANE_JEPSEN_OPS=200`.
//! `KRANE_JEPSEN_SEED` replays a run (the seed of every schedule is printed).

use bollard::query_parameters::ListContainersOptions;
use krane_core::names::GatewayKey;
use krane_proto::krane::v1::{GatewayRequest, GatewayStatus};
use krane_tests::client::{INVALID_ARGUMENT, NOT_FOUND, gateway_request};
use krane_tests::engines::ExtraEngine;
use krane_tests::process::ServiceProcess;
use krane_tests::{Krane, Protocol, TestClient, docker, unique_namespace};
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GATEWAYS: [&str; 3] = ["j0", "j1", "j2"];
const CLIENTS: usize = 3;
const ACK_WAIT: Duration = Duration::from_secs(3);
const SETTLE: Duration = Duration::from_secs(120);
/// The test image under a second name, so updates can change the image too.
const OTHER_IMAGE: &str = "krane-test-gateway:jepsen";
/// Engine index of this test (see `krane_tests::engines`).
const ENGINE_INDEX: u8 = 21;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// What a call asked for.
#[derive(Debug, Clone)]
enum Op {
    Create(GatewayRequest),
    Update(GatewayRequest),
    Delete,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Refused: it had no effect.
    Failed,
    /// Error or timeout: it may or may not have taken effect.
    Unknown,
}

#[derive(Debug, Clone)]
struct Call {
    client: usize,
    gateway: &'static str,
    op: Op,
    invoked: Instant,
    completed: Instant,
    outcome: Outcome,
    detail: String,
}

impl Call {
    /// The gateway as this call leaves it, when it writes (`None`: deleted).
    fn value(&self) -> Option<GatewayRequest> {
        match &self.op {
            Op::Create(request) | Op::Update(request) => Some(request.clone()),
            Op::Delete => None,
        }
    }
}

/// The gateway states that may be the end state, from the history of calls on it.
fn candidates(calls: &[&Call]) -> Vec<Option<GatewayRequest>> {
    let ok: Vec<&&Call> = calls.iter().filter(|c| c.outcome == Outcome::Ok).collect();
    // An OK call is a candidate unless another OK call was invoked after it completed.
    let mut values: Vec<Option<GatewayRequest>> = ok
        .iter()
        .filter(|call| !ok.iter().any(|later| later.invoked > call.completed))
        .map(|call| call.value())
        .collect();
    if ok.is_empty() {
        values.push(None);
    }
    // A call with an unknown outcome may have taken effect at any time after it was invoked.
    values.extend(
        calls
            .iter()
            .filter(|call| call.outcome == Outcome::Unknown)
            .map(|call| call.value()),
    );
    values.dedup();
    values
}

/// A container of the gateway, on either engine.
#[derive(Debug)]
struct Seen {
    engine: &'static str,
    name: String,
    replica: Option<u32>,
    template: String,
    running: bool,
}

async fn containers(
    engine: &bollard::Docker,
    namespace: &str,
    gateway: &str,
    label: &'static str,
) -> Vec<Seen> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("unkey.namespace={namespace}"),
            format!("unkey.gateway.id={gateway}"),
        ],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let Ok(listed) = engine.list_containers(Some(options)).await else {
        return Vec::new();
    };
    listed
        .into_iter()
        .map(|container| {
            let labels = container.labels.unwrap_or_default();
            Seen {
                engine: label,
                name: container
                    .names
                    .and_then(|names| names.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                replica: labels.get("unkey.replica").and_then(|r| r.parse().ok()),
                template: labels.get("krane.template").cloned().unwrap_or_default(),
                running: container.state.map(|s| s.to_string()).as_deref() == Some("running"),
            }
        })
        .collect()
}

/// The template label a spec's containers carry.
fn template_of(request: &GatewayRequest) -> String {
    krane_api::convert::spec_from_request(Some(request))
        .map(|spec| spec.template())
        .unwrap_or_default()
}

/// Why the gateway's end state is not `value`, or `None` when it is.
async fn mismatch(
    value: &Option<GatewayRequest>,
    namespace: &str,
    gateway: &str,
    seen: &[Seen],
    client: &TestClient,
) -> Option<String> {
    let got = client.get(namespace, gateway).await;
    let Some(request) = value else {
        if !seen.is_empty() {
            return Some(format!("deleted, but containers remain: {seen:?}"));
        }
        return match got {
            Err(error) if error.code == NOT_FOUND => None,
            other => Some(format!("deleted, but Get answers {other:?}")),
        };
    };
    let key = GatewayKey::new(namespace, gateway);
    let template = template_of(request);
    let mut replicas: Vec<u32> = seen.iter().filter_map(|s| s.replica).collect();
    replicas.sort();
    let expected: Vec<u32> = (0..request.replicas).collect();
    if replicas != expected || seen.len() != expected.len() {
        let where_: Vec<String> = seen
            .iter()
            .map(|s| format!("{}:{}", s.engine, s.name))
            .collect();
        return Some(format!("replicas {replicas:?} ≠ {expected:?}: {where_:?}"));
    }
    if let Some(wrong) = seen.iter().find(|s| {
        !s.running
            || s.template != template
            || s.replica.map(|r| key.container_name(r)).as_deref() != Some(s.name.as_str())
    }) {
        return Some(format!("container not as asked: {wrong:?}"));
    }
    let got = match got {
        Ok(got) => got,
        Err(error) => return Some(format!("Get answers {error:?}")),
    };
    if got.gateway.as_ref() != Some(request) {
        return Some(format!("Get shows spec {:?}", got.gateway));
    }
    if got.instances.len() != expected.len()
        || got
            .instances
            .iter()
            .any(|i| i.status != GatewayStatus::Running as i32)
    {
        return Some(format!("Get shows {:?}", got.instances));
    }
    None
}

/// Instances Get reports RUNNING whose address does not answer HTTP.
async fn silent_addresses(client: &TestClient, namespace: &str) -> Vec<String> {
    let http = krane_tests::http_client();
    let mut silent = Vec::new();
    for gateway in GATEWAYS {
        let Ok(got) = client.get(namespace, gateway).await else {
            continue;
        };
        for instance in got.instances {
            if instance.status != GatewayStatus::Running as i32 {
                continue;
            }
            let answered = http
                .get(format!("http://{}/", instance.address))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok();
            if !answered {
                silent.push(format!(
                    "{gateway}: {} at {}",
                    instance.id, instance.address
                ));
            }
        }
    }
    silent
}

/// One client's calls, seeded.
async fn client_calls(
    client: usize,
    seed: u64,
    ops: usize,
    namespace: String,
    api: TestClient,
    history: Arc<Mutex<Vec<Call>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9));
    for _ in 0..ops {
        let gateway = GATEWAYS[rng.random_range(0..GATEWAYS.len())];
        let mut request = gateway_request(&namespace, gateway, rng.random_range(1..=2));
        request.cpu_millicores = [100, 200][rng.random_range(0..2)];
        request.memory_size_mib = [32, 48][rng.random_range(0..2)];
        if rng.random_bool(0.3) {
            request.image = OTHER_IMAGE.into();
        }
        let op = match rng.random_range(0..100) {
            0..45 => Op::Create(request),
            45..75 => Op::Update(request),
            _ => Op::Delete,
        };
        let invoked = Instant::now();
        let result = match &op {
            Op::Create(request) => api.create(Some(request.clone())).await.map(|_| ()),
            Op::Update(request) => api.update(request.clone()).await.map(|_| ()),
            Op::Delete => api.delete(&namespace, gateway).await,
        };
        let (outcome, detail) = match result {
            Ok(()) => (Outcome::Ok, String::new()),
            Err(error) if error.code == INVALID_ARGUMENT || error.code == NOT_FOUND => (
                Outcome::Failed,
                format!("{}: {}", error.code, error.message),
            ),
            Err(error) => (
                Outcome::Unknown,
                format!("{}: {}", error.code, error.message),
            ),
        };
        let call = Call {
            client,
            gateway,
            op,
            invoked,
            completed: Instant::now(),
            outcome,
            detail,
        };
        history.lock().expect("history").push(call);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    }
}

/// The faults one schedule can inject.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWorker(usize),
    PauseWorker(usize),
    RestartNats,
    PauseEngine,
    RestartApi,
    Garbage,
}

struct Cluster {
    // Fields drop in this order: the workers are killed before `krane` removes the
    // namespace's containers, or a worker still running could create one after that.
    workers: [ServiceProcess; 2],
    krane: Krane,
    engine: ExtraEngine,
}

impl Cluster {
    async fn inject(&mut self, fault: Fault, rng: &mut StdRng) {
        match fault {
            Fault::KillWorker(w) => {
                self.workers[w].kill();
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                self.workers[w].start();
            }
            Fault::PauseWorker(w) => {
                self.workers[w].signal(Signal::SIGSTOP);
                tokio::time::sleep(ACK_WAIT + Duration::from_millis(rng.random_range(500..1500)))
                    .await;
                self.workers[w].signal(Signal::SIGCONT);
            }
            Fault::RestartNats => {
                self.krane.nats.kill();
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                self.krane.nats.restart().await;
            }
            Fault::PauseEngine => {
                self.engine.signal_daemon(Signal::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
                self.engine.signal_daemon(Signal::SIGCONT);
            }
            Fault::RestartApi => self.krane.restart_api().await,
            Fault::Garbage => {
                let gateway = GATEWAYS[rng.random_range(0..GATEWAYS.len())];
                let subject = GatewayKey::new(&self.krane.namespace, gateway).command_subject();
                // NATS may be down at this moment; then there is simply no garbage.
                if let Ok(ack) = self
                    .krane
                    .store
                    .jetstream()
                    .publish(subject, "{\"kind\":\"from_the_future\"}".into())
                    .await
                {
                    let _ = ack.await;
                }
            }
        }
    }
}

fn pick_fault(rng: &mut StdRng) -> Fault {
    match rng.random_range(0..6) {
        0 => Fault::KillWorker(rng.random_range(0..2)),
        1 => Fault::PauseWorker(rng.random_range(0..2)),
        2 => Fault::RestartNats,
        3 => Fault::PauseEngine,
        4 => Fault::RestartApi,
        _ => Fault::Garbage,
    }
}

#[derive(Debug, Default)]
struct Report {
    schedules: u32,
    calls: usize,
    ok: usize,
    failed: usize,
    indeterminate: usize,
    faults: Vec<String>,
    violations: Vec<String>,
    worst_settle: Duration,
}

async fn run_schedule(seed: u64, ops: usize, report: &mut Report) {
    let namespace = unique_namespace("jepsen");
    eprintln!("schedule KRANE_JEPSEN_SEED={seed}: {ops} calls, namespace {namespace}");
    let engine = ExtraEngine::start("jepsen", ENGINE_INDEX);
    docker::tag_test_image(OTHER_IMAGE, None);
    docker::tag_test_image(OTHER_IMAGE, Some(&engine.docker_host()));
    let krane = Krane::start_without_worker(&namespace).await;
    let flags = [
        "--ack-wait",
        "3s",
        "--resync-interval",
        "3s",
        "--host-timeout",
        "5s",
    ];
    let local = krane.worker_process(&flags);
    let mut args: Vec<String> = [
        "--nats-url",
        &krane.nats.url(),
        "--host-id",
        &format!("{namespace}-b"),
        "--docker-host",
        &engine.docker_host(),
        "--advertise-host",
        &engine.advertise_host(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(flags.iter().map(|flag| flag.to_string()));
    let log = std::env::temp_dir().join(format!("{namespace}-worker-b.log"));
    let remote = ServiceProcess::spawn("krane-worker", args, log);
    let mut cluster = Cluster {
        krane,
        engine,
        workers: [local, remote],
    };

    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(client_calls(
                client,
                seed,
                ops.div_ceil(CLIENTS),
                namespace.clone(),
                cluster.krane.client(Protocol::ConnectJson),
                history.clone(),
            ))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    while !clients.iter().all(|client| client.is_finished()) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        let fault = pick_fault(&mut rng);
        report.faults.push(format!(
            "{:>5.1}s {fault:?}",
            started.elapsed().as_secs_f64()
        ));
        cluster.inject(fault, &mut rng).await;
    }
    for client in clients {
        client.await.expect("client task");
    }
    let calls = history.lock().expect("history").clone();
    report.calls += calls.len();
    report.ok += calls.iter().filter(|c| c.outcome == Outcome::Ok).count();
    report.failed += calls
        .iter()
        .filter(|c| c.outcome == Outcome::Failed)
        .count();
    report.indeterminate += calls
        .iter()
        .filter(|c| c.outcome == Outcome::Unknown)
        .count();
    for call in calls.iter().filter(|c| c.outcome == Outcome::Unknown) {
        eprintln!(
            "  indeterminate: client {} {} {:?}: {}",
            call.client, call.gateway, call.op, call.detail
        );
    }

    // Faults are over: wait for the system to settle on an allowed end state.
    let client = cluster.krane.client(Protocol::ConnectJson);
    let local_engine = docker::engine().await;
    let remote_engine = cluster.engine.engine().await;
    let settling = Instant::now();
    let mut problems: BTreeMap<&str, String>;
    let mut finals: BTreeMap<&str, String>;
    loop {
        problems = BTreeMap::new();
        finals = BTreeMap::new();
        for gateway in GATEWAYS {
            let mut seen = containers(&local_engine, &namespace, gateway, "local").await;
            seen.extend(containers(&remote_engine, &namespace, gateway, "remote").await);
            let mine: Vec<&Call> = calls.iter().filter(|c| c.gateway == gateway).collect();
            let allowed = candidates(&mine);
            let mut why = Vec::new();
            let mut matched = None;
            for value in &allowed {
                match mismatch(value, &namespace, gateway, &seen, &client).await {
                    None => {
                        matched = Some(value.clone());
                        break;
                    }
                    Some(reason) => why.push(reason),
                }
            }
            if let Some(value) = matched {
                // The checker tells states apart: the opposite end state is refused.
                let opposite = match &value {
                    Some(_) => None,
                    None => Some(gateway_request(&namespace, gateway, 1)),
                };
                let refused = mismatch(&opposite, &namespace, gateway, &seen, &client).await;
                assert!(
                    refused.is_some(),
                    "{gateway}: the checker accepts {opposite:?} too"
                );
                finals.insert(
                    gateway,
                    value.map_or("deleted".to_string(), |request| {
                        format!(
                            "{} × {} ({} mCPU, {} MiB)",
                            request.replicas,
                            request.image,
                            request.cpu_millicores,
                            request.memory_size_mib
                        )
                    }),
                );
            } else {
                problems.insert(
                    gateway,
                    format!("none of {} allowed states: {why:?}", allowed.len()),
                );
            }
        }
        if problems.is_empty() || settling.elapsed() > SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_in = settling.elapsed();
    report.worst_settle = report.worst_settle.max(settled_in);
    for (gateway, problem) in problems {
        report
            .violations
            .push(format!("seed {seed} {gateway}: {problem}"));
    }
    for silent in silent_addresses(&client, &namespace).await {
        report
            .violations
            .push(format!("seed {seed}: RUNNING but silent: {silent}"));
    }
    if !report.violations.is_empty() {
        for (index, worker) in cluster.workers.iter().enumerate() {
            eprintln!("worker {index} log:\n{}", worker.log_tail(30));
        }
        for call in &calls {
            eprintln!(
                "  {:?} client {} {} {:?} → {:?} {}",
                call.invoked.duration_since(started),
                call.client,
                call.gateway,
                call.op,
                call.outcome,
                call.detail
            );
        }
    }
    report.schedules += 1;
    eprintln!("schedule {seed} settled in {settled_in:?}: {finals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_successful_call_wins_whatever_fails() {
    let schedules = env_number("KRANE_JEPSEN_SCHEDULES", 1);
    let ops = usize::try_from(env_number("KRANE_JEPSEN_OPS", 60)).unwrap_or(60);
    let first_seed = env_number("KRANE_JEPSEN_SEED", rand::random());
    let mut report = Report::default();
    for schedule in 0..schedules {
        run_schedule(first_seed.wrapping_add(schedule), ops, &mut report).await;
    }
    eprintln!("jepsen report (first seed {first_seed}): {report:#?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}
