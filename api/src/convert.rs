//! Between the wire and the model: `krane.v1` messages to and from `krane_core` types. The
//! model knows nothing of protobuf; this is the only place that knows both.

use krane_core::event::ObservedState;
use krane_core::names;
use krane_core::placement::Resources;
use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_core::rollout::{FailureAction, PolicyRequest, UpdatePolicy};
use krane_core::spec::{FieldError, GatewaySpec};
use krane_proto::krane::v1::gateway_event::What;
use krane_proto::krane::v1::{
    GatewayCommand, GatewayEvent, GatewayInstance, GatewayRequest, GatewayStatus, HostResources,
    HostStatus, InstanceObservation, RolloutStatus, UpdateFailureAction,
};
use krane_store::{Happened, HeardHost, HistoryEntry};

/// Validates a Create or Update request's `gateway` field into a spec; the error names the
/// first bad field by its path.
pub fn spec_from_request(gateway: Option<&GatewayRequest>) -> Result<GatewaySpec, FieldError> {
    let gateway = gateway.ok_or_else(|| FieldError::new("gateway", "is required"))?;
    GatewaySpec {
        namespace: gateway.namespace.clone(),
        gateway_id: gateway.gateway_id.clone(),
        workspace_id: gateway.workspace_id.clone(),
        image: gateway.image.clone(),
        replicas: gateway.replicas,
        cpu_millicores: gateway.cpu_millicores,
        memory_mib: gateway.memory_size_mib,
    }
    .validate()
}

/// The request's update policy (the defaults where it gives none), bounded by the request's
/// replicas; the error names the field.
pub fn policy_from_request(gateway: Option<&GatewayRequest>) -> Result<UpdatePolicy, FieldError> {
    let Some((policy, replicas)) = gateway.and_then(|gateway| {
        let policy = gateway.update_policy.as_ref()?;
        Some((policy, gateway.replicas))
    }) else {
        return Ok(UpdatePolicy::default());
    };
    let pause = match UpdateFailureAction::try_from(policy.failure_action) {
        Ok(UpdateFailureAction::Unspecified | UpdateFailureAction::Rollback) => false,
        Ok(UpdateFailureAction::Pause) => true,
        Err(_) => {
            return Err(FieldError::new(
                "gateway.update_policy.failure_action",
                format!("unknown value {}", policy.failure_action),
            ));
        }
    };
    let request = PolicyRequest {
        monitor_seconds: policy.monitor_seconds,
        pause,
        parallelism: policy.parallelism,
        max_surge: policy.max_surge,
    };
    UpdatePolicy::from_request(request, replicas)
}

/// One entry of a gateway's history as the wire message (`ListGatewayEvents`).
pub fn event_of(entry: &HistoryEntry) -> GatewayEvent {
    let (stream, what) = match &entry.what {
        Happened::Command(asked) => {
            let command = &asked.command;
            let rollout = command.rollout();
            let reason = rollout
                .and_then(|rollout| rollout.rolled_back.as_ref().or(rollout.paused.as_ref()))
                .cloned()
                .unwrap_or_else(|| command.waiting().to_string());
            let gateway = command
                .spec()
                .map(|spec| request_of(spec, rollout.map(|rollout| &rollout.policy)));
            let command = GatewayCommand {
                kind: asked.kind.as_str().to_string(),
                author: asked.author.clone(),
                gateway,
                placement: command.placement().to_vec(),
                reason,
            };
            (names::COMMANDS_STREAM, What::Command(command))
        }
        Happened::Observation(event) => {
            let observation = InstanceObservation {
                replica: event.replica,
                host_id: event.host_id.clone(),
                state: state_name(event.state).to_string(),
                address: event.address.clone(),
                reason: event.reason.clone(),
                template: event.template.clone(),
            };
            (names::EVENTS_STREAM, What::Observation(observation))
        }
    };
    GatewayEvent {
        time: humantime::format_rfc3339_millis(entry.time).to_string(),
        stream: stream.to_string(),
        sequence: entry.sequence,
        what: Some(what),
    }
}

/// One host as the wire message (`ListHosts`): its heartbeat, and what is free.
pub fn host_of(host: &HeardHost) -> HostStatus {
    let info = &host.info;
    HostStatus {
        host_id: info.host_id.clone(),
        live: host.live,
        last_heard: humantime::format_rfc3339_millis(host.last_heard).to_string(),
        advertise_host: info.advertise_host.clone(),
        containers: info.containers,
        max_containers: info.max_containers.unwrap_or(0),
        engine_healthy: info.engine_healthy,
        capacity: info.capacity.map(resources_of),
        reserved: Some(resources_of(info.reserved)),
        free: info.free().map(resources_of),
    }
}

fn resources_of(resources: Resources) -> HostResources {
    HostResources {
        cpu_millicores: resources.millicores,
        memory_mib: resources.mib,
    }
}

fn state_name(state: ObservedState) -> &'static str {
    match state {
        ObservedState::Pending => "pending",
        ObservedState::Running => "running",
        ObservedState::Failed => "failed",
        ObservedState::Gone => "gone",
    }
}

/// The spec (and its update policy) as the wire message it was validated from.
pub fn request_of(spec: &GatewaySpec, policy: Option<&UpdatePolicy>) -> GatewayRequest {
    GatewayRequest {
        namespace: spec.namespace.clone(),
        workspace_id: spec.workspace_id.clone(),
        gateway_id: spec.gateway_id.clone(),
        image: spec.image.clone(),
        replicas: spec.replicas,
        cpu_millicores: spec.cpu_millicores,
        memory_size_mib: spec.memory_mib,
        update_policy: policy.map(|policy| krane_proto::krane::v1::UpdatePolicy {
            monitor_seconds: policy.monitor_seconds,
            failure_action: match policy.on_failure {
                FailureAction::Rollback => UpdateFailureAction::Rollback,
                FailureAction::Pause => UpdateFailureAction::Pause,
            } as i32,
            parallelism: policy.parallelism,
            max_surge: policy.max_surge,
        }),
    }
}

/// Where the gateway's latest update stands (`None` when it is being deleted).
pub fn rollout_of(record: &GatewayRecord) -> Option<RolloutStatus> {
    let spec = record.intent.spec()?;
    let (state, reason) = record.intent.rollout()?.status(spec);
    Some(RolloutStatus {
        state: state.to_string(),
        reason,
    })
}

pub fn status_of(status: InstanceStatus) -> GatewayStatus {
    match status {
        InstanceStatus::Pending => GatewayStatus::Pending,
        InstanceStatus::Running => GatewayStatus::Running,
        InstanceStatus::Failed => GatewayStatus::Failed,
        InstanceStatus::Terminating => GatewayStatus::Terminating,
    }
}

/// The record's instances as GetGateway, ListGateways and WatchGateway answer them.
pub fn instances_of(record: &GatewayRecord) -> Vec<GatewayInstance> {
    record
        .instances()
        .into_iter()
        .map(|view| GatewayInstance {
            id: view.id,
            address: view.address,
            status: status_of(view.status) as i32,
            reason: view.reason,
            host_id: view.host_id,
        })
        .collect()
}

/// The gateway's spec as the wire message, while it is wanted (`None` once deleted).
/// The default update policy is left out, so the spec reads back as it was given.
pub fn gateway_of(record: &GatewayRecord) -> Option<GatewayRequest> {
    let policy = record
        .intent
        .rollout()
        .map(|rollout| &rollout.policy)
        .filter(|policy| **policy != UpdatePolicy::default());
    record.intent.spec().map(|spec| request_of(spec, policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GatewayRequest {
        GatewayRequest {
            namespace: "acme".into(),
            workspace_id: "ws_1".into(),
            gateway_id: "gw_1".into(),
            image: "krane-test-gateway:dev".into(),
            replicas: 3,
            cpu_millicores: 250,
            memory_size_mib: 64,
            update_policy: None,
        }
    }

    #[test]
    fn a_host_shows_what_is_free() {
        use krane_core::placement::HostInfo;
        let heard = HeardHost {
            info: HostInfo {
                host_id: "h1".into(),
                advertise_host: "10.0.0.1".into(),
                containers: 2,
                max_containers: None,
                engine_healthy: true,
                capacity: Some(Resources {
                    millicores: 1000,
                    mib: 256,
                }),
                reserved: Resources {
                    millicores: 800,
                    mib: 256,
                },
            },
            last_heard: std::time::SystemTime::UNIX_EPOCH,
            live: true,
        };
        let host = host_of(&heard);
        assert_eq!(host.last_heard, "1970-01-01T00:00:00.000Z");
        assert_eq!((host.max_containers, host.containers), (0, 2));
        let free = host.free.expect("a capacity, so a free");
        assert_eq!((free.cpu_millicores, free.memory_mib), (200, 0));
        let unknown = HeardHost {
            info: HostInfo {
                capacity: None,
                ..heard.info.clone()
            },
            ..heard
        };
        let host = host_of(&unknown);
        assert_eq!((host.capacity, host.free), (None, None));
        assert_eq!(host.reserved.map(|r| r.cpu_millicores), Some(800));
    }

    #[test]
    fn a_spec_turns_back_into_its_request() {
        let spec = spec_from_request(Some(&request())).expect("valid");
        assert_eq!(request_of(&spec, None), request());
    }

    #[test]
    fn update_policies_default_and_name_their_fields() {
        let mut wire = request();
        assert_eq!(
            policy_from_request(Some(&wire)),
            Ok(UpdatePolicy::default())
        );
        wire.update_policy = Some(krane_proto::krane::v1::UpdatePolicy {
            monitor_seconds: 5,
            failure_action: UpdateFailureAction::Pause as i32,
            parallelism: 2,
            max_surge: 1,
        });
        let policy = policy_from_request(Some(&wire)).expect("valid");
        assert_eq!(
            (
                policy.monitor_seconds,
                policy.on_failure,
                policy.parallelism,
                policy.max_surge
            ),
            (5, FailureAction::Pause, 2, 1)
        );
        let spec = spec_from_request(Some(&wire)).expect("valid");
        assert_eq!(request_of(&spec, Some(&policy)), wire);
        wire.update_policy = Some(krane_proto::krane::v1::UpdatePolicy {
            monitor_seconds: 5,
            failure_action: 7,
            ..Default::default()
        });
        let error = policy_from_request(Some(&wire)).expect_err("unknown action");
        assert_eq!(error.field, "gateway.update_policy.failure_action");
    }

    #[test]
    fn parallelism_and_surge_are_bounded_by_the_request() {
        let mut wire = request();
        wire.update_policy = Some(krane_proto::krane::v1::UpdatePolicy {
            parallelism: 4,
            ..Default::default()
        });
        let error = policy_from_request(Some(&wire)).expect_err("more than the replicas");
        assert_eq!(
            error.to_string(),
            "gateway.update_policy.parallelism: must be between 1 and 3"
        );
        wire.update_policy = Some(krane_proto::krane::v1::UpdatePolicy {
            max_surge: 2,
            ..Default::default()
        });
        let error = policy_from_request(Some(&wire)).expect_err("surge of 2");
        assert_eq!(error.field, "gateway.update_policy.max_surge");
        // Zeros are the defaults: one at a time, no surge.
        wire.update_policy = Some(krane_proto::krane::v1::UpdatePolicy::default());
        assert_eq!(
            policy_from_request(Some(&wire)),
            Ok(UpdatePolicy::default())
        );
    }

    #[test]
    fn a_policy_other_than_the_default_is_shown_with_the_spec() {
        let spec = spec_from_request(Some(&request())).expect("valid");
        let surging = UpdatePolicy {
            max_surge: 1,
            ..UpdatePolicy::default()
        };
        let rollout = krane_core::rollout::Rollout {
            policy: surging,
            ..Default::default()
        };
        let command = krane_core::command::Command::create_with(spec.clone(), vec![], rollout);
        let record = GatewayRecord::apply_command(None, 1, &command).expect("record");
        let shown = gateway_of(&record).and_then(|gateway| gateway.update_policy);
        assert_eq!(
            shown.map(|policy| (policy.parallelism, policy.max_surge)),
            Some((1, 1))
        );
        let plain = krane_core::command::Command::create(spec, vec![]);
        let record = GatewayRecord::apply_command(None, 1, &plain).expect("record");
        assert_eq!(
            gateway_of(&record).and_then(|gateway| gateway.update_policy),
            None
        );
    }

    #[test]
    fn missing_gateway_is_a_field_error_not_a_panic() {
        let error = spec_from_request(None).expect_err("must fail");
        assert_eq!(error.field, "gateway");
        assert_eq!(error.to_string(), "gateway: is required");
    }

    #[test]
    fn field_errors_name_the_wire_field() {
        let mut bad = request();
        bad.memory_size_mib = 1;
        let error = spec_from_request(Some(&bad)).expect_err("must fail");
        assert_eq!(error.field, "gateway.memory_size_mib");
    }

    #[test]
    fn every_status_maps_to_its_wire_value() {
        for (model, wire) in [
            (InstanceStatus::Pending, GatewayStatus::Pending),
            (InstanceStatus::Running, GatewayStatus::Running),
            (InstanceStatus::Failed, GatewayStatus::Failed),
            (InstanceStatus::Terminating, GatewayStatus::Terminating),
        ] {
            assert_eq!(status_of(model), wire);
        }
    }
}
