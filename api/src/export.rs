//! ExportLog: every stored command and observation of a namespace (or of all), oldest first,
//! one `LogEntry` a message, read from the two streams (`krane_store::export`) as they stand
//! when the call begins; the stream then ends. What `krane log export` writes and
//! `krane log replay` reads. A namespace needs read permission on it; all of them, a grant
//! covering every namespace.

use crate::auth::{Caller, Operation};
use crate::convert;
use crate::errors::{invalid, storage};
use crate::gateways::ApiState;
use axum::extract::State;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse, StreamBody};
use futures::{Stream, StreamExt};
use krane_core::spec::FieldError;
use krane_proto::krane::v1::{ExportLogRequest, LogEntry};
use krane_store::export::{Exported, Since};
use tracing::info;

/// The version of the exported format (`LogEntry.version`).
pub const LOG_FORMAT_VERSION: u32 = 1;

pub async fn export_log(
    State(state): State<ApiState>,
    caller: Caller,
    ConnectRequest(request): ConnectRequest<ExportLogRequest>,
) -> Result<
    ConnectResponse<
        StreamBody<impl Stream<Item = Result<LogEntry, ConnectError>> + Send + 'static>,
    >,
    ConnectError,
> {
    let namespace = Some(request.namespace.as_str()).filter(|namespace| !namespace.is_empty());
    match namespace {
        Some(namespace) => caller.may(Operation::Read, namespace)?,
        None => caller.may_read_cluster()?,
    }
    let since = since_of(&request).map_err(invalid)?;
    let export = state
        .store
        .export_log(namespace, since)
        .await
        .map_err(storage)?;
    info!(
        namespace = namespace.unwrap_or("*"),
        entries = export.entries.len(),
        undecodable = export.undecodable,
        "log exported"
    );
    let entries = futures::stream::iter(export.entries.into_iter().map(log_entry)).map(Ok);
    Ok(ConnectResponse::new(StreamBody::new(entries)))
}

fn log_entry(exported: Exported) -> LogEntry {
    LogEntry {
        version: LOG_FORMAT_VERSION,
        subject: exported.subject,
        namespace: exported.key.namespace,
        gateway_id: exported.key.gateway_id,
        event: Some(convert::event_of(&exported.entry)),
    }
}

/// The request's cut-off: `since_time` must be RFC 3339.
fn since_of(request: &ExportLogRequest) -> Result<Since, FieldError> {
    let time = match request.since_time.as_str() {
        "" => None,
        text => Some(humantime::parse_rfc3339_weak(text).map_err(|error| {
            FieldError::new("since_time", format!("is not an RFC 3339 time: {error}"))
        })?),
    };
    Ok(Since {
        time,
        command_sequence: Some(request.since_sequence).filter(|sequence| *sequence > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_read_from_the_request() {
        let none = since_of(&ExportLogRequest::default()).expect("no cut-off");
        assert_eq!(none, Since::default());
        let request = ExportLogRequest {
            since_time: "2026-01-02T03:04:05Z".into(),
            since_sequence: 7,
            ..Default::default()
        };
        let since = since_of(&request).expect("valid");
        assert_eq!(since.command_sequence, Some(7));
        assert!(since.time.is_some());
        let bad = ExportLogRequest {
            since_time: "yesterday".into(),
            ..Default::default()
        };
        let error = since_of(&bad).expect_err("not a time");
        assert!(error.to_string().starts_with("since_time"), "{error}");
    }
}
