//! The `krane` binary against a running API (real nats-server, in-memory container runtime):
//! live progress until done, JSON output for scripts, and exit codes 0 / 1 (failed) / 2 (timeout).

use krane_tests::{Krane, unique_namespace};
use krane_worker::runtime::RuntimeError;
use krane_worker::runtime::fake::FakeRuntime;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

const IMAGE: &str = "krane-test-gateway:dev";

async fn krane(api: &Krane, args: &[&str]) -> Output {
    let url = format!("http://{}", api.api_addr);
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_krane"))
            .arg("--api")
            .arg(url)
            .args(args)
            .output()
            .expect("run krane")
    })
    .await
    .expect("join")
}

/// `krane gateway create edge --image IMAGE --replicas <replicas>` with `ns`'s flags.
async fn create_edge(api: &Krane, ns: &[&str], replicas: &str) -> Output {
    let create = [
        "gateway",
        "create",
        "edge",
        "--image",
        IMAGE,
        "--replicas",
        replicas,
    ];
    krane(api, &[&create[..], ns].concat()).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn started(namespace: &str) -> (Krane, Arc<FakeRuntime>) {
    let mut krane = Krane::start_without_worker(namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[IMAGE]));
    runtime.fail_image("broken:1", RuntimeError::Rejected("invalid config".into()));
    krane.start_worker_on(runtime.clone(), &[]);
    (krane, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_scale_get_and_delete_follow_progress_until_done() {
    let namespace = unique_namespace("cli");
    let (api, runtime) = started(&namespace).await;
    let ns = ["--namespace", namespace.as_str()];

    let created = create_edge(&api, &ns, "2").await;
    assert!(created.status.success(), "{created:?}");
    let text = stdout(&created);
    assert!(text.contains("RUNNING"), "{text}");
    assert!(
        text.contains(&format!("gateway {namespace}/edge: running")),
        "{text}"
    );
    assert_eq!(runtime.container_names().len(), 2);

    let got = krane(
        &api,
        &[&["--output", "json", "gateway", "get", "edge"][..], &ns].concat(),
    )
    .await;
    assert!(got.status.success());
    let json: serde_json::Value = serde_json::from_slice(&got.stdout).expect("JSON output");
    assert_eq!(json["instances"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["gateway"]["replicas"], 2);

    let scaled = krane(
        &api,
        &[&["gateway", "scale", "edge", "--replicas", "1"][..], &ns].concat(),
    )
    .await;
    assert!(scaled.status.success(), "{scaled:?}");
    assert_eq!(runtime.container_names().len(), 1);

    let deleted = krane(
        &api,
        &[&["--output", "json", "gateway", "delete", "edge"][..], &ns].concat(),
    )
    .await;
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(stdout(&deleted).contains(r#""outcome":"gone""#));
    assert!(runtime.container_names().is_empty());

    let missing = krane(&api, &[&["gateway", "get", "edge"][..], &ns].concat()).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_1_and_timeouts_exit_2() {
    let namespace = unique_namespace("clifail");
    let (api, _runtime) = started(&namespace).await;
    let ns = ["--namespace", namespace.as_str()];
    let failed = krane(
        &api,
        &[
            &["gateway", "create", "bad", "--image", "broken:1"][..],
            &ns,
        ]
        .concat(),
    )
    .await;
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(stdout(&failed).contains("invalid config"));

    let refused = krane(
        &api,
        &[&["gateway", "create", "bad id", "--image", IMAGE][..], &ns].concat(),
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("gateway.gateway_id"));

    let impatient = krane(
        &api,
        &[
            &[
                "gateway",
                "create",
                "slow",
                "--image",
                IMAGE,
                "--replicas",
                "3",
                "--timeout",
                "0s",
            ][..],
            &ns,
        ]
        .concat(),
    )
    .await;
    assert_eq!(impatient.status.code(), Some(2), "{impatient:?}");

    let detached = krane(
        &api,
        &[
            &[
                "--output", "json", "gateway", "create", "quick", "--image", IMAGE, "--detach",
            ][..],
            &ns,
        ]
        .concat(),
    )
    .await;
    assert!(detached.status.success());
    assert!(stdout(&detached).contains("GATEWAY_STATUS_PENDING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch() {
    let namespace = unique_namespace("clilist");
    let (api, _runtime) = started(&namespace).await;
    let ns = ["--namespace", namespace.as_str()];
    for id in ["alpha", "beta"] {
        let created = krane(
            &api,
            &[&["gateway", "create", id, "--image", IMAGE][..], &ns].concat(),
        )
        .await;
        assert!(created.status.success(), "{created:?}");
    }
    let listed = krane(
        &api,
        &[&["--output", "json", "gateway", "list"][..], &ns].concat(),
    )
    .await;
    assert!(listed.status.success(), "{listed:?}");
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON output");
    let ids: Vec<&str> = json["gateways"]
        .as_array()
        .expect("gateways")
        .iter()
        .filter_map(|g| g["gatewayId"].as_str())
        .collect();
    assert_eq!(ids, vec!["alpha", "beta"]);
    let table = krane(&api, &[&["gateway", "list"][..], &ns].concat()).await;
    assert!(stdout(&table).contains("alpha"));

    // Watch follows the gateway until it is deleted, then exits 0.
    let url = format!("http://{}", api.api_addr);
    let watcher = std::process::Command::new(env!("CARGO_BIN_EXE_krane"))
        .args([
            "--api",
            &url,
            "gateway",
            "watch",
            "alpha",
            "--namespace",
            &namespace,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start krane watch");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let deleted = krane(&api, &[&["gateway", "delete", "alpha"][..], &ns].concat()).await;
    assert!(deleted.status.success());
    let watched = tokio::task::spawn_blocking(move || watcher.wait_with_output())
        .await
        .expect("join")
        .expect("watch output");
    assert!(watched.status.success(), "{watched:?}");
    let text = stdout(&watched);
    assert!(
        text.contains("RUNNING") && text.contains("TERMINATING"),
        "{text}"
    );
    assert!(
        text.contains(&format!("gateway {namespace}/alpha: gone")),
        "{text}"
    );
}

/// `krane` against `url` with `args`.
async fn krane_at(url: String, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_krane"))
            .arg("--api")
            .arg(url)
            .args(args)
            .output()
            .expect("run krane")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_api_is_reached_with_its_ca_and_a_token_or_a_client_certificate() {
    use krane_tests::tls::TestPki;
    let namespace = unique_namespace("clitls");
    let (api, _runtime) = started(&namespace).await;
    let pki = TestPki::new();
    let (address, stop) = api
        .serve_api(krane_api::ApiOptions {
            auth_token: Some("cli-tls-token".into()),
            tls: Some(pki.server_settings(true)),
            ..Default::default()
        })
        .await;
    let url = format!("https://localhost:{}", address.port());
    let ca = pki.path("ca.pem").display().to_string();
    let (cert, key) = pki.write_client("cli", &pki.client("spiffe://krane.test/cli"));
    let list = |extra: &[&str]| {
        let mut args: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        args.extend(["gateway", "list", "--namespace", &namespace].map(String::from));
        krane_at(url.clone(), args)
    };

    let with_token = list(&["--tls-ca", &ca, "--token", "cli-tls-token"]).await;
    assert!(with_token.status.success(), "{with_token:?}");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let with_certificate = list(&[
        "--tls-ca",
        &ca,
        "--tls-client-cert",
        &cert,
        "--tls-client-key",
        &key,
    ])
    .await;
    assert!(with_certificate.status.success(), "{with_certificate:?}");

    let without_credentials = list(&["--tls-ca", &ca]).await;
    assert!(!without_credentials.status.success());
    let said = String::from_utf8_lossy(&without_credentials.stderr);
    assert!(said.contains("Unauthenticated"), "{said}");
    let unknown_ca = list(&["--token", "cli-tls-token"]).await;
    assert!(
        !unknown_ca.status.success(),
        "a server certificate of an unknown CA must not be trusted: {unknown_ca:?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_commands_and_observations_oldest_first() {
    let namespace = unique_namespace("cli-history");
    let (api, _runtime) = started(&namespace).await;
    let ns = ["--namespace", namespace.as_str()];
    let steps: [&[&str]; 3] = [
        &["gateway", "create", "edge", "--image", IMAGE],
        &["gateway", "scale", "edge", "--replicas", "2"],
        &["gateway", "delete", "edge"],
    ];
    for step in steps {
        let done = krane(&api, &[step, &ns].concat()).await;
        assert!(done.status.success(), "{step:?}: {done:?}");
    }

    let shown = krane(&api, &[&["gateway", "history", "edge"][..], &ns].concat()).await;
    assert!(shown.status.success(), "{shown:?}");
    let text = stdout(&shown);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{text}");
    let position = |needle: &str| {
        lines
            .iter()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
    };
    assert!(
        position(" create ") < position("replica 0 RUNNING"),
        "{text}"
    );
    assert!(
        position("replica 0 RUNNING") < position(" update "),
        "{text}"
    );
    assert!(
        position(" update ") < position("replica 1 RUNNING"),
        "{text}"
    );
    assert!(
        position("replica 1 RUNNING") < position(" delete "),
        "{text}"
    );
    assert!(position(" delete ") < position("replica 0 GONE"), "{text}");
    assert!(
        text.contains(&format!("image={IMAGE} replicas=2")),
        "{text}"
    );

    let json = krane(
        &api,
        &[
            &[
                "--output", "json", "gateway", "history", "edge", "--limit", "3",
            ][..],
            &ns,
        ]
        .concat(),
    )
    .await;
    assert!(json.status.success(), "{json:?}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    let events = json["events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{json}");
    let last = &events[2];
    assert_eq!(last["stream"], "KRANE_EVENTS", "{json}");
    assert_eq!(last["observation"]["state"], "gone", "{json}");
    assert!(
        last["sequence"].as_u64().is_some() || last["sequence"].is_string(),
        "{json}"
    );

    let unknown = krane(&api, &[&["gateway", "history", "nobody"][..], &ns].concat()).await;
    assert!(unknown.status.success(), "{unknown:?}");
    assert!(stdout(&unknown).contains("no history"), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_follow_prints_new_entries_as_they_are_stored() {
    use tokio::io::AsyncBufReadExt;
    let namespace = unique_namespace("cli-follow");
    let (api, _runtime) = started(&namespace).await;
    let ns = ["--namespace", namespace.as_str()];
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_krane"))
        .args(["--api", &format!("http://{}", api.api_addr)])
        .args(["--output", "json", "gateway", "history", "edge", "--follow"])
        .args(ns)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run krane --follow");
    let stdout = follow.stdout.take().expect("its output");
    let mut lines = tokio::io::BufReader::new(stdout).lines();

    // Nothing yet: the follow waits. Then each entry arrives as one JSON line.
    let created = krane(
        &api,
        &[&["gateway", "create", "edge", "--image", IMAGE][..], &ns].concat(),
    )
    .await;
    assert!(created.status.success(), "{created:?}");
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|entry: &serde_json::Value| entry["observation"]["state"] == "running")
    {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no new entry in 20 s after {seen:?}"))
            .expect("read its output")
            .unwrap_or_else(|| panic!("the follow ended after {seen:?}"));
        seen.push(serde_json::from_str(&line).expect("one JSON event a line"));
    }
    assert_eq!(seen[0]["command"]["kind"], "create", "{seen:?}");
    assert_eq!(seen[0]["command"]["author"], "unauthenticated", "{seen:?}");
    assert!(
        follow.try_wait().expect("its state").is_none(),
        "the follow keeps running"
    );
    follow.kill().await.expect("stop the follow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_list_shows_each_hosts_free_cpu_and_memory() {
    let namespace = unique_namespace("cli-hosts");
    let mut api = Krane::start_without_worker(&namespace).await;
    let runtime = Arc::new(FakeRuntime::with_images(&[IMAGE]));
    let flags = [
        "--cpu-millicores",
        "2000",
        "--memory-mib",
        "1024",
        "--host-timeout",
        "3s",
    ];
    api.start_worker_on(runtime, &flags);
    let ns = ["--namespace", namespace.as_str()];
    let created = create_edge(&api, &ns, "2").await;
    assert!(created.status.success(), "{created:?}");

    // Two replicas of 100m and 64 MiB (the CLI's defaults) reserved, once a heartbeat says so.
    let host = api.host_id();
    let row = krane_tests::eventually("the reservation announced", Duration::from_secs(20), || {
        let api = &api;
        let host = host.clone();
        async move {
            let shown = krane(api, &["host", "list"]).await;
            assert!(shown.status.success(), "{shown:?}");
            let text = stdout(&shown);
            assert!(text.starts_with("HOST"), "{text}");
            let row = text
                .lines()
                .find(|line| line.starts_with(&host))?
                .to_string();
            row.contains("1800m/2000m").then_some(row)
        }
    })
    .await;
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns[1..5],
        ["yes", "1800m/2000m", "896Mi/1024Mi", "2"],
        "{row}"
    );

    let json = krane(&api, &["--output", "json", "host", "list"]).await;
    assert!(json.status.success(), "{json:?}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    let hosts = json["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1, "{json}");
    assert_eq!(hosts[0]["hostId"], host.as_str(), "{json}");
    assert_eq!(hosts[0]["live"], true, "{json}");
    let number = |value: &serde_json::Value| {
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
    };
    assert_eq!(number(&hosts[0]["free"]["memoryMib"]), Some(896), "{json}");
    assert_eq!(
        number(&hosts[0]["capacity"]["cpuMillicores"]),
        Some(2000),
        "{json}"
    );
}

/// Runs `krane` against `api` and answers its exit code and standard output.
async fn krane_code(api: &Krane, args: &[&str]) -> (Option<i32>, String) {
    let done = krane(api, args).await;
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    let out = stdout(&done);
    eprintln!("krane {args:?}: {:?}\n{out}{stderr}", done.status.code());
    (done.status.code(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_log_replays_into_fresh_stacks_with_the_same_outcome() {
    let namespace = unique_namespace("cli-replay");
    let ns = ["--namespace", namespace.as_str()];
    let (recorded, _runtime) = started(&namespace).await;
    let steps: [(&[&str], i32); 6] = [
        (
            &[
                "gateway",
                "create",
                "edge",
                "--image",
                IMAGE,
                "--replicas",
                "2",
            ],
            0,
        ),
        (&["gateway", "create", "side", "--image", IMAGE], 0),
        (&["gateway", "scale", "edge", "--replicas", "3"], 0),
        (&["gateway", "create", "doomed", "--image", IMAGE], 0),
        (&["gateway", "delete", "doomed"], 0),
        (&["gateway", "create", "broken", "--image", "broken:1"], 1),
    ];
    for (step, code) in steps {
        let (exit, _) = krane_code(&recorded, &[step, &ns].concat()).await;
        assert_eq!(exit, Some(code), "{step:?}");
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("recorded.jsonl");
    let path = file.to_str().expect("a UTF-8 path");
    let (exit, _) = krane_code(
        &recorded,
        &[&["log", "export", "-o", path][..], &ns].concat(),
    )
    .await;
    assert_eq!(exit, Some(0));
    let text = std::fs::read_to_string(&file).expect("the export");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON entry a line"))
        .collect();
    assert!(lines.iter().all(|line| line["version"] == 1), "{text}");
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["event"]["command"]["kind"].as_str())
        .filter(|kind| *kind != "placement")
        .collect();
    assert_eq!(
        kinds,
        ["create", "create", "update", "create", "delete", "create"],
        "{text}"
    );

    // Two fresh stacks, the same outcome as recorded.
    for _ in 0..2 {
        let (fresh, _runtime) = started(&namespace).await;
        let (exit, out) = krane_code(
            &fresh,
            &[
                "log",
                "replay",
                path,
                "--speed",
                "max",
                "--settle-timeout",
                "30s",
            ],
        )
        .await;
        assert_eq!(exit, Some(0), "{out}");
        assert!(
            out.contains("matches the recorded outcome: 4 gateways"),
            "{out}"
        );
        let (_, listed) = krane_code(&fresh, &[&["gateway", "list"][..], &ns].concat()).await;
        assert!(!listed.contains("doomed"), "{listed}");
    }

    // A recording whose outcome the stack does not reach: each difference printed, exit 1.
    let mut tampered = text.clone();
    tampered.push_str(&format!(
        "{{\"version\":1,\"namespace\":\"{namespace}\",\"gatewayId\":\"edge\",\"event\":{{\"time\":\"2099-01-01T00:00:00Z\",\"stream\":\"KRANE_EVENTS\",\"observation\":{{\"replica\":0,\"state\":\"failed\"}}}}}}\n"
    ));
    let other = dir.path().join("tampered.jsonl");
    std::fs::write(&other, tampered).expect("write");
    let (fresh, _runtime) = started(&namespace).await;
    let other = other.to_str().expect("a UTF-8 path");
    let (exit, out) = krane_code(
        &fresh,
        &[
            "log",
            "replay",
            other,
            "--speed",
            "max",
            "--settle-timeout",
            "5s",
        ],
    )
    .await;
    assert_eq!(exit, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "{namespace}/edge: states: expected 1 failed, 2 running"
        )),
        "{out}"
    );
}
