//! The identity of a caller's verified client certificate (mutual TLS, `--tls-client-ca`):
//! the names the credentials file's `[[clients]]` entries are matched against. The TLS layer
//! attaches it to every request of the connection.

/// The names of a verified client certificate: its URI subject alternative names (SPIFFE IDs),
/// then its DNS names, then its subject's common name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub names: Vec<String>,
}
