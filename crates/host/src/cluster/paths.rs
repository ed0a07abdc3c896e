//! Where a cluster's state lives on the host, and the names of every file in
//! it. One place decides the layout so the CLI, the supervisor and the tests
//! agree on it.
//!
//! The state root is, in order of precedence: `--state-dir`, the
//! `IRONCLAD_STATE_DIR` environment variable, `$XDG_STATE_HOME/ironclad`, and
//! `$HOME/.local/state/ironclad`. Each cluster has a directory
//! `<root>/clusters/<name>/` (mode 0700), where `<name>` is a
//! [`ClusterName`] (a DNS-1123 label: it cannot be empty, `.`, `..`, hold a
//! `/` or start with `-`):
//!
//! ```text
//! .ironclad-cluster       the marker: written first, when create makes the directory
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
//! matrix/last.json .xml   the last matrix report (JSON, JUnit), for support bundles
//! ```
//!
//! Which directories are clusters ([`find`], [`list_clusters`]): a real
//! directory (not a symbolic link) directly under `<root>/clusters/` (itself
//! not a symbolic link), owned by the user running ironclad, whose name is a
//! valid cluster name and which holds the marker file as a regular file. A
//! directory made by an older ironclad, which wrote no marker, counts when
//! its `cluster.json` is a `ClusterState` document naming that same cluster.
//! Anything else under `clusters/` is [`Found::Foreign`]: no command reads
//! it as a cluster, and `destroy` refuses to remove it.

use crate::spec::{ClusterName, NodeName};
use std::path::{Path, PathBuf};

/// The marker file that makes a directory a cluster's (see the module docs).
pub const MARKER_FILE: &str = ".ironclad-cluster";
/// The marker's first line.
const MARKER_MAGIC: &str = "ironclad-cluster-dir v1";
/// The longest marker read.
const MARKER_MAX_BYTES: u64 = 4096;
/// The largest legacy `cluster.json` read to recognise a cluster directory.
const LEGACY_STATE_MAX_BYTES: u64 = 1 << 20;

/// The environment variable that overrides the state root.
pub const STATE_DIR_ENV: &str = "IRONCLAD_STATE_DIR";

/// The longest path a unix socket can have on Linux (`sun_path` is 108 bytes
/// including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Resolves the state root from an explicit flag, then the environment.
/// `None` when neither a flag, `IRONCLAD_STATE_DIR`, `XDG_STATE_HOME` nor
/// `HOME` is set.
#[expect(
    clippy::disallowed_methods,
    reason = "the XDG base directory rules are defined on the environment"
)]
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

/// The directory holding every cluster's directory.
pub fn clusters_dir(root: &Path) -> PathBuf {
    root.join("clusters")
}

impl ClusterPaths {
    /// The paths of cluster `name` under the state root `root`. The name is
    /// a [`ClusterName`], so the directory is always one level under
    /// `<root>/clusters/`.
    pub fn new(root: &Path, name: &ClusterName) -> Self {
        ClusterPaths {
            dir: clusters_dir(root).join(name.as_str()),
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
    /// The marker that makes the directory a cluster's ([`MARKER_FILE`]).
    pub fn marker(&self) -> PathBuf {
        self.dir.join(MARKER_FILE)
    }
    /// There while the cluster's `create` has not finished (made right after
    /// the directory, removed once every node is ready and etcd converged);
    /// the running `create` holds an exclusive `flock` on it. Its presence
    /// is what lets `create` resume the cluster.
    pub fn creating(&self) -> PathBuf {
        self.dir.join("creating")
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
    pub fn machine_config(&self, node: &NodeName) -> PathBuf {
        crate::configdir::node_config_path(&self.dir, node)
    }
    /// The JSON copy of a node's machine config that its QEMU hands it
    /// through fw_cfg (`configdir::write_fw_cfg_document`).
    pub fn fw_cfg_config(&self, node: &NodeName) -> PathBuf {
        crate::configdir::node_fw_cfg_path(&self.dir, node)
    }
    /// A node's qcow2 state disk.
    pub fn disk(&self, node: &NodeName) -> PathBuf {
        self.dir.join("disks").join(format!("{node}.qcow2"))
    }
    /// A node's serial console log.
    pub fn serial_log(&self, node: &NodeName) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.log"))
    }
    /// The supervisor's own log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("logs").join("supervisor.log")
    }
    /// A node's QEMU stderr (start-up errors, warnings).
    pub fn qemu_log(&self, node: &NodeName) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.qemu.log"))
    }
    /// The last matrix report, as JSON (kept for support bundles).
    pub fn matrix_report_json(&self) -> PathBuf {
        self.dir.join("matrix").join("last.json")
    }
    /// The last matrix report, as JUnit XML.
    pub fn matrix_report_junit(&self) -> PathBuf {
        self.dir.join("matrix").join("last.xml")
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
    pub fn qmp_socket(&self, node: &NodeName) -> PathBuf {
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
            all.push(self.qmp_socket(n));
            all.push(self.switch_port(n));
        }
        all.into_iter()
            .max_by_key(|p| p.as_os_str().len())
            .unwrap_or_else(|| self.run_dir())
    }

    /// Makes the cluster's directory (mode 0700) and writes its marker
    /// first. Fails with `AlreadyExists` when the directory is there: two
    /// creates of one name cannot both claim it.
    pub fn claim(&self, name: &ClusterName) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&self.dir)?;
        crate::fsutil::create_private_dir(&self.dir)?;
        let text = format!(
            "{MARKER_MAGIC}\nname: {name}\n# a cluster's state directory: `ironclad destroy {name}` removes it\n"
        );
        crate::fsutil::write_public(&self.marker(), text.as_bytes())
    }
}

/// What is at a cluster's place under the state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing: there is no cluster of that name.
    Absent,
    /// A cluster's directory.
    Cluster(ClusterPaths),
    /// Something that is not a cluster's directory: ironclad leaves it alone.
    Foreign {
        /// What was found.
        path: PathBuf,
        /// Why it is not a cluster's directory.
        why: String,
    },
}

impl Found {
    /// The message for a command refused on [`Found::Foreign`].
    pub fn foreign_message(path: &Path, why: &str) -> String {
        format!(
            "{} is not a cluster directory made by ironclad: {why}; ironclad does not touch it (remove it by hand if it should go)",
            path.display()
        )
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// What `<root>/clusters/<name>` is (see the module docs for the rules).
pub fn find(root: &Path, name: &ClusterName) -> std::io::Result<Found> {
    use std::io::ErrorKind;
    use std::os::unix::fs::MetadataExt;
    let parent = clusters_dir(root);
    match std::fs::symlink_metadata(&parent) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Absent),
        Err(e) => return Err(e),
        Ok(m) if m.file_type().is_symlink() => {
            return Ok(Found::Foreign {
                path: parent,
                why: "the clusters directory is a symbolic link (point --state-dir at the real place instead)".into(),
            });
        }
        Ok(m) if !m.is_dir() => {
            return Ok(Found::Foreign {
                path: parent,
                why: "the clusters directory is not a directory".into(),
            });
        }
        Ok(_) => {}
    }
    let paths = ClusterPaths::new(root, name);
    let foreign = |why: String| {
        Ok(Found::Foreign {
            path: paths.dir().to_path_buf(),
            why,
        })
    };
    let meta = match std::fs::symlink_metadata(paths.dir()) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Absent),
        Err(e) => return Err(e),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() {
        return foreign("it is a symbolic link".into());
    }
    if !meta.is_dir() {
        return foreign("it is not a directory".into());
    }
    let me = effective_uid();
    if meta.uid() != me {
        return foreign(format!(
            "it belongs to uid {}, not to you (uid {me})",
            meta.uid()
        ));
    }
    if has_marker(&paths) || is_legacy_cluster(&paths, name) {
        return Ok(Found::Cluster(paths));
    }
    foreign(format!(
        "it holds no {MARKER_FILE} marker (nor a cluster.json of cluster {name})"
    ))
}

/// Whether the marker is a regular file that starts with [`MARKER_MAGIC`].
fn has_marker(paths: &ClusterPaths) -> bool {
    read_regular(&paths.marker(), MARKER_MAX_BYTES)
        .is_some_and(|b| b.starts_with(MARKER_MAGIC.as_bytes()))
}

/// A directory of an ironclad without markers: its `cluster.json` is a
/// regular file holding a `ClusterState` of this very cluster.
fn is_legacy_cluster(paths: &ClusterPaths, name: &ClusterName) -> bool {
    let Some(bytes) = read_regular(&paths.cluster_json(), LEGACY_STATE_MAX_BYTES) else {
        return false;
    };
    serde_json::from_slice::<super::state::ClusterState>(&bytes)
        .is_ok_and(|s| s.kind == super::state::KIND && s.name == *name)
}

/// The contents of `path` when it is a regular file (not a symbolic link) of
/// at most `max` bytes.
fn read_regular(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The clusters under `root`, sorted: the entries of `<root>/clusters/` that
/// [`find`] takes for clusters (anything else there is skipped). A missing
/// root means no clusters; a `clusters` that is a symbolic link is an error.
pub fn list_clusters(root: &Path) -> std::io::Result<Vec<ClusterName>> {
    let dir = clusters_dir(root);
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                Found::foreign_message(
                    &dir,
                    "the clusters directory is a symbolic link or not a directory",
                ),
            ));
        }
        Ok(_) => {}
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<ClusterName>().ok())
        else {
            continue;
        };
        if matches!(find(root, &name)?, Found::Cluster(_)) {
            names.push(name);
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

    fn name(s: &str) -> ClusterName {
        s.parse().unwrap()
    }

    #[test]
    fn layout_names_every_file_under_the_cluster_dir() {
        let p = ClusterPaths::new(Path::new("/s"), &name("dev"));
        assert_eq!(p.dir(), Path::new("/s/clusters/dev"));
        let cp1: NodeName = "cp-1".parse().unwrap();
        assert_eq!(p.disk(&cp1), Path::new("/s/clusters/dev/disks/cp-1.qcow2"));
        assert_eq!(
            p.qmp_socket(&cp1),
            Path::new("/s/clusters/dev/run/qmp-cp-1.sock")
        );
        assert_eq!(p.marker(), Path::new("/s/clusters/dev/.ironclad-cluster"));
        let nodes: Vec<NodeName> = vec!["a".parse().unwrap(), "longer-name".parse().unwrap()];
        assert!(
            p.longest_socket(&nodes)
                .to_str()
                .unwrap()
                .contains("longer-name")
        );
    }

    #[test]
    fn claim_makes_a_private_dir_with_its_marker_once() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = ClusterPaths::new(tmp.path(), &name("dev"));
        p.claim(&name("dev")).unwrap();
        let mode = std::fs::metadata(p.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(
            std::fs::read_to_string(p.marker())
                .unwrap()
                .starts_with(MARKER_MAGIC)
        );
        assert_eq!(
            find(tmp.path(), &name("dev")).unwrap(),
            Found::Cluster(p.clone())
        );
        let again = p.claim(&name("dev")).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn only_real_cluster_dirs_are_clusters() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(find(root, &name("dev")).unwrap(), Found::Absent);
        assert!(list_clusters(&root.join("nope")).unwrap().is_empty());
        let clusters = clusters_dir(root);
        std::fs::create_dir_all(&clusters).unwrap();

        // Made by create (marker) or by an older ironclad (cluster.json naming it).
        for n in ["b", "a"] {
            ClusterPaths::new(root, &name(n)).claim(&name(n)).unwrap();
        }
        let old = ClusterPaths::new(root, &name("old"));
        std::fs::create_dir(old.dir()).unwrap();
        let mut state = super::super::state::tests::sample();
        state.name = name("old");
        state.save(&old.cluster_json()).unwrap();

        // Not clusters: a plain directory, one whose cluster.json names
        // another cluster, a marker that is a link, a link to a cluster, a file.
        std::fs::create_dir(clusters.join("plain")).unwrap();
        let other = ClusterPaths::new(root, &name("other"));
        std::fs::create_dir(other.dir()).unwrap();
        super::super::state::tests::sample()
            .save(&other.cluster_json())
            .unwrap();
        let linked_marker = ClusterPaths::new(root, &name("linkmark"));
        std::fs::create_dir(linked_marker.dir()).unwrap();
        std::os::unix::fs::symlink(
            ClusterPaths::new(root, &name("a")).marker(),
            linked_marker.marker(),
        )
        .unwrap();
        std::os::unix::fs::symlink(clusters.join("a"), clusters.join("link")).unwrap();
        std::fs::write(clusters.join("file"), "x").unwrap();
        std::fs::create_dir(clusters.join("Not_A_Name")).unwrap();

        assert_eq!(
            list_clusters(root).unwrap(),
            vec![name("a"), name("b"), name("old")]
        );
        assert!(matches!(
            find(root, &name("old")).unwrap(),
            Found::Cluster(_)
        ));
        for n in ["plain", "other", "linkmark", "link", "file"] {
            match find(root, &name(n)).unwrap() {
                Found::Foreign { path, why } => {
                    assert_eq!(path, clusters.join(n));
                    assert!(!why.is_empty());
                }
                f => panic!("{n}: {f:?}"),
            }
        }
    }

    #[test]
    fn a_clusters_dir_that_is_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let real = ClusterPaths::new(&elsewhere, &name("dev"));
        real.claim(&name("dev")).unwrap();
        std::os::unix::fs::symlink(clusters_dir(&elsewhere), clusters_dir(&root)).unwrap();
        assert!(matches!(
            find(&root, &name("dev")).unwrap(),
            Found::Foreign { .. }
        ));
        let err = list_clusters(&root).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
