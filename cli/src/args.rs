//! The command line: `krane gateway <create|get|list|delete|watch|scale|history> …` and
//! `krane host list` and `krane log <export|replay>`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "krane", version, about = "Manage krane gateways")]
pub struct Cli {
    /// Base URL of the krane API.
    #[arg(
        long,
        env = "KRANE_API_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub api: String,

    /// Bearer token, when the API requires one.
    #[arg(long, env = "KRANE_AUTH_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// For an `https://` API: the PEM CA its certificate chains to (default: the system's
    /// roots).
    #[arg(long, env = "KRANE_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,

    /// For an API with mutual TLS: this PEM client certificate (with `--tls-client-key`).
    #[arg(
        long,
        env = "KRANE_TLS_CLIENT_CERT",
        requires = "tls_client_key",
        global = true
    )]
    pub tls_client_cert: Option<std::path::PathBuf>,

    /// The PEM private key of `--tls-client-cert`.
    #[arg(
        long,
        env = "KRANE_TLS_CLIENT_KEY",
        requires = "tls_client_cert",
        global = true
    )]
    pub tls_client_key: Option<std::path::PathBuf>,

    /// `text` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gateways: N replicas of one image.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Hosts: the Docker hosts the workers announce.
    #[command(subcommand)]
    Host(HostCommand),
    /// The log: export what a stack stored, replay recorded commands into another.
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Write the stored commands and observations of a namespace (or of all) as JSON Lines, one
    /// krane.v1.LogEntry a line (format version 1), oldest first.
    Export(ExportArgs),
    /// Re-issue a file's recorded commands (create, update, retry, delete; never what workers
    /// decided, never observations) against --api in order, keeping their relative timing; then
    /// wait for the stack to settle and compare each gateway with the file's last observed state
    /// per replica. Exit code 0 when they match, 1 when not (each difference printed).
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The namespace to export.
    #[arg(long, short = 'n', required_unless_present = "all_namespaces")]
    pub namespace: Option<String>,
    /// Export every namespace (needs a grant of every namespace).
    #[arg(long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only entries stored at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only commands from this sequence of the commands stream on (and observations from then).
    #[arg(long)]
    pub since_sequence: Option<u64>,
    /// Write here instead of to standard output.
    #[arg(long, short = 'o')]
    pub file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A file written by `krane log export` (or by hand in the same format).
    pub file: std::path::PathBuf,
    /// Replay N times faster than recorded (0.5: half as fast; 0.01 to 1000000), or `max`:
    /// each command as soon as the one before is accepted.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: Speed,
    /// Longest wait for the stack to settle after the last command.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
}

/// How fast a replay goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// The recorded gaps divided by this factor.
    Times(f64),
    /// No gaps.
    Max,
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text == "max" {
        return Ok(Speed::Max);
    }
    match text.parse::<f64>() {
        Ok(factor) if (0.01..=1e6).contains(&factor) => Ok(Speed::Times(factor)),
        _ => Err(format!(
            "{text:?} is neither a number from 0.01 to 1000000 nor `max`"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Every host with its CPU and memory free and in total and its krane containers, as its
    /// worker's latest heartbeat says (needs a grant of every namespace).
    List,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Create a gateway (or change an existing one to this spec) and follow it until RUNNING.
    Create(CreateArgs),
    /// Show a gateway's instances.
    Get(Target),
    /// List the gateways of a namespace.
    List {
        #[arg(long, short, env = "KRANE_NAMESPACE", default_value = "default")]
        namespace: String,
    },
    /// Delete a gateway and follow it until its containers are gone.
    Delete {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print the gateway's state now and on every change, until it is gone (Ctrl-C to stop).
    Watch(Target),
    /// What happened to a gateway, oldest first: each command and each replica's observed
    /// state, as the streams keep them.
    History {
        #[command(flatten)]
        target: Target,
        /// Show at most this many entries, the most recent (0: the API's default, 200).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Keep printing new entries as they are stored (Ctrl-C to stop); with `--output json`,
        /// one JSON event a line.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Change the number of replicas and follow until they run.
    Scale {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        replicas: u32,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Gateway id.
    pub id: String,
    #[arg(long, short, env = "KRANE_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Clone, Args)]
pub struct Wait {
    /// Return as soon as the API accepted the change.
    #[arg(long)]
    pub detach: bool,
    /// Give up following after this long (exit code 2).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub image: String,
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    #[arg(long, default_value_t = 100)]
    pub cpu_millicores: u32,
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    #[arg(long, default_value = "")]
    pub workspace_id: String,
    #[command(flatten)]
    pub wait: Wait,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_are_bounded_numbers_or_max() {
        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("2.5"), Ok(Speed::Times(2.5)));
        for bad in ["0", "-1", "1e-300", "NaN", "inf", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
