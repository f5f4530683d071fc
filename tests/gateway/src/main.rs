//! krane-test-gateway: a minimal HTTP/1.1 server run as the "gateway" container
//! in krane's end-to-end tests. By default it answers every request with 200 and a
//! JSON body echoing the identity env vars that krane injects into gateway
//! containers. It listens on port 8040 (env `PORT` overrides).
//!
//! Modes, chosen by arguments, let tests exercise readiness against real Docker:
//! - (none): bind and serve at once.
//! - `--start-delay SECS`: sleep SECS, then bind and serve.
//! - `--exit CODE`: log three lines and exit with CODE without binding.
//! - `--refuse`: never bind; the process runs but every connect is refused.
//! - `health [--port P]`: HEALTHCHECK probe; exit 0 iff `GET /healthz` answers 200.
//!
//! While serving, `/healthz` answers 200 (503 once `/_krane/unhealthy` was hit),
//! `/_krane/stop-serving` closes the listener while the process keeps running, and
//! `/_krane/exit?code=N` exits with N after answering. Other paths answer as above.
//!
//! Std only, one thread per connection. There is no SIGTERM handler: as PID 1 in a
//! container the signal would be ignored until `docker stop` times out, so the
//! image sets `STOPSIGNAL SIGKILL` (docker/Dockerfile.test-gateway) and tests may
//! also simply `docker rm -f` it. Nothing here needs a graceful shutdown.

use std::env;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_PORT: u16 = 8040;
const MAX_HEADER_BYTES: usize = 16 * 1024;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const LOG: &str = "krane-test-gateway";
const USAGE: &str = "usage: krane-test-gateway [--start-delay SECS | --exit CODE | --refuse]\n       krane-test-gateway health [--port P]";

/// What the process was told to do.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// Bind and serve, after sleeping `start_delay` if given.
    Serve { start_delay: Option<Duration> },
    /// Log and exit with this code without binding.
    Exit(u8),
    /// Never bind; keep running.
    Refuse,
    /// Probe `GET /healthz` on 127.0.0.1:`port`.
    Health { port: u16 },
}

/// Parses the arguments after the program name; `port` is the serving port (from
/// env `PORT`), the default for `health`.
fn parse_args(args: &[String], port: u16) -> Result<Mode, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => Ok(Mode::Serve { start_delay: None }),
        ["--start-delay", secs] => parse_secs(secs).map(|d| Mode::Serve {
            start_delay: Some(d),
        }),
        ["--exit", code] => code
            .parse::<u8>()
            .map(Mode::Exit)
            .map_err(|_| format!("--exit: invalid code {code:?} (expected 0-255)")),
        ["--refuse"] => Ok(Mode::Refuse),
        ["health"] => Ok(Mode::Health { port }),
        ["health", "--port", p] => p
            .parse::<u16>()
            .map(|port| Mode::Health { port })
            .map_err(|_| format!("health --port: invalid port {p:?}")),
        ["--start-delay"] | ["--exit"] | ["health", "--port"] => {
            Err(format!("{} needs a value", args[args.len() - 1]))
        }
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

/// Seconds as a non-negative decimal ("4", "0.5").
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("--start-delay: invalid seconds {s:?}"))
}

fn main() {
    let port = env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(DEFAULT_PORT);
    let args: Vec<String> = env::args().skip(1).collect();
    let mode = match parse_args(&args, port) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("{LOG}: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match mode {
        Mode::Serve { start_delay } => {
            if let Some(delay) = start_delay {
                eprintln!(
                    "{LOG}: start delay {}s before binding port {port}",
                    delay.as_secs_f64()
                );
                thread::sleep(delay);
            }
            serve(port);
        }
        Mode::Exit(code) => {
            eprintln!("{LOG}: starting");
            eprintln!("{LOG}: config invalid: told to exit");
            eprintln!("{LOG}: exiting with code {code}");
            std::process::exit(i32::from(code));
        }
        Mode::Refuse => {
            eprintln!("{LOG}: refusing connections: port {port} is never bound");
            sleep_forever();
        }
        Mode::Health { port } => match probe_health(port) {
            Ok(status_line) if status_is_ok(&status_line) => {
                println!("healthz: {status_line}");
            }
            Ok(status_line) => {
                println!("healthz: {status_line}");
                std::process::exit(1);
            }
            Err(e) => {
                println!("healthz: 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        },
    }
}

fn sleep_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// State shared by the accept loop and the connection threads.
struct Shared {
    port: u16,
    body: String,
    healthy: AtomicBool,
    /// Set by `/_krane/stop-serving`; the accept loop then drops the listener.
    stop: AtomicBool,
    /// Set by the accept loop once the listener is closed.
    closed: AtomicBool,
}

fn serve(port: u16) -> ! {
    let shared = Arc::new(Shared {
        port,
        body: response_body(
            &env::var("UNKEY_GATEWAY_ID").unwrap_or_default(),
            &env::var("UNKEY_WORKSPACE_ID").unwrap_or_default(),
            &env::var("UNKEY_IMAGE").unwrap_or_default(),
        ),
        healthy: AtomicBool::new(true),
        stop: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{LOG}: bind 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("{LOG}: listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            // Woken by the stop-serving handler; a connection accepted here is dropped.
            break;
        }
        match conn {
            Ok(stream) => {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    if let Err(e) = handle(stream, &shared) {
                        eprintln!("{LOG}: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("{LOG}: accept error: {e}"),
        }
    }
    drop(listener);
    shared.closed.store(true, Ordering::SeqCst);
    eprintln!("{LOG}: stopped serving: listener on port {port} closed");
    sleep_forever();
}

/// Reads the request head (the body, if any, is ignored) and writes the response.
fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 1024];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEADER_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let reply = match request_line(&head) {
        Some((method, target)) => route(
            method,
            target,
            shared.healthy.load(Ordering::SeqCst),
            &shared.body,
        ),
        None => Reply::ok(shared.body.clone()),
    };
    match reply.effect {
        Effect::None => {}
        Effect::MarkUnhealthy => {
            shared.healthy.store(false, Ordering::SeqCst);
            eprintln!("{LOG}: /healthz now answers 503");
        }
        Effect::StopServing => stop_serving(shared),
        Effect::Exit(_) => {}
    }
    stream.write_all(http_response(reply.status, &reply.body).as_bytes())?;
    stream.flush()?;
    if let Effect::Exit(code) = reply.effect {
        let _ = stream.shutdown(Shutdown::Write);
        eprintln!("{LOG}: exiting with code {code} (requested over HTTP)");
        std::process::exit(i32::from(code));
    }
    Ok(())
}

/// Makes the accept loop close the listener, and waits (bounded) until it has, so
/// that connects made after the reply are refused.
fn stop_serving(shared: &Shared) {
    shared.stop.store(true, Ordering::SeqCst);
    // The accept loop blocks in accept(); a connection of our own wakes it.
    let wake = SocketAddr::from(([127, 0, 0, 1], shared.port));
    let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !shared.closed.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Method and request target from the first line of a request head.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next().filter(|m| !m.is_empty())?;
    let target = parts.next().filter(|t| !t.is_empty())?;
    Some((method, target))
}

/// A side effect a request asks of the process, applied by the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Effect {
    None,
    MarkUnhealthy,
    StopServing,
    Exit(u8),
}

#[derive(Debug, Clone, PartialEq)]
struct Reply {
    status: u16,
    body: String,
    effect: Effect,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply {
            status: 200,
            body,
            effect: Effect::None,
        }
    }

    fn with(status: u16, body: &str, effect: Effect) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            effect,
        }
    }
}

/// Decides the answer to one request. `healthy` is false once `/_krane/unhealthy`
/// was requested; `body` is the default identity body. Any method is accepted.
fn route(_method: &str, target: &str, healthy: bool, body: &str) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/healthz" if healthy => Reply::with(200, r#"{"status":"ok"}"#, Effect::None),
        "/healthz" => Reply::with(503, r#"{"status":"unhealthy"}"#, Effect::None),
        "/_krane/unhealthy" => {
            Reply::with(200, r#"{"healthz":"unhealthy"}"#, Effect::MarkUnhealthy)
        }
        "/_krane/stop-serving" => Reply::with(200, r#"{"serving":false}"#, Effect::StopServing),
        "/_krane/exit" => match query_param(query, "code").map(str::parse::<u8>) {
            Some(Ok(code)) => Reply {
                status: 200,
                body: format!(r#"{{"exit":{code}}}"#),
                effect: Effect::Exit(code),
            },
            _ => Reply::with(
                400,
                r#"{"error":"code must be 0-255, e.g. /_krane/exit?code=1"}"#,
                Effect::None,
            ),
        },
        _ => Reply::ok(body.to_string()),
    }
}

/// The value of `name` in a query string (no percent-decoding).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn http_response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
}

/// Sends `GET /healthz` to 127.0.0.1:`port` within [`HEALTH_TIMEOUT`] and returns
/// the response's status line.
fn probe_health(port: u16) -> std::io::Result<String> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, remaining()?)?;
    stream.set_write_timeout(Some(remaining()?))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    let mut buf = [0u8; 512];
    while !response.contains(&b'\n') && response.len() < MAX_HEADER_BYTES {
        stream.set_read_timeout(Some(remaining()?))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_string())
}

/// True iff an HTTP status line reports 200.
fn status_is_ok(status_line: &str) -> bool {
    let mut parts = status_line.split(' ');
    matches!(
        (parts.next(), parts.next()),
        (Some(version), Some("200")) if version.starts_with("HTTP/1.")
    )
}

fn response_body(gateway_id: &str, workspace_id: &str, image: &str) -> String {
    format!(
        r#"{{"gateway_id":"{}","workspace_id":"{}","image":"{}"}}"#,
        json_escape(gateway_id),
        json_escape(workspace_id),
        json_escape(image)
    )
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn parse(list: &[&str]) -> Result<Mode, String> {
        parse_args(&args(list), 8040)
    }

    #[test]
    fn no_args_serves_at_once() {
        assert_eq!(parse(&[]), Ok(Mode::Serve { start_delay: None }));
    }

    #[test]
    fn start_delay_takes_seconds() {
        assert_eq!(
            parse(&["--start-delay", "4"]),
            Ok(Mode::Serve {
                start_delay: Some(Duration::from_secs(4))
            })
        );
        assert_eq!(
            parse(&["--start-delay", "0.5"]),
            Ok(Mode::Serve {
                start_delay: Some(Duration::from_millis(500))
            })
        );
        assert!(parse(&["--start-delay", "-1"]).is_err());
        assert!(parse(&["--start-delay", "soon"]).is_err());
        assert!(parse(&["--start-delay"]).is_err());
    }

    #[test]
    fn exit_takes_a_code() {
        assert_eq!(parse(&["--exit", "3"]), Ok(Mode::Exit(3)));
        assert_eq!(parse(&["--exit", "0"]), Ok(Mode::Exit(0)));
        assert!(parse(&["--exit", "256"]).is_err());
        assert!(parse(&["--exit", "-1"]).is_err());
        assert!(parse(&["--exit"]).is_err());
    }

    #[test]
    fn refuse_and_health() {
        assert_eq!(parse(&["--refuse"]), Ok(Mode::Refuse));
        assert_eq!(parse(&["health"]), Ok(Mode::Health { port: 8040 }));
        assert_eq!(
            parse_args(&args(&["health"]), 9000),
            Ok(Mode::Health { port: 9000 })
        );
        assert_eq!(
            parse(&["health", "--port", "8081"]),
            Ok(Mode::Health { port: 8081 })
        );
        assert!(parse(&["health", "--port"]).is_err());
        assert!(parse(&["health", "--port", "70000"]).is_err());
    }

    #[test]
    fn unknown_or_extra_args_are_rejected() {
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--refuse", "--exit", "1"]).is_err());
        assert!(parse(&["--start-delay", "1", "extra"]).is_err());
        assert!(parse(&["health", "extra"]).is_err());
    }

    #[test]
    fn healthz_follows_health_flag() {
        let up = route("GET", "/healthz", true, "{}");
        assert_eq!((up.status, up.effect), (200, Effect::None));
        let down = route("GET", "/healthz", false, "{}");
        assert_eq!((down.status, down.effect), (503, Effect::None));
        assert_eq!(route("GET", "/healthz?x=1", false, "{}").status, 503);
    }

    #[test]
    fn control_paths_ask_for_effects() {
        let r = route("POST", "/_krane/unhealthy", true, "{}");
        assert_eq!((r.status, r.effect), (200, Effect::MarkUnhealthy));
        let r = route("GET", "/_krane/stop-serving", true, "{}");
        assert_eq!((r.status, r.effect), (200, Effect::StopServing));
        let r = route("GET", "/_krane/exit?code=7", true, "{}");
        assert_eq!((r.status, r.effect), (200, Effect::Exit(7)));
        let r = route("GET", "/_krane/exit?x=1&code=0", true, "{}");
        assert_eq!(r.effect, Effect::Exit(0));
        for bad in [
            "/_krane/exit",
            "/_krane/exit?code=",
            "/_krane/exit?code=300",
        ] {
            let r = route("GET", bad, true, "{}");
            assert_eq!((r.status, r.effect), (400, Effect::None), "{bad}");
        }
    }

    #[test]
    fn other_paths_answer_the_identity_body() {
        for target in ["/", "/anything?q=1", "/_krane/other", "/healthz/x"] {
            assert_eq!(
                route("GET", target, false, "BODY"),
                Reply::ok("BODY".into())
            );
        }
    }

    #[test]
    fn request_line_is_parsed() {
        assert_eq!(
            request_line(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(
            request_line(b"POST /a?b=c HTTP/1.0\n\n"),
            Some(("POST", "/a?b=c"))
        );
        assert_eq!(request_line(b"GET"), None);
        assert_eq!(request_line(b"\r\n"), None);
    }

    #[test]
    fn health_status_line() {
        assert!(status_is_ok("HTTP/1.1 200 OK"));
        assert!(status_is_ok("HTTP/1.0 200"));
        assert!(!status_is_ok("HTTP/1.1 503 Service Unavailable"));
        assert!(!status_is_ok("HTTP/1.1 2000 OK"));
        assert!(!status_is_ok(""));
        assert!(!status_is_ok("garbage 200"));
    }

    #[test]
    fn body_echoes_identity() {
        assert_eq!(
            response_body("g1", "ws1", "nginx:1"),
            r#"{"gateway_id":"g1","workspace_id":"ws1","image":"nginx:1"}"#
        );
    }

    #[test]
    fn body_escapes_and_allows_empty() {
        assert_eq!(
            response_body("a\"b\\", "", "x\ny"),
            r#"{"gateway_id":"a\"b\\","workspace_id":"","image":"x\u000ay"}"#
        );
    }

    #[test]
    fn response_sets_length_and_close() {
        let r = http_response(200, "{}");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n{}"));
        assert!(http_response(503, "").starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }
}
