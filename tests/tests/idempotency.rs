//! The core promise: any command may arrive twice or late and the end state still equals the
//! last intent, with no duplicate or orphaned container. Real nats-server, real Docker.

use krane_core::command::Command;
use krane_core::routing::Replaced;
use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::{NOT_FOUND, gateway_request};
use krane_tests::{Krane, Protocol, docker, eventually, unique_namespace, wait_all_running};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(60);

async fn container_ids(namespace: &str, id: &str) -> Vec<String> {
    let mut ids: Vec<String> = docker::gateway_containers(namespace, id)
        .await
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

/// Waits until the worker has acknowledged every command it was given.
async fn wait_worker_idle(krane: &Krane) {
    let drained = |consumer: String, stream: &'static str| async move {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = krane
            .store
            .jetstream()
            .get_consumer_from_stream(consumer, stream)
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    };
    eventually(
        "dispatch and worker consumers drained",
        CONVERGE,
        || async {
            drained(
                krane_store::layout::DISPATCH_CONSUMER.to_string(),
                krane_core::names::COMMANDS_STREAM,
            )
            .await?;
            drained(
                krane_worker::consumer_name(&krane.host_id()),
                krane_core::names::WORK_STREAM,
            )
            .await
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_an_identical_create_is_a_no_op() {
    let namespace = unique_namespace("same");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    let request = gateway_request(&namespace, "twice", 2);
    client.create(Some(request.clone())).await.expect("create");
    let before = wait_all_running(&client, &namespace, "twice", 2, CONVERGE).await;
    let containers = container_ids(&namespace, "twice").await;

    let again = client.create(Some(request)).await.expect("repeat create");
    assert_eq!(again.status, GatewayStatus::Running as i32);
    wait_worker_idle(&krane).await;
    assert_eq!(client.get(&namespace, "twice").await.expect("get"), before);
    assert_eq!(container_ids(&namespace, "twice").await, containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_create_makes_no_duplicate() {
    let namespace = unique_namespace("redeliver");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::Grpc);
    let request = gateway_request(&namespace, "dup", 3);
    client.create(Some(request.clone())).await.expect("create");
    wait_all_running(&client, &namespace, "dup", 3, CONVERGE).await;
    let containers = container_ids(&namespace, "dup").await;

    // The same command stored again (new message id): exactly what a redelivery looks like.
    let command = krane
        .store
        .latest_command(&krane_core::GatewayKey::new(&namespace, "dup"))
        .await
        .expect("read")
        .expect("stored")
        .command;
    assert!(matches!(command, Command::Create { .. }));
    for attempt in 0..3 {
        krane
            .store
            // Another seen revision gives another message id: stored again, not deduplicated.
            .publish_command(&command, 1_000 + attempt)
            .await
            .expect("publish duplicate");
    }
    wait_worker_idle(&krane).await;
    assert_eq!(container_ids(&namespace, "dup").await, containers);
    wait_all_running(&client, &namespace, "dup", 3, CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_create_ends_with_the_second_spec() {
    let namespace = unique_namespace("cdc");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectProto);
    client
        .create(Some(gateway_request(&namespace, "flip", 2)))
        .await
        .expect("first create");
    client.delete(&namespace, "flip").await.expect("delete");
    let mut second = gateway_request(&namespace, "flip", 3);
    second.cpu_millicores = 200;
    client.create(Some(second)).await.expect("second create");

    let running = wait_all_running(&client, &namespace, "flip", 3, CONVERGE).await;
    wait_worker_idle(&krane).await;
    let containers = docker::gateway_containers(&namespace, "flip").await;
    assert_eq!(containers.len(), 3, "no duplicate and no orphan");
    for instance in &running.instances {
        let host = docker::inspect(&instance.id)
            .await
            .host_config
            .expect("host config");
        assert_eq!(host.nano_cpus, Some(200_000_000), "second spec applied");
    }
}

/// The same spec again after its delete finished (well inside the commands' dedup window):
/// the gateway comes back, instead of the retry of the first create being deduplicated away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_create_after_a_finished_delete_brings_the_gateway_back() {
    let namespace = unique_namespace("again");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectProto);
    let request = gateway_request(&namespace, "again", 2);
    client
        .create(Some(request.clone()))
        .await
        .expect("first create");
    wait_all_running(&client, &namespace, "again", 2, CONVERGE).await;
    client.delete(&namespace, "again").await.expect("delete");
    eventually("the deleted gateway is gone", CONVERGE, || async {
        match client.get(&namespace, "again").await {
            Err(error) if error.code == NOT_FOUND => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        docker::gateway_containers(&namespace, "again")
            .await
            .is_empty()
    );

    client.create(Some(request)).await.expect("second create");
    wait_all_running(&client, &namespace, "again", 2, CONVERGE).await;
    wait_worker_idle(&krane).await;
    assert_eq!(
        docker::gateway_containers(&namespace, "again").await.len(),
        2,
        "no duplicate and no orphan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_through_create_removes_the_highest_replicas() {
    let namespace = unique_namespace("scale");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "shrink", 3)))
        .await
        .expect("create");
    let three = wait_all_running(&client, &namespace, "shrink", 3, CONVERGE).await;
    client
        .create(Some(gateway_request(&namespace, "shrink", 1)))
        .await
        .expect("scale down");
    let one = wait_all_running(&client, &namespace, "shrink", 1, CONVERGE).await;
    assert_eq!(one.instances[0].id, three.instances[0].id);
    eventually("surplus containers removed", CONVERGE, || async {
        (docker::gateway_containers(&namespace, "shrink").await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_ends_failed_with_the_reason() {
    let namespace = unique_namespace("noimage");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    let mut request = gateway_request(&namespace, "ghost", 2);
    request.image = "krane-image-that-does-not-exist:never".into();
    client.create(Some(request)).await.expect("accepted");
    let failed = eventually("FAILED with a reason", CONVERGE, || async {
        let got = client.get(&namespace, "ghost").await.ok()?;
        got.instances
            .iter()
            .all(|i| i.status == GatewayStatus::Failed as i32)
            .then_some(got)
    })
    .await;
    for instance in &failed.instances {
        assert!(
            instance
                .reason
                .contains("krane-image-that-does-not-exist:never"),
            "{instance:?}"
        );
    }
    // Not endless retries: the command is settled, and no container exists.
    wait_worker_idle(&krane).await;
    assert!(
        docker::gateway_containers(&namespace, "ghost")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_an_identical_projection() {
    let namespace = unique_namespace("replay");
    let krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    for (id, replicas) in [("keep", 2), ("drop", 1), ("resize", 3)] {
        client
            .create(Some(gateway_request(&namespace, id, replicas)))
            .await
            .expect("create");
    }
    wait_all_running(&client, &namespace, "resize", 3, CONVERGE).await;
    client
        .create(Some(gateway_request(&namespace, "resize", 1)))
        .await
        .expect("resize");
    client.delete(&namespace, "drop").await.expect("delete");
    wait_all_running(&client, &namespace, "keep", 2, CONVERGE).await;
    wait_all_running(&client, &namespace, "resize", 1, CONVERGE).await;
    wait_worker_idle(&krane).await;

    let before = krane.store.all_records().await.expect("records before");
    assert_eq!(
        before.len(),
        3,
        "keep, resize and the deleted drop's tombstone"
    );
    krane.store.rebuild_projection().await.expect("rebuild");
    let after = krane.store.all_records().await.expect("records after");
    assert_eq!(before, after);
}

/// A Create whose command was stored although the caller was told it failed (its fold into
/// the record did not happen), then a Delete: the Delete is decided from the log, not from
/// the record that still says "deleted", so it is stored and wins. Nothing runs at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_after_a_create_stored_without_its_record_still_deletes() {
    use krane_worker::runtime::fake::FakeRuntime;
    use std::sync::Arc;
    let namespace = unique_namespace("lagging");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    let request = gateway_request(&namespace, "lag", 2);
    client.create(Some(request.clone())).await.expect("create");
    client.delete(&namespace, "lag").await.expect("delete");
    // The Create again: stored in the log, but the call failed before the record was written.
    let key = krane_core::GatewayKey::new(&namespace, "lag");
    let spec = krane_api::convert::spec_from_request(Some(&request)).expect("valid");
    let latest = krane
        .store
        .latest_command(&key)
        .await
        .expect("read")
        .expect("some");
    krane
        .store
        .publish_command_expecting(
            &Command::create(spec, Vec::new()),
            latest.last_seq,
            "test",
            Replaced::Command(&latest.command),
        )
        .await
        .expect("stored")
        .expect("not superseded");
    // The caller's last successful call: a Delete.
    client.delete(&namespace, "lag").await.expect("delete");
    let latest = krane
        .store
        .latest_command(&key)
        .await
        .expect("read")
        .expect("some");
    assert!(
        matches!(latest.command, Command::Delete { .. }),
        "the Delete is in force: {latest:?}"
    );
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    krane.start_worker_on(runtime.clone(), &[]);
    eventually("the gateway is gone", CONVERGE, || async {
        client
            .get(&namespace, "lag")
            .await
            .err()
            .filter(|error| error.code == NOT_FOUND)
    })
    .await;
    assert!(runtime.container_names().is_empty(), "nothing runs");
}
