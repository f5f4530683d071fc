//! The connection to the API: the generated Connect client (JSON), with the token, TLS for an
//! `https://` API (a CA of its own, a client certificate) and a call deadline, and the two calls both the commands and the progress display use.

use crate::args::{Cli, Output, Target};
use anyhow::Context;
use futures::{Stream, StreamExt};
use krane_proto::krane::v1::gateway_service_connect_client::GatewayServiceClient;
use krane_proto::krane::v1::{
    ExportLogRequest, FollowGatewayEventsResponse, GetGatewayRequest, GetGatewayResponse,
    ListGatewayEventsRequest, LogEntry, WatchGatewayRequest, WatchGatewayResponse,
};
use std::time::Duration;

pub struct Api {
    pub client: GatewayServiceClient,
    /// The same, without a call deadline, for streams that stay open (watch, history follow).
    streaming: GatewayServiceClient,
    pub output: Output,
}

impl Api {
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        Ok(Self {
            client: connect(cli, Some(Duration::from_secs(10)))?,
            streaming: connect(cli, None)?,
            output: cli.output,
        })
    }

    /// WatchGateway: the gateway's states as they change; the stream ends once it is gone.
    pub async fn watch(
        &self,
        target: &Target,
    ) -> anyhow::Result<impl futures::Stream<Item = anyhow::Result<WatchGatewayResponse>>> {
        let request = WatchGatewayRequest {
            namespace: target.namespace.clone(),
            gateway_id: target.id.clone(),
        };
        let updates = self
            .streaming
            .watch_gateway(&request)
            .await
            .map_err(|error| call_error("WatchGateway", error))?
            .into_inner();
        Ok(updates.map(|update| update.map_err(|error| call_error("WatchGateway", error))))
    }

    /// FollowGatewayEvents: the gateway's history, then each new entry as it is stored.
    pub async fn follow_history(
        &self,
        request: &ListGatewayEventsRequest,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<FollowGatewayEventsResponse>>> {
        let entries = self
            .streaming
            .follow_gateway_events(request)
            .await
            .map_err(|error| call_error("FollowGatewayEvents", error))?
            .into_inner();
        Ok(entries.map(|entry| entry.map_err(|error| call_error("FollowGatewayEvents", error))))
    }

    /// ExportLog: the stored log of a namespace (or of all), oldest first; the stream ends
    /// after the last entry.
    pub async fn export_log(
        &self,
        request: &ExportLogRequest,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<LogEntry>>> {
        let entries = self
            .streaming
            .export_log(request)
            .await
            .map_err(|error| call_error("ExportLog", error))?
            .into_inner();
        Ok(entries.map(|entry| entry.map_err(|error| call_error("ExportLog", error))))
    }

    /// GetGateway; `Ok(None)` when the gateway does not exist.
    pub async fn get(&self, target: &Target) -> anyhow::Result<Option<GetGatewayResponse>> {
        let request = GetGatewayRequest {
            namespace: target.namespace.clone(),
            gateway_id: target.id.clone(),
        };
        match self.client.get_gateway(&request).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(error) if error.code() as i32 == 5 => Ok(None),
            Err(error) => Err(call_error("GetGateway", error)),
        }
    }
}

fn connect(cli: &Cli, deadline: Option<Duration>) -> anyhow::Result<GatewayServiceClient> {
    let mut builder = GatewayServiceClient::builder(cli.api.trim_end_matches('/')).use_json();
    if let Some(deadline) = deadline {
        builder = builder.timeout(deadline);
    }
    if let Some(token) = &cli.token {
        builder = builder
            .try_default_header("authorization", format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
    }
    if let Some(tls) = tls_config(cli)? {
        let transport = connectrpc_axum_client::HyperTransport::builder()
            .tls_config(tls)
            .build()
            .map_err(|error| anyhow::anyhow!("cannot set up TLS: {error}"))?;
        builder = builder.with_transport(transport);
    }
    builder.build().context("cannot build the API client")
}

/// TLS for an `https://` API when `--tls-ca` or a client certificate is given (rustls with
/// `ring`); without either, the system's roots.
fn tls_config(cli: &Cli) -> anyhow::Result<Option<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if cli.tls_ca.is_none() && cli.tls_client_cert.is_none() {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &cli.tls_ca {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("--tls-ca {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("--tls-ca {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("--tls-ca {}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot use is skipped.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    // The transport sets ALPN (h2, HTTP/1.1) itself.
    let config = match (&cli.tls_client_cert, &cli.tls_client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("--tls-client-cert {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("--tls-client-key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key do not go together")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

pub fn call_error(rpc: &str, error: connectrpc_axum_client::ClientError) -> anyhow::Error {
    anyhow::anyhow!(
        "{rpc} failed ({:?}): {}",
        error.code(),
        error.message().unwrap_or("no message")
    )
}
