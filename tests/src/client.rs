//! One client interface over the three protocols the API speaks: Connect with JSON, Connect with
//! binary protobuf (both through the generated connectrpc-axum client) and gRPC (tonic).

use connectrpc_axum_client::ClientError;
use krane_proto::krane::v1::gateway_service_client::GatewayServiceClient as GrpcClient;
use krane_proto::krane::v1::gateway_service_connect_client::GatewayServiceClient as ConnectClient;
use krane_proto::krane::v1::{
    CreateGatewayRequest, CreateGatewayResponse, DeleteGatewayRequest, GatewayRequest,
    GetGatewayRequest, GetGatewayResponse, UpdateGatewayRequest, UpdateGatewayResponse,
};
use std::net::SocketAddr;
use std::time::Duration;

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
pub const UNAVAILABLE: i32 = 14;

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
}

impl TestClient {
    pub fn new(protocol: Protocol, api: SocketAddr) -> Self {
        Self {
            protocol,
            base_url: format!("http://{api}"),
        }
    }

    fn connect(&self) -> ConnectClient {
        let builder =
            ConnectClient::builder(self.base_url.clone()).timeout(Duration::from_secs(10));
        let builder = match self.protocol {
            Protocol::ConnectProto => builder.use_proto(),
            _ => builder.use_json(),
        };
        builder.build().expect("build the Connect client")
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
                .create_gateway(request)
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
                .update_gateway(request)
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
            Protocol::Grpc => Ok(self.grpc().await.get_gateway(request).await?.into_inner()),
            _ => Ok(self.connect().get_gateway(&request).await?.into_inner()),
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
                .delete_gateway(request)
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
    }
}
