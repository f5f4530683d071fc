//! Following a gateway until it reaches a goal, with a live per-replica display: one line per
//! replica whenever its status, address or reason changes (works on terminals and in logs).

use crate::api::Api;
use crate::args::{Output, Target, Wait};
use futures::StreamExt;
use krane_proto::krane::v1::{
    GatewayInstance, GatewayStatus, GetGatewayResponse, ListGatewaysResponse,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Exactly this many instances, all RUNNING on the current spec.
    Running(u32),
    /// The gateway is gone (`not_found`).
    Gone,
}

pub fn print_json_or<T: Serialize>(output: Output, value: &T, text: impl FnOnce()) {
    match output {
        Output::Json => println!("{}", serde_json::to_string(value).unwrap_or_default()),
        Output::Text => text(),
    }
}

pub fn print_table(gateway: &GetGatewayResponse) {
    if let Some(rollout) = gateway.rollout.as_ref().filter(|r| !r.state.is_empty()) {
        println!(
            "update: {} ({})",
            rollout.state.replace('_', " "),
            rollout.reason
        );
    }
    println!(
        "{:<44} {:<12} {:<22} {:<16} REASON",
        "INSTANCE", "STATUS", "ADDRESS", "HOST"
    );
    for instance in &gateway.instances {
        println!(
            "{:<44} {:<12} {:<22} {:<16} {}",
            instance.id,
            status_name(instance.status),
            instance.address,
            instance.host_id,
            instance.reason
        );
    }
}

fn status_name(status: i32) -> &'static str {
    match GatewayStatus::try_from(status) {
        Ok(GatewayStatus::Pending) => "PENDING",
        Ok(GatewayStatus::Running) => "RUNNING",
        Ok(GatewayStatus::Terminating) => "TERMINATING",
        Ok(GatewayStatus::Failed) => "FAILED",
        _ => "UNSPECIFIED",
    }
}

/// Polls GetGateway until `goal`, a FAILED instance (exit 1) or the timeout (exit 2).
pub async fn follow(
    api: &Api,
    target: &Target,
    goal: Goal,
    wait: &Wait,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let gateway = api.get(target).await?;
        if let Some(gateway) = &gateway {
            for instance in &gateway.instances {
                show_change(api.output, &mut shown, instance);
            }
        }
        match (goal, &gateway) {
            (Goal::Gone, None) => return finish(api.output, target, "gone", ExitCode::SUCCESS),
            (Goal::Running(replicas), Some(gateway)) if reached(gateway, replicas) => {
                return finish(api.output, target, "running", ExitCode::SUCCESS);
            }
            (Goal::Running(_), Some(gateway)) if failed(gateway) => {
                return finish(api.output, target, "failed", ExitCode::from(1));
            }
            (Goal::Running(_), None) => {
                anyhow::bail!("gateway {}/{} disappeared", target.namespace, target.id)
            }
            _ => {}
        }
        if started.elapsed() >= wait.timeout {
            return finish(api.output, target, "timed out", ExitCode::from(2));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the state now and on every change (WatchGateway) until the gateway is gone.
pub async fn watch(api: &Api, target: &Target) -> anyhow::Result<ExitCode> {
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut updates = std::pin::pin!(api.watch(target).await?);
    while let Some(update) = updates.next().await {
        for instance in &update?.instances {
            show_change(api.output, &mut shown, instance);
        }
    }
    finish(api.output, target, "gone", ExitCode::SUCCESS)
}

pub fn print_list(listed: &ListGatewaysResponse) {
    println!("{:<32} {:<12} {:<9} IMAGE", "GATEWAY", "STATUS", "RUNNING");
    for gateway in &listed.gateways {
        let running = gateway
            .instances
            .iter()
            .filter(|instance| instance.status == GatewayStatus::Running as i32)
            .count();
        let image = gateway
            .gateway
            .as_ref()
            .map(|spec| spec.image.as_str())
            .unwrap_or("-");
        println!(
            "{:<32} {:<12} {:<9} {image}",
            gateway.gateway_id,
            status_name(gateway.status),
            format!("{running}/{}", gateway.instances.len())
        );
    }
}

fn reached(gateway: &GetGatewayResponse, replicas: u32) -> bool {
    gateway.instances.len() == replicas as usize
        && gateway.instances.iter().all(|instance| {
            instance.status == GatewayStatus::Running as i32 && instance.reason.is_empty()
        })
}

fn failed(gateway: &GetGatewayResponse) -> bool {
    gateway
        .instances
        .iter()
        .any(|instance| instance.status == GatewayStatus::Failed as i32)
}

fn show_change(output: Output, shown: &mut BTreeMap<String, String>, instance: &GatewayInstance) {
    let line = format!(
        "{} {} {} {}",
        status_name(instance.status),
        instance.address,
        instance.host_id,
        instance.reason
    );
    if shown.get(&instance.id) == Some(&line) {
        return;
    }
    shown.insert(instance.id.clone(), line);
    print_json_or(output, instance, || {
        let address = if instance.address.is_empty() {
            "-"
        } else {
            &instance.address
        };
        let reason = if instance.reason.is_empty() {
            String::new()
        } else {
            format!("  ({})", instance.reason)
        };
        let host = if instance.host_id.is_empty() {
            "-"
        } else {
            &instance.host_id
        };
        println!(
            "  {:<44} {:<12} {address:<22} {host}{reason}",
            instance.id,
            status_name(instance.status)
        );
    });
}

fn finish(
    output: Output,
    target: &Target,
    outcome: &str,
    code: ExitCode,
) -> anyhow::Result<ExitCode> {
    print_json_or(
        output,
        &serde_json::json!({"gateway": format!("{}/{}", target.namespace, target.id), "outcome": outcome}),
        || println!("gateway {}/{}: {outcome}", target.namespace, target.id),
    );
    Ok(code)
}
