//! The cluster supervisor: one detached process per running cluster
//! (`ironclad __supervise --dir DIR`, started by `create` and `start` in a new
//! session with its output in `logs/supervisor.log`).
//!
//! It owns the cluster's L2 switch and one QEMU child per running node, serves
//! the control socket ([`super::control`]) and keeps `cluster.json` current on
//! every transition. It restarts nothing by itself: a QEMU that ends without
//! being asked to is recorded as `crashed` and stays down until someone asks
//! for `start-node`. On `shutdown` (or SIGTERM/SIGINT) it stops every node
//! (ACPI power button through QMP, `quit` after the deadline, SIGKILL as the
//! last resort), stops the switch, removes its sockets and pid file and exits.
//!
//! Runs on a current-thread tokio runtime: QEMU children are spawned from the
//! main thread with `PR_SET_PDEATHSIG`, so if the supervisor dies (even by
//! SIGKILL) the kernel kills its QEMUs and nothing is leaked. Children are
//! reaped in one place each (the task that waits on the child). The same
//! runtime forwards the switch's frames, so it never waits for the disk:
//! `cluster.json` is written (and fsynced) by a thread of its own
//! ([`Saver`]), and a control request is answered once the state it changed
//! is on disk.
//!
//! QEMU writes neither of a node's logs itself: its serial console and its
//! stderr go into pipes, and one thread per pipe copies them into capped,
//! rotated files ([`super::caplog`]; `IRONCLAD_LOG_MAX`, default 16 MiB). The
//! task that reaps a QEMU waits for both copies to finish before it records
//! the exit, so QEMU's last words are in the log when the exit is seen.

use super::paths::ClusterPaths;
use super::state::{ClusterState, ExitInfo, NodeRecord, NodeState, StateError, now_ms, on_exit};
use crate::network::{MacAddr, Switch, SwitchConfig};
use crate::qemu::{ClusterNic, MachineType, Qmp, UserNic, VmSpec};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::control::{Request, Response};

/// The kernel command line of every node (see docs/image-layout.md).
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// The kernel command line for `accel`. Under TCG the guest CPU does not
/// speculate (QEMU translates and runs instructions in order), so the
/// speculative-execution mitigations, page-table isolation above all (a CR3
/// switch and TLB flush on every syscall), only cost time: they are turned
/// off there. Under KVM the guest runs on the real CPU and keeps them.
pub fn kernel_cmdline(accel: crate::qemu::Accel) -> String {
    match accel {
        crate::qemu::Accel::Tcg => format!("{KERNEL_CMDLINE} mitigations=off"),
        crate::qemu::Accel::Kvm => KERNEL_CMDLINE.to_string(),
    }
}
/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The TCG translated-code cache per node (MiB). QEMU's default (1 GiB,
/// filled lazily) leaves about 170 MiB more resident per booted node; too
/// small a cache is flushed over and over by the nodes' big Go binaries
/// (containerd, shims, runc, etcd). Measured on a dev cluster (2 cores, TCG):
/// 32 MiB: ready at 17-20 s, matrix 198 s, idle worker 346 MiB;
/// 64 MiB: ready at 15-17 s, matrix 107 s, idle worker 383 MiB;
/// 96 MiB: ready at 13.5 s, matrix 91 s, idle worker 423 MiB.
pub const TCG_TB_SIZE_MIB: u32 = 64;
/// The hidden subcommand that runs the supervisor.
pub const SUBCOMMAND: &str = "__supervise";

/// Supervisor failures at start-up (once serving, errors are per request).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot start the cluster switch: {0}")]
    Switch(#[from] crate::network::SwitchError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad node in cluster state: {0}")]
    BadNode(String),
    #[error("{0}")]
    Config(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let context = context.into();
    move |source| SupervisorError::Io { context, source }
}

macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", timestamp(), format_args!($($arg)*))
    };
}

fn timestamp() -> String {
    let ms = now_ms();
    format!("[{}.{:03}]", ms / 1000, ms % 1000)
}

/// The QEMU description of `node` (pure: used by the supervisor and the tests).
pub fn vm_spec(
    paths: &ClusterPaths,
    state: &ClusterState,
    node: &NodeRecord,
) -> Result<VmSpec, SupervisorError> {
    let mac = |s: &str| {
        s.parse::<MacAddr>()
            .map_err(|e| SupervisorError::BadNode(format!("{}: MAC {s}: {e}", node.name)))
    };
    Ok(VmSpec {
        name: node.name.to_string(),
        kernel: state.image.kernel.clone(),
        initrd: state.image.initrd.clone(),
        append: kernel_cmdline(state.accel),
        cpus: node.cpus,
        memory_mib: node.memory_mib,
        machine: MachineType::Q35,
        accel: state.accel,
        tcg_tb_size_mib: Some(TCG_TB_SIZE_MIB),
        root_image: state.image.rootfs.clone(),
        state_disk: paths.disk(&node.name),
        machine_config: paths.machine_config(&node.name),
        user_nic: UserNic {
            mac: mac(&node.user_mac)?,
            restrict: !state.egress,
            host_api_port: node.api_port,
        },
        cluster_nic: Some(ClusterNic {
            mac: mac(&node.cluster_mac)?,
            socket: paths.switch_port(&node.name),
        }),
        qmp_socket: paths.qmp_socket(&node.name),
        serial_log: paths.serial_log(&node.name),
    })
}

/// A node name from a control request, as a [`crate::spec::NodeName`] (it
/// names files; the request was already matched against `cluster.json`).
fn spec_node(node: &str) -> Result<crate::spec::NodeName, String> {
    node.parse()
        .map_err(|e| format!("bad node name {:?}: {e}", crate::spec::clip(node)))
}

/// The serial lines carried into a rotated serial log's new file: the ready
/// line and the last boot phase, which `lifecycle` reads back.
const SERIAL_CARRY: &[&str] = &[super::lifecycle::READY_LINE, super::lifecycle::PHASE_PREFIX];

/// A pipe whose two ends are close-on-exec: (read end, write end).
fn cloexec_pipe() -> std::io::Result<(std::fs::File, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
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
/// Writes `cluster.json` on a thread of its own, newest state first: a
/// state submitted while an older one is being written replaces any other
/// waiting one. [`Saver::flush`] waits until a generation is on disk.
struct Saver {
    queue: Arc<(Mutex<SaveQueue>, Condvar)>,
    saved: watch::Receiver<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct SaveQueue {
    next: Option<(u64, ClusterState)>,
    closed: bool,
}

impl Saver {
    fn start(path: std::path::PathBuf) -> std::io::Result<Saver> {
        let queue = Arc::new((Mutex::new(SaveQueue::default()), Condvar::new()));
        let (saved_tx, saved) = watch::channel(0u64);
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("state-saver".into())
            .spawn(move || {
                while let Some((generation, state)) = Saver::take(&q) {
                    if let Err(e) = state.save(&path) {
                        log!("warning: {e}");
                    }
                    saved_tx.send_replace(generation);
                }
            })?;
        Ok(Saver {
            queue,
            saved,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The next state to write; `None` once closed and drained.
    fn take(queue: &(Mutex<SaveQueue>, Condvar)) -> Option<(u64, ClusterState)> {
        let (lock, ready) = queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(next) = q.next.take() {
                return Some(next);
            }
            if q.closed {
                return None;
            }
            q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn submit(&self, generation: u64, state: ClusterState) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).next = Some((generation, state));
        ready.notify_one();
    }

    /// Waits until `generation` (or a newer one) is on disk.
    async fn flush(&self, generation: u64) {
        let mut saved = self.saved.clone();
        let _ = saved.wait_for(|g| *g >= generation).await;
    }

    /// Writes what is waiting and ends the thread.
    fn close(&self) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

struct Sup {
    /// The cap of each serial and QEMU log file (bytes).
    log_max: u64,
    paths: ClusterPaths,
    state: Mutex<ClusterState>,
    /// The generation of the newest state (bumped under the state's lock).
    generation: AtomicU64,
    saver: Saver,
    /// Bumped after every state change.
    changed: watch::Sender<u64>,
}

impl Sup {
    /// Applies `f` to the state, hands it to the saver and wakes waiters.
    fn update<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut st);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.saver.submit(generation, st.clone());
        drop(st);
        self.changed.send_modify(|g| *g += 1);
        r
    }

    /// Waits until every state change so far is on disk.
    async fn saved(&self) {
        self.saver
            .flush(self.generation.load(Ordering::SeqCst))
            .await;
    }

    fn node_state(&self, node: &str) -> Option<NodeRecord> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.node(node).cloned()
    }

    fn start_node(self: &Arc<Self>, node: &str) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let spec = {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let rec = st
                .node(node)
                .ok_or_else(|| format!("no node named {node:?} in cluster {}", st.name))?;
            if rec.state.has_process() {
                return Ok(());
            }
            vm_spec(&self.paths, &st, rec).map_err(|e| e.to_string())?
        };
        let _ = std::fs::remove_file(&spec.qmp_socket);
        // A new boot starts a new serial log; the previous boot's (a crash's)
        // is kept as `.1`.
        let _ = std::fs::rename(
            &spec.serial_log,
            super::caplog::CappedLog::previous(&spec.serial_log),
        );
        let serial_log =
            super::caplog::CappedLog::create(&spec.serial_log, self.log_max, SERIAL_CARRY)
                .map_err(|e| format!("cannot open {}: {e}", spec.serial_log.display()))?;
        let qemu_log_path = self.paths.qemu_log(&spec_node(node)?);
        let qemu_log = super::caplog::CappedLog::append(&qemu_log_path, self.log_max)
            .map_err(|e| format!("cannot open {}: {e}", qemu_log_path.display()))?;
        let pipe_err = |e: std::io::Error| format!("cannot make a pipe for {node}: {e}");
        let (serial_r, serial_w) = cloexec_pipe().map_err(pipe_err)?;
        let (stderr_r, stderr_w) = cloexec_pipe().map_err(pipe_err)?;
        let serial_fd = serial_w.as_raw_fd();
        let args = spec
            .to_args_with_serial_fd(serial_fd)
            .map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(QEMU);
        cmd.args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(stderr_w));
        // SAFETY: prctl and fcntl are async-signal-safe and touch no memory of
        // ours. If the supervisor dies (even by SIGKILL), the kernel kills QEMU
        // too. The serial pipe's write end is the one descriptor QEMU inherits
        // beyond stdio (every descriptor of ours is close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::fcntl(serial_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // Our copies of the write ends: closed, so the copies end when QEMU does.
        drop(cmd);
        drop(serial_w);
        let mut child = spawned.map_err(|e| format!("cannot start {QEMU} for {node}: {e}"))?;
        let (serial_done, serial_copied) = tokio::sync::oneshot::channel();
        let (stderr_done, stderr_copied) = tokio::sync::oneshot::channel();
        for (src, log, what, done) in [
            (serial_r, serial_log, format!("{node} serial"), serial_done),
            (
                stderr_r,
                qemu_log,
                format!("{node} QEMU stderr"),
                stderr_done,
            ),
        ] {
            if let Err(e) = super::caplog::pump(src, log, what.clone(), warn_line, done) {
                // Without a reader QEMU would block on a full pipe: stop it.
                let _ = child.start_kill();
                return Err(format!("cannot start copying the {what} log: {e}"));
            }
        }
        let pid = child.id();
        log!("{node}: QEMU started (pid {})", pid.unwrap_or(0));
        self.update(|st| {
            if let Some(n) = st.node_mut(node) {
                n.state = NodeState::Running;
                n.pid = pid;
                n.started_at_ms = Some(now_ms());
                n.last_exit = None;
            }
        });
        let sup = self.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            let exit = match child.wait().await {
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
                let _ = serial_copied.await;
                let _ = stderr_copied.await;
            };
            if tokio::time::timeout(Duration::from_secs(5), copied)
                .await
                .is_err()
            {
                log!("{node}: its logs were still being copied 5 s after QEMU ended");
            }
            let new = sup.update(|st| {
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
        });
        Ok(())
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

    async fn stop_node(&self, node: &str, graceful: bool, timeout: Duration) -> Result<(), String> {
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

    async fn stop_all(&self, graceful: bool, timeout: Duration) -> Result<(), String> {
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

/// Runs the supervisor of the cluster in `dir` until it is shut down. Builds
/// its own current-thread runtime (see the module doc).
pub fn main(dir: &Path) -> Result<(), SupervisorError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("cannot start the async runtime"))?;
    rt.block_on(run(dir))
}

async fn run(dir: &Path) -> Result<(), SupervisorError> {
    let paths = ClusterPaths::at(dir);
    let log_max = super::caplog::max_from_env().map_err(SupervisorError::Config)?;
    let mut state = ClusterState::load(&paths.cluster_json())?;
    log!(
        "supervisor {} for cluster {} ({} nodes; serial and QEMU logs capped at {} bytes each)",
        std::process::id(),
        state.name,
        state.nodes.len(),
        log_max
    );
    // Whatever the state says ran, nothing of ours runs now (our QEMUs die with
    // their supervisor): a node recorded as running ended with the old one.
    for n in &mut state.nodes {
        if n.state.has_process() {
            n.state = if n.state == NodeState::Stopping {
                NodeState::Stopped
            } else {
                NodeState::Crashed
            };
            n.pid = None;
            n.last_exit = Some("its supervisor ended".into());
        }
    }
    state.save(&paths.cluster_json())?;
    let run_dir = paths.run_dir();
    crate::fsutil::create_private_dir(&run_dir)
        .map_err(io(format!("cannot create {}", run_dir.display())))?;
    let logs = paths.supervisor_log();
    if let Some(parent) = logs.parent() {
        crate::fsutil::create_private_dir(parent)
            .map_err(io(format!("cannot create {}", parent.display())))?;
    }

    let mut nodes = Vec::new();
    for n in &state.nodes {
        nodes.push(
            n.name
                .parse()
                .map_err(|e| SupervisorError::BadNode(format!("{}: {e}", n.name)))?,
        );
    }
    // Bind the switch before any QEMU starts: the stream netdev connects once.
    let switch = Switch::bind(&SwitchConfig {
        dir: run_dir.clone(),
        nodes,
        seed: None,
    })
    .await?;
    let (switch_stop, switch_stopped) = tokio::sync::oneshot::channel::<()>();
    let switch_task = tokio::spawn(switch.serve(async {
        let _ = switch_stopped.await;
    }));

    let ctl_path = paths.supervisor_socket();
    let _ = std::fs::remove_file(&ctl_path);
    let listener =
        UnixListener::bind(&ctl_path).map_err(io(format!("cannot bind {}", ctl_path.display())))?;
    crate::fsutil::write_atomic(
        &paths.supervisor_pid(),
        format!("{}\n", std::process::id()).as_bytes(),
        0o600,
    )
    .map_err(io("cannot write the pid file"))?;

    let (changed, _) = watch::channel(0u64);
    let saver = Saver::start(paths.cluster_json()).map_err(io("cannot start the state saver"))?;
    let sup = Arc::new(Sup {
        log_max,
        paths: paths.clone(),
        state: Mutex::new(state),
        generation: AtomicU64::new(0),
        saver,
        changed,
    });
    let (exit_tx, mut exit_rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("cannot watch SIGTERM"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(io("cannot watch SIGINT"))?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(io("cannot watch SIGHUP"))?;
    log!("serving on {}", ctl_path.display());

    let mut exit_asked = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_conn(sup.clone(), stream, exit_tx.clone()));
                }
            }
            _ = exit_rx.changed() => { exit_asked = true; break; }
            _ = term.recv() => { log!("SIGTERM"); break; }
            _ = int.recv() => { log!("SIGINT"); break; }
            _ = hup.recv() => { log!("SIGHUP ignored"); }
        }
    }
    if !exit_asked && let Err(e) = sup.stop_all(true, Duration::from_secs(30)).await {
        log!("stopping nodes: {e}");
    }
    let _ = switch_stop.send(());
    let _ = switch_task.await;
    sup.saved().await;
    sup.saver.close();
    let _ = std::fs::remove_file(&ctl_path);
    let _ = std::fs::remove_file(paths.supervisor_pid());
    log!("supervisor exits");
    Ok(())
}

async fn serve_conn(sup: Arc<Sup>, stream: UnixStream, exit: watch::Sender<bool>) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(64 * 1024);
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut shutting_down = false;
    let result = match serde_json::from_str::<Request>(&line) {
        Err(e) => Err(format!("bad request: {e}")),
        Ok(Request::Ping {}) => Ok(()),
        Ok(Request::StartNode { node }) => sup.start_node(&node),
        Ok(Request::StopNode {
            node,
            graceful,
            timeout_ms,
        }) => {
            sup.stop_node(&node, graceful, Duration::from_millis(timeout_ms))
                .await
        }
        Ok(Request::Shutdown {
            graceful,
            timeout_ms,
        }) => {
            log!("shutdown requested (graceful: {graceful})");
            shutting_down = true;
            sup.stop_all(graceful, Duration::from_millis(timeout_ms))
                .await
        }
    };
    // The caller reads cluster.json next: what it asked for is on disk first.
    sup.saved().await;
    let resp = match result {
        Ok(()) => Response::Ok {},
        Err(message) => Response::Error { message },
    };
    if let Ok(mut text) = serde_json::to_string(&resp) {
        text.push('\n');
        let _ = w.write_all(text.as_bytes()).await;
        let _ = w.shutdown().await;
    }
    if shutting_down {
        let _ = exit.send(true);
    }
}

/// Starts the supervisor of the cluster in `paths` as a detached process: this
/// executable with [`SUBCOMMAND`], in a new session, stdin from /dev/null,
/// stdout and stderr appended to `logs/supervisor.log`. Returns the child (the
/// caller may poll it to notice an early death; dropping it does not kill it).
pub fn spawn_detached(paths: &ClusterPaths) -> Result<std::process::Child, SupervisorError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(io("cannot find the ironclad executable"))?;
    let log_path = paths.supervisor_log();
    if let Some(parent) = log_path.parent() {
        crate::fsutil::create_private_dir(parent)
            .map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("cannot open {}", log_path.display())))
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg("--dir")
        .arg(paths.dir())
        .stdin(std::process::Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from the
    // terminal's session so a Ctrl-C or a closed terminal does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(io("cannot start the cluster supervisor"))
}

/// The supervisor pid recorded in the state dir, if that process is alive and
/// is a supervisor of this very directory.
pub fn running_pid(paths: &ClusterPaths) -> Option<u32> {
    let text = std::fs::read_to_string(paths.supervisor_pid()).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    is_supervisor_of(pid, paths.dir()).then_some(pid)
}

/// Whether `pid` is alive and its command line is `... __supervise --dir <dir>`.
pub fn is_supervisor_of(pid: u32, dir: &Path) -> bool {
    let Some(args) = cmdline(pid) else {
        return false;
    };
    args.iter().any(|a| a == SUBCOMMAND) && args.iter().any(|a| Path::new(a) == dir)
}

/// A process's argv (from /proc), `None` when it is gone (or a zombie).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Pids of live processes that belong to the cluster in `dir`: its supervisor
/// and QEMUs whose command line names a file under `dir`. Used by `destroy` to
/// leave nothing behind even after a crash or a half-made cluster.
pub fn processes_of(dir: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let prefix = format!("{}/", dir.display());
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        let is_qemu = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("qemu-system-"));
        let mine = if is_qemu {
            args.iter().any(|a| a.contains(&prefix))
        } else {
            is_supervisor_of(pid, dir)
        };
        if mine {
            found.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_spec_uses_the_fixed_identity() {
        let state = super::super::state::tests::sample();
        let paths = ClusterPaths::new(Path::new("/s"), &"dev".parse().unwrap());
        let spec = vm_spec(&paths, &state, &state.nodes[0]).unwrap();
        assert_eq!(spec.user_nic.host_api_port, 50001);
        assert!(spec.user_nic.restrict);
        assert_eq!(spec.state_disk, paths.disk(&state.nodes[0].name));
        assert_eq!(
            spec.cluster_nic.unwrap().socket,
            Path::new("/s/clusters/dev/run/sw-dev-cp-1.sock")
        );
        assert_eq!(spec.kernel, Path::new("/c/vmlinuz"));
        assert!(
            spec.append.ends_with("mitigations=off"),
            "TCG: {}",
            spec.append
        );
        assert_eq!(kernel_cmdline(crate::qemu::Accel::Kvm), KERNEL_CMDLINE);
        let mut bad = state.clone();
        bad.nodes[0].user_mac = "zz".into();
        assert!(vm_spec(&paths, &bad, &bad.nodes[0]).is_err());
    }

    #[tokio::test]
    async fn the_saver_writes_the_newest_state_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        let saver = Saver::start(path.clone()).unwrap();
        let mut state = super::super::state::tests::sample();
        for g in 1..=50u64 {
            state.nodes[0].pid = Some(g as u32);
            saver.submit(g, state.clone());
        }
        saver.flush(50).await;
        let on_disk = ClusterState::load(&path).unwrap();
        assert_eq!(on_disk.nodes[0].pid, Some(50));
        // What is waiting at close is written before the thread ends.
        state.nodes[0].pid = Some(51);
        saver.submit(51, state);
        saver.close();
        assert_eq!(ClusterState::load(&path).unwrap().nodes[0].pid, Some(51));
        assert!(saver.thread.lock().unwrap().is_none());
    }

    #[test]
    fn own_process_is_not_a_supervisor() {
        assert!(!is_supervisor_of(std::process::id(), Path::new("/nope")));
        assert!(cmdline(std::process::id()).is_some());
        assert!(processes_of(Path::new("/definitely/not/a/cluster")).is_empty());
    }
}
