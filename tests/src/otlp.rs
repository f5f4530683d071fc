//! A local OTLP trace receiver for tests: gRPC (the collector's `TraceService`) or HTTP
//! (`POST /v1/traces` with a binary protobuf body) on 127.0.0.1, keeping every span it is sent
//! with the service that sent it. [`OtlpReceiver::start_tls`] serves the same over TLS with the
//! test CA's server certificate (gRPC also requiring a client certificate of that CA).

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    /// String attributes (tracing fields) of the span.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn env_value(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

pub struct OtlpReceiver {
    pub address: SocketAddr,
    tls: bool,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    pub async fn start(protocol: OtlpProtocol) -> Self {
        Self::serve(protocol, None).await
    }

    /// Over TLS with `pki`'s server certificate; the gRPC receiver also requires a client
    /// certificate of `pki`'s CA (mutual TLS), the HTTP one accepts any caller.
    pub async fn start_tls(protocol: OtlpProtocol, pki: &crate::tls::TestPki) -> Self {
        Self::serve(protocol, Some(pki)).await
    }

    async fn serve(protocol: OtlpProtocol, pki: Option<&crate::tls::TestPki>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let address = listener.local_addr().expect("receiver address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let sink = Sink(spans.clone());
        let until = stop.clone().cancelled_owned();
        match (protocol, pki) {
            (OtlpProtocol::Grpc, Some(pki)) => {
                let read = |name: &str| std::fs::read(pki.path(name)).expect("a PEM file");
                let tls = tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(
                        read("server.pem"),
                        read("server.key"),
                    ))
                    .client_ca_root(tonic::transport::Certificate::from_pem(&pki.ca_pem));
                let server = tonic::transport::Server::builder()
                    .tls_config(tls)
                    .expect("the receiver's TLS")
                    .add_service(TraceServiceServer::new(sink))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        until,
                    );
                tokio::spawn(server);
            }
            (OtlpProtocol::HttpProtobuf, Some(pki)) => {
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(http_export))
                    .with_state(sink);
                let acceptor =
                    krane_api::tls::acceptor(&pki.server_settings(false)).expect("TLS acceptor");
                tokio::spawn(krane_api::tls::serve(listener, acceptor, app, stop.clone()));
            }
            (OtlpProtocol::Grpc, None) => {
                let server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(sink))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        until,
                    );
                tokio::spawn(server);
            }
            (OtlpProtocol::HttpProtobuf, None) => {
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(http_export))
                    .with_state(sink);
                tokio::spawn(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(until)
                        .into_future(),
                );
            }
        }
        Self {
            address,
            tls: pki.is_some(),
            spans,
            stop,
        }
    }

    /// The value of `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn endpoint(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.address.port())
        } else {
            format!("http://{}", self.address)
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .map(|spans| spans.clone())
            .unwrap_or_default()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Sink {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| string_of(attribute.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(|attribute| {
                        let value = string_of(attribute.value.as_ref()?.value.as_ref()?)?;
                        Some((attribute.key.clone(), value))
                    })
                    .collect();
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes,
                });
            }
        }
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(received);
        }
    }
}

fn string_of(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(number) => Some(number.to_string()),
        Value::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(
    axum::extract::State(sink): axum::extract::State<Sink>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            sink.keep(request);
            let response = ExportTraceServiceResponse::default().encode_to_vec();
            ([("content-type", "application/x-protobuf")], response).into_response()
        }
        Err(error) => (axum::http::StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}
