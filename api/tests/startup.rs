//! The binary exits with a clear message (and a failure code) when NATS cannot be reached, and
//! refuses to serve beyond loopback without authentication unless told to.

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

#[test]
fn the_auth_token_is_hidden_in_help_and_must_not_be_empty() {
    let help = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .arg("--help")
        .env("KRANE_AUTH_TOKEN", "do-not-print-me")
        .output()
        .expect("run krane-api --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--auth-token"), "{help}");
    assert!(help.contains("KRANE_AUTH_TOKEN"), "{help}");
    assert!(!help.contains("do-not-print-me"), "{help}");

    let output = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .args(["--auth-token", ""])
        .output()
        .expect("run krane-api");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--auth-token"));
}

#[test]
fn refuses_to_serve_beyond_loopback_without_authentication_unless_told() {
    let refused = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .args(["--listen", "0.0.0.0:0", "--nats-url", "nats://127.0.0.1:1"])
        .env_remove("KRANE_AUTH_TOKEN")
        .env_remove("KRANE_ALLOW_UNAUTHENTICATED")
        .output()
        .expect("run krane-api");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 without authentication")
            && stderr.contains("--auth-token")
            && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("NATS"),
        "refused before connecting: {stderr}"
    );

    // Told so explicitly, it goes on (here to NATS, which is not there) with a warning.
    let allowed = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--allow-unauthenticated",
        ])
        .env_remove("KRANE_AUTH_TOKEN")
        .output()
        .expect("run krane-api");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&allowed.stdout),
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(logs.contains("WITHOUT authentication"), "{logs}");
    assert!(
        logs.contains("NATS at nats://127.0.0.1:1 is not usable"),
        "{logs}"
    );

    // With a token, no complaint.
    let authenticated = Command::new(env!("CARGO_BIN_EXE_krane-api"))
        .args(["--listen", "0.0.0.0:0", "--nats-url", "nats://127.0.0.1:1"])
        .env("KRANE_AUTH_TOKEN", "secret")
        .output()
        .expect("run krane-api");
    let stderr = String::from_utf8_lossy(&authenticated.stderr);
    assert!(!stderr.contains("refusing"), "{stderr}");
}
