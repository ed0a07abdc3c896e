//! Where a cluster's state lives on the host, and the names of every file in
//! it. One place decides the layout so the CLI, the supervisor and the tests
//! agree on it.
//!
//! The state root is, in order of precedence: `--state-dir`, the
//! `IRONCLAD_STATE_DIR` environment variable, `$XDG_STATE_HOME/ironclad`, and
//! `$HOME/.local/state/ironclad`. Each cluster has a directory
//! `<root>/clusters/<name>/` (mode 0700):
//!
//! ```text
//! cluster.json            what runs: nodes, ports, pids (written by create and the supervisor)
//! cluster.yaml            the cluster file this cluster was created from
//! client.yaml admin.*     the admin client config (from `gen config`)
//! secrets/ nodes/         the PKI and the machine configs (from `gen config`)
//! disks/<node>.qcow2      per-node state disks
//! logs/<node>.log         per-node serial console
//! logs/<node>.qemu.log    per-node QEMU stderr
//! logs/supervisor.log     the supervisor's own log
//! run/                    unix sockets: QMP per node, the switch ports and control,
//!                         the supervisor's control socket (supervisor.sock)
//! supervisor.pid          the detached supervisor's pid
//! ```

use crate::spec::NodeName;
use std::path::{Path, PathBuf};

/// The environment variable that overrides the state root.
pub const STATE_DIR_ENV: &str = "IRONCLAD_STATE_DIR";

/// The longest path a unix socket can have on Linux (`sun_path` is 108 bytes
/// including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Resolves the state root from an explicit flag, then the environment.
/// `None` when neither a flag, `IRONCLAD_STATE_DIR`, `XDG_STATE_HOME` nor
/// `HOME` is set.
pub fn state_root(flag: Option<&Path>) -> Option<PathBuf> {
    state_root_from(flag, |k| std::env::var_os(k))
}

fn state_root_from(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(dir) = flag {
        return Some(dir.to_path_buf());
    }
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(STATE_DIR_ENV) {
        return Some(dir);
    }
    if let Some(dir) = non_empty("XDG_STATE_HOME") {
        return Some(dir.join("ironclad"));
    }
    non_empty("HOME").map(|h| h.join(".local/state/ironclad"))
}

/// The layout of one cluster's state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPaths {
    dir: PathBuf,
}

impl ClusterPaths {
    /// The paths of cluster `name` under the state root `root`.
    pub fn new(root: &Path, name: &str) -> Self {
        ClusterPaths {
            dir: root.join("clusters").join(name),
        }
    }

    /// The layout of the cluster whose directory is `dir` (as recorded, e.g.
    /// on the supervisor's command line).
    pub fn at(dir: &Path) -> Self {
        ClusterPaths {
            dir: dir.to_path_buf(),
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The description of what runs (see [`ClusterPaths`]).
    pub fn cluster_json(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    /// The copy of the cluster file the cluster was created from.
    pub fn cluster_yaml(&self) -> PathBuf {
        self.dir.join("cluster.yaml")
    }
    /// The admin client config (`gen config` output in the same dir).
    pub fn client_yaml(&self) -> PathBuf {
        self.dir.join("client.yaml")
    }
    /// A node's machine config.
    pub fn machine_config(&self, node: &str) -> PathBuf {
        crate::configdir::node_config_path(&self.dir, node)
    }
    /// A node's qcow2 state disk.
    pub fn disk(&self, node: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{node}.qcow2"))
    }
    /// A node's serial console log.
    pub fn serial_log(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.log"))
    }
    /// The supervisor's own log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("logs").join("supervisor.log")
    }
    /// A node's QEMU stderr (start-up errors, warnings).
    pub fn qemu_log(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.qemu.log"))
    }
    /// The supervisor's control socket.
    pub fn supervisor_socket(&self) -> PathBuf {
        self.run_dir().join("supervisor.sock")
    }
    /// The disks directory.
    pub fn disks_dir(&self) -> PathBuf {
        self.dir.join("disks")
    }
    /// The logs directory.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// The supervisor's pid file.
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    /// The directory of the cluster's unix sockets.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// A node's QMP socket.
    pub fn qmp_socket(&self, node: &str) -> PathBuf {
        self.run_dir().join(format!("qmp-{node}.sock"))
    }
    /// The switch's control socket (fault injection).
    pub fn switch_control(&self) -> PathBuf {
        crate::network::control_socket(&self.run_dir())
    }
    /// The switch port socket a node's QEMU connects to.
    pub fn switch_port(&self, node: &NodeName) -> PathBuf {
        crate::network::port_socket(&self.run_dir(), node)
    }

    /// The longest socket path this cluster would use, given its node names.
    pub fn longest_socket(&self, nodes: &[NodeName]) -> PathBuf {
        let mut all: Vec<PathBuf> = vec![self.switch_control(), self.supervisor_socket()];
        for n in nodes {
            all.push(self.qmp_socket(n.as_str()));
            all.push(self.switch_port(n));
        }
        all.into_iter()
            .max_by_key(|p| p.as_os_str().len())
            .unwrap_or_else(|| self.run_dir())
    }
}

/// The names of the clusters under `root`, sorted (directories under
/// `clusters/`; a missing root means no clusters).
pub fn list_clusters(root: &Path) -> std::io::Result<Vec<String>> {
    let dir = root.join("clusters");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn precedence_is_flag_env_xdg_home() {
        let all = env_of(&[
            ("IRONCLAD_STATE_DIR", "/env"),
            ("XDG_STATE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            state_root_from(Some(Path::new("/flag")), &all),
            Some("/flag".into())
        );
        assert_eq!(state_root_from(None, &all), Some("/env".into()));
        let xdg = env_of(&[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(state_root_from(None, &xdg), Some("/xdg/ironclad".into()));
        let home = env_of(&[("XDG_STATE_HOME", ""), ("HOME", "/home/u")]);
        assert_eq!(
            state_root_from(None, &home),
            Some("/home/u/.local/state/ironclad".into())
        );
        assert_eq!(state_root_from(None, env_of(&[])), None);
    }

    #[test]
    fn layout_names_every_file_under_the_cluster_dir() {
        let p = ClusterPaths::new(Path::new("/s"), "dev");
        assert_eq!(p.dir(), Path::new("/s/clusters/dev"));
        assert_eq!(
            p.disk("cp-1"),
            Path::new("/s/clusters/dev/disks/cp-1.qcow2")
        );
        assert_eq!(
            p.qmp_socket("cp-1"),
            Path::new("/s/clusters/dev/run/qmp-cp-1.sock")
        );
        let nodes: Vec<NodeName> = vec!["a".parse().unwrap(), "longer-name".parse().unwrap()];
        assert!(
            p.longest_socket(&nodes)
                .to_str()
                .unwrap()
                .contains("longer-name")
        );
    }

    #[test]
    fn listing_a_missing_root_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list_clusters(&tmp.path().join("nope")).unwrap().is_empty());
        std::fs::create_dir_all(tmp.path().join("clusters/b")).unwrap();
        std::fs::create_dir_all(tmp.path().join("clusters/a")).unwrap();
        assert_eq!(list_clusters(tmp.path()).unwrap(), vec!["a", "b"]);
    }
}
