//! The lifecycle operations behind `ironclad create|start|stop|destroy|status|
//! list|console`: plain synchronous functions over the state dir that place
//! and control the VMs through the cluster's engine. The CLI only parses and
//! prints.
//!
//! `create`: host tools, name and socket-path checks, image, secrets and
//! machine configs (`gen config` into the state dir), qcow2 disks, ports and
//! MACs fixed in `cluster.json`, the engine launched, all nodes booted in
//! parallel, then [`wait_ready`] until every node meets every
//! [`ReadyCondition`], while [`start_converge`] bootstraps and joins etcd.
//! A create that did not finish (a `creating` file in its directory) is
//! resumed by `create` with the same cluster file.
//!
//! By concern: `create` (the state dir, configs), `disks` (overlays and
//! formatted state disks), `readiness` (conditions, the wait, converge,
//! booting with `up`), `ops` (start, stop, destroy), `query` (status, list,
//! console), `net` (network faults through the engine); this module holds the errors and the helpers they share.
//!
//! Where the nodes run is not this module's business: every public operation
//! picks the cluster's engine once ([`crate::cluster::engine::selected`]) and
//! hands it down as `&dyn Engine`; launching, starting, stopping and killing
//! VMs and finding their logs go through it.

use crate::clientconfig::ClientConfig;
use crate::cluster::engine::{self, Engine};
use crate::cluster::paths::{ClusterPaths, Found};
use crate::cluster::ports::{self, PortLock};
use crate::cluster::state::{ClusterState, ImageFiles, NodeRecord, NodeState, now_ms};
use crate::qemu::{Accel, AccelChoice};
use crate::spec::{Cluster, ClusterName, NodeName};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prefix of machined's phase lines (`machined: <phase> t=<uptime>`).
pub use ironclad_contract::console::PREFIX as PHASE_PREFIX;
/// The line machined prints on the serial console once it is ready.
pub use ironclad_contract::console::{API_LISTENING_LINE, READY_LINE};

/// Lifecycle failures. The command line maps each variant to its exit status
/// in one exhaustive match (`cli::lifecycle::exit_of`); each has a stable
/// diagnostic code and, where there is one, what to do (the
/// [`miette::Diagnostic`] impl below; docs/troubleshooting.md lists them).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Bad input: flags, a place that is not a cluster's directory, a state
    /// dir too deep for unix sockets.
    #[error("{0}")]
    BadInput(String),
    /// No cluster of that name under the state root.
    #[error("no cluster named {:?} under {}", name.as_str(), root.display())]
    NotFound { name: ClusterName, root: PathBuf },
    /// `create` of a name that is taken.
    #[error("a cluster named {:?} already exists (state in {})", name.as_str(), dir.display())]
    AlreadyExists { name: ClusterName, dir: PathBuf },
    /// A node name that is not in the cluster (or in no cluster).
    #[error("no node named {:?} in {}", node.as_str(), cluster.as_ref().map_or("any cluster".to_string(), |c| format!("cluster {c}")))]
    NoSuchNode {
        node: NodeName,
        cluster: Option<ClusterName>,
    },
    /// A host tool is missing.
    #[error("missing host tools: {}; install the Debian packages: apt-get install {}", tools.join(", "), packages.join(" "))]
    MissingTools {
        tools: Vec<String>,
        packages: Vec<String>,
    },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Reading or writing the state dir.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    State(#[from] crate::cluster::state::StateError),
    #[error(transparent)]
    Ports(#[from] crate::cluster::ports::PortError),
    #[error(transparent)]
    Configs(#[from] crate::configdir::ConfigDirError),
    #[error(transparent)]
    Render(#[from] crate::machine::RenderError),
    #[error(transparent)]
    ClientConfig(#[from] crate::clientconfig::ClientConfigError),
    /// The supervisor could not be started.
    #[error(transparent)]
    Spawn(#[from] crate::cluster::supervisor::SupervisorError),
    /// The supervisor's control socket.
    #[error(transparent)]
    Control(#[from] crate::cluster::control::ControlError),
    /// The cluster network's fault control.
    #[error(transparent)]
    Faults(#[from] crate::network::ControlClientError),
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove {}: {source}", dir.display())]
    RemoveDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A host tool could not be started.
    #[error("cannot run {tool}: {source}")]
    ToolSpawn {
        tool: &'static str,
        source: std::io::Error,
    },
    /// A host tool ran and failed (`what`: its subcommand or file).
    #[error("{tool} {what} failed: {stderr}")]
    ToolFailed {
        tool: &'static str,
        what: String,
        stderr: String,
    },
    #[error("the cluster supervisor exited at start ({status}); its log {} ends with:\n{tail}", log.display())]
    SupervisorExited {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("the cluster supervisor did not answer within {} s; see {}", within.as_secs(), log.display())]
    SupervisorSilent { within: Duration, log: PathBuf },
    #[error("the cluster supervisor is gone; its log {} ends with:\n{tail}", log.display())]
    SupervisorGone { log: PathBuf, tail: String },
    #[error("the supervisor (pid {pid}) did not exit")]
    SupervisorStuck { pid: u32 },
    #[error("processes of cluster {cluster} survive SIGKILL: {pids:?}")]
    Survivors {
        cluster: ClusterName,
        pids: Vec<u32>,
    },
    #[error("node {0} vanished from cluster.json")]
    NodeVanished(NodeName),
    /// A node's QEMU ended before the node was ready.
    #[error(
        "node {node} is {state} ({exit}) before it was ready; serial log {} ends with:\n{serial_tail}\nQEMU said:\n{qemu_tail}",
        serial_log.display()
    )]
    NodeDown {
        node: NodeName,
        state: NodeState,
        exit: String,
        serial_log: PathBuf,
        serial_tail: String,
        qemu_tail: String,
    },
    #[error("nodes not ready before the deadline: {}; see their serial logs in {}", names(waiting), logs.display())]
    NotReady {
        waiting: Vec<NodeName>,
        logs: PathBuf,
    },
    /// etcd did not converge.
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("etcd: the converge step panicked")]
    EtcdPanicked,
    /// SIGINT or SIGTERM arrived ([`crate::interrupt`]).
    #[error("interrupted")]
    Interrupted,
    /// `create` failed after the cluster's directory was made.
    #[error(
        "{error}\n(the half-made cluster is kept in {} for inspection; `ironclad create` with the same cluster file resumes it, `ironclad destroy {name}` removes it)",
        dir.display()
    )]
    HalfMade {
        error: Box<LifecycleError>,
        dir: PathBuf,
        name: ClusterName,
        /// The create resumed a cluster that existed before it (so an
        /// interrupt must not remove it).
        resumed: bool,
    },
    /// `create` of a name that is taken by a cluster whose create did not
    /// finish, but which cannot be resumed (`why`).
    #[error("a cluster named {:?} exists (state in {}) and its create did not finish, but it cannot be resumed: {why}", name.as_str(), dir.display())]
    CannotResume {
        name: ClusterName,
        dir: PathBuf,
        why: String,
    },
}

impl miette::Diagnostic for LifecycleError {
    /// `ironclad::lifecycle::*` (the image's and the host's own for those
    /// failures): every variant named, so a new one gets its code on purpose.
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        use LifecycleError as E;
        let code = match self {
            E::Image(e) => return e.code(),
            E::HalfMade { error, .. } => return error.code(),
            E::BadInput(_) => "ironclad::lifecycle::bad_input",
            E::NotFound { .. } => "ironclad::lifecycle::not_found",
            E::AlreadyExists { .. } => "ironclad::lifecycle::already_exists",
            E::CannotResume { .. } => "ironclad::lifecycle::cannot_resume",
            E::NoSuchNode { .. } => "ironclad::lifecycle::no_such_node",
            E::MissingTools { .. } => "ironclad::host::missing_tools",
            E::Io(_) | E::CreateDir { .. } | E::RemoveDir { .. } => "ironclad::lifecycle::io",
            E::State(_) | E::NodeVanished(_) => "ironclad::lifecycle::state",
            E::Ports(_) => "ironclad::lifecycle::ports",
            E::Configs(_) | E::Render(_) | E::ClientConfig(_) => "ironclad::lifecycle::configs",
            E::Spawn(_)
            | E::Control(_)
            | E::SupervisorExited { .. }
            | E::SupervisorSilent { .. }
            | E::SupervisorGone { .. }
            | E::SupervisorStuck { .. } => "ironclad::lifecycle::supervisor",
            E::Faults(_) => "ironclad::lifecycle::network",
            E::ToolSpawn { .. } | E::ToolFailed { .. } => "ironclad::lifecycle::tool_failed",
            E::Survivors { .. } => "ironclad::lifecycle::survivors",
            E::NodeDown { .. } => "ironclad::lifecycle::node_down",
            E::NotReady { .. } => "ironclad::lifecycle::not_ready",
            E::Etcd(_) | E::EtcdPanicked => "ironclad::lifecycle::etcd",
            E::Interrupted => "ironclad::interrupted",
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        use LifecycleError as E;
        let help: String = match self {
            E::Image(e) => return e.help(),
            E::HalfMade { error, .. } => return error.help(),
            E::NotFound { .. } => "`ironclad list` shows the clusters under this state dir (--state-dir or IRONCLAD_STATE_DIR picks another); `ironclad create -f FILE` makes one".into(),
            E::AlreadyExists { name, .. } => format!(
                "remove it first with `ironclad destroy {name}`, or give the new cluster another `metadata.name`"
            ),
            E::CannotResume { name, .. } => format!(
                "remove it with `ironclad destroy {name}` and create it again, or give the new cluster another `metadata.name`"
            ),
            E::NoSuchNode { cluster, .. } => match cluster {
                Some(c) => format!("`ironclad status {c}` lists its nodes"),
                None => "`ironclad status NAME` lists a cluster's nodes".into(),
            },
            E::MissingTools { .. } => {
                "`ci/install-deps` installs every host package ironclad needs".into()
            }
            E::State(_) | E::NodeVanished(_) => "the cluster's cluster.json is not usable; `ironclad destroy NAME` removes the cluster (its disks too)".into(),
            E::Spawn(_)
            | E::Control(_)
            | E::SupervisorExited { .. }
            | E::SupervisorSilent { .. }
            | E::SupervisorGone { .. }
            | E::SupervisorStuck { .. } => "the supervisor's log is logs/supervisor.log in the cluster's state dir; `ironclad status` shows what still runs, `ironclad destroy NAME` ends it all".into(),
            E::Survivors { pids, .. } => format!(
                "end them by hand (kill -9 {}) and run the command again",
                pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
            ),
            E::NodeDown { node, .. } => format!(
                "the serial log and QEMU's words above say why; `ironclad console {node} --no-follow` prints the whole log"
            ),
            E::NotReady { waiting, .. } => format!(
                "under TCG (no usable KVM) a node needs tens of seconds, more on a busy host: raise --timeout; `ironclad console {}` shows where it stopped",
                waiting.first().map_or("NODE", |n| n.as_str())
            ),
            E::Etcd(_) | E::EtcdPanicked => {
                "`ironclad node logs etcd --node NODE` shows etcd's own log".into()
            }
            E::BadInput(_)
            | E::Io(_)
            | E::CreateDir { .. }
            | E::RemoveDir { .. }
            | E::Ports(_)
            | E::Configs(_)
            | E::Render(_)
            | E::ClientConfig(_)
            | E::Faults(_)
            | E::ToolSpawn { .. }
            | E::ToolFailed { .. }
            | E::Interrupted => return None,
        };
        Some(Box::new(help))
    }
}

fn names(nodes: &[NodeName]) -> String {
    nodes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// Host tools the lifecycle runs itself (the engine names its own), with
/// their Debian packages.
const TOOLS: &[(&str, &str)] = &[("qemu-img", "qemu-utils")];

/// Fails with [`LifecycleError::MissingTools`] unless the engine's tools and
/// qemu-img are installed.
pub fn check_host_tools(engine: &dyn Engine) -> Result<()> {
    let missing: Vec<(&str, &str)> = engine
        .host_tools()
        .iter()
        .chain(TOOLS)
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
mod net;
mod ops;
mod progress;
mod query;
mod readiness;
pub mod snapshot;
#[cfg(test)]
mod tests;

pub use create::*;
pub(crate) use disks::run_tool;
pub use disks::*;
pub use net::*;
pub use ops::*;
pub use progress::{Event, NodeStep, Progress, Stage};
pub use query::*;
pub use readiness::*;
pub use snapshot::{
    SnapshotError, SnapshotKind, SnapshotMeta, SnapshotName, SnapshotReport, snapshot_list,
    snapshot_restore, snapshot_rm, snapshot_save,
};

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
    match crate::cluster::paths::find(root, name)? {
        Found::Cluster(paths) => Ok(paths),
        Found::Absent => Err(LifecycleError::NotFound {
            name: name.clone(),
            root: root.to_path_buf(),
        }),
        Found::Foreign { path, why } => Err(LifecycleError::BadInput(Found::foreign_message(
            &path, &why,
        ))),
    }
}

fn load(paths: &ClusterPaths) -> Result<ClusterState> {
    Ok(ClusterState::load(&paths.cluster_json())?)
}
