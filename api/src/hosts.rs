//! ListHosts: every host the hosts bucket knows, as its worker's latest heartbeat says — live
//! or not, when last heard, its CPUs and memory, what krane reserved there and what is free.
//! Read from the bucket (`krane_store::hosts`), never from Docker. Hosts belong to no
//! namespace, so only callers whose grant covers every namespace may list them
//! (`Caller::may_read_cluster`).

use crate::auth::Caller;
use crate::convert;
use crate::errors::storage;
use crate::gateways::ApiState;
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse};
use krane_proto::krane::v1::{ListHostsRequest, ListHostsResponse};

pub async fn list_hosts(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(_request): ConnectRequest<ListHostsRequest>,
) -> Result<ConnectResponse<ListHostsResponse>, ConnectError> {
    caller.may_read_cluster()?;
    let hosts = state.store.heard_hosts().await.map_err(storage)?;
    Ok(ConnectResponse::new(ListHostsResponse {
        hosts: hosts.iter().map(convert::host_of).collect(),
    }))
}
