//! Extra Docker engines ("hosts") for multi-host tests. An [`ExtraEngine`] is a real, separate
//! dockerd in its own network namespace, next to the machine's engine, driven through
//! `scripts/engines.sh`: its API is a unix socket ([`ExtraEngine::docker_host`]) and the ports
//! its containers publish are reachable from the test process at
//! [`ExtraEngine::advertise_host`]. A test can take its engine down ([`ExtraEngine::stop`], an
//! outage) and bring it back ([`ExtraEngine::restart`]); dropping it destroys the engine with
//! its containers, namespace and data.
//!
//! Every engine needs an index from 1 to 254 that no other engine alive on the machine uses (it
//! picks the addresses `10.200.<index>.1/.2` and the engine's bridge `10.210.<index>.1/24`), so
//! **each test passes its own fixed indices**, distinct from every other test's (tests of one
//! binary run in parallel). The engine's name is the caller's prefix followed by the index. An
//! index is held with a file lock for the engine's lifetime: a second test process wanting the
//! same index (the same test run twice at once) waits for it instead of clashing, and a stale
//! engine left by a killed run is destroyed before the index is used again.
//!
//! The calls block (they run the script) for about a second, stops and drops for about three;
//! they are meant to be called from tests directly. Failures panic with the script's output:
//! tests fail, never skip, when an engine cannot be made.

use bollard::Docker;
use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Where the script keeps its sockets, pids and logs (and this harness its index locks).
const STATE_DIR: &str = "/run/krane-engines";

/// Indices in use by engines of this process (a file lock cannot tell them apart).
static INDICES: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

/// A separate Docker engine in its own network namespace; destroyed on drop.
pub struct ExtraEngine {
    name: String,
    index: u8,
    docker_host: String,
    advertise_host: String,
    _index_lock: File,
}

impl ExtraEngine {
    /// Starts a fresh engine named `<prefix><index>` and loads the test image into it.
    ///
    /// `prefix`: 1–6 lowercase letters naming the test. `index`: 1–254, fixed per test and
    /// used by no other test (see the module documentation).
    pub fn start(prefix: &str, index: u8) -> Self {
        assert!(
            (1..=6).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase()),
            "engine prefix {prefix:?} must be 1-6 lowercase letters"
        );
        assert!(
            (1..=254).contains(&index),
            "engine index {index} must be 1-254"
        );
        let name = format!("{prefix}{index}");
        claim_index(index, &name);
        // From here on, dropping `engine` (also when a step below panics) destroys it.
        let mut engine = Self {
            _index_lock: lock_index(index, &name),
            name,
            index,
            docker_host: String::new(),
            advertise_host: String::new(),
        };
        // Holding the lock, anything left under this name is a stale engine of a killed run.
        script(&["destroy", &engine.name]);
        let output = script(&["start", &engine.name, &index.to_string()]);
        let value = |key: &str| {
            output
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix(key))
                .unwrap_or_else(|| panic!("engines.sh start printed no {key}: {output}"))
                .to_string()
        };
        engine.docker_host = value("DOCKER_HOST=");
        engine.advertise_host = value("ADVERTISE=");
        script(&["load", &engine.name, crate::TEST_IMAGE]);
        engine
    }

    /// The engine's name (its network namespace, and `kr-<name>-o`/`-i` its veth pair).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// The engine's API, `unix:///run/krane-engines/<name>.sock` (a worker's `--docker-host`).
    pub fn docker_host(&self) -> String {
        self.docker_host.clone()
    }

    /// The address, reachable from the test process, where the engine's containers publish
    /// their ports (a worker's `--advertise-host`).
    pub fn advertise_host(&self) -> String {
        self.advertise_host.clone()
    }

    /// A version-negotiated bollard client of this engine.
    pub async fn engine(&self) -> Docker {
        Docker::connect_with_host(&self.docker_host)
            .expect("a Docker client for the extra engine")
            .negotiate_version()
            .await
            .unwrap_or_else(|error| panic!("engine {} does not answer: {error}", self.name))
    }

    /// An engine outage: dockerd stops (SIGTERM, its containers stop with it) and its API
    /// socket is gone until [`restart`](Self::restart). Namespace, data and images stay.
    pub fn stop(&self) {
        script(&["stop", &self.name]);
    }

    /// Sends `signal` to the engine's dockerd: SIGSTOP makes it hang (calls wait, nothing
    /// answers, its containers keep running), SIGCONT lets it go on.
    pub fn signal_daemon(&self, signal: nix::sys::signal::Signal) {
        let pidfile = format!("{STATE_DIR}/{}.pid", self.name);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|error| panic!("cannot read {pidfile}: {error}"))
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("{pidfile} holds no pid: {error}"));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .unwrap_or_else(|error| panic!("cannot signal dockerd {pid}: {error}"));
    }

    /// Starts the stopped engine again; containers with restart policy `unless-stopped`
    /// come back (their published host ports may change).
    pub fn restart(&self) {
        script(&["start", &self.name, &self.index.to_string()]);
    }
}

impl Drop for ExtraEngine {
    fn drop(&mut self) {
        let destroyed = run_script(&["destroy", &self.name]);
        INDICES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.index);
        if let Err(message) = destroyed {
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// Fails fast when this process already has an engine with `index`.
fn claim_index(index: u8, name: &str) {
    let mut indices = INDICES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(
        indices.insert(index),
        "engine index {index} (for {name}) is already used by another engine of this test \
         process; give every test its own indices"
    );
}

/// Takes the machine-wide lock of `index`, waiting while another process holds it.
fn lock_index(index: u8, name: &str) -> File {
    let dir = PathBuf::from(STATE_DIR).join("locks");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
    let path = dir.join(format!("index-{index}.lock"));
    let file = File::create(&path)
        .unwrap_or_else(|error| panic!("open the lock {}: {error}", path.display()));
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!("engine {name}: index {index} is held by another test process; waiting");
            file.lock()
                .unwrap_or_else(|error| panic!("lock {}: {error}", path.display()));
        }
        Err(TryLockError::Error(error)) => panic!("lock {}: {error}", path.display()),
    }
    file
}

/// Runs `scripts/engines.sh` with `args`, returning its stdout; panics with its output when
/// it fails.
fn script(args: &[&str]) -> String {
    run_script(args).unwrap_or_else(|message| panic!("{message}"))
}

fn run_script(args: &[&str]) -> Result<String, String> {
    let path = script_path();
    let output = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run bash {}: {error}", path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "engines.sh {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            stdout
        ))
    }
}

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/engines.sh")
}
