//! Certificates made at test time (rcgen): a CA, a server certificate for `localhost` and
//! `127.0.0.1`, client certificates (valid, expired, or from another CA), written as PEM files
//! for `--tls-*` flags, and clients that trust that CA (reqwest with rustls, tonic).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA of its own and the server's certificate, in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_pem: String,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = params.self_signed(&key).expect("self-sign the CA").pem();
    (params, key, pem)
}

impl TestPki {
    pub fn new() -> Self {
        let (ca_params, ca_key, ca_pem) = ca("krane test CA");
        let pki = Self {
            dir: tempfile::tempdir().expect("a temp dir"),
            ca_params,
            ca_key,
            ca_pem,
        };
        let key = KeyPair::generate().expect("a server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params
            .signed_by(&key, &Issuer::from_params(&pki.ca_params, &pki.ca_key))
            .expect("sign the server certificate");
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).expect("write");
        std::fs::write(pki.path("server.pem"), cert.pem()).expect("write");
        std::fs::write(pki.path("server.key"), key.serialize_pem()).expect("write");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--tls-cert`, `--tls-key` and, with `client_ca`, `--tls-client-ca` of this CA.
    pub fn server_settings(&self, client_ca: bool) -> krane_api::tls::TlsSettings {
        krane_api::tls::TlsSettings {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// A client certificate of this CA naming `uri` (a SPIFFE ID), valid now.
    pub fn client(&self, uri: &str) -> ClientCert {
        self.client_valid(
            uri,
            rcgen::date_time_ymd(2000, 1, 1),
            rcgen::date_time_ymd(4000, 1, 1),
        )
    }

    /// Writes `client`'s certificate and key as `<name>.pem` and `<name>.key`; their paths.
    pub fn write_client(&self, name: &str, client: &ClientCert) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert, &client.cert_pem).expect("write");
        std::fs::write(&key, &client.key_pem).expect("write");
        (cert, key)
    }

    /// A client certificate of this CA naming `uri` that expired in 2001.
    pub fn expired_client(&self, uri: &str) -> ClientCert {
        self.client_valid(
            uri,
            rcgen::date_time_ymd(2000, 1, 1),
            rcgen::date_time_ymd(2001, 1, 1),
        )
    }

    fn client_valid(
        &self,
        uri: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> ClientCert {
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        client_signed_by(uri, &issuer, not_before, not_after)
    }

    /// A client certificate naming `uri`, valid now, from a CA the server does not know.
    pub fn foreign_client(uri: &str) -> ClientCert {
        let (params, key, _) = ca("someone else's CA");
        let issuer = Issuer::from_params(&params, &key);
        client_signed_by(
            uri,
            &issuer,
            rcgen::date_time_ymd(2000, 1, 1),
            rcgen::date_time_ymd(4000, 1, 1),
        )
    }

    /// A rustls client configuration trusting this CA, presenting `client` if given, offering
    /// `alpn` (`h2`, `http/1.1`).
    pub fn rustls_client(
        &self,
        client: Option<&ClientCert>,
        alpn: &[&str],
    ) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM"))
            .expect("trust the CA");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match client {
            Some(client) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("key"),
                )
                .expect("a client identity"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }

    /// An HTTPS client (reqwest) trusting this CA: h2 or HTTP/1.1 by ALPN, or HTTP/1.1 only.
    pub fn https_client(&self, client: Option<&ClientCert>, http1_only: bool) -> reqwest::Client {
        let alpn: &[&str] = if http1_only {
            &["http/1.1"]
        } else {
            &["h2", "http/1.1"]
        };
        krane_platform::crypto::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(self.rustls_client(client, alpn))
            .timeout(std::time::Duration::from_secs(10));
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().expect("an HTTPS client")
    }

    /// A gRPC channel to `https://localhost:<port>` trusting this CA.
    pub async fn grpc_channel(
        &self,
        port: u16,
        client: Option<&ClientCert>,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some(client) = client {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                &client.cert_pem,
                &client.key_pem,
            ));
        }
        tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
            .expect("URL")
            .tls_config(tls)?
            .connect()
            .await
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn client_signed_by(
    uri: &str,
    issuer: &Issuer<'_, &KeyPair>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> ClientCert {
    let key = KeyPair::generate().expect("a client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .subject_alt_names
        .push(SanType::URI(uri.try_into().expect("a URI")));
    params
        .distinguished_name
        .push(DnType::CommonName, "krane test client");
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign the client certificate");
    ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
