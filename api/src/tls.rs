//! HTTPS on the API's one port (`--tls-cert`, `--tls-key`): rustls with the `ring` provider,
//! HTTP/1.1 and h2 chosen by ALPN, so Connect, gRPC and gRPC-Web are served over TLS exactly
//! as over plaintext. With `--tls-client-ca` (mutual TLS) a client certificate, when one is
//! presented, must chain to that CA and be valid now, or the handshake fails; a connection
//! without one is still accepted and its calls need a bearer token. The names of a verified
//! certificate ride on every request of its connection ([`ClientIdentity`]) for the
//! authentication in front of the handlers.

use crate::auth::peer::ClientIdentity;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tracing::{debug, info, warn};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's certificate, key and (for mutual TLS) the client CA are.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM: the server certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA(s) client certificates must chain to (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
}

/// The acceptor of `settings`; an error names the file at fault.
pub fn acceptor(settings: &TlsSettings) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates("--tls-cert", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|error| {
        anyhow::anyhow!(
            "--tls-key {}: no usable private key: {error}",
            settings.key.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &settings.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("--tls-client-ca", path)? {
                roots.add(cert).map_err(|error| {
                    anyhow::anyhow!("--tls-client-ca {}: {error}", path.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|error| anyhow::anyhow!("--tls-client-ca {}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|error| {
        anyhow::anyhow!(
            "--tls-cert {} / --tls-key {}: {error}",
            settings.cert.display(),
            settings.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The PEM certificates of `path`, given as `flag`; an error names both.
fn certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| anyhow::anyhow!("{flag} {}: {error}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{flag} {}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
}

/// Serves `service` over TLS on `listener` until `stop` fires, then lets open connections
/// finish (h2 gets a GOAWAY; open streams end as the handlers end them on `stop`).
pub async fn serve<S>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    service: S,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, service, http) = (acceptor.clone(), service.clone(), http.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    info!(%peer, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| ClientIdentity::from_der(cert.as_ref()));
            let service =
                service.map_request(move |request: http::Request<hyper::body::Incoming>| {
                    let mut request = request.map(Body::new);
                    if let Some(identity) = &identity {
                        request.extensions_mut().insert(identity.clone());
                    }
                    request
                });
            let connection = http.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_refused_naming_the_flag_and_the_file() {
        let dir = std::env::temp_dir().join(format!("krane-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let settings = |cert: &Path| TlsSettings {
            cert: cert.to_path_buf(),
            key: dir.join("missing.key"),
            client_ca: None,
        };
        let refusal = |cert: &Path| match acceptor(&settings(cert)) {
            Ok(_) => panic!("{} was accepted", cert.display()),
            Err(error) => error.to_string(),
        };
        let missing = refusal(&dir.join("missing.pem"));
        assert!(
            missing.starts_with("--tls-cert ") && missing.contains("missing.pem"),
            "{missing}"
        );
        let no_cert = refusal(&empty);
        assert!(no_cert.contains("no PEM certificate"), "{no_cert}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
