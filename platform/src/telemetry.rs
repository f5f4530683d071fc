//! Logging and tracing set-up shared by the binaries: human-readable lines by default, JSON
//! with `--log-json`, level from `RUST_LOG` (default `info`). Spans are also exported over OTLP
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`crate::otlp`]), and the W3C trace context of
//! the current span travels with every command in NATS headers (`traceparent`), so a worker's
//! span for a command is a child of the API call that stored it.
//!
//! Spans about one gateway carry the fields `namespace` and `gateway` (the gateway id), so every
//! line logged inside them names the gateway.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use crate::otlp::OtlpError;

/// Logs only, no span export (tests and tools).
pub fn init_logging(json: bool) {
    let _ = subscriber(json, None).try_init();
}

/// Logs, and span export when configured; keep the returned value and call
/// [`Telemetry::shutdown`] before exiting so the last spans are sent.
pub fn init(json: bool, default_service: &str) -> Result<Telemetry, OtlpError> {
    let provider = if crate::otlp::configured() {
        Some(crate::otlp::provider(default_service)?)
    } else {
        None
    };
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    let tracer = provider.as_ref().map(|provider| provider.tracer("krane"));
    // A second init (tests starting several services in one process) keeps the first.
    let _ = subscriber(json, tracer).try_init();
    Ok(Telemetry { provider })
}

type Tracer = opentelemetry_sdk::trace::Tracer;

fn subscriber(json: bool, tracer: Option<Tracer>) -> impl SubscriberInitExt {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (text, json) = if json {
        (None, Some(tracing_subscriber::fmt::layer().json()))
    } else {
        (Some(tracing_subscriber::fmt::layer()), None)
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer)))
}

/// Span export of one process; flushes on [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still batched and stops exporting (blocks for at most a few seconds).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("OpenTelemetry: spans not flushed: {error}");
        }
    }
}

/// Adds the current span's trace context (`traceparent`, `tracestate`) to a message's headers.
pub fn with_trace_context(mut message: PublishMessage) -> PublishMessage {
    let context = tracing::Span::current().context();
    let mut fields = Vec::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Fields(&mut fields));
    });
    for (name, value) in fields {
        message = message.header(name.as_str(), value.as_str());
    }
    message
}

/// Makes `span` a child of the trace context in `headers`, if they carry one.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else {
        return;
    };
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&NatsHeaders(headers))
    });
    let _ = span.set_parent(parent);
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Injector for Fields<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct NatsHeaders<'a>(&'a HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(name, _)| AsRef::<str>::as_ref(name))
            .collect()
    }
}

/// Makes `span` a child of the caller's trace context in HTTP `headers`, if they carry one.
pub fn set_parent_from_http(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HttpHeaders(headers))
    });
    let _ = span.set_parent(parent);
}

struct HttpHeaders<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
