//! The binary exits with a clear message (and a failure code) when NATS cannot be reached.

use std::process::Command;

#[test]
fn exits_with_a_clear_message_when_nats_is_unreachable() {
    let output = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .args([
            "--nats-url",
            "nats://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run krane-api");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("krane-api: NATS at nats://127.0.0.1:1 is not usable"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_rejected_naming_the_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .args(["--listen", "not-an-address"])
        .output()
        .expect("run krane-api");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));
}
