//! The supervisor's run: recovering the recorded state, the switch, the
//! control socket and its requests, the signals, and the orderly end.

use super::node::Sup;
use super::saver::Saver;
use super::{SupervisorError, io};
use crate::cluster::control::{Request, Response};
use crate::cluster::paths::ClusterPaths;
use crate::cluster::state::{ClusterState, NodeState};
use crate::network::{Switch, SwitchConfig};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

/// The switch, serving until its stop signal.
struct RunningSwitch {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub(super) async fn run(dir: &Path) -> Result<(), SupervisorError> {
    let paths = ClusterPaths::at(dir);
    let log_max = crate::cluster::caplog::max_from_env().map_err(SupervisorError::Config)?;
    let state = recover_state(&paths, log_max)?;
    let switch = start_switch(&paths, &state).await?;
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
    log!("serving on {}", ctl_path.display());
    let exit_asked = serve(&sup, listener).await?;
    if !exit_asked && let Err(e) = sup.stop_all(true, Duration::from_secs(30)).await {
        log!("stopping nodes: {e}");
    }
    let _ = switch.stop.send(());
    let _ = switch.task.await;
    sup.saved().await;
    sup.saver.close();
    let _ = std::fs::remove_file(&ctl_path);
    let _ = std::fs::remove_file(paths.supervisor_pid());
    log!("supervisor exits");
    Ok(())
}

/// Loads `cluster.json` and records that nothing of ours runs now (our QEMUs
/// die with their supervisor: a node recorded as running ended with the old
/// one); makes the run and log directories.
fn recover_state(paths: &ClusterPaths, log_max: u64) -> Result<ClusterState, SupervisorError> {
    let mut state = ClusterState::load(&paths.cluster_json())?;
    log!(
        "supervisor {} for cluster {} ({} nodes; serial and QEMU logs capped at {} bytes each)",
        std::process::id(),
        state.name,
        state.nodes.len(),
        log_max
    );
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
    Ok(state)
}

/// Binds the cluster switch (before any QEMU starts: the stream netdev
/// connects once) and serves it on a task.
async fn start_switch(
    paths: &ClusterPaths,
    state: &ClusterState,
) -> Result<RunningSwitch, SupervisorError> {
    let mut nodes = Vec::new();
    for n in &state.nodes {
        nodes.push(
            n.name
                .parse()
                .map_err(|e| SupervisorError::BadNode(format!("{}: {e}", n.name)))?,
        );
    }
    let switch = Switch::bind(&SwitchConfig {
        dir: paths.run_dir(),
        nodes,
        seed: None,
    })
    .await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(switch.serve(async {
        let _ = stopped.await;
    }));
    Ok(RunningSwitch { stop, task })
}

/// Serves the control socket until a `shutdown` request (true: the nodes are
/// down already) or SIGTERM/SIGINT (false). SIGHUP is ignored.
async fn serve(sup: &Arc<Sup>, listener: UnixListener) -> Result<bool, SupervisorError> {
    let (exit_tx, mut exit_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).map_err(io("cannot watch SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("cannot watch SIGINT"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(io("cannot watch SIGHUP"))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_conn(sup.clone(), stream, exit_tx.clone()));
                }
            }
            _ = exit_rx.changed() => return Ok(true),
            _ = term.recv() => { log!("SIGTERM"); return Ok(false); }
            _ = int.recv() => { log!("SIGINT"); return Ok(false); }
            _ = hup.recv() => { log!("SIGHUP ignored"); }
        }
    }
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
