//! The process's TLS crypto: rustls with the `ring` provider, installed once as the process
//! default before any TLS client or server is built (the HTTPS API, OTLP export over TLS, and
//! any library client that asks rustls for its default).

/// Installs `ring` as the process's rustls provider; later calls (or one that lost a race
/// with another installer) change nothing.
pub fn install_default_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
