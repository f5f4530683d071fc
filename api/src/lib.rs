//! krane-api: the thin front of krane. It validates a call, durably stores the resulting command
//! in JetStream and answers at once; reads come from the KV projection, never from Docker.
//!
//! - [`gateways`]: the GatewayService handlers; [`watch`]: the WatchGateway stream;
//!   [`history`]: ListGatewayEvents and FollowGatewayEvents, a gateway's commands and
//!   observations; [`hosts`]: ListHosts, each host's heartbeat with its capacity, reservations
//!   and what is free; [`export`]: ExportLog, the log of a namespace for `krane log export`.
//! - [`health`]: gRPC health, following the NATS connection.
//! - [`connect_reflection`]: server reflection over the Connect protocol as well.
//! - [`convert`]: wire messages to and from the model (`krane.v1` ↔ `krane_core`).
//! - [`errors`]: how validation and storage failures become Connect/gRPC codes.
//! - [`config`]: command-line flags and environment variables.
//! - [`auth`]: who may call (bearer tokens, client certificates) and what they may do.
//! - [`decode`]: request bodies decoded up front, so bad ones are refused naming the field.
//! - [`refusal`]: how calls refused in front of the handlers are answered, per protocol.
//! - [`rpc_telemetry`]: the span and the metrics of every call.
//! - [`tls`]: HTTPS (and mutual TLS) on the same port.
//!
//! One port serves Connect (JSON and binary, HTTP/1.1 and h2c, or both over TLS), gRPC and
//! gRPC-Web, told apart by content type (connectrpc-axum in front of tonic), with gRPC health
//! and server reflection.

pub mod auth;
pub mod config;
pub mod connect_reflection;
pub mod convert;
pub mod decode;
pub mod errors;
pub mod export;
pub mod gateways;
pub mod health;
pub mod history;
pub mod hosts;
pub mod refusal;
pub mod rpc_telemetry;
pub mod tls;
pub mod watch;

use connectrpc_axum::MakeServiceBuilder;
use krane_proto::krane::v1::gateway_service_connect::GatewayServiceTonicCompatibleBuilder;
use krane_store::Store;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Largest request body accepted; anything bigger is `resource_exhausted`.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How the API is served, beyond where and on what.
#[derive(Clone, Default)]
pub struct ApiOptions {
    /// When set, every call must carry `Authorization: Bearer <token>` ([`auth`]); this token
    /// may do everything.
    pub auth_token: Option<String>,
    /// Scoped tokens and client identities (`--auth-tokens-file`), reloaded on SIGHUP.
    pub auth_tokens_file: Option<std::path::PathBuf>,
    /// The images Create and Update may ask for (`--allowed-images`; empty: any).
    pub allowed_images: krane_core::images::ImagePolicy,
    /// Serve HTTPS instead of plaintext; with a client CA, client certificates authenticate.
    pub tls: Option<tls::TlsSettings>,
}

impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.auth_token.as_ref().map(|_| "…");
        formatter
            .debug_struct("ApiOptions")
            .field("auth_token", &token)
            .field("auth_tokens_file", &self.auth_tokens_file)
            .field("allowed_images", &self.allowed_images)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Serves the API on `listener` until `stop` fires, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    options: ApiOptions,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // Certificates, keys and credentials are read first: a bad file stops the start before
    // anything runs.
    let acceptor = options.tls.as_ref().map(tls::acceptor).transpose()?;
    let client_certificates = options
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca.is_some());
    let authenticator = auth::Authenticator::new(auth::AuthSettings {
        auth_token: options.auth_token.clone(),
        tokens_file: options.auth_tokens_file.clone(),
        client_certificates,
    })?;
    if let Some(authenticator) = authenticator.as_ref().filter(|a| a.reloads()) {
        auth::reload_on_hangup(authenticator.clone(), stop.clone())?;
    }
    let (connect_router, grpc_service) = GatewayServiceTonicCompatibleBuilder::new()
        .create_gateway(gateways::create_gateway)
        .get_gateway(gateways::get_gateway)
        .delete_gateway(gateways::delete_gateway)
        .update_gateway(gateways::update_gateway)
        .list_gateways(gateways::list_gateways)
        .watch_gateway(watch::watch_gateway)
        .list_gateway_events(history::list_gateway_events)
        .follow_gateway_events(history::follow_gateway_events)
        .list_hosts(hosts::list_hosts)
        .export_log(export::export_log)
        .with_state(gateways::ApiState {
            images: Arc::new(options.allowed_images.clone()),
            store: store.clone(),
            stop: stop.clone(),
        })
        .build();
    // gzip both ways, as gRPC clients (and Connect clients, handled by connectrpc-axum) may send.
    let grpc_service = grpc_service
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let health = health::service(store, stop.clone()).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(krane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let grpc_web = || tower::ServiceBuilder::new().layer(tonic_web::GrpcWebLayer::new());
    let service = MakeServiceBuilder::new()
        .receive_max_bytes(MAX_REQUEST_BYTES)
        .add_router(connect_router)
        .add_grpc_service(grpc_web().service(grpc_service))
        .add_grpc_service(grpc_web().service(health))
        .add_axum_router_raw(connect_reflection::router(reflection.clone()))
        .add_grpc_service(grpc_web().service(reflection))
        .build();
    // Outermost first: span and metrics, credentials, the body check, Connect/gRPC dispatch.
    let authenticated = authenticator.is_some();
    let (checked, open) = match authenticator {
        Some(authenticator) => (
            Some(axum::middleware::from_fn_with_state(
                authenticator,
                auth::authenticate,
            )),
            None,
        ),
        None => (None, Some(axum::middleware::from_fn(auth::let_everyone_in))),
    };
    let service = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn(rpc_telemetry::trace_rpc))
        .option_layer(checked)
        .option_layer(open)
        .layer(axum::middleware::from_fn(decode::check_request_body))
        .service(service);
    info!(
        address = %listener.local_addr()?,
        authenticated,
        tls = acceptor.is_some(),
        client_certificates,
        "krane-api listening (Connect + gRPC)"
    );
    match acceptor {
        Some(acceptor) => tls::serve(listener, acceptor, service, stop).await?,
        None => {
            axum::serve(listener, tower::make::Shared::new(service))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await?
        }
    }
    Ok(())
}
