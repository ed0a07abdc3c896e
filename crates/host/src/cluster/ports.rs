//! Host ports for the node APIs (QEMU `hostfwd` on 127.0.0.1).
//!
//! Each node gets one port at creation and keeps it (it is recorded in
//! `cluster.json`). Ports are unique across every cluster under the same state
//! root: allocation holds an exclusive lock on `<root>/ports.lock`, collects the
//! ports every cluster already records, and takes the lowest free ones in
//! [`RANGE`] that can also be bound on 127.0.0.1 right now (so a port some other
//! program uses is skipped). The choice itself ([`pick`]) is pure and unit-tested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The ports handed out (above the node API's own 50000, below the usual
/// ephemeral range of Linux, 32768–60999, overlap is handled by the bind check).
pub const RANGE: std::ops::Range<u16> = 50001..52000;

/// Why ports could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free host port for the node APIs in {}..{} ({wanted} wanted)", RANGE.start, RANGE.end)]
    Exhausted { wanted: usize },
}

/// The lowest `count` ports of `range` not in `used` and accepted by `free`.
pub fn pick(
    range: std::ops::Range<u16>,
    used: &BTreeSet<u16>,
    count: usize,
    free: impl Fn(u16) -> bool,
) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(count);
    for port in range {
        if out.len() == count {
            break;
        }
        if !used.contains(&port) && free(port) {
            out.push(port);
        }
    }
    (out.len() == count).then_some(out)
}

/// Whether 127.0.0.1:`port` can be bound now.
pub fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The ports recorded by every cluster under `root` (unreadable states are skipped).
pub fn used_ports(root: &Path) -> BTreeSet<u16> {
    let mut used = BTreeSet::new();
    for name in super::paths::list_clusters(root).unwrap_or_default() {
        let paths = super::paths::ClusterPaths::new(root, &name);
        if let Ok(state) = super::state::ClusterState::load(&paths.cluster_json()) {
            used.extend(state.nodes.iter().map(|n| n.api_port));
        }
    }
    used
}

/// An exclusive lock on the state root's port table, held while ports are
/// chosen and recorded. Released on drop.
pub struct PortLock {
    _file: std::fs::File,
}

impl PortLock {
    pub fn acquire(root: &Path) -> Result<PortLock, PortError> {
        let path = root.join("ports.lock");
        let err = |source| PortError::Lock {
            path: path.clone(),
            source,
        };
        // A new root is private; an existing one (it may be the user's own
        // directory) keeps its mode.
        if !root.is_dir() {
            crate::fsutil::create_private_dir(root).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| err(e.into()))?;
        Ok(PortLock { _file: file })
    }
}

/// Allocates `count` ports under `root`. Call with the [`PortLock`] held and
/// record the result before releasing it.
pub fn allocate(root: &Path, count: usize, _lock: &PortLock) -> Result<Vec<u16>, PortError> {
    let used = used_ports(root);
    pick(RANGE, &used, count, bindable).ok_or(PortError::Exhausted { wanted: count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_lowest_free_ports() {
        let used: BTreeSet<u16> = [10, 12].into();
        assert_eq!(pick(10..20, &used, 3, |_| true), Some(vec![11, 13, 14]));
        assert_eq!(pick(10..20, &used, 2, |p| p != 11), Some(vec![13, 14]));
        assert_eq!(pick(10..13, &used, 2, |_| true), None);
        assert_eq!(pick(10..13, &used, 0, |_| true), Some(vec![]));
    }

    #[test]
    fn skips_ports_other_clusters_hold_and_bound_ports() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let name = "dev".parse().unwrap();
        let paths = super::super::paths::ClusterPaths::new(root, &name);
        paths.claim(&name).unwrap();
        let mut s = super::super::state::tests::sample();
        s.nodes[0].api_port = RANGE.start;
        s.save(&paths.cluster_json()).unwrap();
        let lock = PortLock::acquire(root).unwrap();
        assert_eq!(used_ports(root), [RANGE.start].into());
        let got = allocate(root, 2, &lock).unwrap();
        assert!(!got.contains(&RANGE.start));
        assert_eq!(got.len(), 2);
        assert_ne!(got[0], got[1]);
        // A port held by a listener here is not bindable.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!bindable(l.local_addr().unwrap().port()));
    }
}
