//! krane-platform: what every krane process needs around its own work, and nothing of the model.
//!
//! - [`telemetry`]: log lines (text or JSON) and spans, and the W3C trace context carried in
//!   NATS and HTTP headers, so one trace follows a call from the API through NATS to the worker.
//! - [`otlp`]: OpenTelemetry span export, configured by the standard `OTEL_*` variables;
//!   [`otlp_tls`]: its TLS (`https://` endpoints, `OTEL_EXPORTER_OTLP_CERTIFICATE`).
//! - [`metrics`]: the process-wide Prometheus registry and the `/metrics` listener.
//! - [`shutdown`]: SIGTERM/SIGINT turned into one cancellation token every loop takes.
//! - [`crypto`]: the rustls provider (`ring`) every TLS connection of the process uses.

pub mod crypto;
pub mod metrics;
pub mod otlp;
pub mod otlp_tls;
pub mod shutdown;
pub mod telemetry;
