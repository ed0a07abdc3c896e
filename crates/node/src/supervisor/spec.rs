//! What a supervised service is ([`ServiceSpec`]: program, dependencies,
//! health check, back-off, stop timeout, priority) and what the supervisor
//! reports about it ([`ServiceState`], [`ServiceStatus`]). Plain data: the
//! running of services is in [`super::run`].

use futures::future::BoxFuture;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// [`super::SupervisorHandle::start_service`] (etcd before bootstrap).
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
