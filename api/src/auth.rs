//! Optional bearer-token authentication (`--auth-token` / `KRANE_AUTH_TOKEN`). When a token is
//! configured, every call, Connect or gRPC, must carry `Authorization: Bearer <token>`; any other
//! call is refused before its body is read: HTTP 401 with `{"code":"unauthenticated",…}` for
//! Connect, status `unauthenticated` for gRPC.
//!
//! The presented token is compared in constant time: both sides are hashed (SHA-256, so the
//! comparison does not even depend on the token's length) and the digests compared with
//! `subtle`.

use crate::refusal::Wire;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use connectrpc_axum::ConnectError;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The configured token, kept only as its digest.
#[derive(Clone)]
pub struct BearerAuth {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("BearerAuth(…)")
    }
}

/// Why a call was refused; the text goes back to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Repeated,
    NotBearer,
    Wrong,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing credentials: send `Authorization: Bearer <token>`",
            Self::Repeated => "more than one Authorization header",
            Self::NotBearer => "the Authorization header is not `Bearer <token>`",
            Self::Wrong => "invalid bearer token",
        }
    }
}

impl BearerAuth {
    /// Refuses an empty token: it would let anyone in who sends `Bearer` and a blank.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!token.is_empty(), "the auth token must not be empty");
        Ok(Self {
            digest: digest(token.as_bytes()),
        })
    }

    /// Accepts the headers of a call carrying exactly one `Authorization: Bearer <token>` with
    /// the configured token.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let presented = bearer_token(headers)?;
        if bool::from(digest(presented).ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The token of the one `Authorization` header, if it is `Bearer <token>` (scheme
/// case-insensitive, RFC 9110 §11.1).
fn bearer_token(headers: &HeaderMap) -> Result<&[u8], Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(Refusal::Missing)?;
    if values.next().is_some() {
        return Err(Refusal::Repeated);
    }
    let value = value.as_bytes().trim_ascii();
    let (scheme, token) = value
        .iter()
        .position(|&byte| byte == b' ')
        .map(|space| value.split_at(space))
        .ok_or(Refusal::NotBearer)?;
    let token = token.trim_ascii_start();
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(Refusal::NotBearer);
    }
    Ok(token)
}

/// Middleware (`axum::middleware::from_fn_with_state`) refusing calls without the token.
pub async fn require_bearer(
    State(auth): State<Arc<BearerAuth>>,
    request: Request,
    next: Next,
) -> Response {
    match auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::info!(
                path = request.uri().path(),
                reason = refusal.message(),
                "call refused: unauthenticated"
            );
            let error = ConnectError::new_unauthenticated(refusal.message())
                .with_meta(header::WWW_AUTHENTICATE, "Bearer realm=\"krane\"");
            Wire::of(&request).refuse(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        headers
    }

    #[test]
    fn the_right_bearer_token_is_accepted_in_any_scheme_case() {
        let auth = BearerAuth::new("s3cr3t").expect("token");
        for value in [
            "Bearer s3cr3t",
            "bearer s3cr3t",
            "BEARER   s3cr3t",
            " Bearer s3cr3t ",
        ] {
            assert_eq!(auth.check(&headers(&[value])), Ok(()), "{value:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let auth = BearerAuth::new("s3cr3t").expect("token");
        let cases: [(&[&str], Refusal); 10] = [
            (&[], Refusal::Missing),
            (&["Bearer s3cr3t", "Bearer s3cr3t"], Refusal::Repeated),
            (&["s3cr3t"], Refusal::NotBearer),
            (&["Basic s3cr3t"], Refusal::NotBearer),
            (&["Bearer"], Refusal::NotBearer),
            (&["Bearer "], Refusal::NotBearer),
            (&["Bearers3cr3t"], Refusal::NotBearer),
            (&["Bearer s3cr3"], Refusal::Wrong),
            (&["Bearer s3cr3t2"], Refusal::Wrong),
            (&["Bearer S3CR3T"], Refusal::Wrong),
        ];
        for (values, refusal) in cases {
            assert_eq!(auth.check(&headers(values)), Err(refusal), "{values:?}");
        }
        let mut binary = HeaderMap::new();
        binary.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer s3cr3t\xff").expect("opaque header value"),
        );
        assert_eq!(auth.check(&binary), Err(Refusal::Wrong));
    }

    #[test]
    fn an_empty_token_cannot_be_configured() {
        assert!(BearerAuth::new("").is_err());
        assert_eq!(
            format!("{:?}", BearerAuth::new("x").ok()),
            "Some(BearerAuth(…))"
        );
    }
}
