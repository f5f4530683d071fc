//! The wire contract of krane: `krane.v1` messages (prost, with proto3 JSON via pbjson) and the
//! `GatewayService` stubs for Connect (connectrpc-axum) and gRPC (tonic), generated at build time,
//! and the file descriptor set gRPC reflection serves.

// Generated code: lints are for code we write.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/krane_protos.rs"));
}

pub use generated::krane;

/// The encoded `FileDescriptorSet` of `krane.v1` (with its imports), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/krane_descriptor.bin"));
