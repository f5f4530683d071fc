//! krane-api: the thin front of krane. It validates a call, durably stores the resulting command
//! in JetStream and answers at once; reads come from the KV projection, never from Docker.
//!
//! - [`gateways`]: the three GatewayService handlers.
//! - [`errors`]: how validation and storage failures become Connect/gRPC codes.
//! - [`config`]: command-line flags and environment variables.
//! - [`decode`]: request bodies decoded up front, so bad ones are refused naming the field.
//! - [`refusal`]: how calls refused in front of the handlers are answered, per protocol.
//!
//! One port serves Connect (JSON and binary, HTTP/1.1 and h2c) and gRPC, told apart by
//! content type (connectrpc-axum in front of tonic).

pub mod config;
pub mod decode;
pub mod errors;
pub mod gateways;
pub mod refusal;

use connectrpc_axum::MakeServiceBuilder;
use krane_core::log::EventLog;
use krane_proto::krane::v1::gateway_service_connect::GatewayServiceTonicCompatibleBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Largest request body accepted; anything bigger is `resource_exhausted`.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Serves the API on `listener` until `stop` fires, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    log: EventLog,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (connect_router, grpc_service) = GatewayServiceTonicCompatibleBuilder::new()
        .create_gateway(gateways::create_gateway)
        .get_gateway(gateways::get_gateway)
        .delete_gateway(gateways::delete_gateway)
        .with_state(gateways::ApiState { log })
        .build();
    let grpc_service = grpc_service.max_decoding_message_size(MAX_REQUEST_BYTES);
    let service = MakeServiceBuilder::new()
        .receive_max_bytes(MAX_REQUEST_BYTES)
        .add_router(connect_router)
        .add_grpc_service(grpc_service)
        .build();
    // Bodies are checked before Connect/gRPC dispatch.
    let service = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn(decode::check_request_body))
        .service(service);
    info!(address = %listener.local_addr()?, "krane-api listening (Connect + gRPC)");
    axum::serve(listener, tower::make::Shared::new(service))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    Ok(())
}
