//! Simulated hosts as processes of their own: each a release `krane-worker` on its in-memory
//! runtime (the hidden `--in-memory-runtime` flag), in a cgroup of its own whose CPU quota
//! caps it to a share of a core, as a real host brings its own CPU instead of sharing the
//! benchmark's. For `pipeline --host-cpu`. Creating cgroups needs root.

use crate::env::{self, Nats};
use anyhow::Context;
use cgroups_rs::CgroupPid;
use cgroups_rs::fs::Cgroup;
use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::hierarchies;
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command as Process};

/// The CFS period the quotas are expressed in (the kernel's default, 100 ms).
const PERIOD_MICROS: u64 = 100_000;

/// Running host processes, each in its CPU-capped cgroup. Dropping it (also on an error
/// half-way through [`CappedHosts::start`]) kills the processes and removes their cgroups.
pub struct CappedHosts {
    /// Held for their `Drop`.
    _hosts: Vec<CappedHost>,
}

struct CappedHost {
    child: Child,
    cgroup: Cgroup,
}

impl CappedHosts {
    /// Starts one `krane-worker` per host id from `bin_dir`, each capped to `cpus` (e.g. 0.25
    /// for a quarter of a core).
    pub fn start(
        nats: &Nats,
        bin_dir: &Path,
        host_ids: &[String],
        cpus: f64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(cpus > 0.0, "--host-cpu must be more than 0");
        let quota = (cpus * PERIOD_MICROS as f64).round() as i64;
        let mut hosts = Vec::with_capacity(host_ids.len());
        for host_id in host_ids {
            let name = format!("krane-bench-{}-{host_id}", std::process::id());
            let cgroup = CgroupBuilder::new(&name)
                .set_specified_controllers(vec!["cpu".to_string()])
                .cpu()
                .period(PERIOD_MICROS)
                .quota(quota)
                .done()
                .build(hierarchies::auto())
                .with_context(|| format!("create cgroup {name} (needs root)"))?;
            let spawned = Process::new(bin_dir.join("krane-worker"))
                .args(["--nats-url", &nats.url(), "--host-id", host_id])
                .args(["--in-memory-runtime", env::TEST_IMAGE])
                .args(nats.worker_args())
                .args(env::LARGE_HOST_ARGS)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(error) => {
                    let _ = cgroup.delete();
                    return Err(error)
                        .context(format!("start {}", bin_dir.join("krane-worker").display()));
                }
            };
            let host = CappedHost { child, cgroup };
            let pid = host.child.id().context("the worker exited at once")?;
            host.cgroup
                .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
                .with_context(|| format!("move {host_id}'s worker into its cgroup"))?;
            hosts.push(host);
        }
        Ok(Self { _hosts: hosts })
    }
}

impl Drop for CappedHost {
    /// Kills the process and removes its cgroup, which the kernel refuses while the process
    /// has not been reaped: waits for that up to two seconds.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if let Err(error) = self.cgroup.delete() {
            eprintln!("could not remove a host's cgroup: {error}");
        }
    }
}
