//! NATS outages: the API fails fast with `unavailable` while NATS is down, both sides reconnect
//! on their own, and no command acknowledged to a caller is lost across a NATS restart.

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::{UNAVAILABLE, gateway_request};
use krane_tests::{Krane, Protocol, eventually, unique_namespace};
use krane_worker::runtime::fake::FakeRuntime;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_fails_fast_while_nats_is_down_and_recovers_on_its_own() {
    let namespace = unique_namespace("natsdown");
    let mut krane = Krane::start(&namespace).await;
    let client = krane.client(Protocol::Grpc);
    krane.nats.kill();
    // Give the clients a moment to notice the dropped connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for attempt in 0..3 {
        let started = Instant::now();
        let error = client
            .create(Some(gateway_request(&namespace, "late", 1)))
            .await
            .expect_err("NATS is down");
        let took = started.elapsed();
        assert_eq!(error.code, UNAVAILABLE, "attempt {attempt}: {error:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        let error = client.get(&namespace, "late").await.expect_err("down");
        assert_eq!(error.code, UNAVAILABLE);
    }
    krane.nats.restart().await;
    eventually(
        "create accepted after NATS returned",
        Duration::from_secs(30),
        || async {
            client
                .create(Some(gateway_request(&namespace, "late", 1)))
                .await
                .ok()
        },
    )
    .await;
    eventually(
        "worker reconnected and converged",
        Duration::from_secs(60),
        || async {
            let got = client.get(&namespace, "late").await.ok()?;
            (got.instances.first()?.status == GatewayStatus::Running as i32).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_command_is_lost_across_a_nats_restart() {
    let namespace = unique_namespace("natsrestart");
    let mut krane = Krane::start_without_worker(&namespace).await;
    // The in-memory runtime keeps Docker out of this count: it is about the queue.
    let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
    krane.start_worker_on(runtime, &[]);
    let api = krane.api_addr;
    let ns = namespace.clone();
    let load = tokio::spawn(async move {
        let client = krane_tests::TestClient::new(Protocol::ConnectProto, api);
        let (mut accepted, mut refused) = (Vec::new(), 0);
        let started = Instant::now();
        let mut index = 0;
        while started.elapsed() < Duration::from_secs(4) {
            let id = format!("load{index}");
            index += 1;
            match client.create(Some(gateway_request(&ns, &id, 1))).await {
                Ok(_) => accepted.push(id),
                Err(error) => {
                    assert_eq!(error.code, UNAVAILABLE, "{error:?}");
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        (accepted, refused)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    krane.nats.restart().await;
    let (accepted, refused) = load.await.expect("load task");
    eprintln!(
        "accepted {} creates, refused {refused} while NATS restarted",
        accepted.len()
    );
    assert!(!accepted.is_empty());

    let client = krane.client(Protocol::ConnectJson);
    let mut applied = 0;
    for id in &accepted {
        eventually(
            &format!("{id} applied"),
            Duration::from_secs(60),
            || async {
                let got = client.get(&namespace, id).await.ok()?;
                (got.instances.first()?.status == GatewayStatus::Running as i32).then_some(())
            },
        )
        .await;
        applied += 1;
    }
    eprintln!("accepted {} = applied {applied}", accepted.len());
    assert_eq!(applied, accepted.len());
}
