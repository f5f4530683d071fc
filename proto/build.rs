//! Compiles `krane/v1/*.proto` with a vendored protoc, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=krane");
    connectrpc_axum_build::compile_dir("krane")
        .include_file("krane_protos.rs")
        .with_tonic()
        .compile()?;
    Ok(())
}
