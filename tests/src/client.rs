//! One client interface over the three protocols the API speaks: Connect with JSON, Connect with
//! binary protobuf (both through the generated connectrpc-axum client) and gRPC (tonic).
//! `watch` and `follow_history` hand a server stream over a channel, whatever the protocol.

use connectrpc_axum_client::ClientError;
use futures::{Stream, StreamExt};
use krane_proto::krane::v1::gateway_service_client::GatewayServiceClient as GrpcClient;
use krane_proto::krane::v1::gateway_service_connect_client::GatewayServiceClient as ConnectClient;
use krane_proto::krane::v1::{
    CreateGatewayRequest, CreateGatewayResponse, DeleteGatewayRequest, ExportLogRequest,
    FollowGatewayEventsResponse, GatewayRequest, GetGatewayRequest, GetGatewayResponse,
    ListGatewayEventsRequest, ListGatewayEventsResponse, ListGatewaysRequest, ListGatewaysResponse,
    ListHostsRequest, ListHostsResponse, LogEntry, UpdateGatewayRequest, UpdateGatewayResponse,
    WatchGatewayRequest, WatchGatewayResponse,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a watch delivers: each state, or the error that ended it. The channel closes when the
/// stream ends.
pub type WatchUpdates = mpsc::UnboundedReceiver<Result<WatchGatewayResponse, RpcError>>;

/// What a history follow delivers: each entry, or the error that ended it.
pub type Followed = mpsc::UnboundedReceiver<Result<FollowGatewayEventsResponse, RpcError>>;

/// Sends a server stream's messages on until it ends, fails (the error is returned) or the
/// receiver is dropped.
async fn forward<T, E: Into<RpcError>>(
    messages: impl Stream<Item = Result<T, E>>,
    sender: &mpsc::UnboundedSender<Result<T, RpcError>>,
) -> Result<(), RpcError> {
    let mut messages = std::pin::pin!(messages);
    while let Some(message) = messages.next().await {
        if sender.send(Ok(message.map_err(Into::into)?)).is_err() {
            break;
        }
    }
    Ok(())
}

/// Calls the server-streaming `$method` with `$request` over `$client`'s protocol from a task
/// of its own, and answers a channel with the stream's messages (and the error that ends it,
/// if any, last), which closes when the stream ends.
macro_rules! forward_stream {
    ($client:expr, $method:ident, $request:expr) => {{
        let client = TestClient::new_like($client);
        let request = $request;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let result = match client.protocol {
                Protocol::Grpc => {
                    let mut grpc = client.grpc().await;
                    match grpc.$method(client.grpc_request(request)).await {
                        Ok(response) => forward(response.into_inner(), &sender).await,
                        Err(status) => Err(status.into()),
                    }
                }
                _ => {
                    let connect = client.connect_with_timeout(WATCH_TIMEOUT);
                    match connect.$method(&request).await {
                        Ok(response) => forward(response.into_inner(), &sender).await,
                        Err(error) => Err(error.into()),
                    }
                }
            };
            if let Err(error) = result {
                let _ = sender.send(Err(error));
            }
        });
        receiver
    }};
}

/// Longest a watch may stay open in a test.
const WATCH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    ConnectJson,
    ConnectProto,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Self::ConnectJson, Self::ConnectProto, Self::Grpc];
}

/// A failed call: the code number is shared by Connect and gRPC (3 = invalid_argument, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

pub const INVALID_ARGUMENT: i32 = 3;
pub const NOT_FOUND: i32 = 5;
pub const PERMISSION_DENIED: i32 = 7;
pub const UNAVAILABLE: i32 = 14;
pub const UNAUTHENTICATED: i32 = 16;

impl From<ClientError> for RpcError {
    fn from(error: ClientError) -> Self {
        Self {
            code: error.code() as i32,
            message: error.message().unwrap_or_default().to_string(),
        }
    }
}

impl From<tonic::Status> for RpcError {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: status.code() as i32,
            message: status.message().to_string(),
        }
    }
}

pub struct TestClient {
    protocol: Protocol,
    base_url: String,
    /// Bearer token sent with every Connect call.
    token: Option<String>,
}

impl TestClient {
    pub fn new(protocol: Protocol, api: SocketAddr) -> Self {
        Self {
            protocol,
            base_url: format!("http://{api}"),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    fn connect(&self) -> ConnectClient {
        self.connect_with_timeout(Duration::from_secs(10))
    }

    fn connect_with_timeout(&self, timeout: Duration) -> ConnectClient {
        let mut builder = ConnectClient::builder(self.base_url.clone()).timeout(timeout);
        if let Some(token) = &self.token {
            builder = builder.default_header("authorization", format!("Bearer {token}"));
        }
        let builder = match self.protocol {
            Protocol::ConnectProto => builder.use_proto(),
            _ => builder.use_json(),
        };
        builder.build().expect("build the Connect client")
    }

    /// A gRPC request carrying the client's token, if any.
    fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .expect("a token is a valid metadata value");
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    async fn grpc(&self) -> GrpcClient<tonic::transport::Channel> {
        GrpcClient::connect(self.base_url.clone())
            .await
            .expect("connect the gRPC client")
    }

    pub async fn create(
        &self,
        gateway: Option<GatewayRequest>,
    ) -> Result<CreateGatewayResponse, RpcError> {
        let request = CreateGatewayRequest { gateway };
        match self.protocol {
            Protocol::Grpc => Ok(self
                .grpc()
                .await
                .create_gateway(self.grpc_request(request))
                .await?
                .into_inner()),
            _ => Ok(self.connect().create_gateway(&request).await?.into_inner()),
        }
    }

    pub async fn update(&self, gateway: GatewayRequest) -> Result<UpdateGatewayResponse, RpcError> {
        let request = UpdateGatewayRequest {
            gateway: Some(gateway),
        };
        match self.protocol {
            Protocol::Grpc => Ok(self
                .grpc()
                .await
                .update_gateway(self.grpc_request(request))
                .await?
                .into_inner()),
            _ => Ok(self.connect().update_gateway(&request).await?.into_inner()),
        }
    }

    pub async fn get(
        &self,
        namespace: &str,
        gateway_id: &str,
    ) -> Result<GetGatewayResponse, RpcError> {
        let request = GetGatewayRequest {
            namespace: namespace.into(),
            gateway_id: gateway_id.into(),
        };
        match self.protocol {
            Protocol::Grpc => Ok(self
                .grpc()
                .await
                .get_gateway(self.grpc_request(request))
                .await?
                .into_inner()),
            _ => Ok(self.connect().get_gateway(&request).await?.into_inner()),
        }
    }

    pub async fn list(&self, namespace: &str) -> Result<ListGatewaysResponse, RpcError> {
        let request = ListGatewaysRequest {
            namespace: namespace.into(),
        };
        match self.protocol {
            Protocol::Grpc => Ok(self
                .grpc()
                .await
                .list_gateways(self.grpc_request(request))
                .await?
                .into_inner()),
            _ => Ok(self.connect().list_gateways(&request).await?.into_inner()),
        }
    }

    pub async fn history(
        &self,
        namespace: &str,
        gateway_id: &str,
    ) -> Result<ListGatewayEventsResponse, RpcError> {
        let request = ListGatewayEventsRequest {
            namespace: namespace.into(),
            gateway_id: gateway_id.into(),
            limit: 0,
        };
        match self.protocol {
            Protocol::Grpc => Ok(self
                .grpc()
                .await
                .list_gateway_events(self.grpc_request(request))
                .await?
                .into_inner()),
            _ => Ok(self
                .connect()
                .list_gateway_events(&request)
                .await?
                .into_inner()),
        }
    }

    pub async fn hosts(&self) -> Result<ListHostsResponse, RpcError> {
        let request = ListHostsRequest {};
        match self.protocol {
            Protocol::Grpc => Ok(self
                .grpc()
                .await
                .list_hosts(self.grpc_request(request))
                .await?
                .into_inner()),
            _ => Ok(self.connect().list_hosts(&request).await?.into_inner()),
        }
    }

    /// Starts WatchGateway; its updates (and the error that ends it, if any) arrive on the
    /// returned channel, which closes when the stream ends.
    pub fn watch(&self, namespace: &str, gateway_id: &str) -> WatchUpdates {
        let request = WatchGatewayRequest {
            namespace: namespace.into(),
            gateway_id: gateway_id.into(),
        };
        forward_stream!(self, watch_gateway, request)
    }

    /// Starts FollowGatewayEvents: the history, then each new entry, on the returned channel
    /// (the error that ends the stream, if any, last).
    pub fn follow_history(&self, namespace: &str, gateway_id: &str) -> Followed {
        let request = ListGatewayEventsRequest {
            namespace: namespace.into(),
            gateway_id: gateway_id.into(),
            limit: 0,
        };
        forward_stream!(self, follow_gateway_events, request)
    }

    /// Starts ExportLog of `namespace` ("": every namespace): its entries, then the channel
    /// closes (the error that ends the stream, if any, last).
    pub fn export_log(
        &self,
        namespace: &str,
    ) -> mpsc::UnboundedReceiver<Result<LogEntry, RpcError>> {
        let request = ExportLogRequest {
            namespace: namespace.into(),
            ..Default::default()
        };
        forward_stream!(self, export_log, request)
    }

    fn new_like(other: &Self) -> Self {
        Self {
            protocol: other.protocol,
            base_url: other.base_url.clone(),
            token: other.token.clone(),
        }
    }

    pub async fn delete(&self, namespace: &str, gateway_id: &str) -> Result<(), RpcError> {
        let request = DeleteGatewayRequest {
            namespace: namespace.into(),
            gateway_id: gateway_id.into(),
        };
        match self.protocol {
            Protocol::Grpc => self
                .grpc()
                .await
                .delete_gateway(self.grpc_request(request))
                .await
                .map(|_| ())?,
            _ => self.connect().delete_gateway(&request).await.map(|_| ())?,
        }
        Ok(())
    }
}

/// A valid request for the test gateway image.
pub fn gateway_request(namespace: &str, gateway_id: &str, replicas: u32) -> GatewayRequest {
    GatewayRequest {
        namespace: namespace.into(),
        workspace_id: "ws_test".into(),
        gateway_id: gateway_id.into(),
        image: crate::TEST_IMAGE.into(),
        replicas,
        cpu_millicores: 100,
        memory_size_mib: 16,
        update_policy: None,
    }
}
