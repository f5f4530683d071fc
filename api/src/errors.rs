//! Mapping of krane errors to Connect codes (connectrpc-axum turns them into gRPC codes too).

use connectrpc_axum::ConnectError;
use krane_core::log::LogError;
use krane_core::spec::FieldError;
use tracing::warn;

/// Bad input: `invalid_argument`, with the field path first in the message.
pub fn invalid(error: FieldError) -> ConnectError {
    ConnectError::new_invalid_argument(error.to_string())
}

/// Storage trouble: `unavailable` (retry later) or `internal` (a stored value is corrupt).
pub fn storage(error: LogError) -> ConnectError {
    warn!(%error, "storage call failed");
    match error {
        LogError::Unavailable(_) | LogError::Superseded(_) => {
            ConnectError::new_unavailable(error.to_string())
        }
        LogError::Corrupt { .. } => ConnectError::new_internal(error.to_string()),
    }
}
