//! Server reflection over the Connect protocol too, so `buf curl` (Connect by default) needs no
//! schema file. A Connect bidi stream of `grpc.reflection.v1` messages is handed to the tonic
//! reflection service as a gRPC call — both protocols frame a stream's messages the same way
//! (a flag byte and a 4-byte length) — and the gRPC status, which gRPC sends as trailers, comes
//! back as Connect's end-of-stream message. Only this one method is bridged.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use connectrpc_axum::message::error::code_from_tonic;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use std::convert::Infallible;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// The reflection method that `buf curl` calls.
pub const REFLECTION_PATH: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const CONNECT_STREAM_PROTO: &str = "application/connect+proto";
/// Connect's flag for the end-of-stream message.
const END_STREAM_FLAG: u8 = 0b10;

/// The tonic reflection service (it answers gRPC), type-erased.
type Reflection =
    BoxCloneSyncService<http::Request<Body>, http::Response<tonic::body::Body>, Infallible>;

/// An axum router serving [`REFLECTION_PATH`] over Connect through `reflection`.
pub fn router<S>(reflection: S) -> axum::Router
where
    S: Service<
            http::Request<Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    axum::Router::new()
        .route(REFLECTION_PATH, axum::routing::post(bridge))
        .with_state(BoxCloneSyncService::new(reflection))
}

async fn bridge(State(reflection): State<Reflection>, request: Request) -> Response {
    let is_connect_stream = request.headers().get(CONTENT_TYPE).is_some_and(|value| {
        value
            .as_bytes()
            .starts_with(CONNECT_STREAM_PROTO.as_bytes())
    });
    if !is_connect_stream {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "server reflection over Connect takes application/connect+proto",
        );
    }
    let (mut parts, body) = request.into_parts();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts
        .headers
        .insert("te", HeaderValue::from_static("trailers"));
    let Ok(response) = reflection
        .oneshot(http::Request::from_parts(parts, body))
        .await;
    let (mut parts, body) = response.into_parts();
    // A call that fails at once may carry its status in the headers ("trailers-only").
    let early_status = status_of(&parts.headers);
    parts.headers.retain_grpc_free();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONNECT_STREAM_PROTO));
    parts.status = StatusCode::OK;
    let frames = futures::stream::unfold(
        (body, early_status, false),
        |(mut body, status, done)| async move {
            if done {
                return None;
            }
            let (chunk, status, done) = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => (data, status, false),
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        let status = trailers.as_ref().and_then(status_of).or(status);
                        (end_of_stream(status), None, true)
                    }
                },
                Some(Err(error)) => {
                    let status = Some((tonic::Code::Internal, error.to_string()));
                    (end_of_stream(status), None, true)
                }
                None => (end_of_stream(status), None, true),
            };
            Some((Ok::<_, Infallible>(chunk), (body, status, done)))
        },
    );
    Response::from_parts(parts, Body::from_stream(frames))
}

/// The gRPC status in `headers` (`grpc-status`, `grpc-message`), if present.
fn status_of(headers: &HeaderMap) -> Option<(tonic::Code, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((tonic::Code::from_i32(code), message))
}

/// Connect's end-of-stream message: `{}` on success, else `{"error": {code, message}}`.
fn end_of_stream(status: Option<(tonic::Code, String)>) -> Bytes {
    let json = match status {
        Some((code, message)) if code != tonic::Code::Ok => serde_json::json!({
            "error": { "code": code_from_tonic(code).as_str(), "message": message }
        }),
        _ => serde_json::json!({}),
    };
    let payload = serde_json::to_vec(&json).unwrap_or_default();
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(END_STREAM_FLAG);
    frame.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    frame.put_slice(&payload);
    frame.freeze()
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}

trait WithoutGrpcHeaders {
    fn retain_grpc_free(&mut self);
}

impl WithoutGrpcHeaders for HeaderMap {
    /// Drops `grpc-*` headers, which mean nothing to a Connect client.
    fn retain_grpc_free(&mut self) {
        let grpc: Vec<_> = self
            .keys()
            .filter(|name| name.as_str().starts_with("grpc-"))
            .cloned()
            .collect();
        for name in grpc {
            self.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_stream_frames_success_and_errors() {
        let ok = end_of_stream(None);
        assert_eq!(ok[0], END_STREAM_FLAG);
        assert_eq!(&ok[5..], b"{}");
        let failed = end_of_stream(Some((tonic::Code::NotFound, "no such symbol".into())));
        let json: serde_json::Value = serde_json::from_slice(&failed[5..]).expect("JSON");
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(json["error"]["message"], "no such symbol");
        assert_eq!(
            u32::from_be_bytes([failed[1], failed[2], failed[3], failed[4]]) as usize,
            failed.len() - 5
        );
    }
}
