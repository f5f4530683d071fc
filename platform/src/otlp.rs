//! OTLP span export, used by the `telemetry` set-up when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The exporter is opentelemetry-otlp's, so the
//! standard `OTEL_EXPORTER_OTLP_*` variables apply (protocol `grpc` or `http/protobuf`, headers,
//! timeout); `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the service. An `https://`
//! endpoint is reached over TLS, verified against `OTEL_EXPORTER_OTLP_CERTIFICATE` if given
//! (with a client certificate from `…_CLIENT_CERTIFICATE` / `…_CLIENT_KEY`): see
//! [`crate::otlp_tls`].
//!
//! The SDK's batch processor exports from a plain thread, while the gRPC and HTTP clients need
//! a Tokio reactor: [`OnRuntime`] gives the exporter a small runtime of its own, so export never
//! depends on the application's runtime (which may be busy or shutting down).

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::sync::Arc;
use std::time::Duration;

/// Why OTLP export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("unsupported {variable}={value:?} (use `grpc` or `http/protobuf`)")]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(String),
    #[error("{variable}: {reason}")]
    Tls {
        variable: &'static str,
        reason: String,
    },
}

/// True when an OTLP endpoint is configured and the SDK is not disabled.
pub fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// A tracer provider exporting in batches over OTLP, for the service `default_service` unless
/// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
pub fn provider(default_service: &str) -> Result<SdkTracerProvider, OtlpError> {
    let protocol = protocol()?;
    let tls = crate::otlp_tls::endpoint_is_https()
        .then(crate::otlp_tls::ExportTls::from_env)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    let runtime = Arc::new(runtime);
    // Clients spawn their connection tasks on the runtime current while they are built.
    let exporter = {
        let _entered = runtime.enter();
        let builder = opentelemetry_otlp::SpanExporter::builder();
        match (protocol, &tls) {
            (opentelemetry_otlp::Protocol::Grpc, None) => builder.with_tonic().build(),
            (opentelemetry_otlp::Protocol::Grpc, Some(tls)) => {
                use opentelemetry_otlp::WithTonicConfig;
                builder.with_tonic().with_tls_config(tls.tonic()).build()
            }
            (_, None) => builder.with_http().with_protocol(protocol).build(),
            (_, Some(tls)) => {
                use opentelemetry_otlp::WithHttpConfig;
                let client = tls.reqwest(EXPORT_TIMEOUT)?;
                builder
                    .with_http()
                    .with_protocol(protocol)
                    .with_http_client(client)
                    .build()
            }
        }
    };
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            // Dropping a runtime inside async code panics; let it go on its own thread.
            std::thread::spawn(move || drop(runtime));
            return Err(OtlpError::Exporter(error.to_string()));
        }
    };
    Ok(SdkTracerProvider::builder()
        .with_resource(resource(default_service))
        .with_batch_exporter(OnRuntime {
            inner: exporter,
            runtime,
        })
        .build())
}

/// How long one export over HTTPS may take (the HTTP client's timeout; the SDK's default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
/// `http/protobuf` (the specification's default).
fn protocol() -> Result<opentelemetry_otlp::Protocol, OtlpError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        let Ok(value) = std::env::var(variable) else {
            continue;
        };
        return match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(opentelemetry_otlp::Protocol::Grpc),
            "http/protobuf" => Ok(opentelemetry_otlp::Protocol::HttpBinary),
            "" => continue,
            _ => Err(OtlpError::Protocol { variable, value }),
        };
    }
    Ok(opentelemetry_otlp::Protocol::HttpBinary)
}

fn resource(default_service: &str) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder
            .with_service_name(default_service.to_string())
            .build()
    }
}

/// A span exporter whose calls run on a runtime of its own.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // Called from the batch processor's own thread, never from async code.
        self.runtime.block_on(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
