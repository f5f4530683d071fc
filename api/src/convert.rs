//! Between the wire and the model: `krane.v1` messages to and from `krane_core` types. The
//! model knows nothing of protobuf; this is the only place that knows both.

use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_core::spec::{FieldError, GatewaySpec};
use krane_proto::krane::v1::{GatewayInstance, GatewayRequest, GatewayStatus};

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

/// The spec as the wire message it was validated from.
pub fn request_of(spec: &GatewaySpec) -> GatewayRequest {
    GatewayRequest {
        namespace: spec.namespace.clone(),
        workspace_id: spec.workspace_id.clone(),
        gateway_id: spec.gateway_id.clone(),
        image: spec.image.clone(),
        replicas: spec.replicas,
        cpu_millicores: spec.cpu_millicores,
        memory_size_mib: spec.memory_mib,
    }
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
pub fn gateway_of(record: &GatewayRecord) -> Option<GatewayRequest> {
    record.intent.spec().map(request_of)
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
        }
    }

    #[test]
    fn a_spec_turns_back_into_its_request() {
        let spec = spec_from_request(Some(&request())).expect("valid");
        assert_eq!(request_of(&spec), request());
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
