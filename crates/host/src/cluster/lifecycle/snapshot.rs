//! Whole-cluster snapshots (`ironclad snapshot save|list|restore|rm`).
//!
//! Owns: snapshot names ([`SnapshotName`]), their metadata
//! (`snapshots/NAME.json` in the cluster's state dir, a versioned document:
//! name, time, running or stopped, the nodes), the checks before each
//! operation, and one snapshot operation at a time per cluster (an advisory
//! lock on `snapshots/.lock`). The snapshots themselves are the engine's
//! ([`Engine::snapshot_save`] and friends; the QEMU engine keeps them inside
//! each node's state disk, [`crate::cluster::engine::snapshot`]).
//!
//! A snapshot is of the whole cluster, every node, in one of two kinds:
//! - **running**: taken while every node runs; every node is paused at once,
//!   its memory, devices and disk saved, then all resume. `restore` needs
//!   the cluster running: every node is paused, loaded and resumed, and the
//!   cluster answers again without a reboot (same QEMU processes, same
//!   boot). A restored running snapshot needs a running cluster: on a
//!   stopped one it is refused (start it, then restore).
//! - **stopped**: taken while no node runs; it holds the disks. `restore`
//!   needs the cluster stopped and puts every disk back; `start` boots
//!   from them. On a running cluster it is refused (stop it first).
//!
//! Refused with bad input (exit 2): bad names, a name taken (save), a name
//! unknown (restore, rm). Refused as failures (exit 1): a cluster partly
//! running, a node set that changed since the snapshot, a node whose disk
//! lacks the snapshot, another snapshot operation under way.

use super::{LifecycleError, Progress, existing, load};
use crate::cluster::engine::{self, Engine, SnapshotTarget};
use crate::cluster::paths::ClusterPaths;
use crate::cluster::state::{ClusterState, NodeState, now_ms};
use crate::spec::{ClusterName, NodeName};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest snapshot name.
pub const SNAPSHOT_NAME_MAX: usize = 64;
/// What a snapshot name may be, said in refusals and `--help`.
pub const SNAPSHOT_NAME_RULE: &str = "a snapshot name is 1 to 64 characters: letters, digits, '.', '_' and '-', beginning with a letter or digit, not all digits";
/// `apiVersion` of the metadata document.
pub const SNAPSHOT_API_VERSION: &str = "ironclad.dev/v1alpha1";
/// `kind` of the metadata document.
pub const SNAPSHOT_KIND: &str = "Snapshot";
/// How long `restore` of a running cluster waits for every node's API.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A valid snapshot name: it names a file (`snapshots/NAME.json`) and a tag
/// inside each node's disk (QEMU's monitor takes an all-digit tag for a
/// snapshot id, hence refused).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SnapshotName(String);

/// Why a snapshot name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotNameError {
    #[error("it is empty")]
    Empty,
    #[error("it is {len} characters long, more than {SNAPSHOT_NAME_MAX}")]
    TooLong { len: usize },
    #[error("it holds {0:?}")]
    BadChar(char),
    #[error("it begins with {0:?}")]
    BadStart(char),
    #[error("it is all digits (QEMU would read it as a snapshot id)")]
    AllDigits,
}

impl std::str::FromStr for SnapshotName {
    type Err = SnapshotNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let len = s.chars().count();
        let Some(first) = s.chars().next() else {
            return Err(SnapshotNameError::Empty);
        };
        if len > SNAPSHOT_NAME_MAX {
            return Err(SnapshotNameError::TooLong { len });
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(SnapshotNameError::BadChar(c));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(SnapshotNameError::BadStart(first));
        }
        if s.chars().all(|c| c.is_ascii_digit()) {
            return Err(SnapshotNameError::AllDigits);
        }
        Ok(SnapshotName(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for SnapshotName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("snapshot name {s:?}: {e}")))
    }
}

impl SnapshotName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// Whether the cluster ran when the snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Memory, devices and disks of running nodes.
    Running,
    /// Disks of stopped nodes.
    Stopped,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Running => "running",
            SnapshotKind::Stopped => "stopped",
        }
    }
}

/// `snapshots/NAME.json`: what `list` shows without asking any VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotMeta {
    pub api_version: String,
    pub kind: String,
    pub name: SnapshotName,
    pub cluster: ClusterName,
    /// When it was taken (unix milliseconds).
    pub created_ms: u64,
    pub state: SnapshotKind,
    /// Every node of the cluster, sorted.
    pub nodes: Vec<NodeName>,
    /// How long `save` took (seconds).
    pub save_seconds: f64,
}

/// Snapshot failures; the command line gives each its exit status
/// (`cli::snapshot_cmd`).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Lifecycle(Box<LifecycleError>),
    #[error(
        "bad snapshot name {:?}: {why}; {SNAPSHOT_NAME_RULE}",
        crate::spec::clip(name)
    )]
    BadName {
        name: String,
        why: SnapshotNameError,
    },
    #[error(
        "cluster {cluster} already has a snapshot named \"{name}\" (`ironclad snapshot rm {cluster} {name}` removes it)"
    )]
    Exists {
        cluster: ClusterName,
        name: SnapshotName,
    },
    #[error(
        "cluster {cluster} has no snapshot named \"{name}\" (`ironclad snapshot list {cluster}` lists them)"
    )]
    Unknown {
        cluster: ClusterName,
        name: SnapshotName,
    },
    #[error(
        "cluster {cluster} is partly running (running: {}; not running: {}): snapshots are of the whole cluster, running or stopped; `ironclad start {cluster}` or `ironclad stop {cluster}` first",
        names(running),
        names(stopped)
    )]
    PartlyRunning {
        cluster: ClusterName,
        running: Vec<NodeName>,
        stopped: Vec<NodeName>,
    },
    #[error(
        "cluster {cluster} is stopping ({} not yet powered off): snapshots are of a running or a stopped cluster; run the command again once `ironclad stop {cluster}` has ended",
        names(nodes)
    )]
    Stopping {
        cluster: ClusterName,
        nodes: Vec<NodeName>,
    },
    #[error(
        "snapshot \"{name}\" was taken while cluster {cluster} ran: it restores into running nodes; `ironclad start {cluster}` first"
    )]
    NeedsRunning {
        cluster: ClusterName,
        name: SnapshotName,
    },
    #[error(
        "snapshot \"{name}\" was taken while cluster {cluster} was stopped: it holds disks only; `ironclad stop {cluster}` first, then restore, then `ironclad start {cluster}`"
    )]
    NeedsStopped {
        cluster: ClusterName,
        name: SnapshotName,
    },
    #[error(
        "the nodes of cluster {cluster} changed since snapshot \"{name}\" (then: {}; now: {})",
        names(then),
        names(now)
    )]
    NodesChanged {
        cluster: ClusterName,
        name: SnapshotName,
        then: Vec<NodeName>,
        now: Vec<NodeName>,
    },
    #[error("node {node} does not hold snapshot \"{name}\"{}", if *disk_only { " with its memory (only its disk)" } else { "" })]
    Missing {
        node: NodeName,
        name: SnapshotName,
        disk_only: bool,
    },
    #[error("another snapshot operation on cluster {cluster} is under way")]
    Busy { cluster: ClusterName },
    #[error("{} is not a usable snapshot record: {message}", path.display())]
    BadRecord { path: PathBuf, message: String },
    #[error("restored, but nodes do not answer on their API within {} s: {}", within.as_secs(), names(nodes))]
    NotAnswering {
        nodes: Vec<NodeName>,
        within: Duration,
    },
}

/// Written out rather than derived: a lifecycle failure keeps its own code
/// and help; every other variant is named, so a new one gets its code on
/// purpose. The codes are listed in docs/troubleshooting.md, "Snapshots".
impl miette::Diagnostic for SnapshotError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        use SnapshotError as E;
        let code = match self {
            E::Lifecycle(l) => return miette::Diagnostic::code(l.as_ref()),
            E::BadName { .. } => "ironclad::snapshot::bad_name",
            E::Exists { .. } => "ironclad::snapshot::exists",
            E::Unknown { .. } => "ironclad::snapshot::unknown",
            E::PartlyRunning { .. } => "ironclad::snapshot::partly_running",
            E::Stopping { .. } => "ironclad::snapshot::stopping",
            E::NeedsRunning { .. } => "ironclad::snapshot::needs_running",
            E::NeedsStopped { .. } => "ironclad::snapshot::needs_stopped",
            E::NodesChanged { .. } => "ironclad::snapshot::nodes_changed",
            E::Missing { .. } => "ironclad::snapshot::missing",
            E::Busy { .. } => "ironclad::snapshot::busy",
            E::BadRecord { .. } => "ironclad::snapshot::bad_record",
            E::NotAnswering { .. } => "ironclad::snapshot::not_answering",
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        use SnapshotError as E;
        let help = match self {
            E::Lifecycle(l) => return miette::Diagnostic::help(l.as_ref()),
            E::BadName { .. } => "choose a name such as `before-upgrade` or `s1`",
            E::Exists { .. } => "choose another name, or remove the old snapshot first",
            E::Unknown { .. } | E::NodesChanged { .. } => {
                "`ironclad snapshot list NAME` shows the cluster's snapshots and whether each holds memory"
            }
            E::PartlyRunning { .. } | E::NeedsRunning { .. } | E::NeedsStopped { .. } => {
                "`ironclad status NAME` shows which nodes run"
            }
            E::Stopping { .. } => {
                "`ironclad status NAME` shows the nodes still stopping; `stop` waits up to its --timeout for each"
            }
            E::Missing { .. } => {
                "a node's state disk no longer holds it (the disk was replaced, or the snapshot was deleted with qemu-img): `ironclad snapshot rm` the record; nothing was restored"
            }
            E::Busy { .. } => {
                "another `ironclad snapshot` command on this cluster holds its lock: wait for it to end"
            }
            E::BadRecord { .. } => {
                "the record under the cluster's snapshots/ was edited or cut short; `ironclad snapshot rm` removes it and the snapshot it names"
            }
            E::NotAnswering { .. } => {
                "`ironclad status NAME` and `ironclad console NAME NODE` show the nodes; `ironclad support NAME` makes a bundle for a bug report"
            }
        };
        Some(Box::new(help))
    }
}

impl From<LifecycleError> for SnapshotError {
    fn from(e: LifecycleError) -> Self {
        SnapshotError::Lifecycle(Box::new(e))
    }
}

fn names(nodes: &[NodeName]) -> String {
    if nodes.is_empty() {
        return "none".into();
    }
    nodes
        .iter()
        .map(NodeName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// What `save`, `restore` and `rm` report.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    pub cluster: ClusterName,
    /// `saved`, `restored` or `removed`.
    pub action: &'static str,
    pub snapshot: SnapshotMeta,
    /// Whether the nodes ran (memory included) or were stopped (disks only).
    pub live: bool,
    /// How long the operation took, up to every node answering (restore of
    /// a running cluster).
    pub seconds: f64,
}

/// Where a cluster's snapshot records live.
fn dir(paths: &ClusterPaths) -> PathBuf {
    paths.dir().join("snapshots")
}

fn record(paths: &ClusterPaths, name: &SnapshotName) -> PathBuf {
    dir(paths).join(format!("{name}.json"))
}

/// The exclusive lock of snapshot operations on one cluster, held until dropped.
struct OpLock {
    _file: std::fs::File,
}

fn lock(paths: &ClusterPaths, cluster: &ClusterName) -> Result<OpLock> {
    let d = dir(paths);
    crate::fsutil::create_private_dir(&d).map_err(|source| LifecycleError::CreateDir {
        dir: d.clone(),
        source,
    })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(d.join(".lock"))
        .map_err(LifecycleError::Io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(OpLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(SnapshotError::Busy {
            cluster: cluster.clone(),
        }),
        Err(e) => Err(LifecycleError::Io(e.into()).into()),
    }
}

fn read_record(path: &Path) -> Result<SnapshotMeta> {
    let bad = |message: String| SnapshotError::BadRecord {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let meta: SnapshotMeta = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if meta.kind != SNAPSHOT_KIND || meta.api_version != SNAPSHOT_API_VERSION {
        return Err(bad(format!(
            "{} {} is not {SNAPSHOT_API_VERSION} {SNAPSHOT_KIND}",
            meta.api_version, meta.kind
        )));
    }
    Ok(meta)
}

fn write_record(paths: &ClusterPaths, meta: &SnapshotMeta) -> Result<()> {
    let mut text = serde_json::to_string_pretty(meta)
        .map_err(|e| LifecycleError::Io(std::io::Error::other(e)))?;
    text.push('\n');
    crate::fsutil::write_atomic(&record(paths, &meta.name), text.as_bytes(), 0o600)
        .map_err(LifecycleError::Io)?;
    Ok(())
}

fn find(paths: &ClusterPaths, cluster: &ClusterName, name: &SnapshotName) -> Result<SnapshotMeta> {
    let path = record(paths, name);
    if !path.exists() {
        return Err(SnapshotError::Unknown {
            cluster: cluster.clone(),
            name: name.clone(),
        });
    }
    read_record(&path)
}

/// Whether every node runs (`true`) or none does (`false`).
fn whole(
    engine: &dyn Engine,
    paths: &ClusterPaths,
    state: &ClusterState,
) -> Result<bool, SnapshotError> {
    if engine.running(paths).is_none() {
        return Ok(false);
    }
    supervised_run_state(state)
}

/// [`whole`] of a cluster whose supervisor runs: every node running, none,
/// or a refusal naming the nodes still stopping (a `stop` in progress) or
/// the running and the other nodes.
fn supervised_run_state(state: &ClusterState) -> Result<bool, SnapshotError> {
    let stopping = stopping_nodes(state);
    if !stopping.is_empty() {
        return Err(SnapshotError::Stopping {
            cluster: state.name.clone(),
            nodes: stopping,
        });
    }
    let (running, stopped): (Vec<_>, Vec<_>) =
        state.nodes.iter().partition(|n| n.state.has_process());
    if stopped.is_empty() && running.iter().all(|n| n.state == NodeState::Running) {
        return Ok(true);
    }
    if running.is_empty() {
        return Ok(false);
    }
    Err(SnapshotError::PartlyRunning {
        cluster: state.name.clone(),
        running: running
            .iter()
            .filter(|n| n.state == NodeState::Running)
            .map(|n| n.name.clone())
            .collect(),
        stopped: state
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Running)
            .map(|n| n.name.clone())
            .collect(),
    })
}

/// The nodes whose power-off was asked and whose QEMU has not exited yet.
fn stopping_nodes(state: &ClusterState) -> Vec<NodeName> {
    state
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Stopping)
        .map(|n| n.name.clone())
        .collect()
}

fn node_names(state: &ClusterState) -> Vec<NodeName> {
    let mut v: Vec<NodeName> = state.nodes.iter().map(|n| n.name.clone()).collect();
    v.sort();
    v
}

/// `ironclad snapshot save NAME SNAPSHOT`.
pub fn snapshot_save(
    root: &Path,
    cluster: &ClusterName,
    name: &SnapshotName,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let paths = existing(root, cluster)?;
    let _lock = lock(&paths, cluster)?;
    if record(&paths, name).exists() {
        return Err(SnapshotError::Exists {
            cluster: cluster.clone(),
            name: name.clone(),
        });
    }
    let state = load(&paths)?;
    let engine = engine::selected();
    super::check_host_tools(engine)?;
    let live = whole(engine, &paths, &state)?;
    let nodes = node_names(&state);
    // A tag left in a disk by a save that died before its record was
    // written is dropped first (`qemu-img` would keep both).
    let mut stale = Vec::new();
    for n in &nodes {
        if engine
            .snapshots_of(&paths, n)?
            .iter()
            .any(|s| s.tag == name.as_str())
        {
            stale.push(n.clone());
        }
    }
    let target = |nodes| SnapshotTarget {
        tag: name.as_str(),
        nodes,
        live,
    };
    if !stale.is_empty() {
        progress.line(&format!(
            "dropping a stale {name} left in {}",
            names(&stale)
        ));
        engine.snapshot_delete(&paths, &target(&stale), progress)?;
    }
    let created_ms = now_ms();
    engine.snapshot_save(&paths, &target(&nodes), progress)?;
    let meta = SnapshotMeta {
        api_version: SNAPSHOT_API_VERSION.into(),
        kind: SNAPSHOT_KIND.into(),
        name: name.clone(),
        cluster: cluster.clone(),
        created_ms,
        state: if live {
            SnapshotKind::Running
        } else {
            SnapshotKind::Stopped
        },
        nodes,
        save_seconds: started.elapsed().as_secs_f64(),
    };
    write_record(&paths, &meta)?;
    Ok(SnapshotReport {
        cluster: cluster.clone(),
        action: "saved",
        snapshot: meta,
        live,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `ironclad snapshot list NAME`: the records, oldest first; no VM is asked.
pub fn snapshot_list(root: &Path, cluster: &ClusterName) -> Result<Vec<SnapshotMeta>> {
    let paths = existing(root, cluster)?;
    let d = dir(&paths);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LifecycleError::Io(e).into()),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(LifecycleError::Io)?.path();
        let is_record = path.extension().is_some_and(|x| x == "json")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.parse::<SnapshotName>().is_ok());
        if is_record {
            out.push(read_record(&path)?);
        }
    }
    out.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
    Ok(out)
}

/// `ironclad snapshot restore NAME SNAPSHOT` (see the module doc for what
/// each kind needs). A running cluster's restore returns once every node's
/// API answers again.
pub fn snapshot_restore(
    root: &Path,
    cluster: &ClusterName,
    name: &SnapshotName,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let paths = existing(root, cluster)?;
    let _lock = lock(&paths, cluster)?;
    let meta = find(&paths, cluster, name)?;
    let state = load(&paths)?;
    let engine = engine::selected();
    super::check_host_tools(engine)?;
    let live = whole(engine, &paths, &state)?;
    match (meta.state, live) {
        (SnapshotKind::Running, false) => {
            return Err(SnapshotError::NeedsRunning {
                cluster: cluster.clone(),
                name: name.clone(),
            });
        }
        (SnapshotKind::Stopped, true) => {
            return Err(SnapshotError::NeedsStopped {
                cluster: cluster.clone(),
                name: name.clone(),
            });
        }
        _ => {}
    }
    let nodes = node_names(&state);
    if nodes != meta.nodes {
        return Err(SnapshotError::NodesChanged {
            cluster: cluster.clone(),
            name: name.clone(),
            then: meta.nodes,
            now: nodes,
        });
    }
    // Every node holds it (with its memory, for a running one) before any
    // node is touched: no half-restored cluster.
    for n in &nodes {
        let held = engine.snapshots_of(&paths, n)?;
        let found = held.iter().find(|s| s.tag == name.as_str());
        let disk_only = found.is_some_and(|s| s.vm_state_size == 0);
        if found.is_none() || (live && disk_only) {
            return Err(SnapshotError::Missing {
                node: n.clone(),
                name: name.clone(),
                disk_only,
            });
        }
    }
    let target = SnapshotTarget {
        tag: name.as_str(),
        nodes: &nodes,
        live,
    };
    engine.snapshot_restore(&paths, &target, progress)?;
    if live {
        wait_answering(&paths, &nodes, started, progress)?;
    }
    Ok(SnapshotReport {
        cluster: cluster.clone(),
        action: "restored",
        snapshot: meta,
        live,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Waits until every node's API answers `health`, up to [`ANSWER_TIMEOUT`].
fn wait_answering(
    paths: &ClusterPaths,
    nodes: &[NodeName],
    started: Instant,
    progress: &dyn Progress,
) -> Result<()> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut waiting: Vec<NodeName> = nodes.to_vec();
    loop {
        waiting.retain(|n| {
            if super::readiness::api_answers(paths, n) {
                progress.line(&format!(
                    "{n}: answers ({:.1} s)",
                    started.elapsed().as_secs_f64()
                ));
                false
            } else {
                true
            }
        });
        if waiting.is_empty() {
            return Ok(());
        }
        if crate::interrupt::requested() {
            return Err(LifecycleError::Interrupted.into());
        }
        if Instant::now() > deadline {
            return Err(SnapshotError::NotAnswering {
                nodes: waiting,
                within: ANSWER_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ironclad snapshot rm NAME SNAPSHOT`: out of every node's disk (running
/// or not), then its record.
pub fn snapshot_rm(
    root: &Path,
    cluster: &ClusterName,
    name: &SnapshotName,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let paths = existing(root, cluster)?;
    let _lock = lock(&paths, cluster)?;
    let meta = find(&paths, cluster, name)?;
    let state = load(&paths)?;
    let engine = engine::selected();
    super::check_host_tools(engine)?;
    let supervised = engine.running(&paths).is_some();
    let (running, stopped): (Vec<NodeName>, Vec<NodeName>) = {
        let (r, s): (Vec<_>, Vec<_>) = state
            .nodes
            .iter()
            .partition(|n| supervised && n.state == NodeState::Running);
        (
            r.into_iter().map(|n| n.name.clone()).collect(),
            s.into_iter().map(|n| n.name.clone()).collect(),
        )
    };
    let stopping = stopping_nodes(&state);
    if supervised && !stopping.is_empty() {
        return Err(SnapshotError::Stopping {
            cluster: cluster.clone(),
            nodes: stopping,
        });
    }
    for (nodes, live) in [(&running, true), (&stopped, false)] {
        if !nodes.is_empty() {
            let target = SnapshotTarget {
                tag: name.as_str(),
                nodes,
                live,
            };
            engine.snapshot_delete(&paths, &target, progress)?;
        }
    }
    std::fs::remove_file(record(&paths, name)).map_err(LifecycleError::Io)?;
    Ok(SnapshotReport {
        cluster: cluster.clone(),
        action: "removed",
        snapshot: meta,
        live: !running.is_empty(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal of the snapshot commands has its own code and a help
    /// line; a lifecycle failure keeps the lifecycle's.
    #[test]
    fn every_snapshot_error_has_a_code_and_help() {
        use miette::Diagnostic;
        let cluster: ClusterName = "dev".parse().unwrap();
        let name: SnapshotName = "s1".parse().unwrap();
        let node: NodeName = "dev-cp-1".parse().unwrap();
        let errors = [
            SnapshotError::BadName {
                name: "../x".into(),
                why: "../x".parse::<SnapshotName>().unwrap_err(),
            },
            SnapshotError::Exists {
                cluster: cluster.clone(),
                name: name.clone(),
            },
            SnapshotError::Unknown {
                cluster: cluster.clone(),
                name: name.clone(),
            },
            SnapshotError::PartlyRunning {
                cluster: cluster.clone(),
                running: vec![node.clone()],
                stopped: vec![],
            },
            SnapshotError::Stopping {
                cluster: cluster.clone(),
                nodes: vec![node.clone()],
            },
            SnapshotError::NeedsRunning {
                cluster: cluster.clone(),
                name: name.clone(),
            },
            SnapshotError::NeedsStopped {
                cluster: cluster.clone(),
                name: name.clone(),
            },
            SnapshotError::NodesChanged {
                cluster: cluster.clone(),
                name: name.clone(),
                then: vec![node.clone()],
                now: vec![],
            },
            SnapshotError::Missing {
                node: node.clone(),
                name: name.clone(),
                disk_only: false,
            },
            SnapshotError::Busy {
                cluster: cluster.clone(),
            },
            SnapshotError::BadRecord {
                path: "snapshots/s1.json".into(),
                message: "eof".into(),
            },
            SnapshotError::NotAnswering {
                nodes: vec![node],
                within: Duration::from_secs(60),
            },
        ];
        let mut codes = std::collections::BTreeSet::new();
        for e in &errors {
            let code = e.code().unwrap().to_string();
            assert!(code.starts_with("ironclad::snapshot::"), "{code}");
            assert!(e.help().is_some(), "{code}");
            codes.insert(code);
        }
        assert_eq!(codes.len(), errors.len(), "one code per refusal");
        let inner = SnapshotError::from(LifecycleError::BadInput("x".into()));
        assert_eq!(
            inner.code().map(|c| c.to_string()),
            Diagnostic::code(&LifecycleError::BadInput("x".into())).map(|c| c.to_string())
        );
    }

    /// With the supervisor up: all running is a live snapshot, a `stop` in
    /// progress is its own refusal naming the nodes still stopping (not
    /// "partly running" with nothing running), a mix is partly running.
    #[test]
    fn a_stop_in_progress_is_refused_as_stopping() {
        let mut state = crate::cluster::state::tests::sample();
        let mut second = state.nodes[0].clone();
        second.name = "dev-worker-1".parse().unwrap();
        state.nodes.push(second);
        let with = |a: NodeState, b: NodeState| {
            let mut s = state.clone();
            s.nodes[0].state = a;
            s.nodes[1].state = b;
            s
        };
        use NodeState::{Crashed, Running, Stopped, Stopping};
        assert!(supervised_run_state(&with(Running, Running)).unwrap());
        assert!(!supervised_run_state(&with(Stopped, Crashed)).unwrap());
        for (a, b, stopping) in [
            (Stopping, Stopping, vec!["dev-cp-1", "dev-worker-1"]),
            (Stopping, Stopped, vec!["dev-cp-1"]),
            (Running, Stopping, vec!["dev-worker-1"]),
        ] {
            let e = supervised_run_state(&with(a, b)).unwrap_err();
            let SnapshotError::Stopping { nodes, .. } = &e else {
                panic!("{a:?}/{b:?}: {e}");
            };
            let nodes: Vec<&str> = nodes.iter().map(NodeName::as_str).collect();
            assert_eq!(nodes, stopping);
            let text = e.to_string();
            assert!(text.starts_with("cluster dev is stopping ("), "{text}");
            assert!(text.contains("`ironclad stop dev` has ended"), "{text}");
        }
        let e = supervised_run_state(&with(Running, Stopped)).unwrap_err();
        assert!(
            e.to_string()
                .contains("partly running (running: dev-cp-1; not running: dev-worker-1)"),
            "{e}"
        );
    }

    #[test]
    fn names_are_checked() {
        for ok in ["a", "before-upgrade", "v1.2_3", "0day", &"x".repeat(64)] {
            assert_eq!(ok.parse::<SnapshotName>().unwrap().as_str(), ok);
        }
        let bad = |s: &str| s.parse::<SnapshotName>().unwrap_err();
        assert_eq!(bad(""), SnapshotNameError::Empty);
        assert_eq!(bad(&"x".repeat(65)), SnapshotNameError::TooLong { len: 65 });
        assert_eq!(bad("a/b"), SnapshotNameError::BadChar('/'));
        assert_eq!(bad("../x"), SnapshotNameError::BadChar('/'));
        assert_eq!(bad(".."), SnapshotNameError::BadStart('.'));
        assert_eq!(bad(".hidden"), SnapshotNameError::BadStart('.'));
        assert_eq!(bad("-rf"), SnapshotNameError::BadStart('-'));
        assert_eq!(bad("a b"), SnapshotNameError::BadChar(' '));
        assert_eq!(bad("é"), SnapshotNameError::BadChar('é'));
        assert_eq!(bad("a\n"), SnapshotNameError::BadChar('\n'));
        assert_eq!(bad("42"), SnapshotNameError::AllDigits);
    }

    fn sample() -> SnapshotMeta {
        SnapshotMeta {
            api_version: SNAPSHOT_API_VERSION.into(),
            kind: SNAPSHOT_KIND.into(),
            name: "before".parse().unwrap(),
            cluster: "dev".parse().unwrap(),
            created_ms: 1_700_000_000_000,
            state: SnapshotKind::Running,
            nodes: vec!["dev-cp-1".parse().unwrap(), "dev-worker-1".parse().unwrap()],
            save_seconds: 2.5,
        }
    }

    #[test]
    fn records_round_trip_and_are_strict() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::at(dir.path());
        std::fs::create_dir(super::dir(&paths)).unwrap();
        let meta = sample();
        write_record(&paths, &meta).unwrap();
        let path = record(&paths, &meta.name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""apiVersion": "ironclad.dev/v1alpha1""#),
            "{text}"
        );
        assert!(text.contains(r#""state": "running""#), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_record(&path).unwrap(), meta);
        for (from, to) in [
            (r#""state": "running""#, r#""state": "paused""#),
            (r#""name": "before""#, r#""name": "../x""#),
            (r#""kind": "Snapshot""#, r#""kind": "Cluster""#),
            (r#""cluster": "dev""#, r#""cluster": "dev", "extra": 1"#),
        ] {
            std::fs::write(&path, text.replace(from, to)).unwrap();
            assert!(
                matches!(read_record(&path), Err(SnapshotError::BadRecord { .. })),
                "{to}"
            );
        }
    }

    #[test]
    fn one_operation_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::at(dir.path());
        let c: ClusterName = "dev".parse().unwrap();
        let held = lock(&paths, &c).unwrap();
        assert!(matches!(lock(&paths, &c), Err(SnapshotError::Busy { .. })));
        drop(held);
        lock(&paths, &c).unwrap();
    }
}
