//! The connection to the API: the generated Connect client (JSON), with the token and a call
//! deadline, and the two calls both the commands and the progress display use.

use crate::args::{Cli, Output, Target};
use anyhow::Context;
use futures::StreamExt;
use krane_proto::krane::v1::gateway_service_connect_client::GatewayServiceClient;
use krane_proto::krane::v1::{
    GetGatewayRequest, GetGatewayResponse, WatchGatewayRequest, WatchGatewayResponse,
};
use std::time::Duration;

pub struct Api {
    pub client: GatewayServiceClient,
    /// The same, without a call deadline, for WatchGateway streams that stay open.
    streaming: GatewayServiceClient,
    pub output: Output,
}

impl Api {
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        Ok(Self {
            client: connect(cli, Some(Duration::from_secs(10)))?,
            streaming: connect(cli, None)?,
            output: cli.output,
        })
    }

    /// WatchGateway: the gateway's states as they change; the stream ends once it is gone.
    pub async fn watch(
        &self,
        target: &Target,
    ) -> anyhow::Result<impl futures::Stream<Item = anyhow::Result<WatchGatewayResponse>>> {
        let request = WatchGatewayRequest {
            namespace: target.namespace.clone(),
            gateway_id: target.id.clone(),
        };
        let updates = self
            .streaming
            .watch_gateway(&request)
            .await
            .map_err(|error| call_error("WatchGateway", error))?
            .into_inner();
        Ok(updates.map(|update| update.map_err(|error| call_error("WatchGateway", error))))
    }

    /// GetGateway; `Ok(None)` when the gateway does not exist.
    pub async fn get(&self, target: &Target) -> anyhow::Result<Option<GetGatewayResponse>> {
        let request = GetGatewayRequest {
            namespace: target.namespace.clone(),
            gateway_id: target.id.clone(),
        };
        match self.client.get_gateway(&request).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(error) if error.code() as i32 == 5 => Ok(None),
            Err(error) => Err(call_error("GetGateway", error)),
        }
    }
}

fn connect(cli: &Cli, deadline: Option<Duration>) -> anyhow::Result<GatewayServiceClient> {
    let mut builder = GatewayServiceClient::builder(cli.api.trim_end_matches('/')).use_json();
    if let Some(deadline) = deadline {
        builder = builder.timeout(deadline);
    }
    if let Some(token) = &cli.token {
        builder = builder
            .try_default_header("authorization", format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
    }
    builder.build().context("cannot build the API client")
}

pub fn call_error(rpc: &str, error: connectrpc_axum_client::ClientError) -> anyhow::Error {
    anyhow::anyhow!(
        "{rpc} failed ({:?}): {}",
        error.code(),
        error.message().unwrap_or("no message")
    )
}
