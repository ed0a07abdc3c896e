//! The service supervisor: starts services in dependency order (a service
//! waits until everything it depends on is `running`), runs health checks,
//! restarts a failed service with exponential back-off, keeps a ring buffer of
//! each service's output (also appended to `<log dir>/<service>.log`), and
//! stops everything in reverse order on shutdown.
//!
//! Children are spawned and reaped through [`crate::reaper::Reaper`]. States
//! are published through a [`SupervisorHandle`], which the node API reads.
//!
//! | module | owns |
//! |---|---|
//! | [`spec`] | what a service is ([`ServiceSpec`], [`Health`], [`Backoff`]) and its reported [`ServiceStatus`] |
//! | [`order`] | the start order (dependencies first; duplicates, unknown names and cycles refused) |
//! | [`logs`] | the output of services: [`LogRing`], the log files, [`Line`] |
//! | `run` | the task behind one service: dependencies, spawn, health, back-off, stop |
//! | this module | [`start`], the [`SupervisorHandle`] (states, logs, start/stop/restart, shutdown), [`SupervisorError`] |

pub mod logs;
pub mod order;
mod run;
pub mod spec;
#[cfg(test)]
mod tests;

pub use logs::{Line, LogRing, now_ms};
pub use order::start_order;
pub use spec::{Backoff, Health, Probe, ServiceSpec, ServiceState, ServiceStatus};

use crate::reaper::Reaper;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

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
            new_lines: broadcast::channel(logs::FOLLOW_BUFFER).0,
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
        let task = tokio::spawn(run::run_service(self.clone(), i));
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
