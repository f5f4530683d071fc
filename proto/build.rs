//! Compiles `krane/v1/*.proto` with a vendored protoc, so a fresh machine needs nothing installed.
//! With the `clients` feature it also generates the Connect and gRPC clients (tests, tools).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=krane");
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
