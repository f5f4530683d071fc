//! `krane gateway history`: a gateway's commands and observations (ListGatewayEvents), oldest
//! first, one line each: when, what, and the details.

use crate::api::{Api, call_error};
use crate::args::Target;
use crate::progress;
use krane_proto::krane::v1::gateway_event::What;
use krane_proto::krane::v1::{GatewayEvent, ListGatewayEventsRequest, ListGatewayEventsResponse};
use std::process::ExitCode;

pub async fn show(api: &Api, target: &Target, limit: u32) -> anyhow::Result<ExitCode> {
    let request = ListGatewayEventsRequest {
        namespace: target.namespace.clone(),
        gateway_id: target.id.clone(),
        limit,
    };
    let history = api
        .client
        .list_gateway_events(&request)
        .await
        .map_err(|error| call_error("ListGatewayEvents", error))?
        .into_inner();
    progress::print_json_or(api.output, &history, || print_history(target, &history));
    Ok(ExitCode::SUCCESS)
}

fn print_history(target: &Target, history: &ListGatewayEventsResponse) {
    if history.events.is_empty() {
        println!("no history for gateway {}/{}", target.namespace, target.id);
    } else {
        println!("{:<24}  {:<20}  DETAILS", "TIME", "WHAT");
        for event in &history.events {
            let (what, details) = describe(event);
            println!("{:<24}  {what:<20}  {details}", event.time);
        }
    }
    if history.undecodable > 0 {
        println!(
            "({} stored messages could not be read)",
            history.undecodable
        );
    }
}

/// The WHAT and DETAILS columns of one entry.
fn describe(event: &GatewayEvent) -> (String, String) {
    match &event.what {
        Some(What::Command(command)) => {
            let mut details = Vec::new();
            if let Some(gateway) = &command.gateway {
                details.push(format!("image={}", gateway.image));
                details.push(format!("replicas={}", gateway.replicas));
                details.push(format!("cpu={}m", gateway.cpu_millicores));
                details.push(format!("memory={}Mi", gateway.memory_size_mib));
            }
            if command.placement.iter().any(|host| !host.is_empty()) {
                let hosts: Vec<&str> = command
                    .placement
                    .iter()
                    .map(|host| if host.is_empty() { "-" } else { host })
                    .collect();
                details.push(format!("placement={}", hosts.join(",")));
            }
            if !command.reason.is_empty() {
                details.push(format!("reason={:?}", command.reason));
            }
            details.push(format!("seq={}", event.sequence));
            (command.kind.clone(), details.join(" "))
        }
        Some(What::Observation(observed)) => {
            let mut details = vec![format!("host={}", observed.host_id)];
            if !observed.address.is_empty() {
                details.push(format!("address={}", observed.address));
            }
            if !observed.reason.is_empty() {
                details.push(format!("reason={:?}", observed.reason));
            }
            let what = format!(
                "replica {} {}",
                observed.replica,
                observed.state.to_uppercase()
            );
            (what, details.join(" "))
        }
        None => ("?".to_string(), format!("seq={}", event.sequence)),
    }
}
