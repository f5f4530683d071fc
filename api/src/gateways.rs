//! GatewayService handlers. Create, Update and Delete publish a command and fold it into the KV
//! record before answering, so a Get right after shows the new intent (PENDING or TERMINATING
//! instances); Get and List only read records (Watch is in the `watch` module).

use crate::convert;
use crate::errors::{invalid, storage};
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse};
use krane_core::command::Command;
use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_core::spec::{validate_key, validate_namespace};
use krane_proto::krane::v1::{
    CreateGatewayRequest, CreateGatewayResponse, DeleteGatewayRequest, DeleteGatewayResponse,
    GatewayStatus, GatewaySummary, GetGatewayRequest, GetGatewayResponse, ListGatewaysRequest,
    ListGatewaysResponse, UpdateGatewayRequest, UpdateGatewayResponse,
};
use krane_store::{Store, StoredRecord};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// Fires when the API shuts down: open watches end (`unavailable`) so draining finishes.
    pub stop: CancellationToken,
}

type Reply<T> = Result<ConnectResponse<T>, ConnectError>;

pub async fn create_gateway(
    State(state): State<ApiState>,
    ConnectRequest(request): ConnectRequest<CreateGatewayRequest>,
) -> Reply<CreateGatewayResponse> {
    let spec = convert::spec_from_request(request.gateway.as_ref()).map_err(invalid)?;
    let key = spec.key();
    crate::rpc_telemetry::gateway(&key);
    // The common case, a gateway never seen before, is one conditional write and no read.
    let first = Command::create(spec.clone(), Vec::new());
    let absent = StoredRecord::absent();
    if let Some(seq) = state
        .store
        .publish_first_command(&first)
        .await
        .map_err(storage)?
    {
        state
            .store
            .project_command_onto(Some(absent), seq, &first)
            .await
            .map_err(storage)?;
        info!(gateway = %key, seq, "create accepted");
        return Ok(ConnectResponse::new(CreateGatewayResponse {
            status: GatewayStatus::Pending as i32,
        }));
    }
    let stored = state.store.load_record(&key).await.map_err(storage)?;
    if let Some(record) = &stored.record
        && record.intent.spec() == Some(&spec)
        && record.overall_status() != InstanceStatus::Failed
    {
        // The same spec again: nothing to do. (A FAILED gateway is retried instead.)
        info!(gateway = %key, "create repeats the current spec; no-op");
        return Ok(ConnectResponse::new(CreateGatewayResponse {
            status: convert::status_of(record.overall_status()) as i32,
        }));
    }
    let command = Command::create(spec, kept_placement(&stored));
    let seq = store(&state, &stored, &command).await?;
    info!(gateway = %key, seq, "create accepted");
    Ok(ConnectResponse::new(CreateGatewayResponse {
        status: GatewayStatus::Pending as i32,
    }))
}

pub async fn get_gateway(
    State(state): State<ApiState>,
    ConnectRequest(request): ConnectRequest<GetGatewayRequest>,
) -> Reply<GetGatewayResponse> {
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let stored = state.store.load_record(&key).await.map_err(storage)?;
    match stored.record {
        Some(record) if !record.is_gone() => Ok(ConnectResponse::new(GetGatewayResponse {
            instances: convert::instances_of(&record),
            gateway: convert::gateway_of(&record),
        })),
        _ => Err(ConnectError::new_not_found(format!(
            "gateway {key} not found"
        ))),
    }
}

/// The gateways of a namespace that are not deleted, ordered by id.
pub async fn list_gateways(
    State(state): State<ApiState>,
    ConnectRequest(request): ConnectRequest<ListGatewaysRequest>,
) -> Reply<ListGatewaysResponse> {
    validate_namespace(&request.namespace).map_err(invalid)?;
    crate::rpc_telemetry::namespace(&request.namespace);
    let records = state
        .store
        .namespace_records(&request.namespace)
        .await
        .map_err(storage)?;
    let gateways = records
        .iter()
        .filter(|record| !record.is_gone())
        .map(summary)
        .collect();
    Ok(ConnectResponse::new(ListGatewaysResponse { gateways }))
}

fn summary(record: &GatewayRecord) -> GatewaySummary {
    GatewaySummary {
        namespace: record.namespace.clone(),
        gateway_id: record.gateway_id.clone(),
        status: convert::status_of(record.overall_status()) as i32,
        instances: convert::instances_of(record),
        gateway: convert::gateway_of(record),
    }
}

pub async fn delete_gateway(
    State(state): State<ApiState>,
    ConnectRequest(request): ConnectRequest<DeleteGatewayRequest>,
) -> Reply<DeleteGatewayResponse> {
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let stored = state.store.load_record(&key).await.map_err(storage)?;
    let already_deleting = stored
        .record
        .as_ref()
        .is_none_or(|record| record.intent.spec().is_none());
    if already_deleting {
        info!(gateway = %key, "delete of an unknown or already deleted gateway; no-op");
        return Ok(ConnectResponse::new(DeleteGatewayResponse {}));
    }
    let command = Command::delete(&key);
    let seq = store(&state, &stored, &command).await?;
    info!(gateway = %key, seq, "delete accepted");
    Ok(ConnectResponse::new(DeleteGatewayResponse {}))
}

/// Changes an existing gateway: scaling keeps the lower replicas where they run (scale-down
/// removes the highest-numbered); a new image or new limits roll through the replicas one at a
/// time. Answers with the instance ids the gateway will have.
pub async fn update_gateway(
    State(state): State<ApiState>,
    ConnectRequest(request): ConnectRequest<UpdateGatewayRequest>,
) -> Reply<UpdateGatewayResponse> {
    let spec = convert::spec_from_request(request.gateway.as_ref()).map_err(invalid)?;
    let key = spec.key();
    crate::rpc_telemetry::gateway(&key);
    let stored = state.store.load_record(&key).await.map_err(storage)?;
    let exists = stored
        .record
        .as_ref()
        .is_some_and(|record| record.intent.spec().is_some());
    if !exists {
        return Err(ConnectError::new_not_found(format!(
            "gateway {key} not found"
        )));
    }
    let pod_ids = (0..spec.replicas)
        .map(|replica| key.container_name(replica))
        .collect();
    let unchanged = stored
        .record
        .as_ref()
        .is_some_and(|record| record.intent.spec() == Some(&spec));
    if !unchanged {
        let command = Command::create(spec, kept_placement(&stored));
        let seq = store(&state, &stored, &command).await?;
        info!(gateway = %key, seq, "update accepted");
    }
    Ok(ConnectResponse::new(UpdateGatewayResponse { pod_ids }))
}

/// Replicas that exist keep their hosts; the workers place the others on live hosts.
fn kept_placement(stored: &StoredRecord) -> Vec<String> {
    stored
        .record
        .as_ref()
        .map(|record| record.intent.placement().to_vec())
        .unwrap_or_default()
}

/// Durably stores `command` (deduplicated against retries of the same decision) and folds it
/// into the record, so a Get right after shows it; returns its stream sequence.
async fn store(
    state: &ApiState,
    stored: &StoredRecord,
    command: &Command,
) -> Result<u64, ConnectError> {
    let seq = state
        .store
        .publish_command(command, stored.revision)
        .await
        .map_err(storage)?;
    state
        .store
        .project_command_onto(Some(stored.clone()), seq, command)
        .await
        .map_err(storage)?;
    Ok(seq)
}
