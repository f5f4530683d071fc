//! Image registries for the pull tests, all on loopback (Docker treats 127.0.0.0/8 registries
//! as plain HTTP; nothing comes from the internet):
//!
//! - [`Registry`]: the distribution reference server (Debian's `docker-registry`, installed by
//!   `scripts/install-registry.sh`; `KRANE_DOCKER_REGISTRY` names another binary) with basic
//!   auth from an htpasswd file (bcrypt) written at start, a temporary storage directory and a
//!   config of its own. Images are pushed with the `docker` CLI, logged in through a
//!   temporary `DOCKER_CONFIG` (the machine's own docker config is never touched), and the
//!   pushed tag removed from the engine so a worker must pull it.
//! - [`SlowRelay`]: a TCP relay in front of a registry that passes what the registry sends at
//!   a set rate, so a pull takes long enough to be watched.
//! - [`Unresponsive`]: a "registry" that accepts connections and never answers.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The user the registry knows.
pub const USERNAME: &str = "krane";

/// A running registry with basic auth; killed (and what it pushed untagged) on drop.
pub struct Registry {
    child: Child,
    address: SocketAddr,
    password: String,
    dir: TempDir,
    pushed: Vec<String>,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub async fn start() -> Self {
        let binary = registry_binary();
        let dir = tempfile::tempdir().expect("a temporary directory for the registry");
        let password = format!("pw-{}-{}", std::process::id(), rand::random::<u64>());
        let hash = bcrypt::hash(&password, 4).expect("hash the registry password with bcrypt");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{USERNAME}:{hash}\n")).expect("write the htpasswd");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("create the registry's storage");
        // The port is chosen free, then handed to the registry (it does not say which port it
        // took when given 0); should Docker publish a container on it meanwhile, the registry
        // exits and another port is tried.
        let config = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        for _ in 0..5 {
            let address = free_loopback_address().await;
            std::fs::write(&config, registry_config(address, &storage, &htpasswd))
                .expect("write the registry config");
            let log = std::fs::File::create(&log_path).expect("create the registry log");
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
            if answers(&mut child, address).await {
                return Self {
                    child,
                    address,
                    password,
                    dir,
                    pushed: Vec::new(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "the registry did not start on {address}: {}",
                log_tail(&log_path)
            );
        }
        panic!("the registry did not start on any of 5 loopback ports");
    }

    /// `127.0.0.1:<port>`: the registry part of its images' names.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Where a relay in front of it connects.
    pub fn socket_address(&self) -> SocketAddr {
        self.address
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Another name of a pushed image (pulled through a relay) to remove from the engine when
    /// the registry stops.
    pub fn remove_on_drop(&mut self, image: &str) {
        self.pushed.push(image.to_string());
    }

    /// The worker flags that pull from `server` (this registry, or a relay in front of it)
    /// with the registry's credentials.
    pub fn worker_flags(&self, server: &str) -> Vec<String> {
        [
            "--registry-username",
            USERNAME,
            "--registry-password",
            &self.password,
            "--registry-server",
            server,
        ]
        .iter()
        .map(|flag| flag.to_string())
        .collect()
    }

    /// Pushes the local image `source` as `<registry>/<repository>:<tag>` and removes that
    /// name from the engine again, so whoever wants it must pull it; returns the name.
    pub fn push(&mut self, source: &str, repository: &str, tag: &str) -> String {
        let image = format!("{}/{repository}:{tag}", self.address);
        let config = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&config).expect("create the docker CLI config");
        let mut login = docker_cli(&config)
            .args(["login", "--username", USERNAME, "--password-stdin"])
            .arg(self.address())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        login
            .stdin
            .take()
            .expect("docker login's stdin")
            .write_all(self.password.as_bytes())
            .expect("write the password to docker login");
        let output = login.wait_with_output().expect("docker login");
        assert!(
            output.status.success(),
            "docker login {} failed: {}",
            self.address,
            String::from_utf8_lossy(&output.stderr)
        );
        run(docker_cli(&config).args(["tag", source, &image]));
        run(docker_cli(&config).args(["push", &image]));
        run(docker_cli(&config).args(["rmi", &image]));
        self.pushed.push(image.clone());
        image
    }

    /// The last lines of the registry's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("registry.log"))
    }
}

/// Whether the registry answers its API root (401: it wants credentials) within 10 s.
async fn answers(child: &mut Child, address: SocketAddr) -> bool {
    let http = crate::http_client();
    let url = format!("http://{address}/v2/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(response) = http.get(&url).send().await {
            return response.status() == reqwest::StatusCode::UNAUTHORIZED;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever a worker pulled from it: the engine keeps no test leftovers.
        if !self.pushed.is_empty() {
            let _ = Command::new("docker")
                .arg("rmi")
                .args(&self.pushed)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn registry_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("KRANE_DOCKER_REGISTRY") {
        return PathBuf::from(binary);
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("docker-registry"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "docker-registry not found (KRANE_DOCKER_REGISTRY or PATH); install it with \
             scripts/install-registry.sh (Debian's docker-registry package)"
        )
    })
}

fn registry_config(address: SocketAddr, storage: &Path, htpasswd: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: {address}\n  secret: krane-test-{secret}\n\
         auth:\n  htpasswd:\n    realm: krane-test\n    path: {htpasswd}\n",
        storage = storage.display(),
        htpasswd = htpasswd.display(),
        secret = rand::random::<u64>(),
    )
}

async fn free_loopback_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free loopback port");
    listener.local_addr().expect("its address")
}

/// The `docker` CLI with its own config directory (credentials stay in the test's).
fn docker_cli(config: &Path) -> Command {
    let mut command = Command::new("docker");
    command.env("DOCKER_CONFIG", config);
    command
}

fn run(command: &mut Command) {
    let output = command.output().expect("run the docker CLI");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds `tag`: the test gateway with a layer of `megabytes` MB of random bytes (nothing
/// to compress), so pulling it moves that much.
pub fn build_large_test_image(tag: &str, megabytes: usize) {
    let context = tempfile::tempdir().expect("a build context");
    let mut blob = vec![0u8; megabytes * 1_000_000];
    rand::fill(&mut blob[..]);
    std::fs::write(context.path().join("blob"), &blob).expect("write the random layer");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {}\nCOPY blob /blob\n", crate::TEST_IMAGE),
    )
    .expect("write the Dockerfile");
    run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--tag", tag])
        .arg(context.path()));
}

/// A relay to `upstream` that passes what upstream sends at `bytes_per_second` (what the
/// client sends goes through at once). Stops with it.
pub struct SlowRelay {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl SlowRelay {
    pub async fn start(upstream: SocketAddr, bytes_per_second: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let address = listener.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, bytes_per_second));
            }
        });
        Self { address, task }
    }

    pub fn address(&self) -> String {
        self.address.to_string()
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, bytes_per_second: usize) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_reads, mut client_writes) = client.into_split();
    let (mut server_reads, mut server_writes) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_reads, &mut server_writes).await;
        let _ = server_writes.shutdown().await;
    };
    let answers = async {
        // 10 slices a second, each at most a tenth of the rate.
        let slice = (bytes_per_second / 10).max(1);
        let mut buffer = vec![0u8; slice];
        loop {
            let started = tokio::time::Instant::now();
            let Ok(read) = server_reads.read(&mut buffer).await else {
                break;
            };
            if read == 0 || client_writes.write_all(&buffer[..read]).await.is_err() {
                break;
            }
            tokio::time::sleep_until(started + Duration::from_millis(100)).await;
        }
        let _ = client_writes.shutdown().await;
    };
    tokio::join!(requests, answers);
}

/// A stand-in for a registry that hangs: accepts every connection, holds it open, never
/// answers. Counts the connections it took.
pub struct Unresponsive {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Unresponsive {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the unresponsive registry");
        let address = listener.local_addr().expect("its address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                held.push(connection);
            }
        });
        Self {
            address,
            accepted,
            task,
        }
    }

    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Unresponsive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
