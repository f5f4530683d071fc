//! krane binaries as real processes, for tests that kill them (SIGKILL at any line) or stop
//! them (SIGTERM). The binaries are the ones `cargo test --workspace` builds next to the test
//! executables; `KRANE_BIN_DIR` points elsewhere if needed.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct ServiceProcess {
    name: &'static str,
    args: Vec<String>,
    /// Environment variables set on top of the test's own (e.g. `OTEL_*`).
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` (`krane-api` or `krane-worker`) with `args`; output goes to `log`.
    pub fn spawn(name: &'static str, args: Vec<String>, log: PathBuf) -> Self {
        Self::spawn_with_env(name, args, Vec::new(), log)
    }

    /// Like [`Self::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &'static str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        let mut process = Self {
            name,
            args,
            env,
            log,
            child: None,
        };
        process.start();
        process
    }

    /// Starts the process again with the same arguments (after `kill` or an exit).
    pub fn start(&mut self) {
        let binary = binary(self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the process log");
        let log_err = log.try_clone().expect("clone the log handle");
        let child = Command::new(&binary)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {} ({error}); build it with cargo build -p {}",
                    binary.display(),
                    self.name
                )
            });
        self.child = Some(child);
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the running process (SIGSTOP and SIGCONT: a process that hangs, then
    /// goes on as if nothing happened).
    pub fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
            kill(pid, signal).expect("signal the process");
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the process is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the process") {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                panic!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process's output so far (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KRANE_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // <target>/debug/deps/<test executable> → <target>/debug/<name>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}
