//! Whether a running container serves. RUNNING means serving: where the image defines a
//! Docker `HEALTHCHECK`, when the engine says it is healthy; otherwise when its published port
//! answers a probe from this host. A container that keeps exiting is failing, with its exit
//! code and the last lines of its log.
//!
//! - [`health_in_status`]: the health the engine shows in a listing's status text (pure).
//! - [`TcpProbe`]: connects to a published port and tells a serving process from Docker's
//!   port proxy, which accepts every connection and closes it at once when nothing listens
//!   behind it.
//! - [`ProbeBoard`]: the last probe of each container, kept by the runtime's change stream
//!   (a probe of every running container every interval, and of those not serving yet every
//!   [`STARTING_PROBE`]), so listings read it instead of probing on every reconcile.

use super::Readiness;
use krane_core::names::GatewayKey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The health check state a container listing shows in its status text
/// (`Up 3 seconds (health: starting)`, `Up 1 minute (healthy)`, `Up 2 minutes (unhealthy)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The image defines no health check.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

pub fn health_in_status(status: &str) -> Health {
    if status.contains("(health: starting)") {
        Health::Starting
    } else if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(healthy)") {
        Health::Healthy
    } else {
        Health::None
    }
}

/// How a container's readiness follows from its health check, when it has one.
pub fn from_health(health: Health, output: &str) -> Option<Readiness> {
    match health {
        Health::None => None,
        Health::Healthy => Some(Readiness::Ready),
        Health::Starting => Some(Readiness::Starting(
            "starting: waiting for its health check to pass".to_string(),
        )),
        Health::Unhealthy => Some(Readiness::Failing(if output.is_empty() {
            "health check failing".to_string()
        } else {
            format!("health check failing: {}", one_line(output))
        })),
    }
}

/// Why a container that exited (and may be restarting) is failing: its exit code, how often
/// the engine restarted it, and the last lines of its log. The code is `None` when it is not
/// known: a container the engine runs again after a restart shows 0, not how it last ended,
/// and its last `die` event was not seen by this worker.
pub fn exit_reason(exit_code: Option<i64>, restarts: i64, log_tail: &str) -> String {
    let mut reason = match exit_code {
        Some(code) => format!("exited with code {code}"),
        None => "keeps exiting".to_string(),
    };
    if restarts > 0 {
        reason.push_str(&format!(" (restarted {restarts} times)"));
    }
    let log = one_line(log_tail);
    if !log.is_empty() {
        reason.push_str(": ");
        reason.push_str(&log);
    }
    reason
}

/// Log lines joined into one, cut to the length a status line can carry.
fn one_line(text: &str) -> String {
    const MAX: usize = 400;
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    // The last lines say most: keep the end.
    let count = joined.chars().count();
    if count <= MAX {
        return joined;
    }
    let tail: String = joined.chars().skip(count - MAX).collect();
    format!("…{tail}")
}

/// A TCP probe of published ports on `host` (where this worker reaches them).
#[derive(Debug, Clone)]
pub struct TcpProbe {
    pub host: String,
    pub timeout: Duration,
}

/// How long a connection must stay open, silent, for the process behind it to count as
/// serving: Docker's proxy closes it within milliseconds when nothing listens.
const HELD_OPEN: Duration = Duration::from_millis(100);

impl TcpProbe {
    /// `Ok` when something serves on `port`: the connection is accepted and then either
    /// held open (an HTTP server waits for the request) or answered with data.
    pub async fn serves(&self, port: u16) -> Probed {
        let address = format!("{}:{port}", self.host);
        let mut stream =
            match tokio::time::timeout(self.timeout, TcpStream::connect(&address)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(format!("port {port} does not answer: {error}")),
                Err(_) => {
                    return Err(format!(
                        "port {port} does not answer within {:?}",
                        self.timeout
                    ));
                }
            };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(HELD_OPEN, stream.read(&mut byte)).await {
            Err(_) | Ok(Ok(1..)) => Ok(()),
            Ok(Ok(0)) => Err(format!("port {port} closes connections at once")),
            Ok(Err(error)) => Err(format!("port {port} does not answer: {error}")),
        }
    }
}

/// How often a container that does not serve yet is probed again, so one that starts serving
/// is RUNNING within a fraction of a second (those serving are probed every `--probe-interval`).
pub const STARTING_PROBE: Duration = Duration::from_millis(200);

/// What a probe said: serving, or why not.
pub type Probed = Result<(), String>;

/// The last probe of a container.
struct LastProbe {
    port: u16,
    gateway: GatewayKey,
    outcome: Probed,
}

/// The exit code of each container's last `die` event, as the engine's event stream told it:
/// while the engine runs a container again after a restart, inspecting it shows exit code 0,
/// so how it last ended is kept here. Forgotten when the container is destroyed.
#[derive(Debug, Default)]
pub struct ExitCodes {
    codes: Mutex<HashMap<String, i64>>,
}

impl ExitCodes {
    /// A `die` of `name` with `code`.
    pub fn died(&self, name: &str, code: i64) {
        if let Ok(mut codes) = self.codes.lock() {
            codes.insert(name.to_string(), code);
        }
    }

    /// `name` was destroyed.
    pub fn forget(&self, name: &str) {
        if let Ok(mut codes) = self.codes.lock() {
            codes.remove(name);
        }
    }

    /// The code of `name`'s last `die`, if one was seen.
    pub fn last(&self, name: &str) -> Option<i64> {
        self.codes.lock().ok()?.get(name).copied()
    }
}

/// The last probe of each container (by name): the port probed and what it said.
#[derive(Default)]
pub struct ProbeBoard {
    probes: Mutex<HashMap<String, LastProbe>>,
}

impl ProbeBoard {
    /// The last probe of `name` on `port`, if there is one.
    pub fn get(&self, name: &str, port: u16) -> Option<Probed> {
        let probes = self.probes.lock().ok()?;
        let last = probes.get(name)?;
        (last.port == port).then(|| last.outcome.clone())
    }

    /// Records a probe of `name` (a container of `gateway`); true when it says something else
    /// than the one before (or is the first).
    pub fn record(&self, name: &str, port: u16, gateway: &GatewayKey, outcome: Probed) -> bool {
        let Ok(mut probes) = self.probes.lock() else {
            return false;
        };
        let serves = outcome.is_ok();
        let last = LastProbe {
            port,
            gateway: gateway.clone(),
            outcome,
        };
        let previous = probes.insert(name.to_string(), last);
        !previous.is_some_and(|before| before.port == port && before.outcome.is_ok() == serves)
    }

    /// The containers whose last probe said they do not serve: name, port, gateway.
    pub fn not_serving(&self) -> Vec<(String, u16, GatewayKey)> {
        self.probes
            .lock()
            .map(|probes| {
                probes
                    .iter()
                    .filter(|(_, last)| last.outcome.is_err())
                    .map(|(name, last)| (name.clone(), last.port, last.gateway.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets every container not in `names` (removed ones).
    pub fn retain(&self, names: &std::collections::HashSet<String>) {
        if let Ok(mut probes) = self.probes.lock() {
            probes.retain(|name, _| names.contains(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_status_text_tells_the_health() {
        assert_eq!(
            health_in_status("Up 3 seconds (health: starting)"),
            Health::Starting
        );
        assert_eq!(health_in_status("Up 1 minute (healthy)"), Health::Healthy);
        assert_eq!(
            health_in_status("Up 2 minutes (unhealthy)"),
            Health::Unhealthy
        );
        assert_eq!(health_in_status("Up 2 minutes"), Health::None);
        assert_eq!(health_in_status(""), Health::None);
    }

    #[test]
    fn health_decides_readiness_only_where_there_is_a_health_check() {
        assert_eq!(from_health(Health::None, ""), None);
        assert_eq!(from_health(Health::Healthy, ""), Some(Readiness::Ready));
        assert!(matches!(
            from_health(Health::Starting, ""),
            Some(Readiness::Starting(_))
        ));
        let failing = from_health(Health::Unhealthy, "healthz: 503\n");
        assert_eq!(
            failing,
            Some(Readiness::Failing(
                "health check failing: healthz: 503".into()
            ))
        );
    }

    #[test]
    fn an_exit_reason_carries_code_restarts_and_the_log_tail() {
        let reason = exit_reason(
            Some(3),
            2,
            "starting\nconfig invalid\n\nexiting with code 3\n",
        );
        assert_eq!(
            reason,
            "exited with code 3 (restarted 2 times): starting | config invalid | exiting with code 3"
        );
        assert_eq!(exit_reason(Some(1), 0, ""), "exited with code 1");
        assert_eq!(
            exit_reason(None, 1, "exiting with code 3"),
            "keeps exiting (restarted 1 times): exiting with code 3",
            "no exit code is made up when none is known"
        );
        let long = "x".repeat(1000);
        assert!(exit_reason(Some(1), 0, &long).chars().count() < 450);
    }

    #[test]
    fn the_board_tells_when_a_probe_changes_its_answer() {
        let board = ProbeBoard::default();
        let gateway = GatewayKey::new("ns", "gw");
        assert!(board.record("c", 30000, &gateway, Err("refused".into())));
        assert!(!board.record("c", 30000, &gateway, Err("closes at once".into())));
        assert_eq!(
            board.not_serving(),
            vec![("c".to_string(), 30000, gateway.clone())]
        );
        assert!(board.record("c", 30000, &gateway, Ok(())));
        assert!(board.not_serving().is_empty());
        assert_eq!(board.get("c", 30000), Some(Ok(())));
        assert_eq!(
            board.get("c", 30001),
            None,
            "another port is another container"
        );
        board.retain(&Default::default());
        assert_eq!(board.get("c", 30000), None);
    }

    #[tokio::test]
    async fn a_probe_tells_a_listener_from_a_port_that_closes_at_once() {
        let probe = TcpProbe {
            host: "127.0.0.1".into(),
            timeout: Duration::from_secs(1),
        };
        // Something that serves: accepts and waits for a request.
        let serving = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = serving.local_addr().expect("address").port();
        let held = tokio::spawn(async move {
            let accepted = serving.accept().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(accepted);
        });
        assert_eq!(probe.serves(port).await, Ok(()));
        held.abort();
        // What Docker's proxy does when nothing listens behind it: accept, then close.
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = proxy.local_addr().expect("address").port();
        tokio::spawn(async move {
            if let Ok((stream, _)) = proxy.accept().await {
                drop(stream);
            }
        });
        assert!(probe.serves(port).await.is_err());
        // Nothing at all.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        assert!(probe.serves(port).await.is_err());
    }
}
