//! The lifecycle operations behind `ironclad create|start|stop|destroy|status|
//! list|console`: plain synchronous functions over the state dir that talk to
//! the supervisor through its control socket. The CLI only parses and prints.
//!
//! `create`: host tools, name and socket-path checks, image, secrets and
//! machine configs (`gen config` into the state dir), qcow2 disks, ports and
//! MACs fixed in `cluster.json`, the detached supervisor, all nodes booted in
//! parallel, then [`wait_ready`] until every node meets every
//! [`ReadyCondition`], while [`start_converge`] bootstraps and joins etcd.
//!
//! By concern: `create` (the state dir, configs, the supervisor), `disks`
//! (overlays and formatted state disks), `readiness` (conditions, the wait,
//! converge, booting with `up`), `ops` (start, stop, destroy), `query`
//! (status, list, console); this module holds the errors and the helpers
//! they share (the supervisor's socket, loading `cluster.json`).

use crate::clientconfig::ClientConfig;
use crate::cluster::control::{self, Request};
use crate::cluster::paths::{ClusterPaths, Found};
use crate::cluster::ports::{self, PortLock};
use crate::cluster::state::{ClusterState, ImageFiles, NodeRecord, NodeState, now_ms};
use crate::cluster::supervisor;
use crate::qemu::{Accel, AccelChoice};
use crate::spec::{Cluster, ClusterName, NodeName};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prefix of machined's phase lines (`machined: <phase> t=<uptime>`).
pub use ironclad_contract::console::PREFIX as PHASE_PREFIX;
/// The line machined prints on the serial console once it is ready.
pub use ironclad_contract::console::READY_LINE;

/// Lifecycle failures, by what the user can do about them.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Bad input: names, flags, an existing cluster.
    #[error("{0}")]
    BadInput(String),
    /// A host tool is missing.
    #[error("missing host tools: {}; install the Debian packages: apt-get install {}", tools.join(", "), packages.join(" "))]
    MissingTools {
        tools: Vec<String>,
        packages: Vec<String>,
    },
    /// The operation failed.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

impl LifecycleError {
    fn failed(e: impl std::fmt::Display) -> Self {
        LifecycleError::Failed(e.to_string())
    }
}

type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// Where progress lines go (the CLI prints them to stderr).
pub trait Progress {
    fn line(&self, message: &str);
}

/// Host tools the lifecycle runs, with their Debian packages.
const TOOLS: [(&str, &str); 2] = [
    (supervisor::QEMU, "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
];

/// Fails with [`LifecycleError::MissingTools`] unless QEMU and qemu-img are installed.
pub fn check_host_tools() -> Result<()> {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(t, _)| crate::image::build::find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(LifecycleError::MissingTools {
        tools: missing.iter().map(|(t, _)| t.to_string()).collect(),
        packages: missing.iter().map(|(_, p)| p.to_string()).collect(),
    })
}

mod create;
mod disks;
mod ops;
mod query;
mod readiness;
#[cfg(test)]
mod tests;

pub use create::*;
use disks::*;
pub use ops::*;
pub use query::*;
pub use readiness::*;

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LifecycleError::failed)?;
    Ok(rt.block_on(f))
}

fn call(paths: &ClusterPaths, req: &Request, timeout: Duration) -> Result<()> {
    block_on(control::call(&paths.supervisor_socket(), req, timeout))?
        .map_err(LifecycleError::failed)
}

/// Makes sure a supervisor runs for the cluster (starting one if needed).
fn ensure_supervisor(paths: &ClusterPaths, progress: &dyn Progress) -> Result<u32> {
    if let Some(pid) = supervisor::running_pid(paths) {
        return Ok(pid);
    }
    let mut child = supervisor::spawn_detached(paths).map_err(LifecycleError::failed)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LifecycleError::Failed(format!(
                "the cluster supervisor exited at start ({status}); its log {} ends with:\n{}",
                paths.supervisor_log().display(),
                tail(&paths.supervisor_log(), 10)
            )));
        }
        if call(paths, &Request::Ping {}, Duration::from_secs(2)).is_ok() {
            progress.line(&format!("supervisor running (pid {})", child.id()));
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            return Err(LifecycleError::Failed(format!(
                "the cluster supervisor did not answer within 15 s; see {}",
                paths.supervisor_log().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a file (for error messages), with control
/// characters made visible: serial logs hold what the guest wrote.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    crate::cluster::console::escape_str(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// The cluster `name`: bad input when there is none, or when what is at its
/// place is not a cluster's directory (see [`crate::cluster::paths::find`]).
fn existing(root: &Path, name: &ClusterName) -> Result<ClusterPaths> {
    match crate::cluster::paths::find(root, name).map_err(LifecycleError::failed)? {
        Found::Cluster(paths) => Ok(paths),
        Found::Absent => Err(LifecycleError::BadInput(format!(
            "no cluster named {name:?} under {}",
            root.display()
        ))),
        Found::Foreign { path, why } => Err(LifecycleError::BadInput(Found::foreign_message(
            &path, &why,
        ))),
    }
}

fn load(paths: &ClusterPaths) -> Result<ClusterState> {
    ClusterState::load(&paths.cluster_json()).map_err(LifecycleError::failed)
}
