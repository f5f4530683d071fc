//! Work reaches only the hosts a command concerns: three in-process workers, each on an
//! in-memory runtime of its own, on a real nats-server. A gateway of one replica, then its
//! Delete, are delivered to the one host that runs it and to no other host's consumer; so is a
//! Delete stored without naming its hosts (by an earlier krane, or a tool), found from the
//! gateway's record.

use krane_core::command::Command;
use krane_core::names::{self, GatewayKey};
use krane_tests::client::gateway_request;
use krane_tests::{Krane, Protocol, eventually, unique_namespace, wait_all_running, worker_config};
use krane_worker::runtime::fake::FakeRuntime;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CONVERGE: Duration = Duration::from_secs(30);

/// How many work messages host `host_id`'s consumer delivered so far.
async fn work_delivered(krane: &Krane, host_id: &str) -> u64 {
    let stream = krane
        .store
        .jetstream()
        .get_stream(names::WORK_STREAM)
        .await
        .expect("the work stream");
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&krane_worker::consumer_name(host_id))
        .await
        .expect("the host's work consumer");
    consumer
        .info()
        .await
        .expect("consumer info")
        .delivered
        .consumer_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_only_the_hosts_it_concerns() {
    let namespace = unique_namespace("addressed");
    let krane = Krane::start_without_worker(&namespace).await;
    let hosts: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|suffix| format!("{namespace}-{suffix}"))
        .collect();
    let stop = CancellationToken::new();
    let _stop_workers = stop.clone().drop_guard();
    let mut runtimes = Vec::new();
    for host in &hosts {
        let runtime = Arc::new(FakeRuntime::with_images(&[krane_tests::TEST_IMAGE]));
        let config = worker_config(&krane.nats.url(), host, &[]);
        let store = krane.store.clone();
        let engine = runtime.clone();
        let stop = stop.clone();
        tokio::spawn(async move { krane_worker::run(&config, store, engine, stop).await });
        runtimes.push(runtime);
    }
    eventually("three hosts heartbeating", CONVERGE, || async {
        let live = krane.store.live_hosts().await.ok()?;
        (hosts
            .iter()
            .all(|host| live.iter().any(|seen| &seen.host_id == host)))
        .then_some(())
    })
    .await;
    // Their consumers exist once each worker opened its intake.
    eventually("three work consumers", CONVERGE, || async {
        let stream = krane
            .store
            .jetstream()
            .get_stream(names::WORK_STREAM)
            .await
            .ok()?;
        for host in &hosts {
            stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    &krane_worker::consumer_name(host),
                )
                .await
                .ok()?;
        }
        Some(())
    })
    .await;

    let client = krane.client(Protocol::ConnectJson);
    client
        .create(Some(gateway_request(&namespace, "one", 1)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "one", 1, CONVERGE).await;
    let running_on: Vec<usize> = (0..hosts.len())
        .filter(|index| !runtimes[*index].container_names().is_empty())
        .collect();
    let [runner] = running_on.as_slice() else {
        panic!("one host runs the replica: {running_on:?}");
    };
    let others: Vec<&String> = hosts
        .iter()
        .enumerate()
        .filter(|(index, _)| index != runner)
        .map(|(_, host)| host)
        .collect();

    client.delete(&namespace, "one").await.expect("delete");
    eventually("the replica removed", CONVERGE, || async {
        runtimes[*runner].container_names().is_empty().then_some(())
    })
    .await;
    for host in &others {
        assert_eq!(
            work_delivered(&krane, host).await,
            0,
            "{host} runs nothing of the gateway and received work about it"
        );
    }

    // A command whose writer did not name the hosts (an earlier krane, a tool): it reaches
    // the hosts the gateway's record names.
    client
        .create(Some(gateway_request(&namespace, "two", 1)))
        .await
        .expect("create");
    wait_all_running(&client, &namespace, "two", 1, CONVERGE).await;
    let holder = (0..hosts.len())
        .find(|index| !runtimes[*index].container_names().is_empty())
        .expect("a host runs the second gateway");
    let mut before = Vec::new();
    for host in &hosts {
        before.push(work_delivered(&krane, host).await);
    }
    let key = GatewayKey::new(&namespace, "two");
    krane
        .store
        .publish_command(&Command::delete(&key), 1)
        .await
        .expect("a Delete stored without naming hosts");
    eventually(
        "the replica removed by a tool's Delete",
        CONVERGE,
        || async { runtimes[holder].container_names().is_empty().then_some(()) },
    )
    .await;
    // (The holder heard it as work, or took the Delete from the dispatch itself.)
    for (index, host) in hosts.iter().enumerate() {
        if index != holder {
            let delivered = work_delivered(&krane, host).await;
            assert_eq!(delivered, before[index], "{host} ran nothing of it");
        }
    }
}
