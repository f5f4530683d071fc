//! What the store's tests share: a real nats-server with the store opened on it, and a Create.

use krane_core::command::Command;
use krane_core::spec::GatewaySpec;
use krane_store::{NatsArgs, Store};
use krane_tests::NatsServer;
use std::time::Duration;

pub async fn open() -> (NatsServer, Store) {
    let nats = NatsServer::start().await;
    let args = NatsArgs::url(nats.url());
    let store = krane_store::connect(&args, "store-test", Duration::from_secs(5))
        .await
        .expect("store");
    (nats, store)
}

/// A Create of one replica of gateway `ns/<gateway_id>`.
pub fn create(gateway_id: &str) -> Command {
    let spec = GatewaySpec {
        namespace: "ns".into(),
        gateway_id: gateway_id.into(),
        workspace_id: "ws".into(),
        image: "img:1".into(),
        replicas: 1,
        cpu_millicores: 100,
        memory_mib: 32,
    };
    Command::create(spec, Vec::new())
}
