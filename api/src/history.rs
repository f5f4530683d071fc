//! ListGatewayEvents: what happened to a gateway, oldest first — its commands and what the
//! workers observed of its replicas — read from the two streams (`krane_store::history`), not
//! from the projection. A gateway with no history (never created, or purged after its
//! retention) answers an empty list rather than `not_found`: the streams cannot tell a gateway
//! that never was from one whose history is gone.

use crate::auth::{Caller, Operation};
use crate::convert;
use crate::errors::{invalid, storage};
use crate::gateways::ApiState;
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse};
use krane_core::spec::{FieldError, validate_key};
use krane_proto::krane::v1::{ListGatewayEventsRequest, ListGatewayEventsResponse};
use krane_store::history::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};

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
