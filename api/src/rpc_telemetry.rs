//! What the API tells operators about each GatewayService call, in front of everything else
//! (so calls refused for credentials or bodies count too): a `rpc` span (fields `rpc`, `caller`,
//! `namespace`, `gateway`, `code`; a child of the caller's `traceparent`, if any, and the parent
//! of the command it stores), and the metrics `krane_api_calls_total{rpc,code}` and
//! `krane_api_call_duration_seconds{rpc}`. Handlers add the gateway with [`gateway`].
//!
//! The code is the call's outcome as the caller sees it: `ok`, or the Connect/gRPC code name
//! (from `grpc-status` for gRPC, from the error body for Connect). Streams count when their
//! response starts.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use krane_core::names::GatewayKey;
use krane_platform::metrics::{latency_buckets, register};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::LazyLock;
use std::time::Instant;
use tracing::field::Empty;
use tracing::{Instrument, Span};

const SERVICE_PREFIX: &str = "/krane.v1.GatewayService/";

/// The GatewayService methods counted by name; any other path is counted under no method here.
const METHODS: &[&str] = &[
    "CreateGateway",
    "GetGateway",
    "DeleteGateway",
    "UpdateGateway",
    "ListGateways",
    "WatchGateway",
    "ListGatewayEvents",
    "FollowGatewayEvents",
    "ListHosts",
    "ExportLog",
];

/// Connect code names, indexed by their gRPC status number.
const CODES: [&str; 17] = [
    "ok",
    "canceled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// Largest Connect error body read to learn its code (they are a few hundred bytes).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    rpc: &'static str,
}

struct ApiMetrics {
    calls: Family<CallLabels, Counter>,
    durations: Family<RpcLabel, Histogram>,
}

static METRICS: LazyLock<ApiMetrics> = LazyLock::new(|| ApiMetrics {
    calls: register(
        "api_calls",
        "GatewayService calls answered, by RPC and code (ok = accepted)",
        Family::default(),
    ),
    durations: register(
        "api_call_duration_seconds",
        "Time to answer a GatewayService call (to the start of the response for streams)",
        Family::new_with_constructor(|| Histogram::new(latency_buckets())),
    ),
});

/// Registers the API's metrics, so they are listed before the first call.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// Records the gateway a call is about on the call's span.
pub fn gateway(key: &GatewayKey) {
    let span = Span::current();
    span.record("namespace", key.namespace.as_str());
    span.record("gateway", key.gateway_id.as_str());
}

/// Records the namespace a call is about on the call's span.
pub fn namespace(namespace: &str) {
    Span::current().record("namespace", namespace);
}

/// Records who the call's caller is (its credentials' name, never a token) on the call's span.
pub fn caller(name: &str) {
    Span::current().record("caller", name);
}

/// Middleware (`axum::middleware::from_fn`) around every call.
pub async fn trace_rpc(request: Request, next: Next) -> Response {
    let Some(rpc) = method_of(request.uri().path()) else {
        return next.run(request).await;
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("krane.v1.GatewayService/{rpc}"),
        otel.kind = "server",
        rpc,
        caller = Empty,
        namespace = Empty,
        gateway = Empty,
        code = Empty,
        otel.status_code = Empty,
    );
    krane_platform::telemetry::set_parent_from_http(&span, request.headers());
    let started = Instant::now();
    let grpc = is_grpc(&request);
    let (response, code) = async {
        let response = next.run(request).await;
        code_of(response, grpc).await
    }
    .instrument(span.clone())
    .await;
    span.record("code", code);
    if code != "ok" {
        span.record("otel.status_code", "ERROR");
    }
    METRICS.calls.get_or_create(&CallLabels { rpc, code }).inc();
    METRICS
        .durations
        .get_or_create(&RpcLabel { rpc })
        .observe(started.elapsed().as_secs_f64());
    response
}

fn method_of(path: &str) -> Option<&'static str> {
    let method = path.strip_prefix(SERVICE_PREFIX)?;
    METHODS.iter().copied().find(|known| *known == method)
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// The call's code; a Connect error body is read (it is small) and put back.
async fn code_of(response: Response, grpc: bool) -> (Response, &'static str) {
    if let Some(status) = response.headers().get("grpc-status") {
        let code = status
            .to_str()
            .ok()
            .and_then(|status| status.parse::<usize>().ok())
            .and_then(|status| CODES.get(status).copied())
            .unwrap_or("unknown");
        return (response, code);
    }
    if grpc || response.status() == StatusCode::OK {
        // gRPC successes carry their status in trailers; Connect streams start with 200.
        return (response, "ok");
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_LIMIT).await else {
        return (Response::from_parts(parts, Body::empty()), "unknown");
    };
    let code = serde_json::from_slice::<ConnectErrorBody>(&bytes)
        .ok()
        .and_then(|error| CODES.iter().copied().find(|code| *code == error.code))
        .unwrap_or("unknown");
    (Response::from_parts(parts, Body::from(bytes)), code)
}

#[derive(serde::Deserialize)]
struct ConnectErrorBody {
    code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_service_methods_are_counted() {
        assert_eq!(
            method_of("/krane.v1.GatewayService/CreateGateway"),
            Some("CreateGateway")
        );
        assert_eq!(method_of("/krane.v1.GatewayService/Nope"), None);
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), None);
    }

    #[tokio::test]
    async fn codes_come_from_grpc_status_or_the_connect_error_body() {
        let grpc = Response::builder()
            .header("grpc-status", "3")
            .body(Body::empty())
            .expect("response");
        assert_eq!(code_of(grpc, true).await.1, "invalid_argument");
        let ok = Response::new(Body::empty());
        assert_eq!(code_of(ok, false).await.1, "ok");
        let connect = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from(r#"{"code":"unavailable","message":"NATS"}"#))
            .expect("response");
        let (response, code) = code_of(connect, false).await;
        assert_eq!(code, "unavailable");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert!(body.starts_with(b"{\"code\""));
    }
}
