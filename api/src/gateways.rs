//! GatewayService handlers. Create, Update and Delete decide from the gateway's latest command,
//! read from the commands stream, store their command only if that is still the latest, and
//! fold it into the KV record before answering, so a Get right after shows the new intent
//! (PENDING or TERMINATING instances). Get and List only read records (Watch is in the `watch`
//! module).

use crate::auth::{Caller, Operation};
use crate::convert;
use crate::errors::{invalid, storage};
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse};
use krane_core::command::Command;
use krane_core::names::GatewayKey;
use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_core::rollout::{Rollout, UpdatePolicy};
use krane_core::routing::Replaced;
use krane_core::spec::GatewaySpec;
use krane_core::spec::{validate_key, validate_namespace};
use krane_proto::krane::v1::{
    CreateGatewayRequest, CreateGatewayResponse, DeleteGatewayRequest, DeleteGatewayResponse,
    GatewayStatus, GatewaySummary, GetGatewayRequest, GetGatewayResponse, ListGatewaysRequest,
    ListGatewaysResponse, UpdateGatewayRequest, UpdateGatewayResponse,
};
use krane_store::{Latest, Store, StoreError, StoredRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// The images Create and Update may ask for (checked before anything is stored).
    pub images: std::sync::Arc<krane_core::images::ImagePolicy>,
    /// Fires when the API shuts down: open watches end (`unavailable`) so draining finishes.
    pub stop: CancellationToken,
}

type Reply<T> = Result<ConnectResponse<T>, ConnectError>;

pub async fn create_gateway(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<CreateGatewayRequest>,
) -> Reply<CreateGatewayResponse> {
    may_write(&caller, request.gateway.as_ref())?;
    let spec = convert::spec_from_request(request.gateway.as_ref()).map_err(invalid)?;
    let policy = convert::policy_from_request(request.gateway.as_ref()).map_err(invalid)?;
    state.images.check(&spec.image).map_err(invalid)?;
    let key = spec.key();
    crate::rpc_telemetry::gateway(&key);
    // The common case, a gateway never seen before, is one conditional write and no read.
    let first = next_command(None, &spec, policy);
    if let Some(seq) = state
        .store
        .publish_command_expecting(&first, 0, caller.name(), Replaced::Nothing)
        .await
        .map_err(storage)?
    {
        // A gateway without commands has no record yet: fold onto nothing, no read needed (a
        // left-over record makes the compare-and-set fail, and it is read then).
        project(&state, seq, &first, Some(StoredRecord::absent())).await?;
        info!(gateway = %key, seq, "create accepted");
        return Ok(ConnectResponse::new(CreateGatewayResponse {
            status: GatewayStatus::Pending as i32,
        }));
    }
    let written = write_from_log(&state, &key, caller.name(), |latest| match latest {
        Some(latest) if asks_the_same(latest, &spec, policy) => Decision::SameSpec,
        latest => Decision::Write(Box::new(next_command(latest, &spec, policy))),
    })
    .await?;
    let status = match written {
        Written::Stored(seq) => {
            info!(gateway = %key, seq, "create accepted");
            GatewayStatus::Pending
        }
        Written::SameSpec => {
            let status = state
                .store
                .load_record(&key)
                .await
                .map_err(storage)?
                .record
                .map(|record| record.overall_status());
            if status == Some(InstanceStatus::Failed) {
                // A FAILED gateway is tried again: the same spec, stored anew.
                let seq = retry_failed(&state, &key, caller.name(), &spec, policy).await?;
                info!(gateway = %key, seq, "create of a FAILED gateway accepted; retrying it");
                GatewayStatus::Pending
            } else {
                info!(gateway = %key, "create repeats the current spec; no-op");
                status.map_or(GatewayStatus::Pending, convert::status_of)
            }
        }
    };
    Ok(ConnectResponse::new(CreateGatewayResponse {
        status: status as i32,
    }))
}

pub async fn get_gateway(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<GetGatewayRequest>,
) -> Reply<GetGatewayResponse> {
    caller.may(Operation::Read, &request.namespace)?;
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let stored = state.store.load_record(&key).await.map_err(storage)?;
    match stored.record {
        Some(record) if !record.is_gone() => Ok(ConnectResponse::new(GetGatewayResponse {
            instances: convert::instances_of(&record),
            gateway: convert::gateway_of(&record),
            rollout: convert::rollout_of(&record),
        })),
        _ => Err(ConnectError::new_not_found(format!(
            "gateway {key} not found"
        ))),
    }
}

/// The gateways of a namespace that are not deleted, ordered by id.
pub async fn list_gateways(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<ListGatewaysRequest>,
) -> Reply<ListGatewaysResponse> {
    caller.may(Operation::Read, &request.namespace)?;
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

/// The caller may write the namespace a Create or Update names, as given (checked before the
/// request is validated). A request without a gateway names none and is refused as invalid.
fn may_write(
    caller: &Caller,
    gateway: Option<&krane_proto::krane::v1::GatewayRequest>,
) -> Result<(), crate::auth::grant::Denied> {
    match gateway {
        Some(gateway) => caller.may(Operation::Write, &gateway.namespace),
        None => Ok(()),
    }
}

fn summary(record: &GatewayRecord) -> GatewaySummary {
    GatewaySummary {
        namespace: record.namespace.clone(),
        gateway_id: record.gateway_id.clone(),
        status: convert::status_of(record.overall_status()) as i32,
        instances: convert::instances_of(record),
        gateway: convert::gateway_of(record),
        rollout: convert::rollout_of(record),
    }
}

pub async fn delete_gateway(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<DeleteGatewayRequest>,
) -> Reply<DeleteGatewayResponse> {
    caller.may(Operation::Write, &request.namespace)?;
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let written = write_from_log(&state, &key, caller.name(), |latest| match latest {
        Some(latest) if latest.command.spec().is_some() => {
            Decision::Write(Box::new(Command::delete(&key)))
        }
        // Never created, or deleted already.
        _ => Decision::SameSpec,
    })
    .await?;
    match written {
        Written::Stored(seq) => info!(gateway = %key, seq, "delete accepted"),
        Written::SameSpec => {
            info!(gateway = %key, "delete of an unknown or already deleted gateway; no-op")
        }
    }
    Ok(ConnectResponse::new(DeleteGatewayResponse {}))
}

/// Changes an existing gateway: scaling keeps the lower replicas where they run (scale-down
/// removes the highest-numbered); a new image or new limits roll through the replicas as the
/// request's update policy says (one at a time by default). Answers with the instance ids the
/// gateway will have.
pub async fn update_gateway(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<UpdateGatewayRequest>,
) -> Reply<UpdateGatewayResponse> {
    may_write(&caller, request.gateway.as_ref())?;
    let spec = convert::spec_from_request(request.gateway.as_ref()).map_err(invalid)?;
    let policy = convert::policy_from_request(request.gateway.as_ref()).map_err(invalid)?;
    state.images.check(&spec.image).map_err(invalid)?;
    let key = spec.key();
    crate::rpc_telemetry::gateway(&key);
    let written = write_from_log(&state, &key, caller.name(), |latest| match latest {
        Some(latest) if asks_the_same(latest, &spec, policy) => Decision::SameSpec,
        Some(latest) if latest.command.spec().is_some() => {
            Decision::Write(Box::new(next_command(Some(latest), &spec, policy)))
        }
        _ => Decision::NotFound,
    })
    .await;
    match written {
        Ok(Written::Stored(seq)) => info!(gateway = %key, seq, "update accepted"),
        Ok(Written::SameSpec) => info!(gateway = %key, "update repeats the current spec; no-op"),
        Err(error) => return Err(error),
    }
    let pod_ids = (0..spec.replicas)
        .map(|replica| key.container_name(replica))
        .collect();
    Ok(ConnectResponse::new(UpdateGatewayResponse { pod_ids }))
}

/// What a write call decides, from the gateway's latest command.
enum Decision {
    /// Store this command (boxed: a command is large, the other answers are nothing).
    Write(Box<Command>),
    /// Nothing to store: the latest command already says so.
    SameSpec,
    /// The gateway does not exist (`not_found`).
    NotFound,
}

/// What a write call did.
enum Written {
    /// The command was stored at this sequence.
    Stored(u64),
    /// Nothing needed storing.
    SameSpec,
}

/// Conditional writes that lose to concurrent ones before the call gives up (`unavailable`).
const WRITE_ATTEMPTS: usize = 8;

/// Decides from the gateway's latest command, read from the log (never from the projection,
/// which may lag it), and stores the decision only if that command is still the latest; when
/// another write got in between, reads and decides again. A stored command is folded into the
/// record before answering, so a Get right after shows it.
async fn write_from_log(
    state: &ApiState,
    key: &GatewayKey,
    author: &str,
    decide: impl Fn(Option<&Latest>) -> Decision,
) -> Result<Written, ConnectError> {
    for _ in 0..WRITE_ATTEMPTS {
        let (latest, expected) = match state.store.latest_command(key).await {
            Ok(latest) => {
                let expected = latest.as_ref().map_or(0, |latest| latest.last_seq);
                (latest, expected)
            }
            // Nothing on the subject can be read: decide as for a gateway without commands,
            // and write on top of what is there.
            Err(StoreError::Corrupt { location, reason }) => {
                warn!(gateway = %key, %location, %reason, "no readable command; deciding as for a new gateway");
                let expected = state.store.last_sequence(key).await.map_err(storage)?;
                (None, expected)
            }
            Err(error) => return Err(storage(error)),
        };
        let command = match decide(latest.as_ref()) {
            Decision::Write(command) => *command,
            Decision::SameSpec => return Ok(Written::SameSpec),
            Decision::NotFound => {
                return Err(ConnectError::new_not_found(format!(
                    "gateway {key} not found"
                )));
            }
        };
        let replaced = match (&latest, expected) {
            (Some(latest), _) => Replaced::Command(&latest.command),
            (None, 0) => Replaced::Nothing,
            (None, _) => Replaced::Unreadable,
        };
        if let Some(seq) = state
            .store
            .publish_command_expecting(&command, expected, author, replaced)
            .await
            .map_err(storage)?
        {
            project(state, seq, &command, None).await?;
            return Ok(Written::Stored(seq));
        }
    }
    Err(ConnectError::new_unavailable(format!(
        "gateway {key} is being changed by other calls; try again"
    )))
}

/// Stores the current spec of a FAILED gateway again, so the workers try it anew.
async fn retry_failed(
    state: &ApiState,
    key: &GatewayKey,
    author: &str,
    spec: &GatewaySpec,
    policy: UpdatePolicy,
) -> Result<u64, ConnectError> {
    let written = write_from_log(state, key, author, |latest| {
        Decision::Write(Box::new(next_command(latest, spec, policy)))
    })
    .await?;
    match written {
        Written::Stored(seq) => Ok(seq),
        Written::SameSpec => Err(ConnectError::new_internal("retry not stored")),
    }
}

/// Folds a stored command into the record. When this fails the command is stored all the
/// same (the caller is told `unavailable`); the next decision reads the log, not the record.
async fn project(
    state: &ApiState,
    seq: u64,
    command: &Command,
    known: Option<StoredRecord>,
) -> Result<(), ConnectError> {
    state
        .store
        .project_command_onto(known, seq, command)
        .await
        .map_err(storage)?;
    Ok(())
}

/// True when the latest command asks for this spec with this update policy already.
fn asks_the_same(latest: &Latest, spec: &GatewaySpec, policy: UpdatePolicy) -> bool {
    latest.command.spec() == Some(spec)
        && latest.command.rollout().map(|rollout| rollout.policy) == Some(policy)
}

/// The Create that asks for `spec` after `latest`: replicas keep their hosts, and a new
/// template starts an update that can return to the last spec that rolled out.
fn next_command(latest: Option<&Latest>, spec: &GatewaySpec, policy: UpdatePolicy) -> Command {
    let current = latest.and_then(|latest| latest.command.spec().zip(latest.command.rollout()));
    Command::create_with(
        spec.clone(),
        kept_placement(latest),
        Rollout::after(current, spec, policy),
    )
}

/// Replicas that exist keep their hosts; the workers place the others on live hosts.
fn kept_placement(latest: Option<&Latest>) -> Vec<String> {
    latest
        .map(|latest| latest.command.placement().to_vec())
        .unwrap_or_default()
}
