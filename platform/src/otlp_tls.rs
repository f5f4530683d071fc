//! TLS for OTLP export, from the standard variables: an `https://` endpoint is verified
//! against the CA in `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` / `OTEL_EXPORTER_OTLP_CERTIFICATE`
//! (PEM), else the system's roots; `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY` present a client
//! certificate (mutual TLS). rustls with `ring` for both the gRPC (tonic) and the HTTP
//! (reqwest) exporter.

use super::otlp::OtlpError;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

/// What the exporter trusts and presents, read from the files the variables name.
#[derive(Debug, Default)]
pub struct ExportTls {
    ca_pem: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The first of `traces` and `general` that is set and not blank, with its name.
fn variable(traces: &'static str, general: &'static str) -> Option<(&'static str, String)> {
    [traces, general].into_iter().find_map(|name| {
        let value = std::env::var(name).ok()?;
        (!value.trim().is_empty()).then(|| (name, value.trim().to_string()))
    })
}

fn read(variable: &'static str, path: &str) -> Result<Vec<u8>, OtlpError> {
    std::fs::read(path).map_err(|error| OtlpError::Tls {
        variable,
        reason: format!("cannot read {path}: {error}"),
    })
}

/// Whether the configured endpoint is `https://` (the traces endpoint first, as the exporter
/// itself reads them).
pub fn endpoint_is_https() -> bool {
    variable(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    .is_some_and(|(_, endpoint)| endpoint.to_ascii_lowercase().starts_with("https://"))
}

impl ExportTls {
    /// The files the variables name, read now (a missing file is an error naming its variable).
    pub fn from_env() -> Result<Self, OtlpError> {
        let ca_pem = variable(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        )
        .map(|(name, path)| read(name, &path))
        .transpose()?;
        let cert = variable(
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        );
        let key = variable(
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        );
        let client = match (cert, key) {
            (Some((cert_name, cert)), Some((key_name, key))) => {
                Some((read(cert_name, &cert)?, read(key_name, &key)?))
            }
            (None, None) => None,
            (Some((variable, _)), None) | (None, Some((variable, _))) => {
                return Err(OtlpError::Tls {
                    variable,
                    reason: "a client certificate needs both …_CLIENT_CERTIFICATE and …_CLIENT_KEY"
                        .to_string(),
                });
            }
        };
        Ok(Self { ca_pem, client })
    }

    /// The gRPC exporter's TLS: the CA given, else the system's roots.
    pub fn tonic(&self) -> ClientTlsConfig {
        let config = match &self.ca_pem {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match &self.client {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }

    /// The HTTP exporter's client: rustls trusting the CA given, else the system's roots.
    pub fn reqwest(&self, timeout: Duration) -> Result<reqwest::Client, OtlpError> {
        let invalid = |variable: &'static str| {
            move |error: &dyn std::fmt::Display| OtlpError::Tls {
                variable,
                reason: error.to_string(),
            }
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(ca) => {
                let ca_error = invalid("OTEL_EXPORTER_OTLP_CERTIFICATE");
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|error| ca_error(&error))?;
                    roots.add(cert).map_err(|error| ca_error(&error))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system root rustls cannot use is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid("OTEL_EXPORTER_OTLP_ENDPOINT")(&error))?
            .with_root_certificates(roots);
        let config = match &self.client {
            Some((cert, key)) => {
                let cert_error = invalid("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE");
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| cert_error(&error))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|error| invalid("OTEL_EXPORTER_OTLP_CLIENT_KEY")(&error))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| cert_error(&error))?
            }
            None => builder.with_no_client_auth(),
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .timeout(timeout)
            .build()
            .map_err(|error| OtlpError::Exporter(error.to_string()))
    }
}
