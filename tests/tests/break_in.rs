//! Tests that try to get in, on an API started with scoped credentials (`--auth-tokens-file`)
//! over Connect JSON, Connect binary and gRPC: no token, a wrong token, a token of another
//! namespace, a read-only token writing, a body naming a namespace the token does not cover, a
//! disallowed image, a token of some namespaces listing the hosts (which needs every
//! namespace). Each is refused with its code (`unauthenticated`, `permission_denied`,
//! `invalid_argument`) and stores nothing. The credentials file is reloaded on SIGHUP by the
//! `krane-api` binary without dropping open streams, and no token ever reaches its log.

use krane_api::ApiOptions;
use krane_core::images::ImagePolicy;
use krane_core::names::GatewayKey;
use krane_core::placement::{HostInfo, Resources};
use krane_proto::krane::v1::gateway_event::What;
use krane_tests::client::{
    INVALID_ARGUMENT, PERMISSION_DENIED, RpcError, TestClient, UNAUTHENTICATED, gateway_request,
};
use krane_tests::nats::free_port;
use krane_tests::process::ServiceProcess;
use krane_tests::{Krane, Protocol, eventually, unique_namespace};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WRITER: &str = "writer-token-51c0e7";
const READER: &str = "reader-token-9d1f44";

/// A credentials file: `writer` may change `<namespace>-a*`, `reader` may read everything.
fn credentials(namespace: &str) -> String {
    format!(
        r#"
[[tokens]]
name = "writer"
token = "{WRITER}"
namespaces = ["{namespace}-a*"]
access = "read-write"

[[tokens]]
name = "reader"
token_sha256 = "{reader}"
namespaces = ["*"]
access = "read-only"
"#,
        reader = sha256_hex(READER)
    )
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn write_file(namespace: &str, name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("krane-{namespace}"));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the credentials file");
    path
}

fn code(result: Result<impl std::fmt::Debug, RpcError>) -> i32 {
    match result {
        Ok(answer) => panic!("expected a refusal, got {answer:?}"),
        Err(error) => error.code,
    }
}

async fn watch_code(client: &TestClient, namespace: &str, gateway_id: &str) -> Result<(), i32> {
    first_code(client.watch(namespace, gateway_id), "watch").await
}

async fn export_code(client: &TestClient, namespace: &str) -> Result<(), i32> {
    first_code(client.export_log(namespace), "export").await
}

async fn follow_code(client: &TestClient, namespace: &str, gateway_id: &str) -> Result<(), i32> {
    first_code(client.follow_history(namespace, gateway_id), "follow").await
}

/// How a server stream starts: a first message, or the code of the error that ends it.
async fn first_code<T>(
    mut messages: tokio::sync::mpsc::UnboundedReceiver<Result<T, RpcError>>,
    what: &str,
) -> Result<(), i32> {
    match tokio::time::timeout(Duration::from_secs(10), messages.recv()).await {
        Ok(Some(Ok(_))) => Ok(()),
        Ok(Some(Err(error))) => Err(error.code),
        Ok(None) => panic!("the {what} ended without a word"),
        Err(_) => panic!("the {what} said nothing in 10 s"),
    }
}

async fn nothing_stored(krane: &Krane, namespace: &str, gateway_id: &str) {
    let key = GatewayKey::new(namespace, gateway_id);
    let latest = krane
        .store
        .latest_command(&key)
        .await
        .expect("read the log");
    assert!(latest.is_none(), "{key} has a command: {latest:?}");
    let record = krane
        .store
        .load_record(&key)
        .await
        .expect("read the record");
    assert!(record.record.is_none(), "{key} has a record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_reach_only_their_namespaces_and_refusals_store_nothing() {
    let namespace = unique_namespace("scoped");
    let krane = Krane::start_without_worker(&namespace).await;
    let file = write_file(&namespace, "tokens.toml", &credentials(&namespace));
    let (address, stop) = krane
        .serve_api(ApiOptions {
            auth_tokens_file: Some(file),
            allowed_images: ImagePolicy::new(&["docker.io/library/krane-test-*".to_string()])
                .expect("a valid pattern"),
            ..Default::default()
        })
        .await;
    let (mine, other) = (format!("{namespace}-a"), format!("{namespace}-b"));

    for (done, protocol) in Protocol::ALL.into_iter().enumerate() {
        let id = format!("gw-{protocol:?}").to_lowercase();
        let anonymous = TestClient::new(protocol, address);
        let wrong = TestClient::new(protocol, address).with_token("not-a-token");
        let writer = TestClient::new(protocol, address).with_token(WRITER);
        let reader = TestClient::new(protocol, address).with_token(READER);
        let request = |namespace: &str| Some(gateway_request(namespace, &id, 1));

        // Who you are: without a token, or with one nobody issued, nothing at all.
        for stranger in [&anonymous, &wrong] {
            assert_eq!(code(stranger.create(request(&mine)).await), UNAUTHENTICATED);
            assert_eq!(code(stranger.get(&mine, &id).await), UNAUTHENTICATED);
            assert_eq!(code(stranger.list(&mine).await), UNAUTHENTICATED);
            assert_eq!(watch_code(stranger, &mine, &id).await, Err(UNAUTHENTICATED));
            assert_eq!(code(stranger.history(&mine, &id).await), UNAUTHENTICATED);
            assert_eq!(export_code(stranger, &mine).await, Err(UNAUTHENTICATED));
            assert_eq!(
                follow_code(stranger, &mine, &id).await,
                Err(UNAUTHENTICATED)
            );
        }
        nothing_stored(&krane, &mine, &id).await;

        // What you may do: the writer only in its namespaces, whatever the body names.
        assert_eq!(
            code(writer.create(request(&other)).await),
            PERMISSION_DENIED
        );
        assert_eq!(
            code(writer.update(gateway_request(&other, &id, 2)).await),
            PERMISSION_DENIED
        );
        assert_eq!(code(writer.delete(&other, &id).await), PERMISSION_DENIED);
        assert_eq!(code(writer.get(&other, &id).await), PERMISSION_DENIED);
        assert_eq!(code(writer.list(&other).await), PERMISSION_DENIED);
        assert_eq!(
            watch_code(&writer, &other, &id).await,
            Err(PERMISSION_DENIED)
        );
        assert_eq!(code(writer.history(&other, &id).await), PERMISSION_DENIED);
        assert_eq!(export_code(&writer, &other).await, Err(PERMISSION_DENIED));
        // Every namespace at once needs a grant of every namespace ("*").
        assert_eq!(export_code(&writer, "").await, Err(PERMISSION_DENIED));
        assert_eq!(
            follow_code(&writer, &other, &id).await,
            Err(PERMISSION_DENIED)
        );
        nothing_stored(&krane, &other, &id).await;

        // An image outside the policy is refused even in the writer's own namespace.
        let mut outside = gateway_request(&mine, &id, 1);
        outside.image = "registry.example.com/else:1".into();
        let refused = writer
            .create(Some(outside))
            .await
            .expect_err("a disallowed image");
        assert_eq!(refused.code, INVALID_ARGUMENT, "{refused:?}");
        assert!(refused.message.starts_with("gateway.image"), "{refused:?}");
        nothing_stored(&krane, &mine, &id).await;

        writer
            .create(request(&mine))
            .await
            .expect("the writer creates in its namespace");
        writer.get(&mine, &id).await.expect("and reads it");

        // The reader reads everywhere and changes nothing.
        reader.get(&mine, &id).await.expect("the reader reads");
        assert_eq!(
            reader.list(&mine).await.expect("lists").gateways.len(),
            done + 1
        );
        assert_eq!(watch_code(&reader, &mine, &id).await, Ok(()));
        assert_eq!(follow_code(&reader, &mine, &id).await, Ok(()));
        assert_eq!(export_code(&reader, "").await, Ok(()));
        assert_eq!(export_code(&writer, &mine).await, Ok(()));
        // History names who asked: the writer's entry in the credentials file.
        let history = reader
            .history(&mine, &id)
            .await
            .expect("the reader reads history");
        let authors: Vec<&str> = history
            .events
            .iter()
            .filter_map(|event| match &event.what {
                Some(What::Command(command)) => Some(command.author.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(authors, ["writer"], "{history:?}");
        let denied = reader
            .update(gateway_request(&mine, &id, 3))
            .await
            .expect_err("read-only");
        assert_eq!(denied.code, PERMISSION_DENIED);
        assert!(denied.message.contains("read-only"), "{denied:?}");
        assert_eq!(code(reader.delete(&mine, &id).await), PERMISSION_DENIED);
        assert_eq!(
            code(reader.create(request(&format!("{mine}x"))).await),
            PERMISSION_DENIED
        );
        nothing_stored(&krane, &format!("{mine}x"), &id).await;
        let record = krane
            .store
            .load_record(&GatewayKey::new(&mine, &id))
            .await
            .expect("read the record")
            .record
            .expect("the writer's gateway");
        let spec = record.intent.spec().expect("a Create");
        assert_eq!(spec.replicas, 1, "the reader's Update changed nothing");
    }
    let records = krane.store.all_records().await.expect("records");
    assert_eq!(
        records.len(),
        3,
        "one gateway per protocol, nothing else: {records:?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_grants_of_every_namespace_list_the_hosts() {
    let namespace = unique_namespace("hostlist");
    let krane = Krane::start_without_worker(&namespace).await;
    let host = HostInfo {
        host_id: format!("{namespace}-h1"),
        advertise_host: "10.0.0.1".into(),
        containers: 3,
        max_containers: None,
        engine_healthy: true,
        capacity: Some(Resources {
            millicores: 1000,
            mib: 256,
        }),
        reserved: Resources {
            millicores: 300,
            mib: 192,
        },
    };
    krane.store.heartbeat(&host).await.expect("a heartbeat");
    let file = write_file(&namespace, "tokens.toml", &credentials(&namespace));
    let (address, stop) = krane
        .serve_api(ApiOptions {
            auth_tokens_file: Some(file),
            ..Default::default()
        })
        .await;
    for protocol in Protocol::ALL {
        let anonymous = TestClient::new(protocol, address);
        assert_eq!(code(anonymous.hosts().await), UNAUTHENTICATED);
        // The writer may change its own namespaces, yet the hosts serve every namespace.
        let writer = TestClient::new(protocol, address).with_token(WRITER);
        let denied = writer.hosts().await.expect_err("not every namespace");
        assert_eq!(denied.code, PERMISSION_DENIED, "{denied:?}");
        assert!(denied.message.contains("hosts"), "{denied:?}");
        // Reading every namespace is enough.
        let reader = TestClient::new(protocol, address).with_token(READER);
        let listed = reader.hosts().await.expect("the reader lists the hosts");
        assert_eq!(listed.hosts.len(), 1, "{listed:?}");
        let shown = &listed.hosts[0];
        assert_eq!(
            (shown.host_id.as_str(), shown.live),
            (host.host_id.as_str(), true)
        );
        let free = shown.free.expect("free capacity");
        assert_eq!((free.cpu_millicores, free.memory_mib), (700, 64));
    }
    stop.cancel();
}

/// The `krane-api` binary on the test's NATS with a credentials file, on a free loopback port.
fn api_process(krane: &Krane, file: &Path, port: u16) -> ServiceProcess {
    let args = [
        "--nats-url",
        &krane.nats.url(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--auth-tokens-file",
        &file.display().to_string(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let log = std::env::temp_dir().join(format!("{}-api.log", krane.namespace));
    let _ = std::fs::remove_file(&log);
    ServiceProcess::spawn_with_env(
        "krane-api",
        args,
        vec![("RUST_LOG".into(), "debug".into())],
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reload_on_sighup_without_dropping_streams_and_tokens_never_reach_the_log() {
    let namespace = unique_namespace("reload");
    let krane = Krane::start_without_worker(&namespace).await;
    let entry = |name: &str, token: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\nnamespaces = [\"{namespace}\"]\naccess = \"read-write\"\n"
        )
    };
    let (kept, revoked, added) = ("kept-8e21b7", "revoked-77aa02", "added-c4d9e3");
    let file = write_file(
        &namespace,
        "tokens.toml",
        &(entry("kept", kept) + &entry("revoked", revoked)),
    );
    let port = free_port();
    let mut api = api_process(&krane, &file, port);
    let address = format!("127.0.0.1:{port}").parse().expect("address");
    let client = |token: &str| TestClient::new(Protocol::Grpc, address).with_token(token);
    eventually("krane-api serves", Duration::from_secs(20), || async {
        let probe = TestClient::new(Protocol::ConnectJson, address).with_token(kept);
        probe.list(&namespace).await.ok()
    })
    .await;
    client(revoked)
        .create(Some(gateway_request(&namespace, "watched", 1)))
        .await
        .expect("the token to be revoked works before the reload");
    let mut updates = client(kept).watch(&namespace, "watched");
    let first = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("the watch answers")
        .expect("open")
        .expect("the current state");
    assert_eq!(first.instances.len(), 1);

    std::fs::write(&file, entry("kept", kept) + &entry("added", added)).expect("rewrite");
    api.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(
        "the revoked token is refused",
        Duration::from_secs(10),
        || async {
            let refused = client(revoked).list(&namespace).await.err()?;
            (refused.code == UNAUTHENTICATED).then_some(())
        },
    )
    .await;
    client(added)
        .update(gateway_request(&namespace, "watched", 2))
        .await
        .expect("the added token works after the reload");
    let changed = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("the watch opened before the reload still streams")
        .expect("still open")
        .expect("a state");
    assert_eq!(changed.instances.len(), 2, "{changed:?}");

    // A broken file is not loaded: the credentials in force stay.
    std::fs::write(&file, "[[tokens]]\nname = ").expect("rewrite");
    api.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(
        "the failed reload is logged",
        Duration::from_secs(10),
        || async { api.log_tail(200).contains("NOT reloaded").then_some(()) },
    )
    .await;
    client(added).list(&namespace).await.expect("still let in");
    assert_eq!(
        code(client(revoked).list(&namespace).await),
        UNAUTHENTICATED
    );

    api.terminate(Duration::from_secs(10));
    let log = api.log_tail(100_000);
    assert!(log.contains("credentials reloaded"), "{log}");
    assert!(
        log.contains("\"revoked\"") && log.contains("\"added\""),
        "callers are named in the log by their entry's name: {log}"
    );
    for token in [kept, revoked, added] {
        assert!(
            !log.contains(token),
            "the token {token} is in the API's log"
        );
    }
}
