//! `krane log export`: ExportLog written to a file (or standard output), one entry a line.

use super::file;
use crate::api::Api;
use crate::args::ExportArgs;
use futures::StreamExt;
use krane_proto::krane::v1::ExportLogRequest;
use std::io::Write;
use std::process::ExitCode;

pub async fn run(api: &Api, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let request = ExportLogRequest {
        namespace: args.namespace.clone().unwrap_or_default(),
        since_time: args.since.clone().unwrap_or_default(),
        since_sequence: args.since_sequence.unwrap_or(0),
    };
    let mut out: Box<dyn Write> = match &args.file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut entries = Box::pin(api.export_log(&request).await?);
    let mut written = 0usize;
    while let Some(entry) = entries.next().await {
        writeln!(out, "{}", file::line(&entry?)?)?;
        written += 1;
    }
    out.flush()?;
    if let Some(path) = &args.file {
        eprintln!("exported {written} entries to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
