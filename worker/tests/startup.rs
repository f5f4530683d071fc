//! The binary exits with a clear message (and a failure code) when Docker or NATS cannot be
//! reached.

use std::process::Command;

#[test]
fn exits_with_a_clear_message_when_docker_is_unreachable() {
    let output = Command::new(env!("CARGO_BIN_EXE_krane-worker"))
        .args(["--docker-host", "unix:///nonexistent/docker.sock"])
        .output()
        .expect("run krane-worker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("krane-worker: the Docker engine is not usable"),
        "{stderr}"
    );
}

#[test]
fn exits_with_a_clear_message_when_nats_is_unreachable() {
    // The machine's own engine answers; NATS on port 1 does not.
    let output = Command::new(env!("CARGO_BIN_EXE_krane-worker"))
        .args(["--nats-url", "nats://127.0.0.1:1"])
        .output()
        .expect("run krane-worker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("krane-worker: NATS at nats://127.0.0.1:1 is not usable"),
        "{stderr}"
    );
}
