//! An in-memory [`Controller`]: services, logs, etcd membership and keys held
//! in process memory. It is the controller apid's tests run against and a
//! reference for the real one (which supervises processes and talks to etcd);
//! it starts and stops nothing real.

use super::Controller;
use crate::api::{
    Accepted, Action, AddLearnerRequest, ApiError, ErrorCode, EtcdMember, EtcdMembers, Health,
    JoinRequest, KvValue, LogLine, LogLines, MatrixRunRequest, Reply, ServiceList, ServiceOp,
    ServiceState, ServiceStatus, VersionInfo,
};
use crate::machine::MachineConfig;
use futures::stream::{BoxStream, StreamExt};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// How many lines each service's buffer keeps.
const LOG_KEEP: usize = 1000;

struct Service {
    status: ServiceStatus,
    lines: Vec<LogLine>,
    tx: broadcast::Sender<LogLine>,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, Service>,
    dmesg: Vec<LogLine>,
    bootstrapped: bool,
    members: Vec<EtcdMember>,
    next_id: u64,
    kv: BTreeMap<String, String>,
    applied: u32,
    power: Option<&'static str>,
    /// Reboots so far: each gives the node another boot id at once.
    reboots: u64,
}

/// The in-memory controller.
pub struct MemoryController {
    node: String,
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn tail_of(lines: &[LogLine], tail: Option<usize>) -> Vec<LogLine> {
    let n = tail.unwrap_or(lines.len()).min(lines.len());
    lines[lines.len() - n..].to_vec()
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such {what}"))
}

impl MemoryController {
    /// A node called `node` with the given services, all `running`.
    pub fn new(node: &str, services: &[&str]) -> Self {
        let mut state = State {
            next_id: 1,
            ..State::default()
        };
        for s in services {
            state.services.insert(
                (*s).to_string(),
                Service {
                    status: ServiceStatus {
                        name: (*s).to_string(),
                        state: ServiceState::Running,
                        restarts: 0,
                        last_error: None,
                        rss_kib: None,
                    },
                    lines: Vec::new(),
                    tx: broadcast::channel(256).0,
                },
            );
        }
        MemoryController {
            node: node.to_string(),
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line to `service`'s log (and to followers). False if unknown.
    pub fn log(&self, service: &str, line: &str) -> bool {
        let mut st = self.lock();
        let Some(svc) = st.services.get_mut(service) else {
            return false;
        };
        let entry = LogLine {
            time_ms: now_ms(),
            line: line.to_string(),
        };
        svc.lines.push(entry.clone());
        if svc.lines.len() > LOG_KEEP {
            svc.lines.remove(0);
        }
        // No follower is not an error.
        let _ = svc.tx.send(entry);
        true
    }

    /// Appends a kernel message.
    pub fn kernel(&self, line: &str) {
        self.lock().dmesg.push(LogLine {
            time_ms: now_ms(),
            line: line.to_string(),
        });
    }

    /// How many followers `service` has now.
    pub fn followers(&self, service: &str) -> usize {
        self.lock()
            .services
            .get(service)
            .map_or(0, |s| s.tx.receiver_count())
    }

    /// The power action requested (`reboot` or `shutdown`), if any.
    pub fn power_request(&self) -> Option<&'static str> {
        self.lock().power
    }

    /// How many configs were applied.
    pub fn applied_configs(&self) -> u32 {
        self.lock().applied
    }

    fn member_mut(st: &mut State, id: u64) -> Result<&mut EtcdMember, ApiError> {
        st.members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| not_found("etcd member"))
    }

    fn need_etcd(st: &State) -> Result<(), ApiError> {
        if st.bootstrapped {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "etcd is not running on this node",
            ))
        }
    }

    /// Applies `action` to the state: one handler per action.
    fn act(&self, action: Action) -> Result<Reply, ApiError> {
        let mut st = self.lock();
        let st = &mut *st;
        match action {
            Action::Version => Ok(self.version()),
            Action::Health => Ok(health(st)),
            Action::ListServices => Ok(Reply::Services(ServiceList {
                services: st.services.values().map(|s| s.status.clone()).collect(),
            })),
            Action::Service { name, op } => service_op(st, name.as_str(), op),
            Action::Logs { service, tail } => {
                let svc = st
                    .services
                    .get(service.as_str())
                    .ok_or_else(|| not_found("service"))?;
                Ok(logs(&svc.lines, tail))
            }
            Action::Dmesg { tail } => Ok(logs(&st.dmesg, tail)),
            Action::Bootstrap => self.bootstrap(st),
            Action::EtcdMembers => {
                Self::need_etcd(st)?;
                Ok(Reply::Members(EtcdMembers {
                    members: st.members.clone(),
                }))
            }
            Action::EtcdAddLearner(req) => add_learner(st, req),
            Action::EtcdPromote { id } => promote(st, id),
            Action::EtcdRemove { id } => {
                Self::need_etcd(st)?;
                Self::member_mut(st, id)?;
                st.members.retain(|m| m.id != id);
                Ok(accepted())
            }
            Action::EtcdJoin(req) => self.join(st, &req),
            Action::EtcdPut(req) => {
                Self::need_etcd(st)?;
                st.kv.insert(req.key, req.value);
                Ok(accepted())
            }
            Action::EtcdGet { key } => {
                Self::need_etcd(st)?;
                let value = st.kv.get(&key).cloned();
                Ok(Reply::Kv(KvValue { key, value }))
            }
            Action::ApplyConfig(cfg) => self.apply_config(st, &cfg),
            Action::Reboot => Ok(power(st, "reboot")),
            Action::Shutdown => Ok(power(st, "shutdown")),
            Action::MatrixRun(req) => self.matrix_skips(&req),
        }
    }

    fn version(&self) -> Reply {
        Reply::Version(VersionInfo {
            version: ironclad_contract::VERSION.to_string(),
            api: "v1".to_string(),
            node: self.node.clone(),
        })
    }

    /// Bootstraps etcd once: this node becomes its only member.
    fn bootstrap(&self, st: &mut State) -> Result<Reply, ApiError> {
        if st.bootstrapped {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "etcd is already bootstrapped",
            ));
        }
        st.bootstrapped = true;
        let id = st.next_id;
        st.next_id += 1;
        st.members.push(EtcdMember {
            id,
            name: self.node.clone(),
            peer_urls: vec!["https://127.0.0.1:2380".to_string()],
            client_urls: vec!["https://127.0.0.1:2379".to_string()],
            is_learner: false,
        });
        Ok(accepted())
    }

    /// Joins an etcd cluster whose initial members name this node.
    fn join(&self, st: &mut State, req: &JoinRequest) -> Result<Reply, ApiError> {
        if st.bootstrapped {
            return Err(ApiError::new(ErrorCode::Conflict, "etcd already runs here"));
        }
        if !req.initial_cluster.iter().any(|m| m.name == self.node) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the initial cluster must name this node",
            ));
        }
        st.bootstrapped = true;
        Ok(accepted())
    }

    fn apply_config(&self, st: &mut State, cfg: &MachineConfig) -> Result<Reply, ApiError> {
        if cfg.node.name != self.node {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the config is for another node",
            ));
        }
        st.applied += 1;
        Ok(accepted())
    }

    /// No containerd here: every node-level check of the selection is an
    /// explicit skip.
    fn matrix_skips(&self, req: &MatrixRunRequest) -> Result<Reply, ApiError> {
        use ironclad_contract::matrix::{self, CheckResult, NodeMatrixReport, Runner, Verdict};
        let checks = matrix::select(&req.checks, req.destructive)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
        let results = checks
            .iter()
            .filter(|c| c.runner == Runner::Node)
            .map(|c| {
                CheckResult::new(
                    c.id.as_str(),
                    &self.node,
                    Verdict::skip("memory controller: no containerd"),
                    vec![],
                )
            })
            .collect();
        Ok(Reply::Matrix(NodeMatrixReport {
            node: self.node.clone(),
            runtime: "none".into(),
            image_manifest_sha256: None,
            results,
            duration_ms: 0,
            steps: Vec::new(),
        }))
    }
}

fn accepted() -> Reply {
    Reply::Accepted(Accepted { accepted: true })
}

/// Healthy while no service has failed; each reboot request gives another
/// boot id (the node "rebooted" at once).
fn health(st: &State) -> Reply {
    Reply::Health(Health {
        healthy: st
            .services
            .values()
            .all(|s| s.status.state != ServiceState::Failed),
        etcd_bootstrapped: st.bootstrapped,
        time_unix_ms: Health::now_unix_ms(),
        boot_id: Some(format!("00000000-0000-4000-8000-{:012x}", st.reboots)),
    })
}

fn logs(lines: &[LogLine], tail: Option<usize>) -> Reply {
    Reply::Logs(LogLines {
        lines: tail_of(lines, tail),
    })
}

fn service_op(st: &mut State, name: &str, op: ServiceOp) -> Result<Reply, ApiError> {
    let svc = st
        .services
        .get_mut(name)
        .ok_or_else(|| not_found("service"))?;
    match op {
        ServiceOp::Start => svc.status.state = ServiceState::Running,
        ServiceOp::Stop => svc.status.state = ServiceState::Stopped,
        ServiceOp::Restart => {
            svc.status.state = ServiceState::Running;
            svc.status.restarts += 1;
        }
    }
    Ok(Reply::Service(svc.status.clone()))
}

fn add_learner(st: &mut State, req: AddLearnerRequest) -> Result<Reply, ApiError> {
    MemoryController::need_etcd(st)?;
    if st.members.iter().any(|m| m.name == req.name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "member name already in use",
        ));
    }
    let id = st.next_id;
    st.next_id += 1;
    let m = EtcdMember {
        id,
        name: req.name,
        peer_urls: vec![req.peer_url],
        client_urls: Vec::new(),
        is_learner: true,
    };
    st.members.push(m.clone());
    Ok(Reply::Member(m))
}

fn promote(st: &mut State, id: u64) -> Result<Reply, ApiError> {
    MemoryController::need_etcd(st)?;
    let m = MemoryController::member_mut(st, id)?;
    if !m.is_learner {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "member is not a learner",
        ));
    }
    m.is_learner = false;
    Ok(Reply::Member(m.clone()))
}

fn power(st: &mut State, what: &'static str) -> Reply {
    st.power = Some(what);
    if what == "reboot" {
        st.reboots += 1;
    }
    accepted()
}

impl Controller for MemoryController {
    async fn execute(&self, action: Action) -> Result<Reply, ApiError> {
        // A node without the host-loopback block: NET-02 reaches the host's
        // port (here the host's own 127.0.0.1), so that the host's half of
        // the check can be seen to catch it.
        let reach = match &action {
            Action::MatrixRun(req) if req.checks.iter().any(|c| c == "NET-02") => req.host_port,
            _ => None,
        };
        let mut reply = self.act(action)?;
        if let (Some(port), Reply::Matrix(report)) = (reach, &mut reply) {
            let seen = reach_host_port(port).await;
            for r in report.results.iter_mut().filter(|r| r.id == "NET-02") {
                r.evidence.push(seen.clone());
            }
        }
        Ok(reply)
    }

    async fn follow_logs(
        &self,
        service: String,
        tail: Option<usize>,
    ) -> Result<BoxStream<'static, LogLine>, ApiError> {
        let (past, rx) = {
            let st = self.lock();
            let svc = st
                .services
                .get(&service)
                .ok_or_else(|| not_found("service"))?;
            (tail_of(&svc.lines, tail), svc.tx.subscribe())
        };
        let live = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(line) => return Some((line, rx)),
                    // A slow follower skips what it missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(futures::stream::iter(past).chain(live).boxed())
    }
}

/// Connects to the host's `port` on 127.0.0.1 and waits until the listener
/// has taken the connection (and closed it); says what happened.
async fn reach_host_port(port: u16) -> String {
    use tokio::io::AsyncReadExt;
    let attempt = async {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut buf = [0u8; 16];
        while c.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => format!("memory controller: reached 127.0.0.1:{port}"),
        Ok(Err(e)) => format!("memory controller: 127.0.0.1:{port}: {e}"),
        Err(_) => format!("memory controller: 127.0.0.1:{port}: no close within 5 s"),
    }
}
