//! The identity of a caller's verified client certificate (mutual TLS, `--tls-client-ca`):
//! the names the credentials file's `[[clients]]` entries are matched against. The TLS layer
//! (`crate::tls`) attaches it to every request of the connection, after rustls verified the
//! certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The names of a verified client certificate: its URI subject alternative names (SPIFFE IDs),
/// then its DNS names, then its subject's common name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub names: Vec<String>,
}

impl ClientIdentity {
    /// The names of a DER certificate; `None` if it does not parse or names nothing.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut uris = Vec::new();
        let mut dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(uri.to_string()),
                    GeneralName::DNSName(name) => dns.push(name.to_string()),
                    _ => {}
                }
            }
        }
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string));
        let names: Vec<String> = uris.into_iter().chain(dns).chain(common_names).collect();
        (!names.is_empty()).then_some(Self { names })
    }
}
