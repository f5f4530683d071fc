//! Request bodies are decoded once in front of the handlers, so that a body that is not a valid
//! request message is refused with a message naming what is wrong:
//!
//! - JSON: the field path, in proto names (`gateway.replicas: invalid type: string "x",
//!   expected an integer …`), or `request body is not a valid krane.v1.… message: …` when the
//!   body as a whole is wrong (not JSON, not an object, trailing bytes);
//! - binary protobuf (Connect and gRPC): `request body is not a valid krane.v1.…: <prost error>`
//!   (prost names the message and field it was in);
//! - gRPC framing: a missing, truncated or second message, or a bad frame flag;
//! - bodies over [`MAX_REQUEST_BYTES`]: `resource_exhausted`, for gRPC too (tonic itself would
//!   say `out_of_range`, and `internal` for undecodable protobuf).
//!
//! A body that decodes is handed on unchanged; connectrpc-axum and tonic decode it again, with
//! the same decoders, so the handlers see exactly what they did before. Calls this module does
//! not understand (other paths, compressed bodies, the enveloped Connect content types such as
//! WatchGateway's over Connect, gRPC-Web, GET) are handed on untouched and answered by the libraries as before.

use crate::MAX_REQUEST_BYTES;
use crate::refusal::Wire;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use connectrpc_axum::{ConnectError, RequestProtocol};
use futures::StreamExt;
use krane_proto::krane::v1::{
    CreateGatewayRequest, DeleteGatewayRequest, ExportLogRequest, GetGatewayRequest,
    ListGatewayEventsRequest, ListGatewaysRequest, ListHostsRequest, UpdateGatewayRequest,
    WatchGatewayRequest,
};
use prost::Message;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// Bytes of an oversized body read (and dropped) before answering, so an HTTP/1 client that is
/// still sending gets the answer rather than a reset connection; beyond this it is cut off.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// gRPC frame header: compression flag (1 byte) and message length (4 bytes, big-endian).
const GRPC_HEADER_BYTES: usize = 5;

/// Middleware (`axum::middleware::from_fn`) checking the body of every GatewayService call.
pub async fn check_request_body(request: Request, next: Next) -> Response {
    let Some(rpc) = Rpc::from_path(request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(encoding) = Encoding::of(&request) else {
        return next.run(request).await;
    };
    // connectrpc-axum refuses a declared oversized Connect body itself (and drains it).
    if encoding != Encoding::Grpc && declared_length(request.headers()) > Some(MAX_REQUEST_BYTES) {
        return next.run(request).await;
    }
    let wire = Wire::of(&request);
    let (parts, body) = request.into_parts();
    let limit = match encoding {
        Encoding::Grpc => MAX_REQUEST_BYTES + GRPC_HEADER_BYTES,
        _ => MAX_REQUEST_BYTES,
    };
    let checked = match read_limited(body, limit).await {
        Ok(bytes) => rpc.check(encoding, &bytes).map(|()| bytes),
        Err(refused) => Err(refused),
    };
    let bytes = match checked {
        Ok(bytes) => bytes,
        Err(refused) => return wire.refuse(refused.into_error()),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The GatewayService methods and their request messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Create,
    Get,
    Delete,
    Update,
    List,
    Watch,
    Events,
    Hosts,
    Export,
}

impl Rpc {
    fn from_path(path: &str) -> Option<Self> {
        match path.strip_prefix("/krane.v1.GatewayService/")? {
            "CreateGateway" => Some(Self::Create),
            "GetGateway" => Some(Self::Get),
            "DeleteGateway" => Some(Self::Delete),
            "UpdateGateway" => Some(Self::Update),
            "ListGateways" => Some(Self::List),
            "WatchGateway" => Some(Self::Watch),
            "ListGatewayEvents" | "FollowGatewayEvents" => Some(Self::Events),
            "ListHosts" => Some(Self::Hosts),
            "ExportLog" => Some(Self::Export),
            _ => None,
        }
    }

    fn check(self, encoding: Encoding, body: &[u8]) -> Result<(), Refused> {
        match self {
            Self::Create => {
                check::<CreateGatewayRequest>(encoding, body, "krane.v1.CreateGatewayRequest")
            }
            Self::Get => check::<GetGatewayRequest>(encoding, body, "krane.v1.GetGatewayRequest"),
            Self::Delete => {
                check::<DeleteGatewayRequest>(encoding, body, "krane.v1.DeleteGatewayRequest")
            }
            Self::Update => {
                check::<UpdateGatewayRequest>(encoding, body, "krane.v1.UpdateGatewayRequest")
            }
            Self::List => {
                check::<ListGatewaysRequest>(encoding, body, "krane.v1.ListGatewaysRequest")
            }
            Self::Watch => {
                check::<WatchGatewayRequest>(encoding, body, "krane.v1.WatchGatewayRequest")
            }
            Self::Events => check::<ListGatewayEventsRequest>(
                encoding,
                body,
                "krane.v1.ListGatewayEventsRequest",
            ),
            Self::Hosts => check::<ListHostsRequest>(encoding, body, "krane.v1.ListHostsRequest"),
            Self::Export => check::<ExportLogRequest>(encoding, body, "krane.v1.ExportLogRequest"),
        }
    }
}

/// The encodings checked here: uncompressed unary Connect (JSON, binary) and gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
    Grpc,
}

impl Encoding {
    fn of(request: &Request) -> Option<Self> {
        if request.method() != Method::POST {
            return None;
        }
        let headers = request.headers();
        match Wire::of(request) {
            Wire::Grpc if grpc_web(headers) => None,
            Wire::Grpc if !compressed(headers, "grpc-encoding") => Some(Self::Grpc),
            Wire::Connect(protocol) if !compressed(headers, header::CONTENT_ENCODING.as_str()) => {
                match protocol {
                    RequestProtocol::ConnectUnaryJson => Some(Self::Json),
                    RequestProtocol::ConnectUnaryProto => Some(Self::Proto),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// gRPC-Web (binary or base64 text) is left to tonic-web and tonic.
fn grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"))
}

fn compressed(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"))
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    /// `invalid_argument`, with what is wrong.
    Invalid(String),
    /// `resource_exhausted`.
    TooLarge,
}

impl Refused {
    fn into_error(self) -> ConnectError {
        match self {
            Self::Invalid(message) => ConnectError::new_invalid_argument(message),
            Self::TooLarge => ConnectError::new_resource_exhausted(format!(
                "request message exceeds the maximum of {MAX_REQUEST_BYTES} bytes"
            )),
        }
    }
}

/// Reads the whole body, refusing it (`resource_exhausted`) once it passes `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Refused> {
    let mut chunks = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            Refused::Invalid(format!("request body could not be read: {error}"))
        })?;
        if buffer.len() + chunk.len() > limit {
            let mut drained = buffer.len() + chunk.len();
            while drained < DRAIN_LIMIT
                && let Some(Ok(chunk)) = chunks.next().await
            {
                drained += chunk.len();
            }
            return Err(Refused::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Decodes `body` as a `T` the way the libraries will, turning a failure into
/// `invalid_argument` (or `resource_exhausted` for an oversized gRPC message).
fn check<T>(encoding: Encoding, body: &[u8], name: &str) -> Result<(), Refused>
where
    T: Message + DeserializeOwned + Default,
{
    let problem = match encoding {
        Encoding::Json => json_problem::<T>(body, name),
        Encoding::Proto => proto_problem::<T>(body, name),
        Encoding::Grpc => proto_problem::<T>(grpc_message(body)?, name),
    };
    problem.map_or(Ok(()), |message| Err(Refused::Invalid(message)))
}

fn proto_problem<T: Message + Default>(body: &[u8], name: &str) -> Option<String> {
    T::decode(body)
        .err()
        .map(|error| format!("request body is not a valid {name}: {error}"))
}

/// Like `serde_json::from_slice` (what connectrpc-axum uses), but the error carries the path of
/// the field it happened in.
fn json_problem<T: DeserializeOwned>(body: &[u8], name: &str) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let error = match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(_) => deserializer.end().err()?,
        Err(error) => {
            let path = field_path(error.path());
            let error = error.into_inner();
            if path.is_empty() {
                error
            } else if error.to_string().starts_with(UNTAGGED_MISMATCH) {
                // pbjson reads integers through an untagged enum, whose error says nothing.
                let expected = integer_range(&path);
                return Some(format!(
                    "{path}: must be an integer from {expected} (a JSON number or a string of \
                     digits) at line {} column {}",
                    error.line(),
                    error.column()
                ));
            } else {
                return Some(format!("{path}: {error}"));
            }
        }
    };
    Some(format!(
        "request body is not a valid {name} in JSON: {error}"
    ))
}

/// How serde reports a value that fits no variant of an untagged enum.
const UNTAGGED_MISMATCH: &str = "data did not match any variant of untagged enum";

/// The range of an integer field of the krane.v1 requests (all are unsigned).
fn integer_range(path: &str) -> &'static str {
    match path {
        "gateway.memory_size_mib" => "0 to 18446744073709551615",
        _ => "0 to 4294967295",
    }
}

/// `gateway.cpu_millicores` for the path `gateway` → `cpuMillicores`: keys in proto (snake case)
/// names like the validation messages; a key that is not a plain name is quoted. The path ends
/// where it becomes unknown (a key that is not even a string yet).
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut rendered = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                    if !rendered.is_empty() {
                        rendered.push('.');
                    }
                    rendered.push_str(&snake_case(key));
                } else {
                    rendered.push_str(&format!("[{key:?}]"));
                }
            }
            Segment::Seq { index } => rendered.push_str(&format!("[{index}]")),
            Segment::Unknown => break,
        }
    }
    rendered
}

/// `cpuMillicores` → `cpu_millicores`; a name not in lower camel case is kept as it is.
fn snake_case(name: &str) -> String {
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return name.to_string();
    }
    let mut snake = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

/// The one message of a unary gRPC request body.
fn grpc_message(body: &[u8]) -> Result<&[u8], Refused> {
    let invalid = Refused::Invalid;
    if body.is_empty() {
        return Err(invalid("gRPC request carries no message".into()));
    }
    let Some((&[flag, a, b, c, d], rest)) = body.split_first_chunk::<GRPC_HEADER_BYTES>() else {
        return Err(invalid(format!(
            "gRPC frame is truncated: its header is {GRPC_HEADER_BYTES} bytes, got {}",
            body.len()
        )));
    };
    if flag != 0 {
        return Err(invalid(format!(
            "gRPC frame flag {flag} is invalid for an uncompressed call (grpc-encoding not set)"
        )));
    }
    let length = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
    if length > MAX_REQUEST_BYTES {
        return Err(Refused::TooLarge);
    }
    match rest.len() {
        present if present < length => Err(invalid(format!(
            "gRPC message is truncated: its frame announces {length} bytes, {present} follow"
        ))),
        present if present > length => Err(invalid(format!(
            "a unary gRPC call carries one message; {} bytes follow it",
            present - length
        ))),
        _ => Ok(rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectrpc_axum::Code;
    use krane_proto::krane::v1::GatewayRequest;

    fn create_json(body: &str) -> Result<(), Refused> {
        Rpc::Create.check(Encoding::Json, body.as_bytes())
    }

    fn message_of(result: Result<(), Refused>) -> String {
        let error = result.expect_err("must be refused").into_error();
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        error.message().unwrap_or_default().to_string()
    }

    #[test]
    fn valid_json_passes_in_either_field_spelling() {
        create_json(r#"{"gateway":{"namespace":"a","gatewayId":"b","replicas":2}}"#)
            .expect("camel case");
        create_json(r#"{"gateway":{"namespace":"a","gateway_id":"b","cpu_millicores":"250"}}"#)
            .expect("snake case, number as string");
        create_json("{}").expect("empty message");
    }

    #[test]
    fn wrong_json_types_name_the_field_in_proto_spelling() {
        let message = message_of(create_json(r#"{"gateway":{"replicas":"many"}}"#));
        assert!(message.starts_with("gateway.replicas: "), "{message}");
        let message = message_of(create_json(r#"{"gateway":{"cpuMillicores":1.5}}"#));
        assert!(message.starts_with("gateway.cpu_millicores: "), "{message}");
        let message = message_of(create_json(
            r#"{"gateway":{"memorySizeMib":123456789012345678901234567890}}"#,
        ));
        assert!(
            message.starts_with("gateway.memory_size_mib: "),
            "{message}"
        );
        for number in ["-1", "1.5", "1e3", "true", "99999999999"] {
            let body = format!(r#"{{"gateway":{{"replicas":{number}}}}}"#);
            let message = message_of(create_json(&body));
            assert!(
                message.starts_with("gateway.replicas: must be an integer from 0 to 4294967295"),
                "{number}: {message}"
            );
        }
        let message = message_of(create_json(r#"{"gateway":{"memorySizeMib":-1}}"#));
        assert!(
            message.starts_with("gateway.memory_size_mib: must be an integer from 0 to 1844"),
            "{message}"
        );
        let message = message_of(create_json(r#"{"gateway":{"image":7}}"#));
        assert!(message.starts_with("gateway.image: "), "{message}");
        let message = message_of(create_json(r#"{"gateway":[]}"#));
        assert!(message.starts_with("gateway: "), "{message}");
        let message = message_of(Rpc::Get.check(Encoding::Json, br#"{"gatewayId":{}}"#));
        assert!(message.starts_with("gateway_id: "), "{message}");
    }

    #[test]
    fn unknown_fields_and_broken_documents_say_so() {
        let message = message_of(create_json(r#"{"gateway":{"colour":"red"}}"#));
        assert!(message.contains("unknown field `colour`"), "{message}");
        assert!(message.starts_with("gateway"), "{message}");
        for body in ["", "[", "nul", r#"{"gateway":{}} x"#, "[]", "7"] {
            let message = message_of(create_json(body));
            assert!(
                message.starts_with("request body is not a valid krane.v1.CreateGatewayRequest"),
                "{body:?}: {message}"
            );
        }
        let message = message_of(create_json(r#"{"gateway":{"image":"ab"#));
        assert!(message.starts_with("gateway.image: "), "{message}");
        let message = message_of(create_json(r#"{"gateway":{"ima"#));
        assert!(
            message.starts_with("gateway: EOF while parsing"),
            "{message}"
        );
        let message = message_of(create_json(r#"{"gate"#));
        assert!(
            message.starts_with("request body is not a valid krane.v1.CreateGatewayRequest"),
            "{message}"
        );
    }

    #[test]
    fn binary_bodies_are_decoded_with_prost() {
        let valid = CreateGatewayRequest {
            gateway: Some(GatewayRequest {
                namespace: "a".into(),
                replicas: 3,
                ..Default::default()
            }),
        }
        .encode_to_vec();
        Rpc::Create
            .check(Encoding::Proto, &valid)
            .expect("valid protobuf");
        let message = message_of(Rpc::Create.check(Encoding::Proto, &valid[..valid.len() - 1]));
        assert!(
            message.starts_with("request body is not a valid krane.v1.CreateGatewayRequest: "),
            "{message}"
        );
        // Field 1 of GetGatewayRequest (namespace, a string) sent as a varint.
        let message = message_of(Rpc::Get.check(Encoding::Proto, &[0x08, 0x01]));
        assert!(message.contains("namespace"), "{message}");
    }

    #[test]
    fn history_bodies_are_checked_too() {
        let rpc = Rpc::from_path("/krane.v1.GatewayService/ListGatewayEvents");
        assert_eq!(rpc, Some(Rpc::Events));
        Rpc::Events
            .check(
                Encoding::Json,
                br#"{"namespace":"a","gatewayId":"b","limit":3}"#,
            )
            .expect("valid history request");
        let message = message_of(Rpc::Events.check(Encoding::Json, br#"{"limit":"many"}"#));
        assert!(message.starts_with("limit: "), "{message}");
    }

    #[test]
    fn host_list_bodies_are_checked_too() {
        let rpc = Rpc::from_path("/krane.v1.GatewayService/ListHosts");
        assert_eq!(rpc, Some(Rpc::Hosts));
        Rpc::Hosts
            .check(Encoding::Json, b"{}")
            .expect("an empty request");
        let message = message_of(Rpc::Hosts.check(Encoding::Json, b"[1]"));
        assert!(message.contains("ListHostsRequest"), "{message}");
    }

    #[test]
    fn list_and_watch_bodies_are_checked_too() {
        assert_eq!(
            Rpc::from_path("/krane.v1.GatewayService/ListGateways"),
            Some(Rpc::List)
        );
        Rpc::List
            .check(Encoding::Json, br#"{"namespace":"a"}"#)
            .expect("valid list");
        let message = message_of(Rpc::List.check(Encoding::Json, br#"{"namespace":1}"#));
        assert!(message.starts_with("namespace: "), "{message}");
        let message = message_of(Rpc::Watch.check(Encoding::Proto, &[0x08, 0x01]));
        assert!(
            message.starts_with("request body is not a valid krane.v1.WatchGatewayRequest"),
            "{message}"
        );
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let length = u32::try_from(message.len()).expect("small message");
        let mut frame = vec![0];
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    #[test]
    fn grpc_frames_are_checked_before_their_message() {
        let message = GetGatewayRequest {
            namespace: "a".into(),
            gateway_id: "b".into(),
        }
        .encode_to_vec();
        Rpc::Get
            .check(Encoding::Grpc, &framed(&message))
            .expect("one valid frame");
        for (body, expected) in [
            (Vec::new(), "carries no message"),
            (vec![0, 0], "frame is truncated"),
            (framed(&message)[..8].to_vec(), "message is truncated"),
            ([framed(&message), framed(&message)].concat(), "one message"),
            ([vec![7], framed(&message)[1..].to_vec()].concat(), "flag 7"),
            (
                framed(&[0x08, 0x01]),
                "not a valid krane.v1.GetGatewayRequest",
            ),
        ] {
            let text = message_of(Rpc::Get.check(Encoding::Grpc, &body));
            assert!(text.contains(expected), "{expected}: {text}");
        }
        let mut huge = vec![0];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let error = Rpc::Get
            .check(Encoding::Grpc, &huge)
            .expect_err("oversized")
            .into_error();
        assert_eq!(error.code(), Code::ResourceExhausted);
    }

    #[test]
    fn paths_use_proto_names_and_quote_odd_keys() {
        assert_eq!(snake_case("memorySizeMib"), "memory_size_mib");
        assert_eq!(snake_case("gateway_id"), "gateway_id");
        assert_eq!(snake_case("GatewayId"), "GatewayId");
        let error = serde_path_to_error::deserialize::<_, std::collections::BTreeMap<String, u8>>(
            &mut serde_json::Deserializer::from_str(r#"{"a\u202eb":"x"}"#),
        )
        .expect_err("not a number");
        assert_eq!(field_path(error.path()), "[\"a\\u{202e}b\"]");
    }
}
