//! [`QemuEngine`]: nodes as QEMU processes under the cluster's detached
//! supervisor ([`crate::cluster::supervisor`]), driven through its control
//! socket ([`crate::cluster::control`]).

use super::{Engine, Result};
use crate::cluster::control::{self, Request};
use crate::cluster::lifecycle::{LifecycleError, Progress, tail};
use crate::cluster::paths::ClusterPaths;
use crate::cluster::supervisor;
use crate::spec::{ClusterName, NodeName};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Today's engine: one supervisor process per running cluster, owning the
/// switch and one QEMU per running node.
#[derive(Debug, Clone, Copy, Default)]
pub struct QemuEngine;

/// The host tools it runs.
const TOOLS: &[(&str, &str)] = &[(supervisor::QEMU, "qemu-system-x86")];

/// How long a fault request may take: the switch answers at once (a host
/// process, not a guest), so only a stuck supervisor runs into it. Short,
/// because `status`, `list` and `stop` ask it too, and a stuck supervisor
/// is exactly when `stop` must not hang.
const FAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// One request to the supervisor, waiting up to `timeout` for its answer.
fn call(paths: &ClusterPaths, req: &Request, timeout: Duration) -> Result<()> {
    Ok(crate::runtime::block_on(control::call(
        &paths.supervisor_socket(),
        req,
        timeout,
    ))??)
}

/// Waits until none of `pids` is alive, up to `deadline`.
fn wait_gone(pids: &[u32], deadline: Instant) -> bool {
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

impl Engine for QemuEngine {
    fn host_tools(&self) -> &'static [(&'static str, &'static str)] {
        TOOLS
    }

    /// Starts the supervisor unless one runs, and waits until it answers.
    fn launch(&self, paths: &ClusterPaths, progress: &dyn Progress) -> Result<u32> {
        if let Some(pid) = supervisor::running_pid(paths) {
            return Ok(pid);
        }
        let mut child = supervisor::spawn_detached(paths)?;
        let within = Duration::from_secs(15);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LifecycleError::SupervisorExited {
                    status,
                    log: paths.supervisor_log(),
                    tail: tail(&paths.supervisor_log(), 10),
                });
            }
            if crate::interrupt::requested() {
                return Err(LifecycleError::Interrupted);
            }
            if call(paths, &Request::Ping {}, Duration::from_secs(2)).is_ok() {
                progress.line(&format!("supervisor running (pid {})", child.id()));
                return Ok(child.id());
            }
            if Instant::now() > deadline {
                return Err(LifecycleError::SupervisorSilent {
                    within,
                    log: paths.supervisor_log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&self, paths: &ClusterPaths) -> Option<u32> {
        supervisor::running_pid(paths)
    }

    fn log(&self, paths: &ClusterPaths) -> PathBuf {
        paths.supervisor_log()
    }

    fn start_node(&self, paths: &ClusterPaths, node: &NodeName) -> Result<()> {
        let req = Request::StartNode {
            node: node.to_string(),
        };
        call(paths, &req, Duration::from_secs(20))
    }

    fn stop_node(&self, paths: &ClusterPaths, node: &NodeName, timeout: Duration) -> Result<()> {
        let req = Request::StopNode {
            node: node.to_string(),
            graceful: true,
            timeout_ms: timeout.as_millis() as u64,
        };
        call(paths, &req, timeout + Duration::from_secs(15))
    }

    /// `shutdown` to the supervisor, then waits (10 s) for it to exit.
    fn shutdown(&self, paths: &ClusterPaths, timeout: Duration) -> Result<()> {
        let Some(pid) = supervisor::running_pid(paths) else {
            return Ok(());
        };
        let req = Request::Shutdown {
            graceful: true,
            timeout_ms: timeout.as_millis() as u64,
        };
        call(paths, &req, timeout + Duration::from_secs(15))?;
        wait_gone(&[pid], Instant::now() + Duration::from_secs(10));
        if supervisor::is_supervisor_of(pid, paths.dir()) {
            return Err(LifecycleError::SupervisorStuck { pid });
        }
        Ok(())
    }

    /// A quick, orderly end through the supervisor when it answers; then
    /// SIGKILL, for 3 s, to every process /proc shows for the cluster's
    /// directory (its supervisor and QEMUs, even orphaned ones).
    fn kill(&self, paths: &ClusterPaths, cluster: &ClusterName) -> Result<()> {
        if supervisor::running_pid(paths).is_some() {
            let req = Request::Shutdown {
                graceful: false,
                timeout_ms: 0,
            };
            let _ = call(paths, &req, Duration::from_secs(3));
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let pids = supervisor::processes_of(paths.dir());
            if pids.is_empty() {
                return Ok(());
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
                    cluster: cluster.clone(),
                    pids,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn console_log(&self, paths: &ClusterPaths, node: &NodeName) -> PathBuf {
        paths.serial_log(node)
    }

    fn vmm_log(&self, paths: &ClusterPaths, node: &NodeName) -> PathBuf {
        paths.qemu_log(node)
    }

    fn snapshot_save(
        &self,
        paths: &ClusterPaths,
        target: &super::SnapshotTarget<'_>,
        progress: &dyn Progress,
    ) -> Result<()> {
        super::snapshot::save(paths, target, progress)
    }

    fn snapshot_restore(
        &self,
        paths: &ClusterPaths,
        target: &super::SnapshotTarget<'_>,
        progress: &dyn Progress,
    ) -> Result<()> {
        super::snapshot::restore(paths, target, progress)
    }

    fn snapshot_delete(
        &self,
        paths: &ClusterPaths,
        target: &super::SnapshotTarget<'_>,
        progress: &dyn Progress,
    ) -> Result<()> {
        super::snapshot::delete(paths, target, progress)
    }

    fn snapshots_of(
        &self,
        paths: &ClusterPaths,
        node: &NodeName,
    ) -> Result<Vec<super::NodeSnapshot>> {
        super::snapshot::list(&paths.disk(node))
    }

    fn fault(
        &self,
        paths: &ClusterPaths,
        request: &crate::network::Request,
    ) -> Result<crate::network::Response> {
        use crate::network::ControlClientError;
        let path = paths.switch_control();
        let asked = async {
            let mut ctl = crate::network::ControlClient::connect(&path).await?;
            ctl.request(request).await
        };
        Ok(crate::runtime::block_on(async {
            tokio::time::timeout(FAULT_TIMEOUT, asked)
                .await
                .unwrap_or(Err(ControlClientError::Timeout(FAULT_TIMEOUT)))
        })??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{ErrorCode, Response, Switch, SwitchConfig};

    /// Fault requests travel to a real switch bound where the supervisor binds
    /// it, and come back with its answers.
    #[test]
    fn faults_reach_the_cluster_switch() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::at(dir.path());
        std::fs::create_dir(paths.run_dir()).unwrap();
        let rt = crate::runtime::init().unwrap();
        let switch = rt
            .block_on(Switch::bind(&SwitchConfig {
                dir: paths.run_dir(),
                nodes: vec!["n-1".parse().unwrap(), "n-2".parse().unwrap()],
                seed: None,
            }))
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = rt.spawn(switch.serve(async {
            let _ = stopped.await;
        }));
        let engine: &dyn Engine = &QemuEngine;
        let partition = crate::network::Request::Partition { node: "n-1".into() };
        assert_eq!(engine.fault(&paths, &partition).unwrap(), Response::Ok);
        match engine
            .fault(&paths, &crate::network::Request::Status {})
            .unwrap()
        {
            Response::Status { status } => assert_eq!(status.faults.partitioned, ["n-1"]),
            other => panic!("{other:?}"),
        }
        let stranger = crate::network::Request::Partition { node: "n-9".into() };
        assert!(matches!(
            engine.fault(&paths, &stranger).unwrap(),
            Response::Error {
                code: ErrorCode::UnknownNode,
                ..
            }
        ));
        stop.send(()).unwrap();
        rt.block_on(served).unwrap();
        // No switch: a typed error naming the socket, not a hang.
        let err = engine.fault(&paths, &partition).unwrap_err();
        assert!(matches!(err, LifecycleError::Faults(_)), "{err}");
        assert!(err.to_string().contains("switch-ctl.sock"), "{err}");
    }

    /// A directory where nothing ever ran: not running, and `kill` finds
    /// nothing to end.
    #[test]
    fn nothing_runs_in_an_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::at(dir.path());
        let engine: &dyn Engine = &QemuEngine;
        assert_eq!(engine.running(&paths), None);
        engine.kill(&paths, &"dev".parse().unwrap()).unwrap();
        assert_eq!(engine.host_tools()[0].0, "qemu-system-x86_64");
    }
}
