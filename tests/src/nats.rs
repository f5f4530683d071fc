//! A real `nats-server` with JetStream on a free loopback port and a temporary store, and a
//! real cluster of them ([`NatsCluster`]: routes between loopback ports, JetStream on each).
//! The binary comes from `KRANE_NATS_SERVER`, else `PATH` (`scripts/install-nats.sh` provides it).
//!
//! The server picks its own port (`-p -1`) and the harness reads it from the server's log:
//! a port merely found free beforehand can be taken meanwhile by Docker, which publishes
//! container ports from the same range.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub struct NatsServer {
    child: Option<Child>,
    /// 0 until the first start chose one; restarts keep it so clients reconnect.
    port: u16,
    store: TempDir,
    /// Further server flags (authentication, TLS), kept for restarts.
    extra_args: Vec<String>,
}

impl NatsServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with further `nats-server` flags (e.g. `--user`, `--tls`).
    pub async fn start_with(extra_args: &[&str]) -> Self {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let mut server = Self {
            child: None,
            port: 0,
            store,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let binary = binary();
        let log = self.store.path().join("nats.log");
        let _ = std::fs::remove_file(&log);
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store.path().join("jetstream"))
            .arg("-l")
            .arg(&log)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {} ({error}); run scripts/install-nats.sh or set KRANE_NATS_SERVER",
                    binary.display()
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready")
                && let Some(port) = listening_port(&text)
            {
                self.port = port;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "nats-server did not become ready within 10 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

/// A NATS cluster on loopback: `size` servers named `n0`, `n1` …, each with its own client
/// port, cluster port and temporary store, routed to all the others. A node can be killed
/// (SIGKILL) and restarted on the same ports and store; it then catches up from its peers.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start(size: usize) -> Self {
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes = Vec::with_capacity(size);
        for (index, port) in cluster_ports.iter().enumerate() {
            let routes: Vec<String> = cluster_ports
                .iter()
                .filter(|other| *other != port)
                .map(|other| format!("nats://127.0.0.1:{other}"))
                .collect();
            let name = format!("n{index}");
            let listen = format!("nats://127.0.0.1:{port}");
            let routes = routes.join(",");
            let args = [
                "-n",
                name.as_str(),
                "--cluster_name",
                "krane",
                "--cluster",
                listen.as_str(),
                "--routes",
                routes.as_str(),
            ];
            nodes.push(NatsServer::start_with(&args).await);
        }
        Self { nodes }
    }

    /// Every node's client URL, comma-separated (as `--nats-url` takes them).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    /// The node named `name` (`n0` …), as JetStream reports leaders.
    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        let index: usize = name
            .trim_start_matches('n')
            .parse()
            .unwrap_or_else(|_| panic!("not a node name: {name}"));
        &mut self.nodes[index]
    }
}

/// The client port from nats-server's "Listening for client connections on <host>:<port>".
fn listening_port(log: &str) -> Option<u16> {
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("Listening for client connections on"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary() -> PathBuf {
    std::env::var_os("KRANE_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A port that was free a moment ago (the OS picks it; the listener is closed at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
