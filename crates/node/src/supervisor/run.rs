//! The task behind one service: wait for its dependencies, start it (at its
//! priority, with the services' open-file limit), capture its output, wait
//! for its health check, watch it until it exits or is stopped, and restart
//! it after the back-off delay. Stopping is SIGTERM, then SIGKILL after the
//! service's stop timeout.

use super::logs::{self, LogFile};
use super::{Entry, Health, ServiceSpec, ServiceState, ServiceStatus, SupervisorHandle, set};
use crate::reaper::{self, Reaper};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Supervises entry `i` of `h` until it is stopped.
pub(super) async fn run_service(h: SupervisorHandle, i: usize) {
    let entry = &h.entries[i];
    let mut stop = entry.stop.subscribe();
    let mut failures: u32 = 0;
    let file = logs::open_file(h.settings.log_dir.as_deref(), &entry.spec.name).await;
    loop {
        if !dependencies_running(&h, entry, &mut stop).await {
            set(entry, |s| s.state = ServiceState::Stopped);
            return;
        }
        let outcome = run_once(entry, &h.reaper, &file, &mut stop, &mut failures).await;
        if *stop.borrow() {
            set(entry, |s| {
                s.state = ServiceState::Stopped;
                s.pid = None;
            });
            return;
        }
        if !back_off(entry, outcome, &mut failures, &mut stop).await {
            return;
        }
    }
}

/// Waits until every dependency of `entry` runs; false when a stop is asked
/// first.
async fn dependencies_running(
    h: &SupervisorHandle,
    entry: &Entry,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let deps: Vec<watch::Receiver<ServiceStatus>> = entry
        .spec
        .depends_on
        .iter()
        .filter_map(|d| h.entry(d).map(|e| e.status.subscribe()))
        .collect();
    for mut d in deps {
        tokio::select! {
            _ = d.wait_for(|s| s.state == ServiceState::Running) => {}
            _ = stopped(stop) => return false,
        }
    }
    !*stop.borrow()
}

/// Starts one process of the service and supervises it until it exits
/// (error) or a stop is asked (Ok).
async fn run_once(
    entry: &Entry,
    reaper: &Reaper,
    file: &LogFile,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> Result<(), String> {
    let spec = &entry.spec;
    let sp = reaper
        .spawn(&mut command(spec))
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
    let pid = sp.pid;
    // A boot phase the host can time (etcd starts on bootstrap).
    crate::console::phase(crate::console::Phase::ServiceStarted(spec.name.to_string()));
    set(entry, |s| {
        s.state = ServiceState::Starting;
        s.pid = Some(pid);
    });
    if let Some(o) = sp
        .stdout
        .and_then(|o| tokio::process::ChildStdout::from_std(o).ok())
    {
        capture(o, entry, file);
    }
    if let Some(e) = sp
        .stderr
        .and_then(|e| tokio::process::ChildStderr::from_std(e).ok())
    {
        capture(e, entry, file);
    }
    let mut exit = sp.exit;
    supervise_one(entry, pid, &mut exit, stop, failures).await
}

/// The service's command: program, arguments, environment, the services'
/// open-file limit and its nice value.
fn command(spec: &ServiceSpec) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    // SAFETY: lower_for_child makes only getrlimit/setrlimit calls.
    // PID 1's own soft limit is high; services start from the usual one.
    unsafe {
        cmd.pre_exec(crate::rlimit::lower_for_child);
    }
    if spec.nice != 0 {
        let nice = spec.nice;
        // SAFETY: setpriority(2) is async-signal-safe, and the closure
        // touches nothing but its copied argument.
        unsafe {
            cmd.pre_exec(move || {
                // Best effort: without CAP_SYS_NICE (tests on a host as
                // an ordinary user) the service runs at the default.
                let _ = libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                Ok(())
            });
        }
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd
}

/// Reads one output stream of the service into its logs, in the background.
fn capture(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    entry: &Entry,
    file: &LogFile,
) {
    tokio::spawn(logs::pump(
        reader,
        entry.logs.clone(),
        entry.new_lines.clone(),
        file.clone(),
    ));
}

/// Records a failed run and waits out the back-off delay; false when a stop
/// is asked meanwhile (the service is then `stopped`).
async fn back_off(
    entry: &Entry,
    outcome: Result<(), String>,
    failures: &mut u32,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let error = outcome.err().unwrap_or_else(|| "exited".to_string());
    *failures = failures.saturating_add(1);
    let delay = entry.spec.backoff.delay(*failures);
    set(entry, |s| {
        s.state = ServiceState::Failed {
            error: error.clone(),
        };
        s.pid = None;
        s.last_error = Some(error.clone());
    });
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stopped(stop) => {
            set(entry, |s| s.state = ServiceState::Stopped);
            return false;
        }
    }
    set(entry, |s| {
        s.restarts += 1;
        s.state = ServiceState::Waiting;
    });
    true
}

/// Waits until `stop` is true (returns immediately if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn describe(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "exited".to_string(),
    }
}

/// How a wait on the process ended, when it did not simply go on.
fn exited(st: Result<ExitStatus, oneshot::error::RecvError>) -> Result<(), String> {
    Err(st.map(describe).unwrap_or_else(|_| "lost".into()))
}

/// Runs one process of a service until it exits (error) or a stop is asked (Ok).
async fn supervise_one(
    entry: &Entry,
    pid: i32,
    exit: &mut oneshot::Receiver<ExitStatus>,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> Result<(), String> {
    let spec = &entry.spec;
    if let Health::Probe {
        probe,
        interval,
        timeout,
    } = &spec.health
    {
        let deadline = Instant::now() + *timeout;
        loop {
            let last = match probe().await {
                Ok(()) => break,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                terminate(pid, exit, spec.stop_timeout).await;
                return Err(format!("health check failed after {timeout:?}: {last}"));
            }
            tokio::select! {
                st = &mut *exit => return exited(st),
                _ = stopped(stop) => {
                    terminate(pid, exit, spec.stop_timeout).await;
                    return Ok(());
                }
                _ = tokio::time::sleep(*interval) => {}
            }
        }
    }
    set(entry, |s| s.state = ServiceState::Running);
    let since = Instant::now();
    let res = tokio::select! {
        st = &mut *exit => exited(st),
        _ = stopped(stop) => {
            terminate(pid, exit, spec.stop_timeout).await;
            Ok(())
        }
    };
    if since.elapsed() >= spec.backoff.reset_after {
        *failures = 0;
    }
    res
}

/// SIGTERM, then SIGKILL after `grace`; waits for the exit.
async fn terminate(pid: i32, exit: &mut oneshot::Receiver<ExitStatus>, grace: Duration) {
    reaper::signal(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, &mut *exit).await.is_err() {
        reaper::signal(pid, libc::SIGKILL);
        let _ = exit.await;
    }
}
