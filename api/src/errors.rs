//! Mapping of krane errors to Connect codes (connectrpc-axum turns them into gRPC codes too).

use connectrpc_axum::ConnectError;
use krane_core::spec::FieldError;
use krane_store::StoreError;
use tracing::warn;

/// Bad input: `invalid_argument`, with the field path first in the message.
pub fn invalid(error: FieldError) -> ConnectError {
    ConnectError::new_invalid_argument(error.to_string())
}

/// Storage trouble: `unavailable` (retry later) or `internal` (a stored value is corrupt).
pub fn storage(error: StoreError) -> ConnectError {
    warn!(%error, "storage call failed");
    match error {
        StoreError::Unavailable(_) | StoreError::Superseded(_) => {
            ConnectError::new_unavailable(error.to_string())
        }
        StoreError::Corrupt { .. } | StoreError::Encode { .. } => {
            ConnectError::new_internal(error.to_string())
        }
    }
}
