//! The whole pipeline through the public API, once per protocol (Connect JSON, Connect proto,
//! gRPC): create 3 replicas → PENDING at once → all RUNNING and answering HTTP → delete →
//! TERMINATING → containers gone → not_found. Real nats-server, real Docker engine.

use krane_proto::krane::v1::{GatewayStatus, GetGatewayResponse};
use krane_tests::client::{NOT_FOUND, gateway_request};
use krane_tests::{Krane, Protocol, docker, eventually, fetch_instance, unique_namespace};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

fn statuses(response: &GetGatewayResponse) -> Vec<i32> {
    response.instances.iter().map(|i| i.status).collect()
}

async fn full_lifecycle(protocol: Protocol) {
    let namespace = unique_namespace("life");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(protocol);

    let created = client
        .create(Some(gateway_request(&namespace, "edge", 3)))
        .await
        .expect("create accepted");
    assert_eq!(created.status, GatewayStatus::Pending as i32);

    // Right after Create: one instance per replica, never an empty list.
    let first = client
        .get(&namespace, "edge")
        .await
        .expect("get after create");
    assert_eq!(first.instances.len(), 3);
    let ids: Vec<String> = first.instances.iter().map(|i| i.id.clone()).collect();

    let running = eventually("all 3 instances RUNNING", CONVERGE, || async {
        let got = client.get(&namespace, "edge").await.ok()?;
        statuses(&got)
            .iter()
            .all(|s| *s == GatewayStatus::Running as i32)
            .then_some(got)
    })
    .await;
    assert_eq!(running.instances.len(), 3);
    let running_ids: Vec<String> = running.instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(
        ids, running_ids,
        "instance ids are stable from PENDING to RUNNING"
    );

    // Each address answers HTTP, as the gateway it claims to be.
    for instance in &running.instances {
        let body = fetch_instance(&instance.address).await;
        assert!(body.contains("\"gateway_id\":\"edge\""), "{body}");
        assert!(body.contains("\"workspace_id\":\"ws_test\""), "{body}");
    }
    assert_eq!(
        docker::gateway_containers(&namespace, "edge").await.len(),
        3
    );

    client
        .delete(&namespace, "edge")
        .await
        .expect("delete accepted");
    match client.get(&namespace, "edge").await {
        Ok(terminating) => assert!(
            statuses(&terminating)
                .iter()
                .all(|s| *s == GatewayStatus::Terminating as i32),
            "{terminating:?}"
        ),
        Err(error) => assert_eq!(error.code, NOT_FOUND),
    }
    eventually("gateway not_found after delete", CONVERGE, || async {
        let error = client.get(&namespace, "edge").await.err()?;
        (error.code == NOT_FOUND).then_some(())
    })
    .await;
    assert!(
        docker::gateway_containers(&namespace, "edge")
            .await
            .is_empty()
    );
    // Deleting again (or an unknown gateway) succeeds.
    client
        .delete(&namespace, "edge")
        .await
        .expect("repeat delete");
    client
        .delete(&namespace, "never-existed")
        .await
        .expect("unknown delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_connect_json() {
    full_lifecycle(Protocol::ConnectJson).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_connect_proto() {
    full_lifecycle(Protocol::ConnectProto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_grpc() {
    full_lifecycle(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_the_asked_limits_labels_env_and_ports() {
    let namespace = unique_namespace("shape");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "shaped", 1);
    request.cpu_millicores = 250;
    request.memory_size_mib = 24;
    client.create(Some(request)).await.expect("create");
    let running = eventually("RUNNING", CONVERGE, || async {
        let got = client.get(&namespace, "shaped").await.ok()?;
        (got.instances.first()?.status == GatewayStatus::Running as i32).then_some(got)
    })
    .await;
    let inspected = docker::inspect(&running.instances[0].id).await;
    let host = inspected.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.memory, Some(24 * 1024 * 1024));
    let restart = host
        .restart_policy
        .and_then(|p| p.name)
        .map(|n| n.to_string());
    assert_eq!(restart.as_deref(), Some("unless-stopped"));
    assert_ne!(host.privileged, Some(true));
    assert!(host.binds.unwrap_or_default().is_empty(), "no host mounts");
    assert!(
        host.security_opt
            .unwrap_or_default()
            .contains(&"no-new-privileges".to_string())
    );
    // Confined by default: every capability dropped but binding low ports, a process limit,
    // rotated logs, never the host's network.
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_string()]));
    assert_eq!(host.pids_limit, Some(256));
    let log = host.log_config.expect("log config");
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let log = log.config.unwrap_or_default();
    assert_eq!(log.get("max-size").map(String::as_str), Some("10m"));
    assert_eq!(log.get("max-file").map(String::as_str), Some("3"));
    assert_ne!(host.network_mode.as_deref(), Some("host"));
    let config = inspected.config.expect("config");
    let labels = config.labels.expect("labels");
    assert_eq!(labels["unkey.gateway.id"], "shaped");
    assert_eq!(labels["unkey.managed.by"], "krane");
    assert_eq!(labels["unkey.namespace"], namespace);
    let env = config.env.expect("env");
    for expected in [
        "UNKEY_WORKSPACE_ID=ws_test".to_string(),
        "UNKEY_GATEWAY_ID=shaped".to_string(),
        format!("UNKEY_IMAGE={}", krane_tests::TEST_IMAGE),
    ] {
        assert!(env.contains(&expected), "{expected} missing from {env:?}");
    }
    let port = running.instances[0]
        .address
        .rsplit_once(':')
        .map(|(_, port)| port.to_string())
        .expect("address has a port");
    let ports = inspected
        .network_settings
        .and_then(|n| n.ports)
        .expect("published ports");
    let bindings = ports
        .get("8040/tcp")
        .cloned()
        .flatten()
        .expect("8040/tcp published");
    assert!(
        bindings
            .iter()
            .any(|b| b.host_port.as_deref() == Some(port.as_str()))
    );
}
