//! Answers for calls refused in front of the handlers (missing credentials, undecodable or
//! oversized bodies), in the caller's own protocol: a gRPC status for gRPC, a Connect error
//! otherwise (a JSON `{"code","message"}` body for unary calls, an end-stream frame for the
//! enveloped Connect content types).

use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use axum::response::{IntoResponse, Response};
use connectrpc_axum::{ConnectError, RequestProtocol, detect_protocol};

/// How a call is framed, so a refusal can be answered the way the caller expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Grpc,
    Connect(RequestProtocol),
}

impl Wire {
    /// `application/grpc…` is gRPC (the same rule connectrpc-axum dispatches by); anything
    /// else is Connect, told apart by its content type.
    pub fn of<B>(request: &Request<B>) -> Self {
        if is_grpc(request.headers()) {
            Self::Grpc
        } else {
            Self::Connect(detect_protocol(request))
        }
    }

    /// The refusal as an HTTP response.
    pub fn refuse(self, error: ConnectError) -> Response {
        match self {
            Self::Grpc => tonic::Status::from(error).into_http::<Body>(),
            Self::Connect(RequestProtocol::ConnectStreamJson) => {
                error.into_streaming_response(false)
            }
            Self::Connect(RequestProtocol::ConnectStreamProto) => {
                error.into_streaming_response(true)
            }
            Self::Connect(_) => error.into_response(),
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn request(content_type: &str) -> Request<()> {
        Request::post("/krane.v1.GatewayService/GetGateway")
            .header(header::CONTENT_TYPE, content_type)
            .body(())
            .expect("request")
    }

    #[test]
    fn grpc_refusals_are_statuses_connect_refusals_http_errors() {
        let error = || ConnectError::new_unauthenticated("no token");
        let grpc = Wire::of(&request("application/grpc+proto")).refuse(error());
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "16");

        let json = Wire::of(&request("application/json")).refuse(error());
        assert_eq!(json.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");

        let proto = Wire::of(&request("application/proto")).refuse(error());
        assert_eq!(proto.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(proto.headers()[header::CONTENT_TYPE], "application/json");

        let enveloped = Wire::of(&request("application/connect+json")).refuse(error());
        assert_eq!(enveloped.status(), StatusCode::OK);
    }
}
