//! WatchGateway: a server stream of one gateway's state. It sends the current state at once,
//! then the state after every change of the gateway's KV record that callers can see (a write
//! that leaves instances, spec and status as they were is not sent again), and ends when the
//! gateway is gone (deleted and its containers removed, or its key deleted).
//!
//! The first state is read with its KV revision and the watch starts right after that
//! revision, so no change falls between the two. When the API shuts down or NATS breaks the
//! watch, the stream ends with `unavailable` (watch again), never as if the gateway were gone.

use crate::auth::{Caller, Operation};
use crate::convert;
use crate::errors::{invalid, storage};
use crate::gateways::ApiState;
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse, StreamBody};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use krane_core::record::GatewayRecord;
use krane_core::spec::validate_key;
use krane_proto::krane::v1::{WatchGatewayRequest, WatchGatewayResponse};
use krane_store::{Result as StoreResult, StoredRecord};
use tokio_util::sync::CancellationToken;
use tracing::info;

type Update = Result<WatchGatewayResponse, ConnectError>;

pub async fn watch_gateway(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<WatchGatewayRequest>,
) -> Result<ConnectResponse<StreamBody<impl Stream<Item = Update> + Send + 'static>>, ConnectError>
{
    caller.may(Operation::Read, &request.namespace)?;
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let stored = state.store.load_record(&key).await.map_err(storage)?;
    let first = match &stored.record {
        Some(record) if !record.is_gone() => snapshot(record),
        _ => {
            return Err(ConnectError::new_not_found(format!(
                "gateway {key} not found"
            )));
        }
    };
    let changes = state
        .store
        .watch_record(&key, stored.revision)
        .await
        .map_err(storage)?;
    info!(gateway = %key, revision = stored.revision, "watch started");
    let follow = Follow {
        changes: changes.boxed(),
        last: first.clone(),
        stop: state.stop.clone(),
    };
    let updates = stream::once(async { Ok(first) }).chain(stream::unfold(Some(follow), next));
    Ok(ConnectResponse::new(StreamBody::new(updates)))
}

/// What the stream needs between two updates.
struct Follow {
    changes: BoxStream<'static, StoreResult<StoredRecord>>,
    /// The state last sent.
    last: WatchGatewayResponse,
    stop: CancellationToken,
}

/// The next update to send; `None` ends the stream (the gateway is gone, or after an error).
async fn next(follow: Option<Follow>) -> Option<(Update, Option<Follow>)> {
    let mut follow = follow?;
    loop {
        let change = tokio::select! {
            () = follow.stop.cancelled() => {
                let error = ConnectError::new_unavailable("krane-api is shutting down; watch again");
                return Some((Err(error), None));
            }
            change = follow.changes.next() => change,
        };
        let record = match change {
            Some(Ok(stored)) => stored.record,
            Some(Err(error)) => return Some((Err(storage(error)), None)),
            None => {
                let error = ConnectError::new_unavailable("the watch ended; watch again");
                return Some((Err(error), None));
            }
        };
        let record = record.filter(|record| !record.is_gone())?;
        let state = snapshot(&record);
        if state != follow.last {
            follow.last = state.clone();
            return Some((Ok(state), Some(follow)));
        }
    }
}

/// What GetGateway answers, plus the overall status.
fn snapshot(record: &GatewayRecord) -> WatchGatewayResponse {
    WatchGatewayResponse {
        instances: convert::instances_of(record),
        gateway: convert::gateway_of(record),
        status: convert::status_of(record.overall_status()) as i32,
        rollout: convert::rollout_of(record),
    }
}
