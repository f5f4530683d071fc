//! Compiles `krane/v1/*.proto` with a vendored protoc, so a fresh machine needs nothing installed.
//! With the `clients` feature it also generates the Connect and gRPC clients (tests, tools).
//! It also writes the file descriptor set (`krane_descriptor.bin`) that gRPC server reflection
//! serves.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    println!("cargo:rerun-if-changed=krane");
    write_descriptor_set(&protoc)?;
    let builder = connectrpc_axum_build::compile_dir("krane")
        .include_file("krane_protos.rs")
        .with_tonic();
    if std::env::var_os("CARGO_FEATURE_CLIENTS").is_some() {
        builder
            .with_connect_client()
            .with_tonic_client()
            .compile()?;
    } else {
        builder.compile()?;
    }
    Ok(())
}

/// `protoc --include_imports --descriptor_set_out=$OUT_DIR/krane_descriptor.bin krane/v1/*.proto`,
/// with file names as imported (`krane/v1/gateway.proto`).
fn write_descriptor_set(protoc: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("krane_descriptor.bin");
    let mut protos: Vec<PathBuf> = std::fs::read_dir("krane/v1")?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    let status = std::process::Command::new(protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("-I.")
        .args(&protos)
        .status()?;
    if !status.success() {
        return Err(format!("protoc could not write the descriptor set: {status}").into());
    }
    Ok(())
}
