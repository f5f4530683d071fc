//! NATS user/password and TLS options of both binaries (the shared `NatsArgs`), against real
//! nats-servers that require them. Certificates are made on the spot with openssl.

use clap::Parser;
use krane_store::{NatsArgs, connect};
use krane_tests::NatsServer;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    nats: NatsArgs,
}

fn flags(args: &[&str]) -> NatsArgs {
    Flags::parse_from(std::iter::once("test").chain(args.iter().copied())).nats
}

#[tokio::test]
async fn user_and_password_are_sent_and_required() {
    let server = NatsServer::start_with(&["--user", "krane", "--pass", "s3cret"]).await;
    let url = server.url();
    let timeout = Duration::from_secs(2);
    let anonymous = connect(&flags(&["--nats-url", &url]), "test", timeout).await;
    let error = anonymous.err().expect("anonymous is refused").to_string();
    assert!(error.contains("authorization"), "{error}");
    let wrong = flags(&[
        "--nats-url",
        &url,
        "--nats-user",
        "krane",
        "--nats-password",
        "nope",
    ]);
    assert!(connect(&wrong, "test", timeout).await.is_err());
    let right = flags(&[
        "--nats-url",
        &url,
        "--nats-user",
        "krane",
        "--nats-password",
        "s3cret",
    ]);
    connect(&right, "test", timeout)
        .await
        .expect("authenticated");
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(status.status.success(), "openssl {args:?}: {status:?}");
}

#[tokio::test]
async fn tls_with_a_private_ca_is_verified() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=krane-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &cert.to_string_lossy(),
        "--tlskey",
        &key.to_string_lossy(),
    ])
    .await;
    let url = server.url();
    let timeout = Duration::from_secs(2);
    let ca = dir.join("ca.pem");
    let verified = flags(&["--nats-url", &url, "--nats-tls-ca", &ca.to_string_lossy()]);
    connect(&verified, "test", timeout)
        .await
        .expect("TLS with the private CA");
    // Without the CA the server's certificate is not trusted.
    let untrusted = flags(&["--nats-url", &url, "--nats-tls"]);
    assert!(connect(&untrusted, "test", timeout).await.is_err());
}
