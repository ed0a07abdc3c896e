//! `start`, `stop` and `destroy` of an existing cluster.

use super::*;

/// `ironclad start NAME [--node NODE]`: boots the cluster (or one node) again
/// from its kept disks and waits for readiness.
pub fn start(
    root: &Path,
    name: &ClusterName,
    node: Option<&NodeName>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<UpReport> {
    let started = Instant::now();
    let paths = existing(root, name)?;
    let state = load(&paths)?;
    if let Some(n) = node
        && state.node(n).is_none()
    {
        return Err(LifecycleError::NoSuchNode {
            node: n.clone(),
            cluster: Some(name.clone()),
        });
    }
    let engine = engine::selected();
    check_host_tools(engine)?;
    up(engine, &paths, &state, node, started, timeout, progress)
}

/// `ironclad stop NAME [--node NODE]`: graceful power-off (power button, then
/// `quit` after `timeout`); disks and state are kept. Stopping the whole
/// cluster also ends the engine's hold on it (the QEMU engine's supervisor).
pub fn stop(
    root: &Path,
    name: &ClusterName,
    node: Option<&NodeName>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let paths = existing(root, name)?;
    let state = load(&paths)?;
    let engine = engine::selected();
    if engine.running(&paths).is_none() {
        progress.line(&format!("cluster {name} is not running"));
        return Ok(());
    }
    match node {
        Some(n) => {
            if state.node(n).is_none() {
                return Err(LifecycleError::NoSuchNode {
                    node: n.clone(),
                    cluster: Some(name.clone()),
                });
            }
            engine.stop_node(&paths, n, timeout)
        }
        None => engine.shutdown(&paths, timeout),
    }
}

/// What `destroy` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destroyed {
    /// The cluster's processes were ended and its directory removed.
    Removed(PathBuf),
    /// There was no cluster of that name: nothing to do (not an error, so
    /// that teardown steps can run twice).
    Absent,
}

/// `ironclad destroy NAME`: everything stopped at once (no graceful power-off:
/// the disks are deleted anyway) and the state dir removed. Works on a crashed
/// or half-created cluster: the engine ends whatever of the cluster it finds
/// ([`Engine::kill`]: for QEMU, any process of the cluster found in /proc).
///
/// Only a cluster's directory is removed ([`crate::cluster::paths::find`]: a real
/// directory under `<root>/clusters/`, owned by the user, holding the marker
/// or an older version's `cluster.json`). Anything else at the name's place
/// is bad input, and nothing is killed or removed. The removal itself does not
/// follow symbolic links (`remove_dir_all` unlinks them), so a link swapped
/// in after the check removes only the link.
pub fn destroy(root: &Path, name: &ClusterName) -> Result<Destroyed> {
    let paths = match crate::cluster::paths::find(root, name)? {
        Found::Absent => return Ok(Destroyed::Absent),
        Found::Foreign { path, why } => {
            return Err(LifecycleError::BadInput(Found::foreign_message(
                &path, &why,
            )));
        }
        Found::Cluster(paths) => paths,
    };
    engine::selected().kill(&paths, name)?;
    std::fs::remove_dir_all(paths.dir()).map_err(|source| LifecycleError::RemoveDir {
        dir: paths.dir().to_path_buf(),
        source,
    })?;
    Ok(Destroyed::Removed(paths.dir().to_path_buf()))
}
