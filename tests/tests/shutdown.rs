//! SIGTERM on the real binaries: stop taking work, finish or hand back what is in flight within
//! the grace period, exit 0 — and nothing handed back is lost.

use krane_proto::krane::v1::GatewayStatus;
use krane_tests::client::gateway_request;
use krane_tests::process::ServiceProcess;
use krane_tests::{Krane, Protocol, eventually, unique_namespace};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_exits_zero_on_sigterm_mid_work_and_nothing_is_lost() {
    let namespace = unique_namespace("sigterm");
    let krane = Krane::start_without_worker(&namespace).await;
    let client = krane.client(Protocol::ConnectJson);
    let mut worker = krane.worker_process(&["--shutdown-grace", "3s", "--ack-wait", "3s"]);
    for gateway in ["t0", "t1", "t2"] {
        client
            .create(Some(gateway_request(&namespace, gateway, 3)))
            .await
            .expect("create");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = worker.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit {status:?}\n{}", worker.log_tail(30));
    assert!(worker.log_tail(50).contains("krane-worker stopped"));

    // What was handed back (or never taken) is done by the next worker.
    worker.start();
    for gateway in ["t0", "t1", "t2"] {
        eventually(
            &format!("{gateway} RUNNING"),
            Duration::from_secs(60),
            || async {
                let got = client.get(&namespace, gateway).await.ok()?;
                let done = got.instances.len() == 3
                    && got
                        .instances
                        .iter()
                        .all(|i| i.status == GatewayStatus::Running as i32);
                done.then_some(())
            },
        )
        .await;
    }
    // And an idle worker (intake open, nothing to do) exits 0 as well.
    eventually(
        "worker consuming again",
        Duration::from_secs(30),
        || async {
            (worker.log_tail(200).matches("consuming commands").count() >= 2).then_some(())
        },
    )
    .await;
    let status = worker.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "idle exit {status:?}\n{}",
        worker.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_exits_zero_on_sigterm() {
    let namespace = unique_namespace("apiterm");
    let krane = Krane::start_without_worker(&namespace).await;
    let log = std::env::temp_dir().join(format!("{namespace}-api.log"));
    let args = ["--nats-url", &krane.nats.url(), "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    let mut api = ServiceProcess::spawn("krane-api", args, log);
    eventually("the API listens", Duration::from_secs(10), || async {
        api.log_tail(20)
            .contains("krane-api listening")
            .then_some(())
    })
    .await;
    let status = api.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}\n{}", api.log_tail(20));
}
