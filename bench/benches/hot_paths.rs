//! Criterion benchmarks of krane's pure hot paths: request validation, the worker's plan, and
//! the record fold, encode and decode that every API call and worker step goes through.

use criterion::{Criterion, criterion_group, criterion_main};
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::record::GatewayRecord;
use krane_core::spec::GatewaySpec;
use krane_proto::krane::v1::GatewayRequest;
use krane_worker::plan::{Desired, plan};
use krane_worker::runtime::{ContainerState, ObservedContainer};
use std::hint::black_box;

const HOST: &str = "host0";

fn request(replicas: u32) -> GatewayRequest {
    GatewayRequest {
        namespace: "bench".into(),
        workspace_id: "ws_bench".into(),
        gateway_id: "edge".into(),
        image: "registry.example.com/unkey/gateway:v1.2.3".into(),
        replicas,
        cpu_millicores: 250,
        memory_size_mib: 64,
        update_policy: None,
    }
}

fn spec(replicas: u32) -> GatewaySpec {
    krane_api::convert::spec_from_request(Some(&request(replicas))).expect("valid")
}

fn command(replicas: u32) -> Command {
    Command::create(spec(replicas), vec![HOST.to_string(); replicas as usize])
}

fn running(spec: &GatewaySpec, replica: u32) -> ObservedContainer {
    ObservedContainer {
        name: spec.key().container_name(replica),
        gateway: spec.key(),
        replica: Some(replica),
        template: spec.template(),
        state: ContainerState::Running,
        host_port: Some(30000 + replica as u16),
        readiness: krane_worker::runtime::Readiness::Ready,
    }
}

fn event(spec: &GatewaySpec, replica: u32) -> InstanceObserved {
    InstanceObserved {
        namespace: spec.namespace.clone(),
        gateway_id: spec.gateway_id.clone(),
        replica,
        template: spec.template(),
        state: ObservedState::Running,
        address: format!("127.0.0.1:{}", 30000 + replica),
        reason: String::new(),
        host_id: HOST.into(),
    }
}

/// A record of `replicas` RUNNING instances, folded as the API and worker fold it.
fn record(replicas: u32) -> GatewayRecord {
    let spec = spec(replicas);
    let mut record = GatewayRecord::apply_command(None, 1, &command(replicas));
    for replica in 0..replicas {
        record = GatewayRecord::apply_event(record, u64::from(replica) + 1, &event(&spec, replica));
    }
    record.expect("a record")
}

fn validation(c: &mut Criterion) {
    let valid = request(3);
    c.bench_function("validate/valid", |b| {
        b.iter(|| krane_api::convert::spec_from_request(Some(black_box(&valid))))
    });
    let invalid = GatewayRequest {
        image: "Not A Valid::Image".into(),
        ..request(3)
    };
    c.bench_function("validate/invalid_image", |b| {
        b.iter(|| krane_api::convert::spec_from_request(Some(black_box(&invalid))))
    });
}

fn planning(c: &mut Criterion) {
    for replicas in [3, 64] {
        let spec = spec(replicas);
        let command = command(replicas);
        let key = spec.key();
        c.bench_function(&format!("plan/desired_for_host/{replicas}"), |b| {
            b.iter(|| Desired::for_host(Some(black_box(&command)), HOST))
        });
        let desired = Desired::for_host(Some(&command), HOST);
        c.bench_function(&format!("plan/create_all/{replicas}"), |b| {
            b.iter(|| plan(&key, black_box(&desired), &[]))
        });
        let observed: Vec<_> = (0..replicas).map(|r| running(&spec, r)).collect();
        c.bench_function(&format!("plan/converged/{replicas}"), |b| {
            b.iter(|| plan(&key, black_box(&desired), black_box(&observed)))
        });
    }
}

fn records(c: &mut Criterion) {
    let spec3 = spec(3);
    let command3 = command(3);
    c.bench_function("record/fold_command_and_3_events", |b| {
        b.iter(|| {
            let mut record = GatewayRecord::apply_command(None, 1, black_box(&command3));
            for replica in 0..3 {
                record = GatewayRecord::apply_event(
                    record,
                    2 + u64::from(replica),
                    &event(&spec3, replica),
                );
            }
            record
        })
    });
    for replicas in [3, 64] {
        let record = record(replicas);
        let encoded = krane_core::codec::encode(&record).expect("encodes");
        c.bench_function(&format!("record/encode/{replicas}"), |b| {
            b.iter(|| krane_core::codec::encode(black_box(&record)))
        });
        c.bench_function(&format!("record/decode/{replicas}"), |b| {
            b.iter(|| krane_core::codec::decode::<GatewayRecord>(black_box(&encoded)))
        });
        c.bench_function(&format!("record/proto_instances/{replicas}"), |b| {
            b.iter(|| krane_api::convert::instances_of(black_box(&record)))
        });
    }
}

criterion_group!(benches, validation, planning, records);
criterion_main!(benches);
