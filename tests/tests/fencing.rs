//! Self-fencing: a worker cut off from NATS for `--fence-after` stops its host's containers
//! (other hosts may run its replicas by then) and brings them back once NATS is reachable.
//! (Which missing hosts count as lost — not right after a reconnect, not before a heartbeat
//! interval, not when more than half look lost — is unit-tested in `krane_worker`'s
//! `hosts::liveness`.)

use krane_tests::client::gateway_request;
use krane_tests::{Krane, Protocol, eventually, unique_namespace, wait_all_running};
use std::time::Duration;

/// `--fence-after`: a worker cut off from NATS for that long stops its host's containers (they
/// may run elsewhere by now), and brings them back once NATS is reachable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_nats_fences_itself_then_comes_back() {
    use krane_worker::runtime::fake::FakeRuntime;
    use std::sync::Arc;
    let namespace = unique_namespace("fence");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    krane.start_worker_on(
        runtime.clone(),
        &["--fence-after", "2s", "--resync-interval", "2s"],
    );
    let client = krane.client(Protocol::ConnectJson);
    let request = gateway_request(&namespace, "fenced", 2);
    client.create(Some(request)).await.expect("create");
    wait_all_running(&client, &namespace, "fenced", 2, Duration::from_secs(30)).await;
    krane.nats.kill();
    eventually(
        "the containers stopped",
        Duration::from_secs(15),
        || async {
            let stopped =
                runtime.running_names().is_empty() && runtime.container_names().len() == 2;
            stopped.then_some(())
        },
    )
    .await;
    krane.nats.restart().await;
    eventually(
        "the containers running again",
        Duration::from_secs(30),
        || async { (runtime.running_names().len() == 2).then_some(()) },
    )
    .await;
    wait_all_running(&client, &namespace, "fenced", 2, Duration::from_secs(30)).await;
}
