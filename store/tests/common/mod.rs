//! What the store's tests share: a real nats-server with the store opened on it, a Create, and
//! an observation of its replica 0.

use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::names::GatewayKey;
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

/// What `host` observed of replica 0 of the gateway.
#[allow(dead_code)] // not every test file reports observations
pub fn observed(key: &GatewayKey, host: &str, state: ObservedState) -> InstanceObserved {
    InstanceObserved {
        namespace: key.namespace.clone(),
        gateway_id: key.gateway_id.clone(),
        replica: 0,
        template: "t".into(),
        state,
        address: String::new(),
        reason: String::new(),
        host_id: host.into(),
    }
}
