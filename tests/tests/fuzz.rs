//! Fuzzing the running API: over 10,000 random and malformed calls (Connect JSON, Connect binary,
//! gRPC; wrong types, huge numbers, missing and unknown fields, odd unicode, deep nesting,
//! truncated and garbled bodies, oversized bodies) must never get a 5xx, a panic or a vague
//! answer: every refusal is `invalid_argument` naming the field (or the message type, for a
//! body that is not one at all), `resource_exhausted` for bodies over the limit, `not_found`
//! for Gets of unknown gateways. Calls (Create, Get, Delete, List) that happen to be valid are
//! accepted. Gateways stored before the run are untouched: same record, same KV revision, same
//! latest command.
//!
//! The same run is made again against an API with scoped credentials: each call then carries
//! the token of a writer scoped to the fuzz namespace, of a read-only reader, a wrong token or
//! none, and must also be refused as `unauthenticated` (no or a wrong token) or
//! `permission_denied` (the reader writing, the writer naming another namespace) when that is
//! the truth, and never accepted otherwise.
//!
//! The run is reproducible: `KRANE_FUZZ_SEED=<seed>` replays it (the seed is in every failure
//! message); `KRANE_FUZZ_REQUESTS` changes the number of calls.

use futures::StreamExt;
use http_body_util::BodyExt;
use krane_api::MAX_REQUEST_BYTES;
use krane_core::names::GatewayKey;
use krane_proto::krane::v1::{
    CreateGatewayRequest, DeleteGatewayRequest, GatewayRequest, GetGatewayRequest,
    ListGatewayEventsRequest, ListGatewaysRequest,
};
use krane_tests::client::gateway_request;
use krane_tests::{Krane, Protocol, unique_namespace};
use prost::Message;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x6b72_616e_6521;
const DEFAULT_REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 16;
/// Failures shown in full; the rest are only counted.
const FAILURES_SHOWN: usize = 20;

const WRITER_TOKEN: &str = "fuzz-writer-6c1a";
const READER_TOKEN: &str = "fuzz-reader-3e9b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_malformed_calls_are_refused_clearly_and_change_nothing_stored() {
    fuzz(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_credentials_on_random_calls_are_also_refused_for_who_sends_them() {
    fuzz(true).await;
}

/// The scoped credentials of the run with authentication: the writer may change only the fuzz
/// namespace, the reader may read everything.
fn credentials(fuzz_namespace: &str) -> String {
    format!(
        "[[tokens]]\nname = \"writer\"\ntoken = \"{WRITER_TOKEN}\"\nnamespaces = [\"{fuzz_namespace}\"]\n\
         access = \"read-write\"\n\n[[tokens]]\nname = \"reader\"\ntoken = \"{READER_TOKEN}\"\n\
         namespaces = [\"*\"]\naccess = \"read-only\"\n"
    )
}

async fn fuzz(authenticated: bool) {
    let seed = env_number("KRANE_FUZZ_SEED", DEFAULT_SEED);
    let requests = env_number("KRANE_FUZZ_REQUESTS", DEFAULT_REQUESTS as u64) as usize;
    let kept_namespace = unique_namespace("fuzz-kept");
    let fuzz_namespace = unique_namespace("fuzz");
    // No worker: the API is under test, and valid fuzz creates then never reach Docker.
    let krane = Krane::start_without_worker(&kept_namespace).await;

    // Two gateways stored before the run, and everything about them.
    let client = krane.client(Protocol::ConnectJson);
    let kept_ids = ["kept-a", "kept-b"];
    for (replicas, id) in (1..).zip(kept_ids) {
        client
            .create(Some(gateway_request(&kept_namespace, id, replicas)))
            .await
            .expect("store a gateway before fuzzing");
    }
    let before = stored_state(&krane, &kept_namespace, &kept_ids).await;

    // Kept for the whole run: the API reads it when it starts (and on SIGHUP).
    let credentials_file = tempfile::NamedTempFile::new().expect("a temp file");
    let api = if authenticated {
        std::fs::write(credentials_file.path(), credentials(&fuzz_namespace)).expect("write");
        let options = krane_api::ApiOptions {
            auth_tokens_file: Some(credentials_file.path().to_path_buf()),
            ..Default::default()
        };
        krane.serve_api(options).await.0
    } else {
        krane.api_addr
    };
    let generator = Generator {
        fuzz_namespace: fuzz_namespace.clone(),
        kept_namespace: kept_namespace.clone(),
        authenticated,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let probes: Vec<Probe> = (0..requests).map(|_| generator.probe(&mut rng)).collect();
    let sender = Sender::new(api);
    let started = Instant::now();
    let outcomes: Vec<(Probe, Outcome)> = futures::stream::iter(probes)
        .map(|probe| {
            let sender = &sender;
            async move {
                let outcome = sender.send(&probe).await;
                (probe, outcome)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_answer: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (probe, outcome) in &outcomes {
        *by_kind
            .entry(format!("{:?} {:?}", probe.encoding, probe.kind))
            .or_default() += 1;
        match judge(probe, outcome, &fuzz_namespace) {
            Ok(answer) => *by_answer.entry(answer).or_default() += 1,
            Err(problem) => {
                *by_answer.entry("FAILED".into()).or_default() += 1;
                failures.push(format!("{problem}\n    call: {}", probe.describe()));
            }
        }
    }
    let mut report = format!(
        "fuzz seed {seed}{}: {} calls in {elapsed:.1?} ({CONCURRENCY} at a time)\ncalls by kind:\n",
        if authenticated {
            " (scoped credentials)"
        } else {
            ""
        },
        outcomes.len()
    );
    for (kind, count) in &by_kind {
        let _ = writeln!(report, "  {count:>6}  {kind}");
    }
    report.push_str("answers:\n");
    for (answer, count) in &by_answer {
        let _ = writeln!(report, "  {count:>6}  {answer}");
    }
    eprintln!("{report}");
    assert!(
        failures.is_empty(),
        "{} of {} calls were answered wrongly (replay with KRANE_FUZZ_SEED={seed}); first ones:\n{}",
        failures.len(),
        outcomes.len(),
        failures
            .iter()
            .take(FAILURES_SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Still answering, and nothing stored before the run changed.
    for id in kept_ids {
        let gateway = client
            .get(&kept_namespace, id)
            .await
            .unwrap_or_else(|error| panic!("seed {seed}: Get of {id} after fuzzing: {error:?}"));
        assert!(!gateway.instances.is_empty(), "seed {seed}: {id}");
    }
    let after = stored_state(&krane, &kept_namespace, &kept_ids).await;
    assert_eq!(
        before, after,
        "seed {seed}: gateways stored before fuzzing changed"
    );
    // Whatever the fuzzer got accepted (mostly in its namespace, or one a garbled byte made
    // valid) is not in the kept namespace.
    let records = krane.store.all_records().await.expect("records");
    for record in records.values() {
        assert!(
            record.namespace != kept_namespace || kept_ids.contains(&record.gateway_id.as_str()),
            "seed {seed}: the fuzzer created {}/{}",
            record.namespace,
            record.gateway_id
        );
        // With credentials, only the writer could store anything, and only in its namespace.
        assert!(
            !authenticated
                || record.namespace == kept_namespace
                || record.namespace == fuzz_namespace,
            "seed {seed}: a call outside the writer's scope stored {}/{}",
            record.namespace,
            record.gateway_id
        );
    }
    eprintln!(
        "gateways stored by valid fuzz calls: {}",
        records.len() - kept_ids.len()
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Record, KV revision and latest command of each kept gateway.
async fn stored_state(krane: &Krane, namespace: &str, ids: &[&str]) -> Vec<String> {
    let mut state = Vec::new();
    for id in ids {
        let key = GatewayKey::new(namespace, *id);
        let stored = krane.store.load_record(&key).await.expect("load record");
        let command = krane.store.latest_command(&key).await.expect("command");
        assert!(stored.record.is_some(), "{id} stored");
        state.push(format!(
            "{:?} @{} {command:?}",
            stored.record, stored.revision
        ));
    }
    state
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Create,
    Get,
    Delete,
    List,
    /// ListGatewayEvents (a read, like Get, that answers an empty list for an unknown gateway).
    Events,
}

impl Rpc {
    fn path(self) -> &'static str {
        match self {
            Self::Create => "/krane.v1.GatewayService/CreateGateway",
            Self::Get => "/krane.v1.GatewayService/GetGateway",
            Self::Delete => "/krane.v1.GatewayService/DeleteGateway",
            Self::List => "/krane.v1.GatewayService/ListGateways",
            Self::Events => "/krane.v1.GatewayService/ListGatewayEvents",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
    Grpc,
}

/// What the generator did to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Well-formed message with random (often invalid) values.
    Shaped,
    /// JSON with a value of the wrong type somewhere.
    WrongTypes,
    /// JSON with the top level or `gateway` of the wrong type.
    WrongShape,
    /// JSON nested far deeper than any message.
    DeepNesting,
    /// Cut off at a random byte.
    Truncated,
    /// Random bytes changed.
    Garbled,
    /// Nothing but random bytes.
    RandomBytes,
    /// Protobuf with fields of the wrong wire type or bad UTF-8.
    WrongWireType,
    /// Bodies just under and over the limit.
    Oversized,
    /// Oversized, sent chunked (no Content-Length).
    OversizedChunked,
    /// gRPC framing broken: flags, lengths, missing or extra messages.
    BadFraming,
}

/// Who sends a call to the API with credentials (`None` in the run without).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// Read-write, in the fuzz namespace only.
    Writer,
    /// Read-only, everywhere.
    Reader,
    /// No token.
    Anonymous,
    /// A token nobody issued.
    Stranger,
}

impl Caller {
    fn authorization(self) -> Option<String> {
        match self {
            Self::Writer => Some(format!("Bearer {WRITER_TOKEN}")),
            Self::Reader => Some(format!("Bearer {READER_TOKEN}")),
            Self::Anonymous => None,
            Self::Stranger => Some("Bearer fuzz-stranger-0000".to_string()),
        }
    }
}

struct Probe {
    rpc: Rpc,
    encoding: Encoding,
    kind: Kind,
    body: Vec<u8>,
    chunked: bool,
    caller: Option<Caller>,
}

impl Probe {
    /// True when the API must refuse the call with `resource_exhausted`.
    fn oversized(&self) -> bool {
        match self.encoding {
            Encoding::Json | Encoding::Proto => self.body.len() > MAX_REQUEST_BYTES,
            Encoding::Grpc => {
                let announced = match self.body.get(..5) {
                    Some(&[0, a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) as usize,
                    _ => 0,
                };
                self.body.len() > MAX_REQUEST_BYTES + 5 || announced > MAX_REQUEST_BYTES
            }
        }
    }

    fn describe(&self) -> String {
        let shown = &self.body[..self.body.len().min(300)];
        let text = match self.encoding {
            Encoding::Json => format!("{:?}", String::from_utf8_lossy(shown)),
            _ => shown.iter().fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            }),
        };
        format!(
            "{:?} {:?} {:?} ({} bytes{}){}: {text}",
            self.encoding,
            self.rpc,
            self.kind,
            self.body.len(),
            if self.chunked { ", chunked" } else { "" },
            self.caller
                .map(|caller| format!(" by {caller:?}"))
                .unwrap_or_default()
        )
    }
}

/// What came back.
enum Outcome {
    Transport(String),
    Connect {
        status: u16,
        body: Vec<u8>,
    },
    Grpc {
        status: u16,
        code: Option<i32>,
        message: String,
    },
}

struct Sender {
    base: String,
    http1: reqwest::Client,
    http2: reqwest::Client,
}

impl Sender {
    fn new(api: SocketAddr) -> Self {
        let timeout = Duration::from_secs(20);
        krane_platform::crypto::install_default_provider();
        Self {
            base: format!("http://{api}"),
            http1: reqwest::Client::builder()
                .http1_only()
                .timeout(timeout)
                .pool_max_idle_per_host(CONCURRENCY)
                .build()
                .expect("HTTP/1.1 client"),
            http2: reqwest::Client::builder()
                .http2_prior_knowledge()
                .timeout(timeout)
                .build()
                .expect("h2c client"),
        }
    }

    async fn send(&self, probe: &Probe) -> Outcome {
        let url = format!("{}{}", self.base, probe.rpc.path());
        let body = if probe.chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = probe
                .body
                .chunks(16 * 1024)
                .map(|c| Ok(c.to_vec()))
                .collect();
            reqwest::Body::wrap_stream(futures::stream::iter(chunks))
        } else {
            reqwest::Body::from(probe.body.clone())
        };
        match probe.encoding {
            Encoding::Json | Encoding::Proto => {
                let content_type = match probe.encoding {
                    Encoding::Json => "application/json",
                    _ => "application/proto",
                };
                let sent = with_caller(self.http1.post(url), probe.caller)
                    .header(CONTENT_TYPE, content_type)
                    .header("connect-protocol-version", "1")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.bytes().await {
                            Ok(body) => Outcome::Connect {
                                status,
                                body: body.to_vec(),
                            },
                            Err(error) => {
                                Outcome::Transport(format!("reading the answer: {error}"))
                            }
                        }
                    }
                    Err(error) => Outcome::Transport(format!("{error:?}")),
                }
            }
            Encoding::Grpc => {
                let sent = with_caller(self.http2.post(url), probe.caller)
                    .header(CONTENT_TYPE, "application/grpc")
                    .header("te", "trailers")
                    .body(body)
                    .send()
                    .await;
                let response = match sent {
                    Ok(response) => response,
                    Err(error) => return Outcome::Transport(format!("{error:?}")),
                };
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let trailers = match reqwest::Body::from(response).collect().await {
                    Ok(collected) => collected.trailers().cloned().unwrap_or_default(),
                    Err(error) => {
                        return Outcome::Transport(format!("reading the answer: {error}"));
                    }
                };
                let (code, message) = grpc_status(&headers)
                    .or_else(|| grpc_status(&trailers))
                    .map_or((None, String::new()), |(code, message)| {
                        (Some(code), message)
                    });
                Outcome::Grpc {
                    status,
                    code,
                    message,
                }
            }
        }
    }
}

/// The request with the caller's `Authorization` header, if it sends one.
fn with_caller(
    request: reqwest::RequestBuilder,
    caller: Option<Caller>,
) -> reqwest::RequestBuilder {
    match caller.and_then(Caller::authorization) {
        Some(value) => request.header("authorization", value),
        None => request,
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<(i32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .map(|value| percent_decode(value.as_bytes()))
        .unwrap_or_default();
    Some((code, message))
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Judging the answers
// ---------------------------------------------------------------------------------------------

const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;
const RESOURCE_EXHAUSTED: i32 = 8;

/// Field paths of the three request messages, as refusals name them.
const FIELD_PATHS: [&str; 11] = [
    "gateway",
    "gateway.namespace",
    "gateway.workspace_id",
    "gateway.gateway_id",
    "gateway.image",
    "gateway.replicas",
    "gateway.cpu_millicores",
    "gateway.memory_size_mib",
    "namespace",
    "gateway_id",
    "limit",
];

/// Does an `invalid_argument` message say clearly what is wrong? A field path first, an unknown
/// field by its name, or the request type for a body that is not one at all.
fn names_what_is_wrong(message: &str) -> bool {
    const WHOLE_BODY: [&str; 4] = [
        "request body is not a valid krane.v1.",
        "gRPC request carries no message",
        "gRPC frame",
        "gRPC message is truncated",
    ];
    if WHOLE_BODY.iter().any(|start| message.starts_with(start))
        || message.starts_with("a unary gRPC call carries one message")
    {
        return true;
    }
    match message.split_once(": ") {
        Some((path, rest)) => {
            FIELD_PATHS.contains(&path) || (rest.starts_with("unknown field") && !path.is_empty())
        }
        None => false,
    }
}

/// Whether a `permission_denied` with `message` is the truth for the call: the reader writing,
/// or the writer naming a namespace other than its own.
fn rightly_denied(probe: &Probe, message: &str, writer_namespace: &str) -> bool {
    match probe.caller {
        Some(Caller::Reader) => {
            matches!(probe.rpc, Rpc::Create | Rpc::Delete) && message.contains("is read-only")
        }
        Some(Caller::Writer) => {
            message.contains("may not")
                && !message.contains(&format!("namespace {writer_namespace:?}"))
        }
        _ => false,
    }
}

/// `Ok(answer bucket)` when the answer is right for the call, else what is wrong with it.
fn judge(probe: &Probe, outcome: &Outcome, writer_namespace: &str) -> Result<String, String> {
    let oversized = probe.oversized();
    if matches!(probe.caller, Some(Caller::Anonymous | Caller::Stranger)) {
        return match outcome {
            Outcome::Connect { status: 401, body }
                if serde_json::from_slice::<serde_json::Value>(body)
                    .is_ok_and(|error| error["code"] == "unauthenticated") =>
            {
                Ok("connect 401 unauthenticated".into())
            }
            Outcome::Grpc {
                status: 200,
                code: Some(UNAUTHENTICATED),
                ..
            } => Ok("grpc unauthenticated".into()),
            Outcome::Transport(error) => Err(format!("no answer: {error}")),
            Outcome::Connect { status, body } => Err(format!(
                "HTTP {status} without credentials: {:?}",
                String::from_utf8_lossy(body)
            )),
            Outcome::Grpc { code, message, .. } => Err(format!(
                "gRPC status {code:?} without credentials: {message:?}"
            )),
        };
    }
    match outcome {
        Outcome::Transport(error) => Err(format!("no answer: {error}")),
        Outcome::Connect { status, body } => {
            let status = *status;
            if (200..300).contains(&status) {
                return if oversized {
                    Err(format!("HTTP {status} for an oversized body"))
                } else {
                    Ok(format!("connect {status} ok"))
                };
            }
            let error: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
                format!(
                    "HTTP {status} without a JSON error body: {:?}",
                    String::from_utf8_lossy(body)
                )
            })?;
            let (Some(code), Some(message)) = (error["code"].as_str(), error["message"].as_str())
            else {
                return Err(format!(
                    "HTTP {status}: error body lacks code or message: {error}"
                ));
            };
            let expected_status = match code {
                "invalid_argument" if !oversized && names_what_is_wrong(message) => 400,
                "resource_exhausted" if oversized => 429,
                "not_found" if probe.rpc == Rpc::Get && message.contains("not found") => 404,
                "permission_denied" if rightly_denied(probe, message, writer_namespace) => 403,
                _ => return Err(format!("HTTP {status} {code}: {message:?}")),
            };
            if status != expected_status {
                return Err(format!("HTTP {status} for {code}: {message:?}"));
            }
            Ok(format!("connect {status} {code}"))
        }
        Outcome::Grpc {
            status,
            code,
            message,
        } => {
            if *status != 200 {
                return Err(format!("gRPC call answered HTTP {status}"));
            }
            let name = match *code {
                Some(0) if !oversized => "ok",
                Some(INVALID_ARGUMENT) if !oversized && names_what_is_wrong(message) => {
                    "invalid_argument"
                }
                Some(RESOURCE_EXHAUSTED) if oversized => "resource_exhausted",
                Some(NOT_FOUND) if probe.rpc == Rpc::Get && message.contains("not found") => {
                    "not_found"
                }
                Some(PERMISSION_DENIED) if rightly_denied(probe, message, writer_namespace) => {
                    "permission_denied"
                }
                _ => return Err(format!("gRPC status {code:?}: {message:?}")),
            };
            Ok(format!("grpc {name}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generating calls
// ---------------------------------------------------------------------------------------------

/// Pieces that make strings odd: bidi controls, NUL, emoji, combining marks, zero-width
/// characters, look-alikes, separators of names and subjects.
const ODD: [&str; 26] = [
    "\u{200f}",
    "\u{202e}",
    "\u{0}",
    "🦀",
    "e\u{301}",
    "\u{200d}",
    "\u{feff}",
    "\u{ffff}",
    "Ω",
    "１",
    "\t",
    "\n",
    " ",
    "=",
    "*",
    ">",
    "/",
    "..",
    "ǅ",
    "\u{10ffff}",
    "İ",
    "\u{7f}",
    "$",
    "%",
    "\u{2028}",
    "ａ",
];

/// JSON texts for integer fields: out of range, negative, fractional, exponents, strings,
/// other types, and a few that are not JSON at all.
const BAD_NUMBERS: [&str; 28] = [
    "0",
    "65",
    "-1",
    "-0",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e400",
    "-1e400",
    "1.5",
    "1e3",
    "0.0",
    "\"12\"",
    "\"abc\"",
    "\"0x10\"",
    "\" 12\"",
    "\"\"",
    "\"-5\"",
    "true",
    "null",
    "[]",
    "{}",
    "NaN",
    "Infinity",
    "00012",
    "+5",
];

struct Generator {
    fuzz_namespace: String,
    kept_namespace: String,
    /// Calls carry credentials (of a writer, a reader, a stranger, or none).
    authenticated: bool,
}

impl Generator {
    fn probe(&self, rng: &mut StdRng) -> Probe {
        let rpc = *[
            Rpc::Create,
            Rpc::Create,
            Rpc::Get,
            Rpc::Delete,
            Rpc::List,
            Rpc::Events,
        ]
        .choose(rng)
        .unwrap_or(&Rpc::Create);
        let encoding = match rng.random_range(0..10) {
            0..=4 => Encoding::Json,
            5..=7 => Encoding::Proto,
            _ => Encoding::Grpc,
        };
        let (kind, body) = match encoding {
            Encoding::Json => self.json(rng, rpc),
            Encoding::Proto => self.proto(rng, rpc),
            Encoding::Grpc => self.grpc(rng, rpc),
        };
        let chunked = kind == Kind::OversizedChunked;
        // Oversized bodies come from the writer: a refusal before the body is read could
        // reset an HTTP/1 connection still sending it.
        let caller = self.authenticated.then(|| match rng.random_range(0..20) {
            _ if matches!(kind, Kind::Oversized | Kind::OversizedChunked) => Caller::Writer,
            0..=12 => Caller::Writer,
            13..=15 => Caller::Reader,
            16..=17 => Caller::Anonymous,
            _ => Caller::Stranger,
        });
        Probe {
            rpc,
            encoding,
            kind,
            body,
            chunked,
            caller,
        }
    }

    // --- strings and numbers ---------------------------------------------------------------

    /// A string with at least one character no id may contain.
    fn odd_string(&self, rng: &mut StdRng) -> String {
        let mut text = String::new();
        for _ in 0..rng.random_range(1..6) {
            if rng.random_bool(0.5) {
                let length = rng.random_range(0..6);
                text.extend((0..length).map(|_| rng.sample(rand::distr::Alphanumeric) as char));
            }
            text.push_str(ODD.choose(rng).unwrap_or(&"\u{0}"));
        }
        text
    }

    /// A namespace: the fuzz namespace, something based on it, or something invalid (never the
    /// kept namespace).
    fn namespace(&self, rng: &mut StdRng) -> String {
        let namespace = self.id_like(rng, &self.fuzz_namespace);
        if namespace == self.kept_namespace {
            self.fuzz_namespace.clone()
        } else {
            namespace
        }
    }

    fn gateway_id(&self, rng: &mut StdRng) -> String {
        let valid = format!("g{}", rng.random_range(0..8));
        self.id_like(rng, &valid)
    }

    fn id_like(&self, rng: &mut StdRng, valid: &str) -> String {
        match rng.random_range(0..12) {
            0..=4 => valid.to_string(),
            5 => String::new(),
            6 => "a".repeat(rng.random_range(64..90)),
            7 => format!("{valid}{}", ODD.choose(rng).unwrap_or(&"=")),
            8 => format!(
                "{}{valid}",
                ["-", ".", "_", "\u{200f}"].choose(rng).unwrap_or(&"-")
            ),
            _ => self.odd_string(rng),
        }
    }

    fn image(&self, rng: &mut StdRng) -> String {
        match rng.random_range(0..10) {
            0..=3 => "fuzz.invalid/gateway:1".to_string(),
            4 => String::new(),
            5 => "a".repeat(rng.random_range(256..400)),
            6 => ["UPPER:tag", "a b", "img:", "::", "img@sha256:zz", "x:y:z"]
                .choose(rng)
                .unwrap_or(&"::")
                .to_string(),
            _ => format!("fuzz/{}", self.odd_string(rng)),
        }
    }

    fn workspace_id(&self, rng: &mut StdRng) -> String {
        match rng.random_range(0..6) {
            0..=2 => "ws_fuzz".to_string(),
            3 => String::new(),
            4 => "w".repeat(rng.random_range(250..300)),
            _ => self.odd_string(rng),
        }
    }

    fn number(&self, rng: &mut StdRng, low: u64, high: u64) -> u64 {
        match rng.random_range(0..10) {
            0..=5 => rng.random_range(low..=high),
            6 => 0,
            7 => high + 1,
            8 => u64::from(u32::MAX),
            _ => u64::MAX,
        }
    }

    // --- JSON --------------------------------------------------------------------------------

    fn json_string(&self, rng: &mut StdRng, text: &str) -> String {
        match rng.random_range(0..40) {
            0 => "\"\\ud800\"".to_string(), // a lone surrogate
            1 => "\"\\u00zz\"".to_string(), // a broken escape
            _ => serde_json::to_string(text).unwrap_or_default(),
        }
    }

    /// JSON text of an integer field: valid, or one of the many wrong ones.
    fn json_number(&self, rng: &mut StdRng, low: u64, high: u64) -> String {
        if rng.random_bool(0.6) {
            let value = self.number(rng, low, high);
            if rng.random_bool(0.2) {
                format!("\"{value}\"")
            } else {
                value.to_string()
            }
        } else {
            BAD_NUMBERS.choose(rng).unwrap_or(&"-1").to_string()
        }
    }

    fn wrong_type(&self, rng: &mut StdRng) -> String {
        [
            "1",
            "-7",
            "true",
            "false",
            "null",
            "[]",
            "[\"a\"]",
            "{}",
            "{\"a\":1}",
            "1.25",
            "\"\"",
        ]
        .choose(rng)
        .unwrap_or(&"true")
        .to_string()
    }

    fn deep(&self, rng: &mut StdRng) -> String {
        let depth = rng.random_range(100..3000);
        if rng.random_bool(0.5) {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
        }
    }

    fn json_key(&self, rng: &mut StdRng, snake: &'static str, camel: &'static str) -> String {
        let key = if rng.random_bool(0.5) { snake } else { camel };
        format!("\"{key}\"")
    }

    fn unknown_key(&self, rng: &mut StdRng) -> String {
        let key = match rng.random_range(0..5) {
            0 => "colour".to_string(),
            1 => "GatewayId".to_string(),
            2 => "gateway_ids".to_string(),
            3 => "@type".to_string(),
            _ => self.odd_string(rng),
        };
        serde_json::to_string(&key).unwrap_or_default()
    }

    /// An object from `(key, value)` members, sometimes with unknown or repeated members.
    fn json_object(&self, rng: &mut StdRng, mut members: Vec<(String, String)>) -> String {
        members.retain(|_| rng.random_bool(0.85));
        if rng.random_bool(0.08) {
            let value = self.wrong_type(rng);
            let key = self.unknown_key(rng);
            let at = rng.random_range(0..=members.len());
            members.insert(at, (key, value));
        }
        if rng.random_bool(0.03)
            && let Some(member) = members.choose(rng).cloned()
        {
            members.push(member);
        }
        let members: Vec<String> = members
            .into_iter()
            .map(|(key, value)| format!("{key}:{value}"))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// A string field's value: mostly a string, sometimes the wrong type or deep nesting.
    fn json_text_field(&self, rng: &mut StdRng, text: String, kind: &mut Kind) -> String {
        match rng.random_range(0..20) {
            0 => {
                *kind = Kind::WrongTypes;
                self.wrong_type(rng)
            }
            1 if rng.random_bool(0.2) => {
                *kind = Kind::DeepNesting;
                self.deep(rng)
            }
            _ => self.json_string(rng, &text),
        }
    }

    fn json_gateway(&self, rng: &mut StdRng, kind: &mut Kind) -> String {
        let namespace = self.namespace(rng);
        let workspace = self.workspace_id(rng);
        let gateway_id = self.gateway_id(rng);
        let image = self.image(rng);
        let members = vec![
            (
                "\"namespace\"".to_string(),
                self.json_text_field(rng, namespace, kind),
            ),
            (
                self.json_key(rng, "workspace_id", "workspaceId"),
                self.json_text_field(rng, workspace, kind),
            ),
            (
                self.json_key(rng, "gateway_id", "gatewayId"),
                self.json_text_field(rng, gateway_id, kind),
            ),
            (
                "\"image\"".to_string(),
                self.json_text_field(rng, image, kind),
            ),
            ("\"replicas\"".to_string(), self.json_number(rng, 1, 3)),
            (
                self.json_key(rng, "cpu_millicores", "cpuMillicores"),
                self.json_number(rng, 10, 64_000),
            ),
            (
                self.json_key(rng, "memory_size_mib", "memorySizeMib"),
                self.json_number(rng, 6, 1 << 20),
            ),
        ];
        self.json_object(rng, members)
    }

    fn json(&self, rng: &mut StdRng, rpc: Rpc) -> (Kind, Vec<u8>) {
        let mut kind = Kind::Shaped;
        let roll = rng.random_range(0..100);
        let mut body = if roll < 5 {
            kind = Kind::WrongShape;
            match rng.random_range(0..3) {
                0 => self.wrong_type(rng),
                1 => format!("{{\"gateway\":{}}}", self.wrong_type(rng)),
                _ => String::new(),
            }
        } else if roll < 8 {
            kind = Kind::DeepNesting;
            match rng.random_range(0..2) {
                0 => self.deep(rng),
                _ => format!("{{\"gateway\":{}}}", self.deep(rng)),
            }
        } else {
            match rpc {
                Rpc::Create => {
                    let gateway = self.json_gateway(rng, &mut kind);
                    self.json_object(rng, vec![("\"gateway\"".to_string(), gateway)])
                }
                Rpc::Get | Rpc::Delete | Rpc::Events => {
                    let namespace = self.namespace(rng);
                    let gateway_id = self.gateway_id(rng);
                    let members = vec![
                        (
                            "\"namespace\"".to_string(),
                            self.json_text_field(rng, namespace, &mut kind),
                        ),
                        (
                            self.json_key(rng, "gateway_id", "gatewayId"),
                            self.json_text_field(rng, gateway_id, &mut kind),
                        ),
                    ];
                    self.json_object(rng, members)
                }
                Rpc::List => {
                    let namespace = self.namespace(rng);
                    let namespace = self.json_text_field(rng, namespace, &mut kind);
                    self.json_object(rng, vec![("\"namespace\"".to_string(), namespace)])
                }
            }
        }
        .into_bytes();
        if roll >= 8 {
            kind = self.damage(rng, &mut body, kind);
        }
        if rng.random_bool(0.02) {
            kind = self.oversize_json(rng, &mut body);
        }
        (kind, body)
    }

    /// Pads a JSON body with blanks to just under, at or over the limit.
    fn oversize_json(&self, rng: &mut StdRng, body: &mut Vec<u8>) -> Kind {
        let target = MAX_REQUEST_BYTES - 1
            + rng.random_range(0..3)
            + rng.random_range(0..2) * rng.random_range(0..200_000);
        if body.len() < target {
            body.resize(target, b' ');
        }
        if body.len() > MAX_REQUEST_BYTES && rng.random_bool(0.3) {
            Kind::OversizedChunked
        } else {
            Kind::Oversized
        }
    }

    /// Sometimes truncates, garbles or replaces the body.
    fn damage(&self, rng: &mut StdRng, body: &mut Vec<u8>, kind: Kind) -> Kind {
        match rng.random_range(0..100) {
            0..=9 if !body.is_empty() => {
                body.truncate(rng.random_range(0..body.len()));
                Kind::Truncated
            }
            10..=16 if !body.is_empty() => {
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..body.len());
                    body[at] = rng.random();
                }
                Kind::Garbled
            }
            17..=20 => {
                let length = rng.random_range(0..200);
                *body = (0..length).map(|_| rng.random()).collect();
                Kind::RandomBytes
            }
            _ => kind,
        }
    }

    // --- protobuf ----------------------------------------------------------------------------

    fn proto_message(&self, rng: &mut StdRng, rpc: Rpc) -> Vec<u8> {
        match rpc {
            Rpc::Create => {
                let gateway = rng.random_bool(0.95).then(|| GatewayRequest {
                    namespace: self.namespace(rng),
                    workspace_id: self.workspace_id(rng),
                    gateway_id: self.gateway_id(rng),
                    image: self.image(rng),
                    replicas: u32::try_from(self.number(rng, 1, 3)).unwrap_or(u32::MAX),
                    cpu_millicores: u32::try_from(self.number(rng, 10, 64_000)).unwrap_or(u32::MAX),
                    memory_size_mib: self.number(rng, 6, 1 << 20),
                    update_policy: None,
                });
                CreateGatewayRequest { gateway }.encode_to_vec()
            }
            Rpc::Get => GetGatewayRequest {
                namespace: self.namespace(rng),
                gateway_id: self.gateway_id(rng),
            }
            .encode_to_vec(),
            Rpc::Delete => DeleteGatewayRequest {
                namespace: self.namespace(rng),
                gateway_id: self.gateway_id(rng),
            }
            .encode_to_vec(),
            Rpc::List => ListGatewaysRequest {
                namespace: self.namespace(rng),
            }
            .encode_to_vec(),
            Rpc::Events => ListGatewayEventsRequest {
                namespace: self.namespace(rng),
                gateway_id: self.gateway_id(rng),
                limit: *[0, 1, 5_000, 5_001, u32::MAX].choose(rng).unwrap_or(&0),
            }
            .encode_to_vec(),
        }
    }

    /// Fields with the wrong wire type, bad UTF-8, impossible lengths, unknown fields.
    fn wrong_wire_type(&self, rng: &mut StdRng, rpc: Rpc) -> Vec<u8> {
        let mut body = self.proto_message(rng, rpc);
        let extra: &[u8] = match rng.random_range(0..6) {
            0 => &[0x08, 0x01],             // field 1 (a string or message) as a varint
            1 => &[0x0a, 0x02, 0xff, 0xfe], // field 1 with invalid UTF-8 / a broken message
            2 => &[0x12, 0x7f, 0x41],       // field 2 announcing more bytes than follow
            3 => &[0x0d, 0x01, 0x02],       // field 1 as a truncated fixed32
            4 => &[0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01], // an unknown varint field (skipped)
            _ => &[0x0f],                   // wire type 7 does not exist
        };
        body.extend_from_slice(extra);
        body
    }

    fn proto(&self, rng: &mut StdRng, rpc: Rpc) -> (Kind, Vec<u8>) {
        if rng.random_bool(0.1) {
            return (Kind::WrongWireType, self.wrong_wire_type(rng, rpc));
        }
        let mut body = self.proto_message(rng, rpc);
        let mut kind = self.damage(rng, &mut body, Kind::Shaped);
        if rng.random_bool(0.02) {
            // An unknown field (number 100, bytes) big enough to cross the limit.
            let size = MAX_REQUEST_BYTES - 10
                + rng.random_range(0..20)
                + rng.random_range(0..2) * rng.random_range(0..200_000);
            let mut field = vec![0xa2, 0x06];
            prost::encoding::encode_varint(size as u64, &mut field);
            field.resize(field.len() + size, b'x');
            body.extend_from_slice(&field);
            kind = Kind::Oversized;
        }
        (kind, body)
    }

    // --- gRPC --------------------------------------------------------------------------------

    fn grpc(&self, rng: &mut StdRng, rpc: Rpc) -> (Kind, Vec<u8>) {
        let (kind, message) = self.proto(rng, rpc);
        let frame = |message: &[u8]| {
            let mut frame = vec![0];
            frame.extend_from_slice(
                &u32::try_from(message.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            frame.extend_from_slice(message);
            frame
        };
        if rng.random_bool(0.85) {
            return (kind, frame(&message));
        }
        let mut body = frame(&message);
        match rng.random_range(0..7) {
            0 => body.clear(),
            1 => body.truncate(rng.random_range(0..5)),
            2 => body[0] = rng.random_range(1..=255),
            3 => body.truncate(rng.random_range(5..body.len().max(6))),
            4 => body.extend_from_slice(&frame(&message)),
            5 => body[1..5].copy_from_slice(&u32::MAX.to_be_bytes()),
            _ => body.push(0),
        }
        (Kind::BadFraming, body)
    }
}
