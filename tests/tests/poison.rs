//! Poison input: a command that always fails is retried with backoff a bounded number of times,
//! then marked FAILED with the reason and kept in the stream; it never blocks other gateways.
//! Undecodable messages are terminated without retries. Namespaces isolate gateways.
//! (The in-memory runtime makes failures exact; the queue and KV are a real nats-server.)

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::{NOT_FOUND, gateway_request};
use krane_tests::{Krane, Protocol, eventually, unique_namespace};
use krane_worker::runtime::RuntimeError;
use krane_worker::runtime::fake::FakeRuntime;
use std::sync::Arc;
use std::time::{Duration, Instant};

const POISON_IMAGE: &str = "poison/always-fails:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_always_fails_ends_failed_without_blocking_others() {
    let namespace = unique_namespace("poison");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    runtime.fail_image(
        POISON_IMAGE,
        RuntimeError::Unavailable("engine answered 500".into()),
    );
    krane.start_worker_on(
        runtime.clone(),
        &["--max-attempts", "3", "--concurrency", "1"],
    );
    let client = krane.client(Protocol::ConnectJson);

    let mut poison = gateway_request(&namespace, "poison", 2);
    poison.image = POISON_IMAGE.into();
    let started = Instant::now();
    client.create(Some(poison)).await.expect("accepted");
    // While the poison is retried, a healthy gateway behind it goes through (concurrency 1).
    client
        .create(Some(gateway_request(&namespace, "healthy", 1)))
        .await
        .expect("accepted");
    eventually(
        "healthy gateway RUNNING",
        Duration::from_secs(10),
        || async {
            let got = client.get(&namespace, "healthy").await.ok()?;
            (got.instances.first()?.status == GatewayStatus::Running as i32).then_some(())
        },
    )
    .await;

    // Meanwhile the poison shows it is being retried, with the reason.
    let retrying = eventually(
        "poison shows its retry",
        Duration::from_secs(10),
        || async {
            let got = client.get(&namespace, "poison").await.ok()?;
            let first = got.instances.first()?;
            first.reason.contains("retrying").then(|| first.clone())
        },
    )
    .await;
    assert_eq!(retrying.status, GatewayStatus::Pending as i32);
    assert!(
        retrying.reason.contains("engine answered 500"),
        "{retrying:?}"
    );

    let failed = eventually("poison FAILED", Duration::from_secs(30), || async {
        let got = client.get(&namespace, "poison").await.ok()?;
        got.instances
            .iter()
            .all(|i| i.status == GatewayStatus::Failed as i32)
            .then_some(got)
    })
    .await;
    let took = started.elapsed();
    for instance in &failed.instances {
        assert!(
            instance.reason.contains("gave up after 3 attempts"),
            "{instance:?}"
        );
    }
    // Backoff happened (1 s + 2 s between the three attempts) but was bounded.
    assert!(took >= Duration::from_secs(3), "no backoff: {took:?}");
    // The command is kept in the stream for inspection.
    let kept = krane
        .store
        .latest_command(&krane_core::GatewayKey::new(&namespace, "poison"))
        .await
        .expect("read")
        .expect("poison command still stored")
        .command;
    assert_eq!(
        kept.spec().map(|spec| spec.image.as_str()),
        Some(POISON_IMAGE)
    );
    let poison_key = krane_core::GatewayKey::new(&namespace, "poison");
    let names = runtime.container_names();
    assert!(
        (0..2).all(|replica| !names.contains(&poison_key.container_name(replica))),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_commands_are_terminated_and_do_not_stop_the_worker() {
    let namespace = unique_namespace("garbage");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    krane.start_worker_on(runtime, &[]);
    let subject = krane_core::GatewayKey::new(&namespace, "garbage").command_subject();
    krane.publish_raw(subject, "{not json").await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "after", 1)))
        .await
        .expect("accepted");
    eventually(
        "the next command is handled",
        Duration::from_secs(10),
        || async {
            let got = client.get(&namespace, "after").await.ok()?;
            (got.instances.first()?.status == GatewayStatus::Running as i32).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_gateway_id_in_two_namespaces_is_two_gateways() {
    let namespace = unique_namespace("iso");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    krane.start_worker_on(runtime.clone(), &[]);
    let client = krane.client(Protocol::ConnectJson);
    let (team_a, team_b) = (format!("{namespace}-a"), format!("{namespace}-b"));
    client
        .create(Some(gateway_request(&team_a, "edge", 2)))
        .await
        .expect("a");
    client
        .create(Some(gateway_request(&team_b, "edge", 1)))
        .await
        .expect("b");
    for (team, replicas) in [(&team_a, 2), (&team_b, 1)] {
        eventually("RUNNING", Duration::from_secs(10), || async {
            let got = client.get(team, "edge").await.ok()?;
            let ok = got.instances.len() == replicas
                && got
                    .instances
                    .iter()
                    .all(|i| i.status == GatewayStatus::Running as i32);
            ok.then_some(())
        })
        .await;
    }
    client.delete(&team_a, "edge").await.expect("delete a");
    eventually("a gone", Duration::from_secs(10), || async {
        let error = client.get(&team_a, "edge").await.err()?;
        (error.code == NOT_FOUND).then_some(())
    })
    .await;
    let b = client.get(&team_b, "edge").await.expect("b untouched");
    assert_eq!(b.instances.len(), 1);
    assert_eq!(b.instances[0].status, GatewayStatus::Running as i32);
    let names = runtime.container_names();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(&format!("{team_b}-edge-0-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_outage_is_waited_out_not_counted_as_failure() {
    let namespace = unique_namespace("enginedown");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    runtime.set_down(true);
    krane.start_worker_on(runtime.clone(), &["--max-attempts", "2"]);
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "patient", 2)))
        .await
        .expect("accepted");
    krane_tests::assert_engine_outage_is_waited_out(
        &client,
        &namespace,
        "patient",
        Duration::from_secs(10),
    )
    .await;
    runtime.set_down(false);
    eventually(
        "converged once the engine is back",
        Duration::from_secs(40),
        || async {
            let got = client.get(&namespace, "patient").await.ok()?;
            got.instances
                .iter()
                .all(|i| i.status == GatewayStatus::Running as i32 && i.reason.is_empty())
                .then_some(())
        },
    )
    .await;
}

/// Redeliveries while the engine is away are not attempts: after an outage long enough for
/// several deliveries, the first real failure is attempt 1, not the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_outage_uses_up_no_attempts() {
    let namespace = unique_namespace("outcount");
    let mut krane = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    runtime.fail_image(
        POISON_IMAGE,
        RuntimeError::Unavailable("engine answered 500".into()),
    );
    runtime.set_down(true);
    krane.start_worker_on(runtime.clone(), &["--max-attempts", "3"]);
    let client = krane.client(Protocol::ConnectJson);
    let mut poison = gateway_request(&namespace, "outage", 1);
    poison.image = POISON_IMAGE.into();
    client.create(Some(poison)).await.expect("accepted");
    eventually("the outage shows", Duration::from_secs(10), || async {
        let got = client.get(&namespace, "outage").await.ok()?;
        let first = got.instances.first()?;
        first
            .reason
            .contains("waiting for the Docker engine")
            .then_some(())
    })
    .await;
    // Deliveries at 0, 1, 3 and 7 s find the engine down (backoff 1 s, 2 s, 4 s …): more
    // deliveries than --max-attempts.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // The engine is back; the gateway itself fails now: that is attempt 1 of 3. (The reconcile
    // reports the failure itself a moment before the retry is noted with its attempt: wait for
    // the note.)
    runtime.set_down(false);
    let retrying = eventually(
        "the first real attempt",
        Duration::from_secs(40),
        || async {
            let got = client.get(&namespace, "outage").await.ok()?;
            let first = got.instances.first()?.clone();
            first.reason.contains("(attempt ").then_some(first)
        },
    )
    .await;
    assert_eq!(
        retrying.status,
        GatewayStatus::Pending as i32,
        "{retrying:?}"
    );
    assert!(retrying.reason.contains("attempt 1 of 3"), "{retrying:?}");
}

/// A gateway whose commands are all unreadable (another version wrote them) can still be
/// created: the Create is written on top and is the intent from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_over_unreadable_commands_is_stored_on_top() {
    let namespace = unique_namespace("unreadable");
    let krane = Krane::start_without_worker(&namespace).await;
    let key = krane_core::GatewayKey::new(&namespace, "over");
    krane
        .publish_raw(key.command_subject(), "{\"kind\":\"v9\"}")
        .await;
    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "over", 1)))
        .await
        .expect("accepted");
    let latest = krane
        .store
        .latest_command(&key)
        .await
        .expect("readable now")
        .expect("a command");
    assert_eq!(latest.command.spec().map(|spec| spec.replicas), Some(1));
}
