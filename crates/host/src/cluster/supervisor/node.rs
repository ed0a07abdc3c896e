//! The nodes of a running supervisor: the shared state ([`Sup`]), starting a
//! node's QEMU with its log copies, reaping it, and stopping it through QMP.

use super::saver::Saver;
use super::{QEMU, SERIAL_CARRY, spec_node, vm_spec};
use crate::cluster::caplog::{self, CappedLog};
use crate::cluster::paths::ClusterPaths;
use crate::cluster::state::{ClusterState, ExitInfo, NodeRecord, NodeState, now_ms, on_exit};
use crate::qemu::{Accel, Qmp, VmSpec};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// A pipe whose two ends are close-on-exec: (read end, write end).
fn cloexec_pipe() -> std::io::Result<(std::fs::File, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

fn warn_line(message: &str) {
    log!("warning: {message}");
}

/// Shared between the control handlers and the child-waiting tasks.
pub(super) struct Sup {
    /// The cap of each serial and QEMU log file (bytes).
    pub(super) log_max: u64,
    pub(super) paths: ClusterPaths,
    pub(super) state: Mutex<ClusterState>,
    /// The generation of the newest state (bumped under the state's lock).
    pub(super) generation: AtomicU64,
    pub(super) saver: Saver,
    /// Bumped after every state change.
    pub(super) changed: watch::Sender<u64>,
}

/// A started QEMU and the signals that its two log copies have ended.
struct Started {
    child: tokio::process::Child,
    serial_copied: oneshot::Receiver<()>,
    stderr_copied: oneshot::Receiver<()>,
}

impl Sup {
    /// Applies `f` to the state, hands it to the saver and wakes waiters.
    pub(super) fn update<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut st);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.saver.submit(generation, st.clone());
        drop(st);
        self.changed.send_modify(|g| *g += 1);
        r
    }

    /// Waits until every state change so far is on disk.
    pub(super) async fn saved(&self) {
        self.saver
            .flush(self.generation.load(Ordering::SeqCst))
            .await;
    }

    fn node_state(&self, node: &str) -> Option<NodeRecord> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.node(node).cloned()
    }

    /// Boots `node` (nothing to do when it has a process): its QEMU, the
    /// copies of its serial console and stderr, and the task that reaps it.
    pub(super) fn start_node(self: &Arc<Self>, node: &str) -> Result<(), String> {
        let Some(spec) = self.spec_to_start(node)? else {
            return Ok(());
        };
        let started = self.spawn_qemu(node, &spec)?;
        let pid = started.child.id();
        log!("{node}: QEMU started (pid {})", pid.unwrap_or(0));
        self.update(|st| {
            if let Some(n) = st.node_mut(node) {
                n.state = NodeState::Running;
                n.pid = pid;
                n.started_at_ms = Some(now_ms());
                n.last_exit = None;
            }
        });
        tokio::spawn(self.clone().reap(node.to_string(), started));
        Ok(())
    }

    /// The QEMU description of `node`, `None` when it already has a process.
    fn spec_to_start(&self, node: &str) -> Result<Option<VmSpec>, String> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rec = st
            .node(node)
            .ok_or_else(|| format!("no node named {node:?} in cluster {}", st.name))?;
        if rec.state.has_process() {
            return Ok(None);
        }
        let spec = vm_spec(&self.paths, &st, rec).map_err(|e| e.to_string())?;
        // The node reads what its machine config file says now.
        let yaml = self.paths.machine_config(&rec.name);
        crate::configdir::write_fw_cfg_document(&yaml, &spec.machine_config)
            .map_err(|e| format!("{node}: machine config: {e}"))?;
        Ok(Some(spec))
    }

    /// A new boot's logs: a new serial log (the previous boot's, a crash's,
    /// is kept as `.1`) and the QEMU log, appended to.
    fn open_logs(&self, node: &str, spec: &VmSpec) -> Result<(CappedLog, CappedLog), String> {
        let _ = std::fs::rename(&spec.serial_log, CappedLog::previous(&spec.serial_log));
        let serial_log = CappedLog::create(&spec.serial_log, self.log_max, SERIAL_CARRY)
            .map_err(|e| format!("cannot open {}: {e}", spec.serial_log.display()))?;
        let qemu_log_path = self.paths.qemu_log(&spec_node(node)?);
        let qemu_log = CappedLog::append(&qemu_log_path, self.log_max)
            .map_err(|e| format!("cannot open {}: {e}", qemu_log_path.display()))?;
        Ok((serial_log, qemu_log))
    }

    /// Starts QEMU for `spec` with its serial console and stderr in pipes, and
    /// one copying thread per pipe into the capped logs.
    fn spawn_qemu(&self, node: &str, spec: &VmSpec) -> Result<Started, String> {
        let _ = std::fs::remove_file(&spec.qmp_socket);
        let (serial_log, qemu_log) = self.open_logs(node, spec)?;
        let pipe_err = |e: std::io::Error| format!("cannot make a pipe for {node}: {e}");
        let (serial_r, serial_w) = cloexec_pipe().map_err(pipe_err)?;
        let (stderr_r, stderr_w) = cloexec_pipe().map_err(pipe_err)?;
        let spawned = qemu_command(spec, &serial_w, stderr_w)?.spawn();
        // Our copy of the serial write end: closed, so the copy ends when QEMU
        // does (the command, holding the stderr write end, is gone already).
        drop(serial_w);
        let mut child = spawned.map_err(|e| format!("cannot start {QEMU} for {node}: {e}"))?;
        let (serial_done, serial_copied) = oneshot::channel();
        let (stderr_done, stderr_copied) = oneshot::channel();
        let boot_files = vec![spec.kernel.clone(), spec.initrd.clone()];
        let boot_files_tap = child
            .id()
            .map(|pid| super::boot_files::tap(node.to_string(), pid, boot_files));
        for (src, log, what, done, tap) in [
            (
                serial_r,
                serial_log,
                format!("{node} serial"),
                serial_done,
                boot_files_tap,
            ),
            (
                stderr_r,
                qemu_log,
                format!("{node} QEMU stderr"),
                stderr_done,
                None,
            ),
        ] {
            if let Err(e) = caplog::pump(src, log, what.clone(), warn_line, done, tap) {
                // Without a reader QEMU would block on a full pipe: stop it.
                let _ = child.start_kill();
                return Err(format!("cannot start copying the {what} log: {e}"));
            }
        }
        Ok(Started {
            child,
            serial_copied,
            stderr_copied,
        })
    }

    /// Waits for a node's QEMU to end and for its logs to be copied, then
    /// records the exit.
    async fn reap(self: Arc<Self>, node: String, mut started: Started) {
        let exit = match started.child.wait().await {
            Ok(status) => ExitInfo::from_status(status),
            Err(e) => {
                log!("{node}: waiting for QEMU failed: {e}");
                ExitInfo {
                    code: None,
                    signal: None,
                }
            }
        };
        // The copies end at the pipes' end of file, right after QEMU's exit.
        let copied = async {
            let _ = started.serial_copied.await;
            let _ = started.stderr_copied.await;
        };
        if tokio::time::timeout(Duration::from_secs(5), copied)
            .await
            .is_err()
        {
            log!("{node}: its logs were still being copied 5 s after QEMU ended");
        }
        let new = self.update(|st| {
            let n = st.node_mut(&node)?;
            n.state = on_exit(n.state, exit);
            n.pid = None;
            n.last_exit = Some(exit.to_string());
            Some(n.state)
        });
        log!(
            "{node}: QEMU ended ({exit}), node {}",
            new.unwrap_or(NodeState::Stopped)
        );
    }

    /// Waits until `node` has no process, up to `deadline`.
    async fn wait_down(&self, node: &str, deadline: Instant) -> bool {
        let mut rx = self.changed.subscribe();
        loop {
            match self.node_state(node) {
                Some(n) if n.state.has_process() => {}
                _ => return true,
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    pub(super) async fn stop_node(
        &self,
        node: &str,
        graceful: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let pid = self.update(|st| match st.node_mut(node) {
            None => Err(format!("no node named {node:?} in cluster {}", st.name)),
            Some(n) if n.state.has_process() => {
                n.state = NodeState::Stopping;
                Ok(n.pid)
            }
            Some(_) => Ok(None),
        })?;
        let Some(pid) = pid else {
            return Ok(());
        };
        let kill = || {
            // SAFETY: kill(2) on our own unreaped child; no memory involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        };
        if graceful {
            let deadline = Instant::now() + timeout;
            let qmp_path = self.paths.qmp_socket(&spec_node(node)?);
            let connect_by = (Instant::now() + Duration::from_secs(3)).min(deadline);
            match Qmp::connect(&qmp_path, connect_by).await {
                Ok(qmp) => match qmp.shutdown_gracefully(deadline).await {
                    Ok(outcome) => log!("{node}: power-off {outcome:?}"),
                    Err(e) => {
                        log!("{node}: QMP failed ({e}); killing QEMU");
                        kill();
                    }
                },
                Err(e) => {
                    log!("{node}: no QMP ({e}); killing QEMU");
                    kill();
                }
            }
        } else {
            kill();
        }
        if !self
            .wait_down(node, Instant::now() + Duration::from_secs(5))
            .await
        {
            log!("{node}: QEMU still there; killing it");
            kill();
            if !self
                .wait_down(node, Instant::now() + Duration::from_secs(5))
                .await
            {
                return Err(format!("QEMU of {node} (pid {pid}) does not exit"));
            }
        }
        Ok(())
    }

    pub(super) async fn stop_all(&self, graceful: bool, timeout: Duration) -> Result<(), String> {
        let names: Vec<crate::spec::NodeName> = {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.nodes.iter().map(|n| n.name.clone()).collect()
        };
        let results =
            futures::future::join_all(names.iter().map(|n| self.stop_node(n, graceful, timeout)))
                .await;
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Whether QEMU runs with transparent huge pages turned off
/// (`PR_SET_THP_DISABLE`): under TCG, yes. QEMU asks for huge pages on the
/// guest's RAM (`MADV_HUGEPAGE`), and the host's khugepaged then collapses it
/// into 2 MiB pages in the background, filling every hole the guest had handed
/// back through free page reporting with zeros: an idle dev worker's QEMU grew
/// from 306 to 339 MiB in the two minutes after boot while the guest itself
/// allocated nothing. Under TCG every guest access goes through QEMU's
/// software TLB, so huge pages buy little; under KVM they back the guest's
/// nested page tables and stay.
pub fn without_huge_pages(accel: Accel) -> bool {
    accel == Accel::Tcg
}

/// glibc's malloc setting for QEMU: a fixed mmap threshold (glibc's
/// initial 128 KiB). By default glibc raises the threshold up to 32 MiB each
/// time a large block is freed, so QEMU's large, short-lived allocations
/// (its software TLB tables, which TCG grows and shrinks with the guest's
/// load) then come from a malloc arena, and what is freed stays resident in
/// it. Measured on an idle dev cluster under TCG: the vCPU threads' arena held
/// 13-16 MiB per QEMU, 9 MiB with the fixed threshold.
pub const QEMU_MALLOC_TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

/// The `GLIBC_TUNABLES` QEMU runs with: `inherited` (the caller's), with
/// [`QEMU_MALLOC_TUNABLE`] put first unless it already sets the mmap
/// threshold. glibc reads the variable once, at QEMU's start, and applies
/// every tunable in it, but glibc 2.36 then leaves only the first one visible
/// in the process's environment (`/proc/PID/environ`): first, ours stays
/// checkable. Other C libraries ignore the variable.
pub fn qemu_glibc_tunables(inherited: Option<&std::ffi::OsStr>) -> std::ffi::OsString {
    let name = QEMU_MALLOC_TUNABLE
        .split_once('=')
        .map_or(QEMU_MALLOC_TUNABLE, |(n, _)| n);
    match inherited.filter(|v| !v.is_empty()) {
        None => QEMU_MALLOC_TUNABLE.into(),
        Some(v) => {
            let text = v.to_string_lossy();
            if text
                .split(':')
                .any(|t| t.split_once('=').is_some_and(|(n, _)| n == name))
            {
                v.to_os_string()
            } else {
                let mut out = std::ffi::OsString::from(QEMU_MALLOC_TUNABLE);
                out.push(":");
                out.push(v);
                out
            }
        }
    }
}

/// QEMU's command for `spec`: stdin and stdout closed, stderr into
/// `stderr_w`, the serial console into `serial_w` (the one descriptor QEMU
/// inherits beyond stdio), killed by the kernel if the supervisor dies.
fn qemu_command(
    spec: &VmSpec,
    serial_w: &OwnedFd,
    stderr_w: OwnedFd,
) -> Result<tokio::process::Command, String> {
    let serial_fd = serial_w.as_raw_fd();
    let args = spec
        .to_args_with_serial_fd(serial_fd)
        .map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(QEMU);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(stderr_w));
    #[expect(
        clippy::disallowed_methods,
        reason = "QEMU inherits the caller's environment; its GLIBC_TUNABLES is kept and extended"
    )]
    let inherited = std::env::var_os("GLIBC_TUNABLES");
    cmd.env("GLIBC_TUNABLES", qemu_glibc_tunables(inherited.as_deref()));
    let no_huge_pages = without_huge_pages(spec.accel);
    // SAFETY: prctl and fcntl are async-signal-safe and touch no memory of
    // ours. If the supervisor dies (even by SIGKILL), the kernel kills QEMU
    // too. Under TCG QEMU runs without transparent huge pages (see
    // `without_huge_pages`; the setting survives exec). The serial pipe's
    // write end is the one descriptor QEMU inherits beyond stdio (every
    // descriptor of ours is close-on-exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if no_huge_pages && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(serial_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn qemu_gets_the_fixed_mmap_threshold() {
        assert_eq!(qemu_glibc_tunables(None), QEMU_MALLOC_TUNABLE);
        assert_eq!(
            qemu_glibc_tunables(Some(OsStr::new(""))),
            QEMU_MALLOC_TUNABLE
        );
    }

    #[test]
    fn the_callers_tunables_are_kept() {
        assert_eq!(
            qemu_glibc_tunables(Some(OsStr::new("glibc.malloc.arena_max=2"))),
            "glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2"
        );
        // A threshold of the caller's own wins.
        let own = OsStr::new("glibc.malloc.mmap_threshold=65536:glibc.malloc.arena_max=2");
        assert_eq!(qemu_glibc_tunables(Some(own)), own);
        // A tunable whose name only starts like it is another one.
        assert_eq!(
            qemu_glibc_tunables(Some(OsStr::new("glibc.malloc.mmap_threshold_x=1"))),
            "glibc.malloc.mmap_threshold=131072:glibc.malloc.mmap_threshold_x=1"
        );
    }
}
