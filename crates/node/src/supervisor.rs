//! The service supervisor: starts services in dependency order (a service
//! waits until everything it depends on is `running`), runs health checks,
//! restarts a failed service with exponential back-off, keeps a ring buffer of
//! each service's output (also appended to `<log dir>/<service>.log`), and
//! stops everything in reverse order on shutdown.
//!
//! Children are spawned and reaped through [`super::reaper::Reaper`]. States
//! are published through a [`SupervisorHandle`], which the node API reads.

use super::reaper::{self, Reaper};
use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// A health probe: `Ok(())` when the service answers.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How the supervisor decides that a started service is up.
#[derive(Clone)]
pub enum Health {
    /// Up as soon as the process is started.
    Started,
    /// Up once `probe` succeeds; polled every `interval`, failed after `timeout`.
    Probe {
        probe: Probe,
        interval: Duration,
        timeout: Duration,
    },
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Started => f.write_str("Started"),
            Health::Probe {
                interval, timeout, ..
            } => write!(f, "Probe(every {interval:?}, timeout {timeout:?})"),
        }
    }
}

/// Restart back-off: `initial * 2^n` capped at `max`; the count resets once a
/// service has been running for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `failures` (1 = first restart).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// One service to supervise.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub depends_on: Vec<String>,
    pub health: Health,
    pub backoff: Backoff,
    /// How long to wait after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Started with the supervisor; otherwise it stays `stopped` until
    /// [`SupervisorHandle::start_service`] (etcd before bootstrap).
    pub autostart: bool,
    /// CPU priority (nice value, -20..=19; 0 is the default). etcd runs
    /// above the others: on a control plane its start is what the cluster
    /// waits for, and a busy node must not starve its heartbeats.
    pub nice: i32,
}

impl ServiceSpec {
    /// A service with no dependencies, started-is-healthy, default back-off.
    pub fn new(name: &str, program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            depends_on: Vec::new(),
            health: Health::Started,
            backoff: Backoff::default(),
            stop_timeout: Duration::from_secs(10),
            autostart: true,
            nice: 0,
        }
    }
}

/// The lifecycle state of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ServiceState {
    /// Waiting for dependencies (or for the back-off delay after a failure).
    Waiting,
    /// Started, health check not passed yet.
    Starting,
    Running,
    /// Last run failed; it will be restarted after the back-off delay.
    Failed {
        error: String,
    },
    Stopped,
}

impl ServiceState {
    pub fn name(&self) -> &'static str {
        match self {
            ServiceState::Waiting => "waiting",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Failed { .. } => "failed",
            ServiceState::Stopped => "stopped",
        }
    }
}

/// What the handle reports for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub name: String,
    #[serde(flatten)]
    pub state: ServiceState,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// One output line of a service, with when it was read (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub time_ms: u64,
    pub text: String,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How many new lines a slow follower may lag behind before it misses some.
const FOLLOW_BUFFER: usize = 1024;

/// A fixed-size buffer of a service's last output lines.
#[derive(Debug, Default)]
pub struct LogRing {
    lines: VecDeque<Line>,
    cap: usize,
}

impl LogRing {
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(cap.min(1024)),
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, line: String) {
        self.push_line(Line {
            time_ms: now_ms(),
            text: line,
        });
    }

    pub fn push_line(&mut self, line: Line) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.text.clone()).collect()
    }

    /// The last `tail` lines (all when `None`), with their times.
    pub fn tail(&self, tail: Option<usize>) -> Vec<Line> {
        let n = tail.unwrap_or(self.lines.len()).min(self.lines.len());
        self.lines
            .iter()
            .skip(self.lines.len() - n)
            .cloned()
            .collect()
    }
}

struct Entry {
    spec: ServiceSpec,
    status: watch::Sender<ServiceStatus>,
    logs: Arc<Mutex<LogRing>>,
    /// Every new line, for followers.
    new_lines: broadcast::Sender<Line>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where `<service>.log` files go (`/var/log` on a node); `None` keeps logs in memory only.
    pub log_dir: Option<PathBuf>,
    /// Lines kept per service in memory.
    pub ring_lines: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log_dir: None,
            ring_lines: 1000,
        }
    }
}

/// Handle to running services: states, logs, shutdown.
#[derive(Clone)]
pub struct SupervisorHandle {
    entries: Arc<Vec<Entry>>,
    reaper: Reaper,
    settings: Settings,
}

/// Orders services so that every dependency comes before its dependents.
pub fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>, SupervisorError> {
    let index: BTreeMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    if index.len() != specs.len() {
        let mut seen = std::collections::BTreeSet::new();
        for s in specs {
            if !seen.insert(s.name.as_str()) {
                return Err(SupervisorError::Duplicate(s.name.clone()));
            }
        }
    }
    for s in specs {
        for d in &s.depends_on {
            if !index.contains_key(d.as_str()) {
                return Err(SupervisorError::UnknownDependency {
                    service: s.name.clone(),
                    dependency: d.clone(),
                });
            }
        }
    }
    // Depth-first topological sort, stable in declaration order.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        specs: &[ServiceSpec],
        index: &BTreeMap<&str, usize>,
        marks: &mut [Mark],
        out: &mut Vec<usize>,
    ) -> Result<(), SupervisorError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => return Err(SupervisorError::Cycle(specs[i].name.clone())),
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        for d in &specs[i].depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                visit(j, specs, index, marks, out)?;
            }
        }
        marks[i] = Mark::Done;
        out.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; specs.len()];
    let mut out = Vec::with_capacity(specs.len());
    for i in 0..specs.len() {
        visit(i, specs, &index, &mut marks, &mut out)?;
    }
    Ok(out)
}

/// Starts supervising `specs`; each service starts once its dependencies run.
pub fn start(
    reaper: Reaper,
    settings: Settings,
    specs: Vec<ServiceSpec>,
) -> Result<SupervisorHandle, SupervisorError> {
    let order = start_order(&specs)?;
    let mut slots: Vec<Option<ServiceSpec>> = specs.into_iter().map(Some).collect();
    let entries: Vec<Entry> = order
        .iter()
        .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
        .map(|spec| Entry {
            status: watch::Sender::new(ServiceStatus {
                name: spec.name.clone(),
                state: ServiceState::Waiting,
                pid: None,
                restarts: 0,
                last_error: None,
            }),
            logs: Arc::new(Mutex::new(LogRing::new(settings.ring_lines))),
            new_lines: broadcast::channel(FOLLOW_BUFFER).0,
            stop: watch::Sender::new(false),
            task: Mutex::new(None),
            spec,
        })
        .collect();
    let handle = SupervisorHandle {
        entries: Arc::new(entries),
        reaper,
        settings,
    };
    for (i, e) in handle.entries.iter().enumerate() {
        if e.spec.autostart {
            handle.spawn(i);
        } else {
            set(e, |s| s.state = ServiceState::Stopped);
        }
    }
    Ok(handle)
}

impl SupervisorHandle {
    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.spec.name == name)
    }

    fn index(&self, name: &str) -> Result<usize, SupervisorError> {
        self.entries
            .iter()
            .position(|e| e.spec.name == name)
            .ok_or_else(|| SupervisorError::NoSuchService(name.to_string()))
    }

    /// Starts the task that runs entry `i` (its stop flag cleared).
    fn spawn(&self, i: usize) {
        let entry = &self.entries[i];
        entry.stop.send_replace(false);
        set(entry, |s| s.state = ServiceState::Waiting);
        let h = self.clone();
        let reaper = self.reaper.clone();
        let settings = self.settings.clone();
        let task = tokio::spawn(async move { run_service(h, i, reaper, settings).await });
        if let Ok(mut t) = entry.task.lock() {
            *t = Some(task);
        }
    }

    /// Whether entry `i` has a task that has not finished.
    fn active(&self, i: usize) -> bool {
        self.entries[i]
            .task
            .lock()
            .map(|t| t.as_ref().is_some_and(|t| !t.is_finished()))
            .unwrap_or(false)
    }

    /// Starts a stopped service (no-op when it is already supervised) and
    /// returns its status.
    pub fn start_service(&self, name: &str) -> Result<ServiceStatus, SupervisorError> {
        let i = self.index(name)?;
        if !self.active(i) {
            self.spawn(i);
        }
        Ok(self.entries[i].status.borrow().clone())
    }

    /// Stops a service (SIGTERM, then SIGKILL after its stop timeout) and
    /// waits until it is down. It stays stopped until started again.
    pub async fn stop_service(&self, name: &str) -> Result<ServiceStatus, SupervisorError> {
        let i = self.index(name)?;
        let entry = &self.entries[i];
        entry.stop.send_replace(true);
        let task = entry.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        set(entry, |s| {
            s.state = ServiceState::Stopped;
            s.pid = None;
        });
        Ok(entry.status.borrow().clone())
    }

    /// Stops then starts a service.
    pub async fn restart_service(&self, name: &str) -> Result<ServiceStatus, SupervisorError> {
        self.stop_service(name).await?;
        self.start_service(name)
    }

    /// Every service's status, in start order.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.entries
            .iter()
            .map(|e| e.status.borrow().clone())
            .collect()
    }

    pub fn status(&self, name: &str) -> Option<ServiceStatus> {
        self.entry(name).map(|e| e.status.borrow().clone())
    }

    /// The buffered output lines of a service.
    pub fn logs(&self, name: &str) -> Option<Vec<String>> {
        self.entry(name)
            .map(|e| e.logs.lock().map(|l| l.lines()).unwrap_or_default())
    }

    /// The last `tail` buffered lines of a service (all when `None`) and a
    /// receiver of every line that comes after them (no line lost or repeated
    /// in between: both are taken under the ring's lock).
    pub fn follow(
        &self,
        name: &str,
        tail: Option<usize>,
    ) -> Option<(Vec<Line>, broadcast::Receiver<Line>)> {
        let e = self.entry(name)?;
        let ring = e.logs.lock().unwrap_or_else(|p| p.into_inner());
        let rx = e.new_lines.subscribe();
        Some((ring.tail(tail), rx))
    }

    /// The names of the supervised services, in start order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.spec.name.clone()).collect()
    }

    /// Waits until `name`'s status satisfies `pred`, up to `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&ServiceStatus) -> bool,
    ) -> Result<ServiceStatus, SupervisorError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| SupervisorError::NoSuchService(name.to_string()))?;
        let mut rx = entry.status.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await;
        match res {
            Ok(Ok(s)) => Ok(s.clone()),
            _ => Err(SupervisorError::Timeout {
                service: name.to_string(),
                status: Box::new(entry.status.borrow().clone()),
            }),
        }
    }

    /// Stops every service in reverse start order and waits for each.
    pub async fn shutdown(&self) {
        for e in self.entries.iter().rev() {
            e.stop.send_replace(true);
            let task = e.task.lock().ok().and_then(|mut t| t.take());
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }
}

fn set(entry: &Entry, f: impl FnOnce(&mut ServiceStatus)) {
    entry.status.send_modify(f);
}

async fn pump(
    reader: impl AsyncRead + Unpin,
    logs: Arc<Mutex<LogRing>>,
    new_lines: broadcast::Sender<Line>,
    file: Option<Arc<tokio::sync::Mutex<tokio::fs::File>>>,
) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = &file {
            let mut f = f.lock().await;
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
        let line = Line {
            time_ms: now_ms(),
            text: line,
        };
        let mut ring = logs.lock().unwrap_or_else(|p| p.into_inner());
        ring.push_line(line.clone());
        // Sent under the ring's lock so that `follow` sees each line exactly once.
        // No follower is not an error.
        let _ = new_lines.send(line);
    }
}

/// Waits until `stop` is true (returns immediately if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run_service(h: SupervisorHandle, i: usize, reaper: Reaper, settings: Settings) {
    let entry = &h.entries[i];
    let spec = &entry.spec;
    let mut stop = entry.stop.subscribe();
    let mut failures: u32 = 0;
    let file = match &settings.log_dir {
        Some(dir) => {
            let _ = tokio::fs::create_dir_all(dir).await;
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", spec.name)))
                .await
                .ok()
                .map(|f| Arc::new(tokio::sync::Mutex::new(f)))
        }
        None => None,
    };
    loop {
        // Wait for dependencies.
        let deps: Vec<watch::Receiver<ServiceStatus>> = spec
            .depends_on
            .iter()
            .filter_map(|d| h.entry(d).map(|e| e.status.subscribe()))
            .collect();
        for mut d in deps {
            tokio::select! {
                _ = d.wait_for(|s| s.state == ServiceState::Running) => {}
                _ = stopped(&mut stop) => {
                    set(entry, |s| s.state = ServiceState::Stopped);
                    return;
                }
            }
        }
        if *stop.borrow() {
            set(entry, |s| s.state = ServiceState::Stopped);
            return;
        }

        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: lower_for_child makes only getrlimit/setrlimit calls.
            // PID 1's own soft limit is high; services start from the usual one.
            unsafe {
                cmd.pre_exec(super::rlimit::lower_for_child);
            }
        }
        if spec.nice != 0 {
            let nice = spec.nice;
            use std::os::unix::process::CommandExt;
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
        let outcome: Result<(), String> = match reaper.spawn(&mut cmd) {
            Err(e) => Err(format!("cannot start {}: {e}", spec.program.display())),
            Ok(sp) => {
                let pid = sp.pid;
                // A boot phase the host can time (etcd starts on bootstrap).
                super::console::phase(super::console::Phase::ServiceStarted(spec.name.to_string()));
                set(entry, |s| {
                    s.state = ServiceState::Starting;
                    s.pid = Some(pid);
                });
                if let Some(o) = sp
                    .stdout
                    .and_then(|o| tokio::process::ChildStdout::from_std(o).ok())
                {
                    tokio::spawn(pump(
                        o,
                        entry.logs.clone(),
                        entry.new_lines.clone(),
                        file.clone(),
                    ));
                }
                if let Some(e) = sp
                    .stderr
                    .and_then(|e| tokio::process::ChildStderr::from_std(e).ok())
                {
                    tokio::spawn(pump(
                        e,
                        entry.logs.clone(),
                        entry.new_lines.clone(),
                        file.clone(),
                    ));
                }
                let mut exit = sp.exit;
                supervise_one(entry, pid, &mut exit, &mut stop, &mut failures).await
            }
        };
        if *stop.borrow() {
            set(entry, |s| {
                s.state = ServiceState::Stopped;
                s.pid = None;
            });
            return;
        }
        let error = outcome.err().unwrap_or_else(|| "exited".to_string());
        failures = failures.saturating_add(1);
        let delay = spec.backoff.delay(failures);
        set(entry, |s| {
            s.state = ServiceState::Failed {
                error: error.clone(),
            };
            s.pid = None;
            s.last_error = Some(error.clone());
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => {
                set(entry, |s| s.state = ServiceState::Stopped);
                return;
            }
        }
        set(entry, |s| {
            s.restarts += 1;
            s.state = ServiceState::Waiting;
        });
    }
}

fn describe(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "exited".to_string(),
    }
}

/// Runs one process of a service until it exits (error) or a stop is asked (Ok).
async fn supervise_one(
    entry: &Entry,
    pid: i32,
    exit: &mut tokio::sync::oneshot::Receiver<std::process::ExitStatus>,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> Result<(), String> {
    let spec = &entry.spec;
    // Health.
    match &spec.health {
        Health::Started => {}
        Health::Probe {
            probe,
            interval,
            timeout,
        } => {
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
                    st = &mut *exit => {
                        return Err(st.map(describe).unwrap_or_else(|_| "lost".into()));
                    }
                    _ = stopped(stop) => {
                        terminate(pid, exit, spec.stop_timeout).await;
                        return Ok(());
                    }
                    _ = tokio::time::sleep(*interval) => {}
                }
            }
        }
    }
    set(entry, |s| s.state = ServiceState::Running);
    let since = Instant::now();
    let res = tokio::select! {
        st = &mut *exit => Err(st.map(describe).unwrap_or_else(|_| "lost".into())),
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
async fn terminate(
    pid: i32,
    exit: &mut tokio::sync::oneshot::Receiver<std::process::ExitStatus>,
    grace: Duration,
) {
    reaper::signal(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, &mut *exit).await.is_err() {
        reaper::signal(pid, libc::SIGKILL);
        let _ = exit.await;
    }
}

/// Why the supervisor refused a set of services.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("service {0:?} is defined twice")]
    Duplicate(String),
    #[error("service {service:?} depends on unknown service {dependency:?}")]
    UnknownDependency { service: String, dependency: String },
    #[error("dependency cycle through service {0:?}")]
    Cycle(String),
    #[error("no service named {0:?}")]
    NoSuchService(String),
    #[error("service {service:?} did not reach the expected state in time (now {})", status.state.name())]
    Timeout {
        service: String,
        status: Box<ServiceStatus>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::ReapMode;

    const T: Duration = Duration::from_secs(20);

    fn sup() -> Reaper {
        let r = Reaper::new(ReapMode::Own);
        tokio::spawn(r.clone().run());
        r
    }

    fn fast(mut s: ServiceSpec) -> ServiceSpec {
        s.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(60),
        };
        s.stop_timeout = Duration::from_secs(5);
        s
    }

    #[test]
    fn order_respects_dependencies_and_rejects_bad_graphs() {
        let mut a = ServiceSpec::new("a", "/bin/true", &[]);
        a.depends_on = vec!["b".into()];
        let b = ServiceSpec::new("b", "/bin/true", &[]);
        let mut c = ServiceSpec::new("c", "/bin/true", &[]);
        c.depends_on = vec!["a".into()];
        let order = start_order(&[c.clone(), a.clone(), b.clone()]).unwrap();
        assert_eq!(order, vec![2, 1, 0]);
        let mut b2 = b.clone();
        b2.depends_on = vec!["c".into()];
        assert!(matches!(
            start_order(&[a.clone(), b2, c.clone()]),
            Err(SupervisorError::Cycle(_))
        ));
        let mut x = b.clone();
        x.depends_on = vec!["nope".into()];
        assert!(matches!(
            start_order(&[x]),
            Err(SupervisorError::UnknownDependency { .. })
        ));
        assert!(matches!(
            start_order(&[b.clone(), b]),
            Err(SupervisorError::Duplicate(_))
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(5),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(500), Duration::from_secs(1));
    }

    #[test]
    fn ring_keeps_the_last_lines() {
        let mut r = LogRing::new(2);
        for l in ["a", "b", "c"] {
            r.push(l.into());
        }
        assert_eq!(r.lines(), vec!["b", "c"]);
    }

    #[tokio::test]
    async fn dependent_waits_for_its_dependency_health() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ready");
        // "db" becomes healthy only once the flag file exists.
        let mut db = fast(ServiceSpec::new("db", "/bin/sleep", &["30"]));
        let f = flag.clone();
        db.health = Health::Probe {
            probe: Arc::new(move || {
                let f = f.clone();
                Box::pin(async move {
                    if f.exists() {
                        Ok(())
                    } else {
                        Err("not ready".into())
                    }
                })
            }),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(30),
        };
        let mut app = fast(ServiceSpec::new("app", "/bin/sleep", &["30"]));
        app.depends_on = vec!["db".into()];
        let h = start(sup(), Settings::default(), vec![app, db]).unwrap();
        h.wait_for("db", T, |s| s.state == ServiceState::Starting)
            .await
            .unwrap();
        assert_eq!(h.status("app").unwrap().state, ServiceState::Waiting);
        assert_eq!(h.status("app").unwrap().pid, None);
        std::fs::write(&flag, b"").unwrap();
        h.wait_for("app", T, |s| s.state == ServiceState::Running)
            .await
            .unwrap();
        assert_eq!(h.status("db").unwrap().state, ServiceState::Running);
        let names: Vec<String> = h.statuses().into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["db", "app"]);
        h.shutdown().await;
        for s in h.statuses() {
            assert_eq!(s.state, ServiceState::Stopped, "{s:?}");
        }
    }

    #[tokio::test]
    async fn failing_service_is_restarted_with_backoff_and_reports_its_error() {
        let svc = fast(ServiceSpec::new("bad", "/bin/false", &[]));
        let started = Instant::now();
        let h = start(sup(), Settings::default(), vec![svc]).unwrap();
        let s = h.wait_for("bad", T, |s| s.restarts >= 3).await.unwrap();
        // 50 + 100 + 200 ms of back-off at least.
        assert!(started.elapsed() >= Duration::from_millis(350));
        assert_eq!(s.last_error.as_deref(), Some("exited with status 1"));
        h.shutdown().await;
        assert_eq!(h.status("bad").unwrap().state, ServiceState::Stopped);
    }

    #[tokio::test]
    async fn missing_program_fails_with_the_reason() {
        let svc = fast(ServiceSpec::new("ghost", "/nonexistent/prog", &[]));
        let h = start(sup(), Settings::default(), vec![svc]).unwrap();
        let s = h
            .wait_for("ghost", T, |s| {
                matches!(s.state, ServiceState::Failed { .. })
            })
            .await
            .unwrap();
        assert!(s.last_error.unwrap_or_default().contains("cannot start"));
        h.shutdown().await;
    }

    #[tokio::test]
    async fn output_is_captured_in_ring_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut svc = fast(ServiceSpec::new(
            "talker",
            "/bin/sh",
            &["-c", "echo out-line; echo err-line >&2; exec sleep 30"],
        ));
        svc.env = vec![("X".into(), "1".into())];
        let settings = Settings {
            log_dir: Some(dir.path().to_path_buf()),
            ring_lines: 10,
        };
        let h = start(sup(), settings, vec![svc]).unwrap();
        let deadline = Instant::now() + T;
        loop {
            let logs = h.logs("talker").unwrap();
            if logs.len() >= 2 {
                assert!(logs.contains(&"out-line".to_string()), "{logs:?}");
                assert!(logs.contains(&"err-line".to_string()), "{logs:?}");
                break;
            }
            assert!(Instant::now() < deadline, "no output captured");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.shutdown().await;
        let file = std::fs::read_to_string(dir.path().join("talker.log")).unwrap();
        assert!(
            file.contains("out-line") && file.contains("err-line"),
            "{file}"
        );
    }

    fn file_probe(path: PathBuf) -> Health {
        Health::Probe {
            probe: Arc::new(move || {
                let f = path.clone();
                Box::pin(async move {
                    if f.exists() {
                        Ok(())
                    } else {
                        Err("not ready".into())
                    }
                })
            }),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn shutdown_stops_in_reverse_order_and_kills_stubborn_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // Each shell reports healthy (a file) only after its TERM trap is set.
        let svc = |name: &str, trap: &str| {
            let mut s = fast(ServiceSpec::new(
                name,
                "/bin/sh",
                &[
                    "-c",
                    &format!("trap '{trap}' TERM; : > {d}/{name}.up; while :; do sleep 0.05; done"),
                ],
            ));
            s.health = file_probe(dir.path().join(format!("{name}.up")));
            s
        };
        let first = svc("first", &format!("echo first >> {d}/marks; exit 0"));
        let mut second = svc("second", &format!("echo second >> {d}/marks; exit 0"));
        second.depends_on = vec!["first".into()];
        let mut stubborn = svc("stubborn", "");
        stubborn.stop_timeout = Duration::from_millis(200);
        let h = start(sup(), Settings::default(), vec![second, first, stubborn]).unwrap();
        for n in ["first", "second", "stubborn"] {
            h.wait_for(n, T, |s| s.state == ServiceState::Running)
                .await
                .unwrap();
        }
        h.shutdown().await;
        let got = std::fs::read_to_string(dir.path().join("marks")).unwrap();
        assert_eq!(got, "second\nfirst\n");
        for s in h.statuses() {
            assert_eq!(s.state, ServiceState::Stopped);
        }
    }

    #[tokio::test]
    async fn manual_services_wait_for_start_and_obey_stop_and_restart() {
        let r = sup();
        let mut later = fast(ServiceSpec::new("later", "/bin/sleep", &["30"]));
        later.autostart = false;
        let h = start(r, Settings::default(), vec![later]).unwrap();
        assert_eq!(h.status("later").unwrap().state, ServiceState::Stopped);
        assert!(h.status("later").unwrap().pid.is_none());

        h.start_service("later").unwrap();
        let running = h
            .wait_for("later", T, |s| s.state == ServiceState::Running)
            .await
            .unwrap();
        let first = running.pid.unwrap();
        // Starting again while it runs changes nothing.
        h.start_service("later").unwrap();
        assert_eq!(h.status("later").unwrap().pid, Some(first));

        let stopped = h.stop_service("later").await.unwrap();
        assert_eq!(stopped.state, ServiceState::Stopped);

        h.restart_service("later").await.unwrap();
        let again = h
            .wait_for("later", T, |s| s.state == ServiceState::Running)
            .await
            .unwrap();
        assert_ne!(again.pid, Some(first));
        assert!(matches!(
            h.start_service("nope"),
            Err(SupervisorError::NoSuchService(_))
        ));
        h.shutdown().await;
        assert_eq!(h.status("later").unwrap().state, ServiceState::Stopped);
    }
}
