//! `get`: GetGateway p50/p99 reading the KV record (gateways created through the API and run
//! by an in-process worker on the in-memory runtime, so records hold RUNNING instances) vs a
//! Get built on Docker's ContainerList with a label filter, as the original answered it,
//! against real containers of the test image.

use crate::env::{self, Stack};
use crate::stats::{Percentiles, Table, cell, median};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use krane_core::names::{self, GatewayKey};
use krane_proto::krane::v1::{
    GatewayInstance, GatewayStatus, GetGatewayRequest, GetGatewayResponse,
};
use krane_worker::runtime::fake::FakeRuntime;
use krane_worker::runtime::{ContainerRuntime, ReplicaContainer};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateways stored in KV.
    #[arg(long, default_value_t = 100)]
    gateways: usize,
    /// Replicas per gateway.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Gateways with real containers for the ContainerList side (0 skips it).
    #[arg(long, default_value_t = 20)]
    docker_gateways: usize,
    /// Gets per run (round-robin over the gateways, one caller).
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// ContainerList-based Gets per run.
    #[arg(long, default_value_t = 300)]
    docker_calls: usize,
    /// Repetitions; tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let stack = Stack::start(
        "bench-get",
        Arc::new(FakeRuntime::with_images(&[env::TEST_IMAGE])),
    )
    .await?;
    let client = stack.api.client()?;
    env::create_and_wait(&stack.log, &client, "g", args.gateways, args.replicas, 16).await?;

    // Our Get: one caller, round-robin over the gateways.
    let kv_runs = time_reads(args.runs, args.calls, args.replicas, "GetGateway", |call| {
        let request = GetGatewayRequest {
            namespace: "bench".into(),
            gateway_id: format!("g{}", call % args.gateways),
        };
        let client = &client;
        async move {
            let response = client
                .get_gateway(&request)
                .await
                .map_err(|error| anyhow::anyhow!("GetGateway: {error}"))?;
            Ok(response.into_inner().instances.len())
        }
    })
    .await?;
    // The same reads without the API around them: what the KV read itself costs.
    let read_runs = time_reads(args.runs, args.calls, args.replicas, "KV read", |call| {
        let key = GatewayKey::new("bench", format!("g{}", call % args.gateways));
        let log = &stack.log;
        async move {
            let record = log.load_record(&key).await?.record;
            Ok(record
                .map(|record| krane_api::convert::instances_of(&record).len())
                .unwrap_or(0))
        }
    })
    .await?;
    stack.stop().await;

    let docker_runs = if args.docker_gateways > 0 {
        container_list_get(&args).await?
    } else {
        Vec::new()
    };

    let kv_p50 = median(kv_runs.iter().map(|p| p.p50_ms));
    let kv_p99 = median(kv_runs.iter().map(|p| p.p99_ms));
    let read_p50 = median(read_runs.iter().map(|p| p.p50_ms));
    let read_p99 = median(read_runs.iter().map(|p| p.p99_ms));
    let list_p50 = median(docker_runs.iter().map(|p| p.p50_ms));
    let list_p99 = median(docker_runs.iter().map(|p| p.p99_ms));
    let mut table = Table::new(
        format!(
            "GetGateway, 1 caller; medians of {} runs (KV: {} gateways × {}; ContainerList: {} \
             gateways × {} real containers)",
            args.runs, args.gateways, args.replicas, args.docker_gateways, args.replicas
        ),
        &["read", "p50 ms", "p99 ms", "calls/run"],
    );
    table.row(vec![
        "KV record (ours, via the API)".into(),
        cell(kv_p50),
        cell(kv_p99),
        args.calls.to_string(),
    ]);
    table.row(vec![
        "KV record read alone (no API)".into(),
        cell(read_p50),
        cell(read_p99),
        args.calls.to_string(),
    ]);
    if !docker_runs.is_empty() {
        table.row(vec![
            "Docker ContainerList + label filter".into(),
            cell(list_p50),
            cell(list_p99),
            args.docker_calls.to_string(),
        ]);
    }
    table.print();
    if !docker_runs.is_empty() {
        println!(
            "  ours (via the API) faster by {:.1}× at p50, {:.1}× at p99; the KV read alone \
             vs ContainerList alone: {:.1}× at p50, {:.1}× at p99",
            list_p50 / kv_p50,
            list_p99 / kv_p99,
            list_p50 / read_p50,
            list_p99 / read_p99
        );
    }
    Ok(json!({
        "benchmark": "get",
        "gateways": args.gateways,
        "replicas": args.replicas,
        "docker_gateways": args.docker_gateways,
        "kv": { "p50_ms": kv_p50, "p99_ms": kv_p99, "runs": kv_runs },
        "kv_read_alone": { "p50_ms": read_p50, "p99_ms": read_p99, "runs": read_runs },
        "container_list": { "p50_ms": list_p50, "p99_ms": list_p99, "runs": docker_runs },
        "speedup_p50": list_p50 / kv_p50,
        "speedup_p99": list_p99 / kv_p99,
        "read_alone_speedup_p50": list_p50 / read_p50,
        "read_alone_speedup_p99": list_p99 / read_p99,
    }))
}

/// Creates real containers, then times Gets that list them with a label filter and build the
/// same response the API gives; removes the containers afterwards.
async fn container_list_get(args: &Args) -> anyhow::Result<Vec<Percentiles>> {
    let runtime = env::docker_runtime().await?;
    runtime
        .ensure_image(env::TEST_IMAGE, &tokio::sync::watch::channel(None).0)
        .await?;
    let namespace = format!("kbench-get-{}", std::process::id());
    let result = async {
        let containers: Vec<ReplicaContainer> = (0..args.docker_gateways)
            .flat_map(|gateway| {
                let spec = krane_api::convert::spec_from_request(Some(&env::gateway_request(
                    &namespace,
                    &format!("g{gateway}"),
                    args.replicas,
                )))
                .expect("valid request");
                (0..args.replicas)
                    .map(move |replica| ReplicaContainer::for_replica(&spec, replica, "bench"))
            })
            .collect();
        let runtime = &runtime;
        env::for_each_concurrent(containers.len(), 8, |i| {
            let container = &containers[i];
            async move { Ok(runtime.create_and_start(container).await?) }
        })
        .await?;
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        let (docker, namespace) = (&docker, &namespace);
        let runs = time_reads(
            args.runs,
            args.docker_calls,
            args.replicas,
            "ContainerList",
            |call| {
                let gateway_id = format!("g{}", call % args.docker_gateways);
                async move {
                    let response = list_based_get(docker, namespace, &gateway_id).await?;
                    Ok(response.instances.len())
                }
            },
        )
        .await?;
        anyhow::Ok(runs)
    }
    .await;
    env::remove_namespace_containers(&namespace);
    result
}

/// Times `calls` reads one after another, `runs` times (one set of percentiles per run).
/// `read(call)` makes the read (what it does before its future starts is not timed) and
/// answers with how many instances it found, which must be `replicas`.
async fn time_reads<F, Fut>(
    runs: usize,
    calls: usize,
    replicas: u32,
    what: &str,
    mut read: F,
) -> anyhow::Result<Vec<Percentiles>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let mut percentiles = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut latencies = Vec::with_capacity(calls);
        for call in 0..calls {
            let pending = read(call);
            let started = Instant::now();
            let found = pending.await?;
            latencies.push(started.elapsed());
            anyhow::ensure!(
                found == replicas as usize,
                "{what} found {found} instances, not {replicas}"
            );
        }
        percentiles.push(Percentiles::of(&latencies));
    }
    Ok(percentiles)
}

/// GetGateway the original way: list the gateway's containers by label and map them.
async fn list_based_get(
    docker: &Docker,
    namespace: &str,
    gateway_id: &str,
) -> anyhow::Result<GetGatewayResponse> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
                format!("{}={namespace}", names::LABEL_NAMESPACE),
                format!("{}={gateway_id}", names::LABEL_GATEWAY_ID),
            ],
        )])),
        ..Default::default()
    };
    let containers = docker.list_containers(Some(options)).await?;
    let instances = containers
        .into_iter()
        .map(|container| {
            let running =
                container.state.map(|state| state.to_string()).as_deref() == Some("running");
            let port = container
                .ports
                .unwrap_or_default()
                .into_iter()
                .find_map(|port| port.public_port);
            GatewayInstance {
                id: container
                    .names
                    .and_then(|names| names.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                address: port
                    .map(|port| format!("127.0.0.1:{port}"))
                    .unwrap_or_default(),
                status: if running {
                    GatewayStatus::Running
                } else {
                    GatewayStatus::Pending
                } as i32,
                ..Default::default()
            }
        })
        .collect();
    Ok(GetGatewayResponse {
        instances,
        gateway: None,
        rollout: None,
    })
}
