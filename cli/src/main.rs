//! `krane`: the command line for krane's GatewayService. It speaks Connect (JSON) to the API
//! at `--api` / `KRANE_API_URL`; create, scale and delete follow the gateway's replicas live
//! until done, failed or `--timeout` (`--detach` returns at once). Exit codes: 0 done,
//! 1 failed (or the call was refused), 2 timed out.
//!
//! - `args`: the command line (`krane gateway …`, `krane host list`).
//! - `api`: the connection to the API and the calls everyone uses.
//! - `client`: runs one command.
//! - `history`: a gateway's commands and observations as a table.
//! - `hosts`: the hosts with their free CPU and memory as a table.
//! - `log`: `krane log export` and `krane log replay` (recorded commands into a fresh stack,
//!   its outcome compared with the recording).
//! - `progress`: follows a gateway to its goal with a live per-replica display.

mod api;
mod args;
mod client;
mod history;
mod hosts;
mod log;
mod progress;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match client::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("krane: {error:#}");
            ExitCode::from(1)
        }
    }
}
