//! `accept`: CreateGateway latency and accepted/s at several concurrencies against raw
//! JetStream publishes of the same payload size at the same concurrency on the same server,
//! with nats-server's default fsync and with fsync on every write; plus the synchronous
//! baseline (create and start every replica with bollard, one after another, then answer).
//! No worker runs: the API answers before any worker acts.

use crate::env::{self, Api, Fsync, Nats};
use crate::stats::{Percentiles, Table, cell, median, ms};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use krane_core::command::Command;
use krane_core::spec::GatewaySpec;
use krane_proto::krane::v1::CreateGatewayRequest;
use krane_worker::runtime::{ContainerRuntime, ReplicaContainer};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent callers (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    callers: Vec<usize>,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Repetitions of every measurement; tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// fsync modes to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "default,always")]
    fsync: Vec<Fsync>,
    /// Calls of the synchronous baseline (each creates and starts containers; slow).
    #[arg(long, default_value_t = 5)]
    baseline_calls: usize,
    /// Replicas per gateway in the synchronous baseline.
    #[arg(long, default_value_t = 3)]
    baseline_replicas: u32,
}

/// One measurement: latencies of every call and the calls completed per second.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    latency: Percentiles,
    per_second: f64,
}

/// Medians over runs of one (mode, callers) cell.
#[derive(Debug, serde::Serialize)]
struct Row {
    fsync: Fsync,
    callers: usize,
    krane_p50_ms: f64,
    krane_p99_ms: f64,
    krane_per_second: f64,
    raw_p50_ms: f64,
    raw_p99_ms: f64,
    raw_per_second: f64,
    /// krane accepted/s ÷ raw publishes/s, per run, then the median.
    rate_ratio: f64,
    runs: Vec<(Sample, Sample)>,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let payload_len =
        krane_core::codec::encode(&Command::create(sample_spec("ns", "gw"), Vec::new()))?.len();
    let mut rows = Vec::new();
    for &fsync in &args.fsync {
        let nats = Nats::start(fsync).await?;
        let log = nats.log().await?;
        // The API on a NATS connection of its own, as the separate process would be.
        let api = Api::start(nats.log().await?).await?;
        let raw = RawStream::open(log.jetstream().clone(), payload_len).await?;
        // Warm up connections, caches and the store once.
        measure_krane(&api, 16, Duration::from_millis(500), "warm").await?;
        measure_raw(&raw, 16, Duration::from_millis(500)).await?;
        let window = Duration::from_secs_f64(args.seconds);
        for &callers in &args.callers {
            let mut runs = Vec::new();
            for run in 0..args.runs {
                let tag = format!("r{run}c{callers}");
                let krane = measure_krane(&api, callers, window, &tag).await?;
                let raw = measure_raw(&raw, callers, window).await?;
                runs.push((krane, raw));
            }
            let pick = |f: &dyn Fn(&(Sample, Sample)) -> f64| median(runs.iter().map(f));
            rows.push(Row {
                fsync,
                callers,
                krane_p50_ms: pick(&|(k, _)| k.latency.p50_ms),
                krane_p99_ms: pick(&|(k, _)| k.latency.p99_ms),
                krane_per_second: pick(&|(k, _)| k.per_second),
                raw_p50_ms: pick(&|(_, r)| r.latency.p50_ms),
                raw_p99_ms: pick(&|(_, r)| r.latency.p99_ms),
                raw_per_second: pick(&|(_, r)| r.per_second),
                rate_ratio: pick(&|(k, r)| k.per_second / r.per_second),
                runs,
            });
        }
        api.stop().await;
    }

    let mut table = Table::new(
        format!(
            "CreateGateway (Connect, binary protobuf) vs raw JetStream publish of {payload_len} B; \
             medians of {} runs of {} s",
            args.runs, args.seconds
        ),
        &[
            "fsync",
            "callers",
            "p50 ms",
            "p99 ms",
            "accepted/s",
            "raw p50",
            "raw p99",
            "raw/s",
            "ours/raw",
        ],
    );
    for row in &rows {
        table.row(vec![
            format!("{:?}", row.fsync).to_lowercase(),
            row.callers.to_string(),
            cell(row.krane_p50_ms),
            cell(row.krane_p99_ms),
            cell(row.krane_per_second),
            cell(row.raw_p50_ms),
            cell(row.raw_p99_ms),
            cell(row.raw_per_second),
            format!("{:.0}%", row.rate_ratio * 100.0),
        ]);
    }
    table.print();

    let baseline = if args.baseline_calls > 0 {
        let latencies = synchronous_baseline(args.baseline_calls, args.baseline_replicas).await?;
        let baseline = Percentiles::of(&latencies);
        let mut table = Table::new(
            format!(
                "Synchronous baseline: create+start {} containers one after another, then answer \
                 ({} calls, 1 caller)",
                args.baseline_replicas, args.baseline_calls
            ),
            &[
                "fsync",
                "baseline p50 ms",
                "ours p50 ms (1 caller)",
                "ours faster by",
            ],
        );
        for row in rows.iter().filter(|row| row.callers == 1) {
            table.row(vec![
                format!("{:?}", row.fsync).to_lowercase(),
                cell(baseline.p50_ms),
                cell(row.krane_p50_ms),
                format!("{:.0}×", baseline.p50_ms / row.krane_p50_ms),
            ]);
        }
        table.print();
        Some(json!({
            "replicas": args.baseline_replicas,
            "latency": baseline,
            "latencies_ms": latencies.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        }))
    } else {
        None
    };

    Ok(json!({
        "benchmark": "accept",
        "payload_bytes": payload_len,
        "seconds": args.seconds,
        "runs": args.runs,
        "worker": "none (the API answers before any worker acts)",
        "rows": rows,
        "synchronous_baseline": baseline,
    }))
}

fn sample_spec(namespace: &str, gateway_id: &str) -> GatewaySpec {
    krane_api::convert::spec_from_request(Some(&env::gateway_request(namespace, gateway_id, 3)))
        .expect("the sample request is valid")
}

/// `callers` tasks each calling CreateGateway (a new gateway every call) until `window` ends.
async fn measure_krane(
    api: &Api,
    callers: usize,
    window: Duration,
    tag: &str,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let client = api.client();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let client = client?;
                let mut latencies = Vec::new();
                let mut call = 0;
                while Instant::now() < deadline {
                    let request = CreateGatewayRequest {
                        gateway: Some(env::gateway_request(
                            "bench",
                            &format!("{tag}-{caller}-{call}"),
                            3,
                        )),
                    };
                    let sent = Instant::now();
                    client
                        .create_gateway(&request)
                        .await
                        .map_err(|error| anyhow::anyhow!("CreateGateway: {error}"))?;
                    latencies.push(sent.elapsed());
                    call += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    collect(tasks, started).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    started: Instant,
) -> anyhow::Result<Sample> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Sample {
        per_second: latencies.len() as f64 / elapsed,
        latency: Percentiles::of(&latencies),
    })
}

/// A stream configured like the commands stream, for raw publishes of the same size.
struct RawStream {
    jetstream: jetstream::Context,
    payload: bytes::Bytes,
}

impl RawStream {
    async fn open(jetstream: jetstream::Context, payload_len: usize) -> anyhow::Result<Arc<Self>> {
        jetstream
            .get_or_create_stream(stream::Config {
                name: "BENCH_RAW".into(),
                subjects: vec!["bench.raw.>".into()],
                storage: stream::StorageType::File,
                max_messages_per_subject: 64,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await?;
        Ok(Arc::new(Self {
            jetstream,
            payload: vec![b'x'; payload_len].into(),
        }))
    }
}

/// `callers` tasks each publishing (with a `Nats-Msg-Id`, like a command) and awaiting the
/// acknowledgement, one message after another, until `window` ends.
async fn measure_raw(
    raw: &Arc<RawStream>,
    callers: usize,
    window: Duration,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let raw = raw.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut call = 0u64;
                let nonce = started.elapsed().as_nanos();
                while Instant::now() < deadline {
                    let message = PublishMessage::build()
                        .payload(raw.payload.clone())
                        .message_id(format!("{nonce}-{caller}-{call}"));
                    let sent = Instant::now();
                    raw.jetstream
                        .send_publish(format!("bench.raw.{caller}.{call}"), message)
                        .await?
                        .await?;
                    latencies.push(sent.elapsed());
                    call += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    collect(tasks, started).await
}

/// What the original did inside the call: create and start each replica with bollard, one
/// after another, then answer. Timed without HTTP around it (which only favours it).
async fn synchronous_baseline(calls: usize, replicas: u32) -> anyhow::Result<Vec<Duration>> {
    let docker = env::docker_runtime().await?;
    let namespace = format!("kbench-sync-{}", std::process::id());
    docker
        .ensure_image(env::TEST_IMAGE, &tokio::sync::watch::channel(None).0)
        .await?;
    let mut latencies = Vec::new();
    let result = async {
        for call in 0..calls {
            let spec = krane_api::convert::spec_from_request(Some(&env::gateway_request(
                &namespace,
                &format!("sync{call}"),
                replicas,
            )))?;
            let containers: Vec<_> = (0..replicas)
                .map(|replica| ReplicaContainer::for_replica(&spec, replica, &namespace))
                .collect();
            let started = Instant::now();
            for container in &containers {
                docker.create_and_start(container).await?;
            }
            latencies.push(started.elapsed());
            for container in &containers {
                docker.remove(&container.name).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    env::remove_namespace_containers(&namespace);
    result?;
    Ok(latencies)
}
