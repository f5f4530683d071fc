//! Extra Docker engines (`krane_tests::engines`, `scripts/engines.sh`) are real, separate hosts:
//! each runs the test gateway with a published port that the test process reaches at the
//! engine's advertise address, sees only its own containers (and the machine's engine none of
//! them), refuses calls while it is down, and after a restart answers again with its
//! `unless-stopped` container back; dropping an engine removes its namespace and data.
//! Each engine starts in about half a second and stops in about one; the test takes about 6 s.

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy};
use bollard::models::{ContainerStateStatusEnum, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, StartContainerOptions,
};
use krane_tests::engines::ExtraEngine;
use krane_tests::{eventually, fetch_instance, unique_namespace};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Engine indices of this test: no other test may use them.
const INDEX_A: u8 = 1;
const INDEX_B: u8 = 2;

const LABEL: &str = "krane.test.engines";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_engines_are_separate_hosts_that_survive_an_outage() {
    krane_tests::docker::require_test_image().await;
    let started = Instant::now();
    let a = ExtraEngine::start("eng", INDEX_A);
    eprintln!("engine {} started in {:?}", a.name(), started.elapsed());
    let started = Instant::now();
    let b = ExtraEngine::start("eng", INDEX_B);
    eprintln!("engine {} started in {:?}", b.name(), started.elapsed());
    let run = unique_namespace("engines");

    // Each engine runs a gateway reachable at its own advertise address.
    let mut gateways = Vec::new();
    for engine in [&a, &b] {
        let docker = engine.engine().await;
        let name = format!("{run}-{}", engine.name());
        run_gateway(&docker, &name, engine.name(), &run).await;
        let address = published_address(&docker, &name, &engine.advertise_host()).await;
        let body = fetch_instance(&address).await;
        assert!(
            body.contains(&format!("\"gateway_id\":\"{}\"", engine.name())),
            "{address} answered {body}"
        );
        gateways.push((docker, name, address));
    }
    assert_ne!(a.advertise_host(), b.advertise_host());

    // Separate: each engine sees only its own container, the machine's engine neither.
    for (docker, name, _) in &gateways {
        assert_eq!(
            names_of(docker, &run).await.expect("engine answers"),
            std::slice::from_ref(name)
        );
    }
    let main = krane_tests::docker::engine().await;
    assert_eq!(
        names_of(&main, &run).await.expect("main engine answers"),
        Vec::<String>::new()
    );

    // Outage of engine a: its API and its gateway are gone; engine b is untouched.
    let (docker_a, name_a, address_a) = &gateways[0];
    let (docker_b, name_b, address_b) = &gateways[1];
    let started = Instant::now();
    a.stop();
    eprintln!("engine {} stopped in {:?}", a.name(), started.elapsed());
    let error = names_of(docker_a, &run)
        .await
        .expect_err("engine a is down");
    eprintln!("while engine a is down, listing fails with: {error}");
    // A new client cannot even be made: bollard checks that the socket exists.
    let fresh = Docker::connect_with_host(&a.docker_host());
    assert!(
        fresh.is_err() || fresh.expect("client").ping().await.is_err(),
        "a new client reached the stopped engine"
    );
    let refused = krane_tests::http_client()
        .get(format!("http://{address_a}/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "{address_a} answered during the outage");
    assert_eq!(
        names_of(docker_b, &run).await.expect("engine b answers"),
        std::slice::from_ref(name_b)
    );
    fetch_instance(address_b).await;

    // Back: the same client answers again and the unless-stopped gateway runs again (its host
    // port may have changed).
    let started = Instant::now();
    a.restart();
    eprintln!("engine {} restarted in {:?}", a.name(), started.elapsed());
    eventually(
        "the gateway of engine a runs again",
        Duration::from_secs(30),
        || async {
            let state = docker_a.inspect_container(name_a, None).await.ok()?.state?;
            (state.status == Some(ContainerStateStatusEnum::RUNNING)).then_some(())
        },
    )
    .await;
    let address = published_address(docker_a, name_a, &a.advertise_host()).await;
    let body = fetch_instance(&address).await;
    assert!(
        body.contains(&format!("\"gateway_id\":\"{}\"", a.name())),
        "{body}"
    );

    // Dropping destroys each engine (the script verifies that its namespace, veth pair and
    // data are gone, and a failure panics here).
    drop(a);
    drop(b);
}

/// Creates and starts the test gateway as krane would: port 8040 published on a random host
/// port, restart policy `unless-stopped`.
async fn run_gateway(docker: &Docker, name: &str, gateway_id: &str, run: &str) {
    let port = "8040/tcp".to_string();
    let body = ContainerCreateBody {
        image: Some(krane_tests::TEST_IMAGE.to_string()),
        env: Some(vec![format!("UNKEY_GATEWAY_ID={gateway_id}")]),
        labels: Some(HashMap::from([(LABEL.to_string(), run.to_string())])),
        exposed_ports: Some(vec![port.clone()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                port,
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .expect("create the gateway");
    docker
        .start_container(name, None::<StartContainerOptions>)
        .await
        .expect("start the gateway");
}

/// `<advertise host>:<published host port of 8040/tcp>`.
async fn published_address(docker: &Docker, name: &str, advertise_host: &str) -> String {
    let port = eventually("8040/tcp published", Duration::from_secs(10), || async {
        let ports = docker
            .inspect_container(name, None)
            .await
            .ok()?
            .network_settings?
            .ports?;
        ports
            .get("8040/tcp")?
            .as_ref()?
            .iter()
            .find_map(|binding| binding.host_port.clone().filter(|port| !port.is_empty()))
    })
    .await;
    format!("{advertise_host}:{port}")
}

/// Names of the containers of this test run on `docker`.
async fn names_of(docker: &Docker, run: &str) -> Result<Vec<String>, bollard::errors::Error> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL}={run}")],
        )])),
        ..Default::default()
    };
    let listed = docker.list_containers(Some(options)).await?;
    Ok(listed
        .into_iter()
        .filter_map(|container| container.names?.first().cloned())
        .map(|name| name.trim_start_matches('/').to_string())
        .collect())
}
