//! Bearer tokens on the wire: the one `Authorization: Bearer <token>` header of a call (scheme
//! case-insensitive, RFC 9110 §11.1), and the SHA-256 digest tokens are kept and compared as
//! (so a comparison does not even depend on a token's length).

use axum::http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};

/// A token's SHA-256 digest.
pub type Digest = [u8; 32];

/// Why a call's credentials were refused; the text goes back to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Repeated,
    NotBearer,
    Wrong,
    /// A verified client certificate that no entry lets in, and no token.
    UnknownClient,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing credentials: send `Authorization: Bearer <token>`",
            Self::Repeated => "more than one Authorization header",
            Self::NotBearer => "the Authorization header is not `Bearer <token>`",
            Self::Wrong => "invalid bearer token",
            Self::UnknownClient => {
                "the client certificate is not let in by the credentials file; send a bearer token"
            }
        }
    }
}

pub fn digest(token: &[u8]) -> Digest {
    Sha256::digest(token).into()
}

/// The token of the call's `Authorization` header: `Ok(None)` without one, an error when there
/// are several or it is not `Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&[u8]>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
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
    Ok(Some(token))
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
    fn the_bearer_token_is_read_in_any_scheme_case() {
        for value in [
            "Bearer s3cr3t",
            "bearer s3cr3t",
            "BEARER   s3cr3t",
            " Bearer s3cr3t ",
        ] {
            let headers = headers(&[value]);
            assert_eq!(
                bearer_token(&headers),
                Ok(Some(&b"s3cr3t"[..])),
                "{value:?}"
            );
        }
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let cases: [(&[&str], Refusal); 6] = [
            (&["Bearer s3cr3t", "Bearer s3cr3t"], Refusal::Repeated),
            (&["s3cr3t"], Refusal::NotBearer),
            (&["Basic s3cr3t"], Refusal::NotBearer),
            (&["Bearer"], Refusal::NotBearer),
            (&["Bearer "], Refusal::NotBearer),
            (&["Bearers3cr3t"], Refusal::NotBearer),
        ];
        for (values, refusal) in cases {
            assert_eq!(bearer_token(&headers(values)), Err(refusal), "{values:?}");
        }
    }
}
