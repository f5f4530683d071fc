//! Opening the log over streams made by an earlier krane: the commands stream gains direct
//! reads (which the workers' latest-command read uses) and keeps every stored command.
//! Real nats-server.

use async_nats::jetstream::{self, stream};
use krane_core::command::Command;
use krane_core::names;
use krane_store::Store;

use krane_tests::NatsServer;
use krane_tests::client::gateway_request;
use std::time::Duration;

#[tokio::test]
async fn a_commands_stream_without_direct_reads_is_upgraded_and_keeps_its_commands() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let jetstream = jetstream::new(client);
    // The stream as an earlier krane created it: no direct reads.
    jetstream
        .create_stream(stream::Config {
            name: names::COMMANDS_STREAM.into(),
            subjects: vec![format!("{}.>", names::COMMANDS_SUBJECT_PREFIX)],
            storage: stream::StorageType::File,
            max_messages_per_subject: 64,
            duplicate_window: Duration::from_secs(120),
            allow_direct: false,
            ..Default::default()
        })
        .await
        .expect("old-style commands stream");
    let spec = krane_api::convert::spec_from_request(Some(&gateway_request("up", "old", 2)))
        .expect("spec");
    let command = Command::create(spec, Vec::new());
    let seq = jetstream
        .publish(
            command.key().command_subject(),
            krane_core::codec::encode(&command).expect("encodes").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;

    let log = Store::open(jetstream.clone(), 1)
        .await
        .expect("open the log");

    let mut stream = jetstream
        .get_stream(names::COMMANDS_STREAM)
        .await
        .expect("stream");
    let info = stream.info().await.expect("stream info");
    assert!(info.config.allow_direct, "direct reads turned on");
    assert_eq!(
        info.config.max_messages_per_subject, 64,
        "other settings kept"
    );
    assert_eq!(info.state.messages, 1, "the stored command is kept");
    let latest = log
        .latest_command(&command.key())
        .await
        .expect("latest command");
    let latest = latest.map(|latest| (latest.seq, latest.command));
    assert_eq!(latest, Some((seq, command)));
}

/// An earlier krane delivered every command to every host through a per-host consumer of the
/// commands stream. A worker of this version takes its work from the work stream instead, and
/// removes its host's old consumer once its own is open (other hosts' are theirs to remove).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_consumer_of_the_commands_stream_is_replaced_by_its_work_consumer() {
    let namespace = krane_tests::unique_namespace("upgrade");
    let mut krane = krane_tests::Krane::start_without_worker(&namespace).await;
    let commands = krane
        .store
        .jetstream()
        .get_stream(names::COMMANDS_STREAM)
        .await
        .expect("commands stream");
    let old = |host: &str| async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(krane_worker::consumer_name(host)),
        filter_subject: format!("{}.>", names::COMMANDS_SUBJECT_PREFIX),
        ..Default::default()
    };
    let own = krane.host_id();
    let other = format!("{own}-other");
    for host in [own.as_str(), other.as_str()] {
        commands
            .create_consumer(old(host))
            .await
            .expect("an old per-host consumer");
    }
    krane.start_worker_on(
        std::sync::Arc::new(krane_worker::runtime::fake::FakeRuntime::with_images(&[
            krane_tests::TEST_IMAGE,
        ])),
        &[],
    );
    let names_left = || async {
        let mut names = Vec::new();
        let mut listed = commands.consumer_names();
        while let Some(name) = futures::StreamExt::next(&mut listed).await {
            names.push(name.ok()?);
        }
        Some(names)
    };
    krane_tests::eventually(
        "the host's old consumer removed",
        Duration::from_secs(20),
        || async {
            let names = names_left().await?;
            (!names.contains(&krane_worker::consumer_name(&own))).then_some(names)
        },
    )
    .await;
    let names = names_left().await.expect("consumer names");
    assert!(
        names.contains(&krane_worker::consumer_name(&other)),
        "{names:?}"
    );
    assert!(
        names.contains(&krane_store::layout::DISPATCH_CONSUMER.to_string()),
        "{names:?}"
    );
}
