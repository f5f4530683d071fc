//! `failover`: many gateways on many hosts, each host an in-process worker on an in-memory
//! runtime of its own (no Docker) with its own NATS connection. For each gateway count:
//!
//! - **steady state**: once every gateway is RUNNING and a resync interval has passed, the
//!   NATS messages each worker sends (requests, publishes, acks) and receives (replies, watch
//!   and consumer deliveries) per minute — flat in the number of gateways when a worker reads
//!   what changes, not what exists;
//! - **failover**: the worker of the host with the most replicas is killed (all its loops
//!   stop at once and its task is aborted: its heartbeat simply stops); the time from then until
//!   every gateway it ran is RUNNING on the other hosts in KV, next to `--host-timeout`. With
//!   `--kill-after-heartbeat` the kill follows the host's heartbeat at once (the worst phase).

use crate::env::{self, Api, Broker, Nats};
use crate::stats::{Table, cell, median};
use futures::StreamExt;
use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_store::{BucketChange, Store};
use krane_worker::runtime::ContainerRuntime;
use krane_worker::runtime::fake::FakeRuntime;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway counts to measure (comma-separated), each on a fresh nats-server.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    gateways: Vec<usize>,
    /// Replicas per gateway.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Hosts (in-process workers).
    #[arg(long, default_value_t = 20)]
    hosts: usize,
    /// `--host-timeout` of every worker.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    host_timeout: Duration,
    /// `--resync-interval` of every worker.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    resync_interval: Duration,
    /// How long the steady state is measured.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    steady: Duration,
    /// Concurrent CreateGateway callers.
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// One nats-server, or a 3-node cluster with three replicas of everything.
    #[arg(long, value_enum, default_value = "single")]
    broker: Broker,
    /// Kill the host the moment its next heartbeat is stored: the worst phase, as its loss is
    /// then due a whole `--host-timeout` later. Without it the kill falls anywhere in the
    /// heartbeat interval (the phase of each run is reported).
    #[arg(long)]
    kill_after_heartbeat: bool,
}

#[derive(Debug, serde::Serialize)]
struct Run {
    gateways: usize,
    /// Seconds from the first Create to every gateway RUNNING.
    running_seconds: f64,
    /// Per worker: messages sent and received per minute at steady state.
    sent_per_minute: Vec<f64>,
    received_per_minute: Vec<f64>,
    /// Replicas on each host before the kill, in host order.
    replicas_per_host: Vec<usize>,
    /// The host killed and how many replicas and gateways it ran.
    victim: String,
    victim_replicas: usize,
    victim_gateways: usize,
    /// Seconds from the victim's last heartbeat (as stored) to the kill: the loss is due a
    /// host timeout after that heartbeat, so this says how much of the target was left.
    heartbeat_before_kill_seconds: f64,
    /// Seconds from the kill until the first gateway it ran was placed elsewhere (the loss
    /// judged by some worker).
    judged_seconds: f64,
    /// Seconds from the kill until every gateway it ran is RUNNING elsewhere.
    failover_seconds: f64,
    /// Per surviving host, in host order: how often it listed one gateway's containers on its
    /// engine (a `ContainerList` on Docker) from the kill until all moved.
    gateway_listings_during_move: Vec<u64>,
    /// Seconds from the first placement elsewhere until half, 90 % and all of the victim's
    /// gateways were placed elsewhere (the scheduler's share of the move) …
    placed_after_judged_seconds: [f64; 3],
    /// … and until they were RUNNING elsewhere (placing, then the new hosts' reconciles).
    running_after_judged_seconds: [f64; 3],
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let mut table = Table::new(
        format!(
            "{} hosts (in-process workers, in-memory runtimes), {} replicas per gateway, \
             --host-timeout {}, --resync-interval {}, NATS {:?}; steady state over {}",
            args.hosts,
            args.replicas,
            humantime::format_duration(args.host_timeout),
            humantime::format_duration(args.resync_interval),
            args.broker,
            humantime::format_duration(args.steady),
        ),
        &[
            "gateways",
            "Create → all RUNNING (s)",
            "sent/worker/min (median, max)",
            "received/worker/min (median, max)",
            "killed host: replicas (gateways)",
            "last heartbeat → kill (s)",
            "kill → first moved (s)",
            "kill → all RUNNING elsewhere (s)",
            "engine listings per surviving host during the move (median, max)",
            "first moved → placed: half, all (s)",
            "first moved → RUNNING: half, all (s)",
        ],
    );
    let mut runs = Vec::new();
    for &gateways in &args.gateways {
        let run = measure(&args, gateways).await?;
        let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
        let listings: Vec<f64> = run
            .gateway_listings_during_move
            .iter()
            .map(|listings| *listings as f64)
            .collect();
        table.row(vec![
            gateways.to_string(),
            cell(run.running_seconds),
            format!(
                "{}, {}",
                cell(median(run.sent_per_minute.iter().copied())),
                cell(max(&run.sent_per_minute))
            ),
            format!(
                "{}, {}",
                cell(median(run.received_per_minute.iter().copied())),
                cell(max(&run.received_per_minute))
            ),
            format!("{} ({})", run.victim_replicas, run.victim_gateways),
            cell(run.heartbeat_before_kill_seconds),
            cell(run.judged_seconds),
            cell(run.failover_seconds),
            format!(
                "{}, {}",
                cell(median(listings.iter().copied())),
                cell(max(&listings))
            ),
            format!(
                "{}, {}",
                cell(run.placed_after_judged_seconds[0]),
                cell(run.placed_after_judged_seconds[2])
            ),
            format!(
                "{}, {}",
                cell(run.running_after_judged_seconds[0]),
                cell(run.running_after_judged_seconds[2])
            ),
        ]);
        runs.push(run);
    }
    table.print();
    Ok(json!({
        "benchmark": "failover",
        "hosts": args.hosts,
        "replicas": args.replicas,
        "host_timeout_seconds": args.host_timeout.as_secs_f64(),
        "resync_interval_seconds": args.resync_interval.as_secs_f64(),
        "steady_seconds": args.steady.as_secs_f64(),
        "broker": args.broker,
        "kill_after_heartbeat": args.kill_after_heartbeat,
        "runtime": "FakeRuntime (in-memory), one per in-process worker, distinct host ids",
        "runs": runs,
    }))
}

struct Host {
    id: String,
    runtime: Arc<FakeRuntime>,
    log: Store,
    /// Stops every loop of this host's worker (heartbeat included).
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn measure(args: &Args, gateways: usize) -> anyhow::Result<Run> {
    let nats = Nats::start_on(args.broker).await?;
    let log = nats.log().await?;
    let api = Api::start(nats.log().await?).await?;
    let stop = CancellationToken::new();
    let host_timeout = humantime::format_duration(args.host_timeout).to_string();
    let resync = humantime::format_duration(args.resync_interval).to_string();
    let mut hosts = Vec::new();
    for i in 0..args.hosts {
        let id = format!("host{i:02}");
        let runtime = Arc::new(FakeRuntime::with_images(&[env::TEST_IMAGE]));
        let worker_log = nats.log().await?;
        let mut extra = vec![
            "--host-timeout".to_string(),
            host_timeout.clone(),
            "--resync-interval".to_string(),
            resync.clone(),
        ];
        extra.extend(nats.worker_args());
        extra.extend(env::LARGE_HOST_ARGS.map(String::from));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let config = krane_tests::worker_config(&nats.url(), &id, &extra);
        let host_stop = stop.child_token();
        let (task_log, task_runtime, task_stop) =
            (worker_log.clone(), runtime.clone(), host_stop.clone());
        let task = tokio::spawn(async move {
            krane_worker::run(&config, task_log, task_runtime, task_stop).await
        });
        hosts.push(Host {
            id,
            runtime,
            log: worker_log,
            stop: host_stop,
            task,
        });
    }
    env::wait_for_hosts(&log, args.hosts).await?;
    let running = tokio::spawn(env::watch_running(log.clone(), gateways));
    let client = api.client()?;
    let started = Instant::now();
    eprintln!("creating {gateways} gateways …");
    env::create_many(&client, "f", gateways, args.replicas, args.callers).await?;
    tokio::time::timeout(Duration::from_secs(900), running).await???;
    let running_seconds = started.elapsed().as_secs_f64();
    eprintln!("all RUNNING after {running_seconds:.1} s; settling one resync interval …");
    tokio::time::sleep(args.resync_interval + Duration::from_secs(2)).await;

    eprintln!("measuring the steady state for {:?} …", args.steady);
    let counts = |hosts: &[Host]| -> Vec<(u64, u64)> {
        hosts
            .iter()
            .map(|host| {
                let stats = host.log.jetstream().client().statistics();
                (
                    stats.out_messages.load(Ordering::Relaxed),
                    stats.in_messages.load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    let before = counts(&hosts);
    tokio::time::sleep(args.steady).await;
    let after = counts(&hosts);
    let minutes = args.steady.as_secs_f64() / 60.0;
    let per_minute = |pick: fn(&(u64, u64)) -> u64| -> Vec<f64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| pick(a).saturating_sub(pick(b)) as f64 / minutes)
            .collect()
    };
    let sent_per_minute = per_minute(|(sent, _)| *sent);
    let received_per_minute = per_minute(|(_, received)| *received);

    // The host with the most replicas dies.
    let mut per_host = Vec::new();
    for host in &hosts {
        per_host.push(host.runtime.list_owned(&host.id).await?.len());
    }
    let victim_index = (0..hosts.len())
        .max_by_key(|index| per_host[*index])
        .unwrap_or(0);
    let victim = hosts[victim_index].id.clone();
    let victim_replicas = per_host[victim_index];
    let records = current_records(&log).await?;
    let victim_gateways: BTreeSet<String> = records
        .iter()
        .filter(|(_, record)| record.intent.placement().contains(&victim))
        .map(|(key, _)| key.clone())
        .collect();
    let moved = tokio::spawn(wait_moved(
        log.clone(),
        victim.clone(),
        victim_gateways.clone(),
    ));
    // Let the watch take its first look before the kill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "killing {victim} ({victim_replicas} replicas of {} gateways; replicas per host {per_host:?}) …",
        victim_gateways.len()
    );
    let last_heartbeat = if args.kill_after_heartbeat {
        Some(next_heartbeat(&log, &victim).await?)
    } else {
        log.heard_hosts()
            .await?
            .into_iter()
            .find(|host| host.info.host_id == victim)
            .map(|host| host.last_heard)
    };
    let listings = |hosts: &[Host]| -> Vec<u64> {
        hosts
            .iter()
            .map(|host| host.runtime.gateway_listings())
            .collect()
    };
    let listings_before = listings(&hosts);
    let killed = Instant::now();
    let heartbeat_before_kill_seconds = last_heartbeat
        .and_then(|heard| SystemTime::now().duration_since(heard).ok())
        .map_or(f64::NAN, |before| before.as_secs_f64());
    // Every loop of the host stops at once (its heartbeat with them); nothing is handed over.
    hosts[victim_index].stop.cancel();
    hosts[victim_index].task.abort();
    let moves = tokio::time::timeout(Duration::from_secs(600), moved).await???;
    let first_move = moves.first;
    let failover_seconds = killed.elapsed().as_secs_f64();
    let gateway_listings_during_move: Vec<u64> = listings(&hosts)
        .into_iter()
        .zip(listings_before)
        .enumerate()
        .filter(|(index, _)| *index != victim_index)
        .map(|(_, (after, before))| after.saturating_sub(before))
        .collect();
    let judged_seconds = first_move.saturating_duration_since(killed).as_secs_f64();
    eprintln!(
        "last heartbeat {heartbeat_before_kill_seconds:.1} s before the kill; first replica placed elsewhere after {judged_seconds:.1} s, all moved after {failover_seconds:.1} s"
    );

    stop.cancel();
    for host in hosts {
        let _ = host.task.await;
    }
    api.stop().await;
    Ok(Run {
        gateways,
        running_seconds,
        sent_per_minute,
        received_per_minute,
        replicas_per_host: per_host,
        victim,
        victim_replicas,
        victim_gateways: victim_gateways.len(),
        heartbeat_before_kill_seconds,
        judged_seconds,
        failover_seconds,
        gateway_listings_during_move,
        placed_after_judged_seconds: moves.after_first(&moves.placed),
        running_after_judged_seconds: moves.after_first(&moves.running),
    })
}

/// Waits for `host`'s next heartbeat to be stored; returns when it was written.
async fn next_heartbeat(log: &Store, host: &str) -> anyhow::Result<SystemTime> {
    let mut changes = std::pin::pin!(log.watch_hosts().await?);
    let mut current = false;
    let next = async {
        while let Some(change) = changes.next().await {
            match change? {
                BucketChange::Current => current = true,
                BucketChange::Put { key, written, .. } if current && key == host => {
                    return Ok(written);
                }
                _ => {}
            }
        }
        anyhow::bail!("the heartbeat watch ended")
    };
    tokio::time::timeout(Duration::from_secs(60), next)
        .await
        .map_err(|_| anyhow::anyhow!("no heartbeat of {host} within 60 s"))?
}

/// Every record as the bucket holds it now.
async fn current_records(log: &Store) -> anyhow::Result<BTreeMap<String, GatewayRecord>> {
    let mut changes = std::pin::pin!(log.watch_records().await?);
    let mut records = BTreeMap::new();
    while let Some(change) = changes.next().await {
        match change? {
            BucketChange::Put { key, value, .. } => {
                records.insert(key, value);
            }
            BucketChange::Removed { key } => {
                records.remove(&key);
            }
            BucketChange::Current => break,
        }
    }
    Ok(records)
}

/// When the victim's gateways moved: the first placed off the victim (the loss judged), then
/// each placed off it, and each RUNNING elsewhere, in the order they were.
struct Moves {
    first: Instant,
    placed: Vec<Instant>,
    running: Vec<Instant>,
}

impl Moves {
    /// Seconds from the first placement until half, 90 % and all of `times`.
    fn after_first(&self, times: &[Instant]) -> [f64; 3] {
        [0.5, 0.9, 1.0].map(|share| {
            let index = ((times.len() as f64 * share).ceil() as usize).saturating_sub(1);
            times
                .get(index)
                .map_or(0.0, |at| at.duration_since(self.first).as_secs_f64())
        })
    }
}

/// Follows the records until every gateway of `waiting` runs all its instances RUNNING, none
/// on `victim`.
async fn wait_moved(
    log: Store,
    victim: String,
    mut waiting: BTreeSet<String>,
) -> anyhow::Result<Moves> {
    let mut changes = std::pin::pin!(log.watch_records().await?);
    let mut first_move = None;
    let mut moved_at = Vec::with_capacity(waiting.len());
    let mut placed = BTreeSet::new();
    let mut placed_at = Vec::with_capacity(waiting.len());
    while !waiting.is_empty() {
        let Some(change) = changes.next().await else {
            anyhow::bail!("the records watch ended");
        };
        if let BucketChange::Put { key, value, .. } = change?
            && waiting.contains(&key)
        {
            if !value.intent.placement().contains(&victim) {
                first_move.get_or_insert_with(Instant::now);
                if placed.insert(key.clone()) {
                    placed_at.push(Instant::now());
                }
            }
            let instances = value.instances();
            let moved = !instances.is_empty()
                && instances.iter().all(|instance| {
                    instance.status == InstanceStatus::Running && instance.host_id != victim
                });
            if moved && waiting.remove(&key) {
                moved_at.push(Instant::now());
            }
        }
    }
    let moves = Moves {
        first: first_move.unwrap_or_else(Instant::now),
        placed: placed_at,
        running: moved_at,
    };
    for (what, times) in [("placed", &moves.placed), ("RUNNING", &moves.running)] {
        let [half, most, all] = moves.after_first(times);
        eprintln!(
            "{what} elsewhere after the first move: half {half:.1} s, 90 % {most:.1} s, all {all:.1} s"
        );
    }
    Ok(moves)
}
