//! `cluster.json`: what a cluster is made of and what runs. Written by
//! `create` (all nodes `stopped`), then kept current by the supervisor on every
//! node transition; read by `status`, `list`, `start`, `destroy`.
//!
//! Everything a restart needs is fixed here at creation: each node's MACs,
//! cluster address and host API port, the accelerator and the image files. A
//! restart after a host reboot therefore boots the same nodes with the same
//! identity. The node states and their transitions are plain data with unit
//! tests ([`NodeState`], [`on_exit`]).

use crate::qemu::Accel;
use crate::spec::{ClusterName, NodeName, Role};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The document's `kind`.
pub const KIND: &str = "ClusterState";

/// The state of one cluster (`cluster.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    pub api_version: String,
    pub kind: String,
    /// Read back as a [`ClusterName`]: a document naming a cluster in a way
    /// that could leave the state dir is refused.
    pub name: ClusterName,
    /// When `create` wrote the document (unix milliseconds).
    pub created_at_ms: u64,
    pub accel: Accel,
    /// Under TCG, each node's translated-code cache in MiB (QEMU's
    /// `tb-size`; `create --tcg-cache`). A state written before the option
    /// existed reads as the default.
    #[serde(default = "default_tcg_cache_mib")]
    pub tcg_cache_mib: u32,
    /// The cluster network.
    pub cidr: ipnet::Ipv4Net,
    /// Whether the user-mode NIC is unrestricted.
    pub egress: bool,
    pub image: ImageFiles,
    pub nodes: Vec<NodeRecord>,
}

/// The translated-code cache per node unless `create --tcg-cache` says
/// otherwise (see `supervisor::TCG_TB_SIZE_MIB` for what it trades).
pub const TCG_CACHE_DEFAULT_MIB: u32 = 64;
/// The cache sizes `create --tcg-cache` and a state file may give (MiB).
pub const TCG_CACHE_MIB_RANGE: std::ops::RangeInclusive<u32> = 16..=1024;

fn default_tcg_cache_mib() -> u32 {
    TCG_CACHE_DEFAULT_MIB
}

/// The image files every node boots from (in the image cache).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFiles {
    pub key: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
}

/// One node: fixed identity and its current run state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Read back as a [`NodeName`] (it becomes file and socket names).
    pub name: NodeName,
    pub role: Role,
    /// Address on the cluster network.
    pub address: Ipv4Addr,
    pub cluster_mac: String,
    pub user_mac: String,
    /// Port on 127.0.0.1 forwarded to the node API.
    pub api_port: u16,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    pub state: NodeState,
    /// QEMU's pid while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the current (or last) QEMU started (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// How the last QEMU ended (`exit code 0`, `killed by signal 9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

/// A node's run state as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// No QEMU; the disk is kept.
    Stopped,
    /// QEMU runs (the guest may still be booting; readiness is read from the serial log).
    Running,
    /// A power-off was requested and QEMU has not exited yet.
    Stopping,
    /// QEMU ended without being asked to (killed, or failed).
    Crashed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Stopped => "stopped",
            NodeState::Running => "running",
            NodeState::Stopping => "stopping",
            NodeState::Crashed => "crashed",
        }
    }
    /// Whether a QEMU process is (supposed to be) alive.
    pub fn has_process(self) -> bool {
        matches!(self, NodeState::Running | NodeState::Stopping)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a QEMU process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// The state after QEMU ended. A stop that was asked for, or a clean exit
/// (the guest powered itself off), is `stopped`; anything else is `crashed`.
pub fn on_exit(prev: NodeState, exit: ExitInfo) -> NodeState {
    if prev == NodeState::Stopping || exit.code == Some(0) {
        NodeState::Stopped
    } else {
        NodeState::Crashed
    }
}

/// Why cluster.json could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid cluster state: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClusterState {
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let state: ClusterState = serde_json::from_str(&text).map_err(|e| StateError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if state.kind != KIND {
            return Err(StateError::Parse {
                path: path.to_path_buf(),
                message: format!("kind is {:?}, expected {KIND:?}", state.kind),
            });
        }
        if !TCG_CACHE_MIB_RANGE.contains(&state.tcg_cache_mib) {
            return Err(StateError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "tcgCacheMib is {}, outside {}..={} MiB",
                    state.tcg_cache_mib,
                    TCG_CACHE_MIB_RANGE.start(),
                    TCG_CACHE_MIB_RANGE.end()
                ),
            });
        }
        Ok(state)
    }

    /// Writes atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| StateError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        crate::fsutil::write_secret(path, text.as_bytes()).map_err(|source| StateError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeRecord> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ClusterState {
        ClusterState {
            api_version: crate::API_VERSION.into(),
            kind: KIND.into(),
            name: "dev".parse().unwrap(),
            created_at_ms: 1,
            accel: Accel::Tcg,
            tcg_cache_mib: TCG_CACHE_DEFAULT_MIB,
            cidr: "10.5.0.0/24".parse().unwrap(),
            egress: false,
            image: ImageFiles {
                key: "abc".into(),
                kernel: "/c/vmlinux".into(),
                initrd: "/c/initramfs".into(),
                rootfs: "/c/rootfs.squashfs".into(),
            },
            nodes: vec![NodeRecord {
                name: "dev-cp-1".parse().unwrap(),
                role: Role::ControlPlane,
                address: "10.5.0.2".parse().unwrap(),
                cluster_mac: "02:00:00:00:00:00".into(),
                user_mac: "06:00:00:00:00:00".into(),
                api_port: 50001,
                cpus: 1,
                memory_mib: 1024,
                disk_bytes: 4 << 30,
                state: NodeState::Stopped,
                pid: None,
                started_at_ms: None,
                last_exit: None,
            }],
        }
    }

    #[test]
    fn round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("cluster.json");
        let mut s = sample();
        s.nodes[0].state = NodeState::Running;
        s.nodes[0].pid = Some(42);
        s.save(&p).unwrap();
        assert_eq!(ClusterState::load(&p).unwrap(), s);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"state\": \"running\""), "{text}");
        assert!(text.contains("\"apiPort\": 50001"), "{text}");
    }

    #[test]
    fn refuses_other_documents() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("cluster.json");
        std::fs::write(&p, "{}").unwrap();
        assert!(matches!(
            ClusterState::load(&p),
            Err(StateError::Parse { .. })
        ));
        let mut s = sample();
        s.kind = "Other".into();
        s.save(&p).unwrap();
        let err = ClusterState::load(&p).unwrap_err();
        assert!(err.to_string().contains("Other"), "{err}");
    }

    #[test]
    fn refuses_names_that_could_leave_the_state_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("cluster.json");
        let good = serde_json::to_string(&sample()).unwrap();
        for (from, to) in [
            ("\"name\":\"dev\"", "\"name\":\"../x\""),
            ("\"name\":\"dev\"", "\"name\":\"\""),
            ("\"name\":\"dev-cp-1\"", "\"name\":\"/etc/passwd\""),
            ("\"name\":\"dev-cp-1\"", "\"name\":\"a/b\""),
        ] {
            assert!(good.contains(from), "{good}");
            std::fs::write(&p, good.replace(from, to)).unwrap();
            let err = ClusterState::load(&p).unwrap_err();
            assert!(
                err.to_string().contains("DNS-1123") || err.to_string().contains("empty"),
                "{err}"
            );
        }
    }

    #[test]
    fn exit_transitions() {
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        let clean = ExitInfo {
            code: Some(0),
            signal: None,
        };
        let failed = ExitInfo {
            code: Some(1),
            signal: None,
        };
        assert_eq!(on_exit(NodeState::Running, killed), NodeState::Crashed);
        assert_eq!(on_exit(NodeState::Running, failed), NodeState::Crashed);
        // The guest powered itself off.
        assert_eq!(on_exit(NodeState::Running, clean), NodeState::Stopped);
        // A stop that ended in a kill is still a stop.
        assert_eq!(on_exit(NodeState::Stopping, killed), NodeState::Stopped);
        assert_eq!(killed.to_string(), "killed by signal 9");
        assert_eq!(failed.to_string(), "exit code 1");
    }

    /// A state from before `--tcg-cache` reads as the default; a cache size
    /// outside the range is refused, not handed to QEMU.
    #[test]
    fn the_translation_cache_size_defaults_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("tcgCacheMib");
        std::fs::write(&path, v.to_string()).unwrap();
        assert_eq!(
            ClusterState::load(&path).unwrap().tcg_cache_mib,
            TCG_CACHE_DEFAULT_MIB
        );
        for (mib, ok) in [(16, true), (1024, true), (15, false), (100_000, false)] {
            v["tcgCacheMib"] = mib.into();
            std::fs::write(&path, v.to_string()).unwrap();
            let got = ClusterState::load(&path);
            assert_eq!(got.is_ok(), ok, "{mib}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("tcgCacheMib"), "{e}");
            }
        }
    }
}
