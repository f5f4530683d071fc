//! The wire contract of krane: `krane.v1` messages (prost, with proto3 JSON via pbjson) and the
//! `GatewayService` stubs for Connect (connectrpc-axum) and gRPC (tonic), generated at build time.

// Generated code: lints are for code we write.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/krane_protos.rs"));
}

pub use generated::krane;
