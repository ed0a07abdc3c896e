//! The real [`Controller`] behind apid inside machined: answers the node API
//! from the supervisor (services, logs), the kernel log, the state disk
//! (applied configs) and etcd ([`Etcd::execute`]); asks [`super::pid1`] for a
//! reboot or power-off through a channel (the same orderly path as the power
//! button).
//!
//! It does not own TLS, routing or roles (apid) nor run etcd itself.

use super::apid::Controller;
use super::applied;
use super::etcd::{self, Etcd};
use super::facts;
use super::supervisor::{self, Line, SupervisorError, SupervisorHandle};
use super::sys::PowerAction;
use crate::api::{
    Accepted, Action, ApiError, ErrorCode, Health, LogLine, LogLines, Reply, ServiceList,
    ServiceOp, ServiceState, ServiceStatus, VersionInfo,
};
use crate::machine::MachineConfig;
use futures::stream::{BoxStream, StreamExt};
use std::path::{Path, PathBuf};
use tokio::sync::{broadcast, mpsc};

/// machined's controller: the parts of a booted node it answers from,
/// named where it is built (they hold no invariant between them).
pub struct NodeController {
    /// The effective config of this boot.
    pub config: MachineConfig,
    /// SHA-256 of this boot's fw_cfg config (what an applied config is stored over).
    pub fw_cfg_digest: String,
    pub services: SupervisorHandle,
    /// The node's etcd (a control plane), bootstrapped or not.
    pub etcd: Option<Etcd>,
    /// Where reboot and power-off requests go (PID 1's shutdown path).
    pub power: mpsc::Sender<PowerAction>,
    /// `/` on a node.
    pub root: PathBuf,
}

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id` under
/// `root`), when it reads as one.
pub fn boot_id(root: &Path) -> Option<String> {
    let raw = std::fs::read_to_string(root.join("proc/sys/kernel/random/boot_id")).ok()?;
    let id = raw.trim();
    let uuid_like = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    uuid_like.then(|| id.to_string())
}

/// Maps the supervisor's state to the API's.
pub fn api_status(s: &supervisor::ServiceStatus) -> ServiceStatus {
    let state = match s.state {
        supervisor::ServiceState::Waiting => ServiceState::Waiting,
        supervisor::ServiceState::Starting => ServiceState::Starting,
        supervisor::ServiceState::Running => ServiceState::Running,
        supervisor::ServiceState::Failed { .. } => ServiceState::Failed,
        supervisor::ServiceState::Stopped => ServiceState::Stopped,
    };
    ServiceStatus {
        name: s.name.clone(),
        state,
        restarts: s.restarts,
        last_error: s.last_error.clone(),
        rss_kib: s.pid.and_then(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| vm_rss_kib(&status))
        }),
    }
}

/// The `VmRSS:` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

fn line(l: Line) -> LogLine {
    LogLine {
        time_ms: l.time_ms,
        line: l.text,
    }
}

fn no_service(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no service named {name:?}"))
}

fn supervisor_error(e: SupervisorError) -> ApiError {
    match e {
        SupervisorError::NoSuchService(n) => no_service(&n),
        other => ApiError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// The error of an etcd action on a node without etcd.
pub fn no_etcd(node: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("node {node:?} is a worker: it runs no etcd"),
    )
}

/// Whether the node is healthy: every service that should run is running
/// (services stopped on purpose, like etcd before bootstrap, do not count).
pub fn healthy(statuses: &[supervisor::ServiceStatus]) -> bool {
    statuses.iter().all(|s| {
        matches!(
            s.state,
            supervisor::ServiceState::Running | supervisor::ServiceState::Stopped
        )
    })
}

impl NodeController {
    fn power(&self, action: PowerAction) -> Result<Reply, ApiError> {
        // A request already queued (capacity 1) means a shutdown is under way:
        // that is still accepted.
        match self.power.try_send(action) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {
                Ok(Reply::Accepted(Accepted { accepted: true }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the node is already shutting down",
            )),
        }
    }

    async fn dmesg(&self, tail: Option<usize>) -> Result<Reply, ApiError> {
        let path = self.root.join("dev/kmsg");
        let records = tokio::task::spawn_blocking(move || facts::read_kmsg(&path))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("/dev/kmsg: {e}")))?;
        // Kernel times are since boot; the API wants wall-clock milliseconds.
        let now = supervisor::now_ms();
        let up_ms = (super::console::uptime() * 1000.0) as u64;
        let boot_ms = now.saturating_sub(up_ms);
        let n = tail.unwrap_or(records.len()).min(records.len());
        let lines = records[records.len() - n..]
            .iter()
            .map(|(usec, msg)| LogLine {
                time_ms: boot_ms.saturating_add(usec / 1000),
                line: facts::format_kmsg(*usec, msg),
            })
            .collect();
        Ok(Reply::Logs(LogLines { lines }))
    }

    fn apply_config(&self, new: MachineConfig) -> Result<Reply, ApiError> {
        applied::check(&self.config, &new)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
        let yaml = new
            .to_yaml()
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        applied::store(&self.root, &yaml, &self.fw_cfg_digest).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot store the config on the state disk: {e}"),
            )
        })?;
        super::console::say("machined: config applied; it takes effect on the next boot");
        Ok(Reply::Accepted(Accepted { accepted: true }))
    }
}

impl Controller for NodeController {
    async fn execute(&self, action: Action) -> Result<Reply, ApiError> {
        match action {
            Action::Version => Ok(Reply::Version(VersionInfo {
                version: ironclad_contract::VERSION.to_string(),
                api: "v1".to_string(),
                node: self.config.node.name.to_string(),
            })),
            Action::Health => {
                let statuses = self.services.statuses();
                let etcd_bootstrapped = self.etcd.is_some()
                    && self
                        .services
                        .status(etcd::SERVICE)
                        .is_some_and(|s| !matches!(s.state, supervisor::ServiceState::Stopped));
                Ok(Reply::Health(Health {
                    healthy: healthy(&statuses),
                    etcd_bootstrapped,
                    time_unix_ms: Health::now_unix_ms(),
                    boot_id: boot_id(&self.root),
                }))
            }
            Action::ListServices => Ok(Reply::Services(ServiceList {
                services: self.services.statuses().iter().map(api_status).collect(),
            })),
            Action::Service { name, op } => {
                let st = match op {
                    ServiceOp::Start => self.services.start_service(&name),
                    ServiceOp::Stop => self.services.stop_service(&name).await,
                    ServiceOp::Restart => self.services.restart_service(&name).await,
                }
                .map_err(supervisor_error)?;
                Ok(Reply::Service(api_status(&st)))
            }
            Action::Logs { service, tail } => {
                let (lines, _) = self
                    .services
                    .follow(&service, tail)
                    .ok_or_else(|| no_service(&service))?;
                Ok(Reply::Logs(LogLines {
                    lines: lines.into_iter().map(line).collect(),
                }))
            }
            Action::Dmesg { tail } => self.dmesg(tail).await,
            Action::ApplyConfig(cfg) => self.apply_config(*cfg),
            Action::Reboot => self.power(PowerAction::Reboot),
            Action::Shutdown => self.power(PowerAction::PowerOff),
            Action::MatrixRun(req) => {
                let env = super::matrix::NodeEnv::from_machine_config(&self.config);
                super::matrix::run(&req, &env).await.map(Reply::Matrix)
            }
            a @ (Action::Bootstrap
            | Action::EtcdMembers
            | Action::EtcdAddLearner(_)
            | Action::EtcdPromote { .. }
            | Action::EtcdRemove { .. }
            | Action::EtcdJoin(_)
            | Action::EtcdPut(_)
            | Action::EtcdGet { .. }) => match &self.etcd {
                Some(etcd) => etcd.execute(a, &self.services).await,
                None => Err(no_etcd(&self.config.node.name)),
            },
        }
    }

    async fn follow_logs(
        &self,
        service: String,
        tail: Option<usize>,
    ) -> Result<BoxStream<'static, LogLine>, ApiError> {
        let (past, rx) = self
            .services
            .follow(&service, tail)
            .ok_or_else(|| no_service(&service))?;
        Ok(follow_stream(past, rx))
    }
}

/// The buffered lines, then every new line; a follower that falls more than
/// the broadcast buffer behind gets one marker line saying how many it missed.
pub fn follow_stream(
    past: Vec<Line>,
    rx: broadcast::Receiver<Line>,
) -> BoxStream<'static, LogLine> {
    let live = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(l) => Some((line(l), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let marker = LogLine {
                    time_ms: supervisor::now_ms(),
                    line: format!("[machined: {n} lines skipped: reader too slow]"),
                };
                Some((marker, rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    futures::stream::iter(past.into_iter().map(line))
        .chain(live)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::config;
    use crate::reaper::{ReapMode, Reaper};
    use crate::supervisor::{ServiceSpec, Settings};
    use std::time::Duration;

    const T: Duration = Duration::from_secs(20);

    fn controller(
        dir: &std::path::Path,
        worker: bool,
    ) -> (NodeController, mpsc::Receiver<PowerAction>) {
        let reaper = Reaper::new(ReapMode::Own);
        tokio::spawn(reaper.clone().run());
        let talker = ServiceSpec::new(
            "talker",
            "/bin/sh",
            &["-c", "echo one; echo two; exec sleep 30"],
        );
        let mut idle = ServiceSpec::new("idle", "/bin/sleep", &["30"]);
        idle.autostart = false;
        let h = supervisor::start(reaper, Settings::default(), vec![talker, idle]).unwrap();
        let mut cfg = config(false);
        if worker {
            cfg.etcd = None;
        }
        let (tx, rx) = mpsc::channel(1);
        let etcd = Etcd::new(&cfg, dir);
        (
            NodeController {
                config: cfg,
                fw_cfg_digest: "base".into(),
                services: h,
                etcd,
                power: tx,
                root: dir.to_path_buf(),
            },
            rx,
        )
    }

    /// Runs `op` on the service `name` through the controller.
    async fn service(c: &NodeController, name: &str, op: ServiceOp) -> Result<Reply, ApiError> {
        c.execute(Action::Service {
            name: name.parse().unwrap(),
            op,
        })
        .await
    }

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status =
            "Name:\tetcd\nVmPeak:\t  900000 kB\nVmRSS:\t   41236 kB\nRssAnon:\t 20000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(41236));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    #[tokio::test]
    async fn services_logs_and_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _rx) = controller(dir.path(), false);
        let Reply::Version(v) = c.execute(Action::Version).await.unwrap() else {
            panic!()
        };
        assert_eq!(v.node, "cp1");
        c.services
            .wait_for("talker", T, |s| {
                s.state == supervisor::ServiceState::Running
            })
            .await
            .unwrap();
        let Reply::Services(l) = c.execute(Action::ListServices).await.unwrap() else {
            panic!()
        };
        let names: Vec<_> = l.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["talker", "idle"]);
        assert_eq!(l.services[1].state, ServiceState::Stopped);
        // A running service's process has its resident memory; a stopped
        // one none.
        assert!(l.services[0].rss_kib.is_some_and(|k| k > 0), "{l:?}");
        assert_eq!(l.services[1].rss_kib, None);
        let Reply::Health(h) = c.execute(Action::Health).await.unwrap() else {
            panic!()
        };
        assert!(h.healthy);

        // Tail, then follow sees the line that comes later.
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let Reply::Logs(l) = c
                .execute(Action::Logs {
                    service: "talker".parse().unwrap(),
                    tail: Some(1),
                })
                .await
                .unwrap()
            else {
                panic!()
            };
            if l.lines.len() == 1 && l.lines[0].line == "two" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = c.follow_logs("talker".into(), Some(2)).await.unwrap();
        assert_eq!(s.next().await.unwrap().line, "one");
        assert_eq!(s.next().await.unwrap().line, "two");

        let e = service(&c, "nope", ServiceOp::Restart).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(c.follow_logs("nope".into(), None).await.is_err());
        let Ok(Reply::Service(st)) = service(&c, "idle", ServiceOp::Start).await else {
            panic!()
        };
        assert_eq!(st.name, "idle");
        let Ok(Reply::Service(st)) = service(&c, "idle", ServiceOp::Stop).await else {
            panic!()
        };
        assert_eq!(st.state, ServiceState::Stopped);
        c.services.shutdown().await;
    }

    #[tokio::test]
    async fn follow_streams_new_lines() {
        let (tx, rx) = broadcast::channel(4);
        let past = vec![Line {
            time_ms: 1,
            text: "old".into(),
        }];
        let mut s = follow_stream(past, rx);
        tx.send(Line {
            time_ms: 2,
            text: "new".into(),
        })
        .unwrap();
        assert_eq!(s.next().await.unwrap().line, "old");
        assert_eq!(s.next().await.unwrap().line, "new");
        for i in 0..10 {
            let _ = tx.send(Line {
                time_ms: 3,
                text: format!("x{i}"),
            });
        }
        assert!(s.next().await.unwrap().line.contains("skipped"));
        drop(tx);
        let rest: Vec<_> = s.collect().await;
        assert_eq!(rest.len(), 4);
    }

    #[tokio::test]
    async fn worker_has_no_etcd_and_power_is_accepted_once_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (c, mut rx) = controller(dir.path(), true);
        let e = c.execute(Action::EtcdMembers).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("no etcd"));
        assert!(matches!(
            c.execute(Action::Reboot).await.unwrap(),
            Reply::Accepted(_)
        ));
        assert!(matches!(
            c.execute(Action::Shutdown).await.unwrap(),
            Reply::Accepted(_)
        ));
        assert_eq!(rx.recv().await, Some(PowerAction::Reboot));
        drop(rx);
        let e = c.execute(Action::Reboot).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        c.services.shutdown().await;
    }

    #[tokio::test]
    async fn apply_config_stores_for_the_next_boot_and_refuses_other_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _rx) = controller(dir.path(), false);
        let mut other = c.config.clone();
        other.node.name = "w7".parse().unwrap();
        let e = c
            .execute(Action::ApplyConfig(Box::new(other)))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(!dir.path().join(applied::STORED).exists());
        let same = c.config.clone();
        c.execute(Action::ApplyConfig(Box::new(same)))
            .await
            .unwrap();
        assert!(dir.path().join(applied::STORED).exists());
        c.services.shutdown().await;
    }

    #[tokio::test]
    async fn dmesg_reads_kmsg_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/kmsg"), "6,1,1500000,-;booted\n").unwrap();
        let (c, _rx) = controller(dir.path(), true);
        let Reply::Logs(l) = c.execute(Action::Dmesg { tail: Some(5) }).await.unwrap() else {
            panic!()
        };
        assert_eq!(l.lines.len(), 1);
        assert_eq!(l.lines[0].line, "[    1.500000] booted");
        c.services.shutdown().await;
    }

    #[tokio::test]
    async fn follow_gets_lines_written_after_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("go");
        let reaper = Reaper::new(ReapMode::Own);
        tokio::spawn(reaper.clone().run());
        let script = format!(
            "echo first; while [ ! -e {} ]; do sleep 0.05; done; echo late; exec sleep 30",
            flag.display()
        );
        let svc = ServiceSpec::new("slow", "/bin/sh", &["-c", &script]);
        let h = supervisor::start(reaper, Settings::default(), vec![svc]).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let c = NodeController {
            config: config(false),
            fw_cfg_digest: "base".into(),
            services: h.clone(),
            etcd: None,
            power: tx,
            root: dir.path().to_path_buf(),
        };
        let mut s = c.follow_logs("slow".into(), Some(10)).await.unwrap();
        let first = tokio::time::timeout(T, s.next()).await.unwrap().unwrap();
        assert_eq!(first.line, "first");
        std::fs::write(&flag, b"").unwrap();
        let late = tokio::time::timeout(T, s.next()).await.unwrap().unwrap();
        assert_eq!(late.line, "late");
        h.shutdown().await;
    }
}
