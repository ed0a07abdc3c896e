//! What a cluster is doing: `status`, `list`, finding a node, `console`.

use super::*;

/// One node in `status`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: NodeName,
    pub role: crate::spec::Role,
    /// `ready`, `booting`, `stopping`, `stopped` or `crashed`.
    pub state: String,
    /// The last boot phase machined printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub address: std::net::Ipv4Addr,
    pub api_port: u16,
    /// Where the host reaches the node API.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The network faults in force on its frames (`ironclad net`), while
    /// the cluster runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NodeFaults>,
}

/// A cluster in `status` and `list`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: ClusterName,
    pub dir: PathBuf,
    /// The supervisor's pid when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    /// Each node's translated-code cache under TCG (MiB; `create --tcg-cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcg_cache_mib: Option<u32>,
    pub nodes: Vec<NodeStatus>,
    /// Why the state could not be read (a half-created cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Why the network's faults could not be read from a running cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_problem: Option<String>,
}

/// The state shown for a node: the supervisor's record, refined by the serial
/// log (`booting` until ready) and by whether the supervisor is alive.
pub fn shown_state(recorded: NodeState, supervisor_alive: bool, ready: bool) -> &'static str {
    match recorded {
        // Its QEMU died with the supervisor.
        NodeState::Running | NodeState::Stopping if !supervisor_alive => "crashed",
        NodeState::Running if ready => "ready",
        NodeState::Running => "booting",
        other => other.as_str(),
    }
}

/// `ironclad status NAME`.
pub fn status(root: &Path, name: &ClusterName) -> Result<ClusterStatus> {
    let paths = existing(root, name)?;
    let engine = engine::selected();
    let supervisor = engine.running(&paths);
    let state = match ClusterState::load(&paths.cluster_json()) {
        Ok(s) => s,
        Err(e) => {
            return Ok(ClusterStatus {
                name: name.clone(),
                dir: paths.dir().to_path_buf(),
                supervisor,
                accel: None,
                tcg_cache_mib: None,
                nodes: vec![],
                problem: Some(format!(
                    "{e} (half-created? `ironclad destroy {name}` removes it)"
                )),
                network_problem: None,
            });
        }
    };
    let now = now_ms();
    let (faults, network_problem) = match supervisor.map(|_| faults_in_force(engine, &paths)) {
        Some(Ok(f)) => (Some(f), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let nodes = state
        .nodes
        .iter()
        .map(|n| {
            let ready = DEFAULT_READY.iter().all(|c| c.met(engine, &paths, n));
            let alive = supervisor.is_some();
            let live = n.state.has_process() && alive;
            NodeStatus {
                name: n.name.clone(),
                role: n.role,
                state: shown_state(n.state, alive, ready).to_string(),
                phase: if live {
                    last_phase(&engine.console_log(&paths, &n.name))
                } else {
                    None
                },
                pid: if live { n.pid } else { None },
                address: n.address,
                api_port: n.api_port,
                endpoint: format!("127.0.0.1:{}", n.api_port),
                uptime_seconds: if live {
                    n.started_at_ms.map(|s| now.saturating_sub(s) / 1000)
                } else {
                    None
                },
                last_exit: n.last_exit.clone(),
                network: faults
                    .as_ref()
                    .and_then(|f| f.get(n.name.as_str()).copied()),
            }
        })
        .collect();
    Ok(ClusterStatus {
        name: name.clone(),
        dir: paths.dir().to_path_buf(),
        supervisor,
        accel: Some(state.accel),
        tcg_cache_mib: (state.accel == Accel::Tcg).then_some(state.tcg_cache_mib),
        nodes,
        problem: None,
        network_problem,
    })
}

/// `ironclad list`: every cluster under the root (see
/// [`crate::cluster::paths::list_clusters`]: only real cluster directories).
pub fn list(root: &Path) -> Result<Vec<ClusterStatus>> {
    let names = crate::cluster::paths::list_clusters(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => LifecycleError::BadInput(e.to_string()),
        _ => e.into(),
    })?;
    names.iter().map(|n| status(root, n)).collect()
}

/// Finds the cluster holding `node` (or checks it is in `cluster`).
pub fn find_node(
    root: &Path,
    node: &NodeName,
    cluster: Option<&ClusterName>,
) -> Result<ClusterPaths> {
    let all = match cluster {
        Some(c) => vec![existing(root, c)?],
        None => crate::cluster::paths::list_clusters(root)?
            .iter()
            .map(|c| ClusterPaths::new(root, c))
            .collect(),
    };
    for paths in all {
        if let Ok(state) = ClusterState::load(&paths.cluster_json())
            && state.node(node).is_some()
        {
            return Ok(paths);
        }
    }
    Err(LifecycleError::NoSuchNode {
        node: node.clone(),
        cluster: cluster.cloned(),
    })
}

/// `ironclad console NODE`: writes the node's serial log to `out`; with
/// `follow`, keeps writing what is appended until the cluster is gone.
/// Following survives a new file at the log's path (a rotation at the cap,
/// see [`crate::cluster::caplog`], or a restarted node's new log): the old file is read
/// to its end, then the new one from its start. The log holds whatever the
/// guest wrote: control characters (escape sequences that could drive the
/// terminal) are written visibly, as `\x1b` and the like
/// ([`crate::cluster::console::Escaper`]).
pub fn console(
    paths: &ClusterPaths,
    node: &NodeName,
    follow: bool,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let log = engine::selected().console_log(paths, node);
    let mut reader = LogFollower::new(log);
    let mut escaper = crate::cluster::console::Escaper::default();
    let mut raw = Vec::new();
    let mut shown = Vec::new();
    loop {
        raw.clear();
        reader.copy_new(&mut raw)?;
        if !raw.is_empty() {
            shown.clear();
            escaper.push(&raw, &mut shown);
            out.write_all(&shown)?;
            out.flush()?;
        }
        if !follow || !paths.dir().exists() {
            shown.clear();
            escaper.finish(&mut shown);
            out.write_all(&shown)?;
            return Ok(out.flush()?);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads a log file as it grows, across rotations (`tail -F`).
pub(super) struct LogFollower {
    path: PathBuf,
    /// The open file and the inode it was opened as.
    current: Option<(std::fs::File, u64)>,
}

impl LogFollower {
    pub(super) fn new(path: PathBuf) -> Self {
        LogFollower {
            path,
            current: None,
        }
    }

    /// Appends to `out` what was added since the last call.
    pub(super) fn copy_new(&mut self, out: &mut Vec<u8>) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        loop {
            // Looked at before reading, so that whatever the old file got
            // before the switch is read below.
            let at_path = std::fs::metadata(&self.path).ok().map(|m| m.ino());
            if let Some((f, _)) = &mut self.current {
                // Truncated in place: start over.
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let pos = f.stream_position()?;
                if len < pos {
                    f.seek(SeekFrom::Start(0))?;
                }
                f.read_to_end(out)?;
            }
            let open_ino = self.current.as_ref().map(|(_, ino)| *ino);
            match at_path {
                Some(ino) if open_ino != Some(ino) => {
                    // A new file (or the first): switch and read it at once.
                    let Ok(f) = std::fs::File::open(&self.path) else {
                        return Ok(());
                    };
                    let ino = f.metadata().map(|m| m.ino()).unwrap_or(ino);
                    self.current = Some((f, ino));
                }
                _ => return Ok(()),
            }
        }
    }
}
