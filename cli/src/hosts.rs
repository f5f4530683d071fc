//! `krane host list`: every host as its worker's latest heartbeat says (ListHosts), one line
//! each: live or not, CPU and memory free of total, krane containers.

use crate::api::{Api, call_error};
use crate::progress;
use krane_proto::krane::v1::{HostResources, HostStatus, ListHostsRequest, ListHostsResponse};
use std::process::ExitCode;

pub async fn list(api: &Api) -> anyhow::Result<ExitCode> {
    let hosts = api
        .client
        .list_hosts(&ListHostsRequest {})
        .await
        .map_err(|error| call_error("ListHosts", error))?
        .into_inner();
    progress::print_json_or(api.output, &hosts, || print_hosts(&hosts));
    Ok(ExitCode::SUCCESS)
}

fn print_hosts(hosts: &ListHostsResponse) {
    if hosts.hosts.is_empty() {
        println!("no hosts: no worker has announced itself");
        return;
    }
    println!(
        "{:<24}  {:<12}  {:<16}  {:<16}  {:<10}  LAST HEARD",
        "HOST", "LIVE", "CPU FREE/TOTAL", "MEMORY FREE/TOTAL", "CONTAINERS"
    );
    for host in &hosts.hosts {
        let (cpu, memory) = free_of_total(host);
        let containers = match host.max_containers {
            0 => host.containers.to_string(),
            max => format!("{}/{max}", host.containers),
        };
        println!(
            "{:<24}  {:<12}  {cpu:<16}  {memory:<16}  {containers:<10}  {}",
            host.host_id,
            liveness(host),
            host.last_heard
        );
    }
}

/// `yes`, `no`, or `engine down` for a live host whose engine did not answer its heartbeat.
fn liveness(host: &HostStatus) -> &'static str {
    match (host.live, host.engine_healthy) {
        (false, _) => "no",
        (true, true) => "yes",
        (true, false) => "engine down",
    }
}

/// The CPU and memory columns: `free/total` (`200m/1000m`, `0Mi/256Mi`), or `?` when the host
/// announces no capacity.
fn free_of_total(host: &HostStatus) -> (String, String) {
    match (&host.capacity, &host.free) {
        (Some(total), Some(free)) => (
            format!("{}m/{}m", free.cpu_millicores, total.cpu_millicores),
            format!("{}Mi/{}Mi", free.memory_mib, total.memory_mib),
        ),
        _ => {
            let reserved = host.reserved.unwrap_or(HostResources {
                cpu_millicores: 0,
                memory_mib: 0,
            });
            (
                format!("?, {}m used", reserved.cpu_millicores),
                format!("?, {}Mi used", reserved.memory_mib),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(capacity: Option<(u64, u64)>, reserved: (u64, u64)) -> HostStatus {
        let resources = |(cpu_millicores, memory_mib)| HostResources {
            cpu_millicores,
            memory_mib,
        };
        HostStatus {
            host_id: "h1".into(),
            live: true,
            engine_healthy: true,
            capacity: capacity.map(resources),
            reserved: Some(resources(reserved)),
            free: capacity.map(|(cpu, mib)| resources((cpu - reserved.0, mib - reserved.1))),
            ..Default::default()
        }
    }

    #[test]
    fn columns_show_free_of_total_or_what_is_used() {
        assert_eq!(
            free_of_total(&host(Some((1000, 256)), (800, 256))),
            ("200m/1000m".to_string(), "0Mi/256Mi".to_string())
        );
        assert_eq!(
            free_of_total(&host(None, (300, 64))),
            ("?, 300m used".to_string(), "?, 64Mi used".to_string())
        );
    }

    #[test]
    fn a_live_host_with_a_silent_engine_says_so() {
        let mut status = host(None, (0, 0));
        assert_eq!(liveness(&status), "yes");
        status.engine_healthy = false;
        assert_eq!(liveness(&status), "engine down");
        status.live = false;
        assert_eq!(liveness(&status), "no");
    }
}
