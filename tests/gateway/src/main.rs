//! krane-test-gateway: a minimal HTTP/1.1 server run as the "gateway" container
//! in krane's end-to-end tests. It answers every request with 200 and a JSON body
//! echoing the identity env vars that krane injects into gateway containers.
//!
//! Std only, one thread per connection. There is no SIGTERM handler: as PID 1 in a
//! container the signal would be ignored until `docker stop` times out, so the
//! image sets `STOPSIGNAL SIGKILL` (docker/Dockerfile.test-gateway) and tests may
//! also simply `docker rm -f` it. Nothing here needs a graceful shutdown.

use std::env;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

const DEFAULT_PORT: u16 = 8040;
const MAX_HEADER_BYTES: usize = 16 * 1024;

fn main() {
    let port = env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(DEFAULT_PORT);
    let body = response_body(
        &env::var("UNKEY_GATEWAY_ID").unwrap_or_default(),
        &env::var("UNKEY_WORKSPACE_ID").unwrap_or_default(),
        &env::var("UNKEY_IMAGE").unwrap_or_default(),
    );
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("krane-test-gateway: bind 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("krane-test-gateway: listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let body = body.clone();
                thread::spawn(move || {
                    if let Err(e) = handle(stream, &body) {
                        eprintln!("krane-test-gateway: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("krane-test-gateway: accept error: {e}"),
        }
    }
}

/// Reads the request head (the body, if any, is ignored) and writes the response.
fn handle(mut stream: TcpStream, body: &str) -> std::io::Result<()> {
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
    stream.write_all(http_response(body).as_bytes())?;
    stream.flush()
}

fn http_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
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
        let r = http_response("{}");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n{}"));
    }
}
