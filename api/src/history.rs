//! ListGatewayEvents: what happened to a gateway, oldest first — its commands and what the
//! workers observed of its replicas — read from the two streams (`krane_store::history`), not
//! from the projection. A gateway with no history (never created, or purged after its
//! retention) answers an empty list rather than `not_found`: the streams cannot tell a gateway
//! that never was from one whose history is gone.
//!
//! FollowGatewayEvents sends the same list one entry a message, then every entry as it is
//! stored, until the caller hangs up, the API shuts down or NATS breaks the follow
//! (`unavailable`: follow again).

use crate::auth::{Caller, Operation};
use crate::convert;
use crate::errors::{invalid, storage};
use crate::gateways::ApiState;
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse, StreamBody};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use krane_core::spec::{FieldError, validate_key};
use krane_proto::krane::v1::{
    FollowGatewayEventsResponse, ListGatewayEventsRequest, ListGatewayEventsResponse,
};
use krane_store::history::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use krane_store::{HistoryEntry, Result as StoreResult};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub async fn list_gateway_events(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<ListGatewayEventsRequest>,
) -> Result<ConnectResponse<ListGatewayEventsResponse>, ConnectError> {
    caller.may(Operation::Read, &request.namespace)?;
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    let limit = limit_of(request.limit).map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let history = state
        .store
        .gateway_history(&key, limit)
        .await
        .map_err(storage)?;
    Ok(ConnectResponse::new(ListGatewayEventsResponse {
        events: history.entries.iter().map(convert::event_of).collect(),
        undecodable: u32::try_from(history.undecodable).unwrap_or(u32::MAX),
    }))
}

type Followed = Result<FollowGatewayEventsResponse, ConnectError>;

pub async fn follow_gateway_events(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<ListGatewayEventsRequest>,
) -> Result<ConnectResponse<StreamBody<impl Stream<Item = Followed> + Send + 'static>>, ConnectError>
{
    caller.may(Operation::Read, &request.namespace)?;
    let key = validate_key(&request.namespace, &request.gateway_id, "").map_err(invalid)?;
    let limit = limit_of(request.limit).map_err(invalid)?;
    crate::rpc_telemetry::gateway(&key);
    let (history, new_entries) = state
        .store
        .follow_gateway_history(&key, limit)
        .await
        .map_err(storage)?;
    info!(gateway = %key, entries = history.entries.len(), "following history");
    let follow = Follow {
        entries: futures::stream::iter(history.entries)
            .map(Ok)
            .chain(new_entries)
            .boxed(),
        stop: state.stop.clone(),
    };
    let messages = futures::stream::unfold(Some(follow), next_followed);
    Ok(ConnectResponse::new(StreamBody::new(messages)))
}

/// What the follow needs between two messages.
struct Follow {
    entries: BoxStream<'static, StoreResult<HistoryEntry>>,
    stop: CancellationToken,
}

/// The next message; `None` ends the stream (after an error, which ends every follow).
async fn next_followed(follow: Option<Follow>) -> Option<(Followed, Option<Follow>)> {
    let mut follow = follow?;
    let entry = tokio::select! {
        () = follow.stop.cancelled() => {
            let error = ConnectError::new_unavailable("krane-api is shutting down; follow again");
            return Some((Err(error), None));
        }
        entry = follow.entries.next() => entry,
    };
    match entry {
        Some(Ok(entry)) => {
            let message = FollowGatewayEventsResponse {
                event: Some(convert::event_of(&entry)),
            };
            Some((Ok(message), Some(follow)))
        }
        Some(Err(error)) => Some((Err(storage(error)), None)),
        None => {
            let error = ConnectError::new_unavailable("the follow ended; follow again");
            Some((Err(error), None))
        }
    }
}

/// The request's `limit`: 0 is the default, more than the maximum is refused.
fn limit_of(limit: u32) -> Result<usize, FieldError> {
    match usize::try_from(limit) {
        Ok(0) => Ok(DEFAULT_HISTORY_LIMIT),
        Ok(limit) if limit <= MAX_HISTORY_LIMIT => Ok(limit),
        _ => Err(FieldError::new(
            "limit",
            format!("must be at most {MAX_HISTORY_LIMIT}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_is_bounded() {
        assert_eq!(limit_of(0), Ok(DEFAULT_HISTORY_LIMIT));
        assert_eq!(limit_of(7), Ok(7));
        let error = limit_of(u32::MAX).expect_err("too many");
        assert!(error.to_string().starts_with("limit"), "{error}");
    }
}
