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
        return Err(LifecycleError::BadInput(format!(
            "cluster {name} has no node {n:?}"
        )));
    }
    check_host_tools()?;
    up(&paths, &state, node, started, timeout, progress)
}

/// `ironclad stop NAME [--node NODE]`: graceful power-off (power button, then
/// `quit` after `timeout`); disks and state are kept. Stopping the whole
/// cluster also ends its supervisor.
pub fn stop(
    root: &Path,
    name: &ClusterName,
    node: Option<&NodeName>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let paths = existing(root, name)?;
    let state = load(&paths)?;
    let Some(pid) = supervisor::running_pid(&paths) else {
        progress.line(&format!("cluster {name} is not running"));
        return Ok(());
    };
    let timeout_ms = timeout.as_millis() as u64;
    match node {
        Some(n) => {
            if state.node(n).is_none() {
                return Err(LifecycleError::BadInput(format!(
                    "cluster {name} has no node {n:?}"
                )));
            }
            call(
                &paths,
                &Request::StopNode {
                    node: n.to_string(),
                    graceful: true,
                    timeout_ms,
                },
                timeout + Duration::from_secs(15),
            )
        }
        None => {
            call(
                &paths,
                &Request::Shutdown {
                    graceful: true,
                    timeout_ms,
                },
                timeout + Duration::from_secs(15),
            )?;
            wait_gone(&[pid], Instant::now() + Duration::from_secs(10));
            if supervisor::is_supervisor_of(pid, paths.dir()) {
                return Err(LifecycleError::SupervisorStuck { pid });
            }
            Ok(())
        }
    }
}

pub(super) fn wait_gone(pids: &[u32], deadline: Instant) -> bool {
    loop {
        let alive = pids.iter().any(|p| supervisor::cmdline(*p).is_some());
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
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
/// or half-created cluster: any process of the cluster found in /proc is killed.
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
    if supervisor::running_pid(&paths).is_some() {
        // A quick, orderly end; the /proc sweep below covers anything left.
        let _ = call(
            &paths,
            &Request::Shutdown {
                graceful: false,
                timeout_ms: 0,
            },
            Duration::from_secs(3),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = supervisor::processes_of(paths.dir());
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            // SAFETY: kill(2) on a pid whose command line was just checked to
            // belong to this cluster; no memory involved.
            unsafe {
                libc::kill(*p as libc::pid_t, libc::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            return Err(LifecycleError::Survivors {
                cluster: name.clone(),
                pids,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(paths.dir()).map_err(|source| LifecycleError::RemoveDir {
        dir: paths.dir().to_path_buf(),
        source,
    })?;
    Ok(Destroyed::Removed(paths.dir().to_path_buf()))
}
