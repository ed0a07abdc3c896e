//! The node side of the matrix: machined runs the CRI-level checks of
//! MATRIX.md on request (`POST /v1/matrix/run`), starting attacker workloads
//! through containerd's CRI ([`crate::cri`]) the way a kubelet would,
//! and turns each probe's output into a verdict with evidence.
//!
//! One pod per variant is started lazily and reused by every check that needs
//! it (TCG is slow); every pod is removed at the end, whatever happened, and so
//! is any leftover of an earlier run (sandboxes carry [`crate::cri::LABEL`]).
//!
//! Attacks that a plain privileged container cannot be stopped from on a
//! shared kernel (BRK-02, BRK-04..09 for `priv`; the catalog names what
//! would block each) are EXPOSED when that variant gets through, never PASS:
//! the `userns` and `gvisor` variants of the same attack getting through
//! makes them FAIL. Probes are non-destructive: writability is tested by
//! opening for append without writing, sysrq with `h` (help).
//!
//! Evaluation is pure ([`evaluate`], [`attack_verdict`], [`compare_sysctls`])
//! and unit-tested; the probes themselves run against a real containerd in
//! `tests/cri_host.rs` and on the nodes.
//!
//! This module owns the run (serialization, waiting for containerd and the
//! toolbox image, cleanup, the report) and the dispatch: [`handler`] maps
//! every [`CheckId`] to its runner with an exhaustive match. The rest lives
//! beside it: `pods` (the pod pool of a run), `batch` (the probes of a pod in
//! one exec), and one module per family with its probe scripts, evaluators
//! and runners: `breakout` (BRK-*), `runtime` (RT-*), `network` (NET-* and
//! the TCP probe helpers) and `conformance` (CONF-03, CONF-04).

mod batch;
mod breakout;
mod conformance;
mod network;
mod pods;
mod runtime;

pub use batch::{batch_script, split_batch, timed_out};
pub use breakout::{
    Outcome, POWER_OFF_DELAY, SYSRQ_O_SCRIPT, UNPROTECTABLE, attack_verdict, brk10_detail,
    brk10_script, evaluate, script,
};
pub use conformance::conf04;
pub use network::{
    CONNECTED, NODE_PORTS, connect_script, net_counters, net01, net01_script, net02, net02_script,
    refusals, tcp_outcomes,
};
pub use runtime::{
    RT03_SCRIPT, RT06_CGROUP, RT06_PIDS_MAX, RT06_SCRIPT, cap_eff, compare_sysctls, rt01, rt02,
    rt03, rt04, rt06_cgroup_dir, rt06_eval, rt08, rt09, status_field, sysctl_path,
};

use super::cri::{Cri, InFlight};
use crate::api::{ApiError, ErrorCode, MatrixRunRequest};
use batch::Outputs;
use futures::future::BoxFuture;
use ironclad_contract::matrix::{CheckId, CheckResult, NodeMatrixReport, Runner, Verdict};
use pods::Pods;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A file that exists on the node's root and in no container image: seeing it
/// means seeing the node's filesystem.
pub const NODE_MARKER: &str = ironclad_contract::layout::MANIFEST;
/// The recipe's declared sysctls in the image.
pub const SYSCTL_JSON: &str = ironclad_contract::layout::SYSCTL_JSON;
/// The QEMU user-net gateway (the host, seen from the guest).
pub const USERNET_GATEWAY: &str = "10.0.2.2";
/// How long one probe may run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the executor needs to know about the node it runs on.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    pub node: String,
    /// containerd's socket.
    pub socket: PathBuf,
    /// The node's root (`/`; a temp dir in tests) for /proc/sys and the image files.
    pub root: PathBuf,
    /// The toolbox image reference.
    pub toolbox_image: String,
    /// Pods share the node's network (no CNI): only for hosts without CNI.
    pub host_network: bool,
    /// Runtime handlers registered in containerd (runc always).
    pub runtimes: Vec<String>,
    /// Whether the cluster file turned user namespaces on.
    pub user_namespaces: bool,
    /// Whether the cluster has egress to the outside.
    pub egress: bool,
    /// The other members' node API addresses on the cluster network.
    pub peers: Vec<(String, SocketAddr)>,
    /// The node's own addresses (user-mode NIC, cluster), where BRK-10's
    /// pods knock besides their gateway.
    pub addresses: Vec<Ipv4Addr>,
    /// The host's loopback port NET-02 tries through 10.0.2.2 (from the
    /// request: the host side listens there for the run).
    pub host_port: Option<u16>,
    /// How long a run waits for containerd to answer: `ready` does not wait
    /// for it, so a run asked for right after boot finds it starting.
    pub containerd_wait: Duration,
    /// How long a run may take before it answers with what it has
    /// ([`RUN_BUDGET`] on a node).
    pub run_budget: Duration,
}

impl NodeEnv {
    /// The environment of a node from its machine config.
    pub fn from_machine_config(cfg: &crate::machine::MachineConfig) -> NodeEnv {
        let mut runtimes = vec!["runc".to_string()];
        for r in &cfg.containerd.runtimes {
            if !runtimes.contains(r) {
                runtimes.push(r.clone());
            }
        }
        NodeEnv {
            node: cfg.node.name.to_string(),
            socket: PathBuf::from(super::containerd::SOCKET),
            root: PathBuf::from("/"),
            toolbox_image: ironclad_contract::layout::TOOLBOX_REF.to_string(),
            host_network: false,
            runtimes,
            user_namespaces: cfg.containerd.user_namespaces,
            egress: cfg.cluster.egress,
            peers: cfg
                .cluster
                .members
                .iter()
                .filter(|m| m.name != cfg.node.name)
                .map(|m| {
                    (
                        m.name.to_string(),
                        SocketAddr::from((m.address, crate::machine::API_PORT)),
                    )
                })
                .collect(),
            addresses: vec![crate::machine::USER_NET_GUEST, cfg.node.address],
            host_port: None,
            containerd_wait: CONTAINERD_WAIT,
            run_budget: RUN_BUDGET,
        }
    }

    fn has_runtime(&self, name: &str) -> bool {
        self.runtimes.iter().any(|r| r == name)
    }
}

/// The output folded to one line of at most 300 characters.
fn summarize(text: &str) -> String {
    let one: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let s = one.join(" | ");
    if s.chars().count() > 300 {
        let mut t: String = s.chars().take(300).collect();
        t.push('…');
        t
    } else if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:x}{:04x}", t, rand::random::<u16>())
}

/// Runs the requested node-level checks and returns the node's results.
///
/// Unknown ids are `bad_request`; destructive checks without `destructive`
/// too; host-level ids are ignored (the host runs them). containerd not
/// answering is `unavailable`.
///
/// Runs are serialized: a second request waits for the first (each removes
/// every labelled pod, so two at once would break each other). The run is its
/// own task: it answers once its checks are done and then removes its pods
/// (20–30 s of gVisor sandbox teardown under TCG that the caller does not
/// wait for); a failed removal is said on the console, and the next run
/// waits for the removal and clears any leftover first. If the caller goes
/// away (the HTTP client hung up), the run still finishes and removes its
/// pods.
///
/// A run answers within [`NodeEnv::run_budget`]: past it, every check it
/// was asked for is a FAIL whose evidence names the steps still in flight
/// (CRI calls with their pod or container, the waits for containerd and the
/// toolbox image), and the run goes on in the background to remove its pods.
pub async fn run(req: &MatrixRunRequest, env: &NodeEnv) -> Result<NodeMatrixReport, ApiError> {
    let started = Instant::now();
    let (req, mut env) = (req.clone(), env.clone());
    if req.host_port.is_some() {
        env.host_port = req.host_port;
    }
    let ids = node_ids(&req)?;
    let inflight = InFlight::default();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let task = {
        let (inflight, env, ids) = (inflight.clone(), env.clone(), ids.clone());
        tokio::spawn(async move {
            static RUN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            let _one_at_a_time = {
                let _w = inflight.track("waiting for an earlier matrix run on this node to end");
                RUN_LOCK.lock().await
            };
            run_locked(&ids, &env, &inflight, answer).await;
        })
    };
    match tokio::time::timeout(env.run_budget, answered).await {
        Ok(Ok(report)) => report,
        // The task ended without answering: it panicked or was aborted.
        Ok(Err(_)) => Err(ApiError::new(
            ErrorCode::Internal,
            match task.await {
                Err(e) => format!("matrix run aborted: {e}"),
                Ok(()) => "matrix run ended without an answer".to_string(),
            },
        )),
        Err(_) => {
            let stuck = inflight.describe();
            let why = format!(
                "the node's run did not finish within its budget of {} s; still in flight: {}; \
                 the run goes on in the background and removes its pods",
                env.run_budget.as_secs(),
                if stuck.is_empty() {
                    "nothing tracked".to_string()
                } else {
                    stuck.join("; ")
                }
            );
            crate::console::say(&format!("machined: matrix: {why}"));
            Ok(NodeMatrixReport {
                node: env.node.clone(),
                runtime: String::new(),
                image_manifest_sha256: manifest_sha256(&env),
                results: ids
                    .iter()
                    .map(|id| {
                        CheckResult::new(id.as_str(), &env.node, Verdict::Fail, vec![why.clone()])
                    })
                    .collect(),
                duration_ms: started.elapsed().as_millis() as u64,
                steps: inflight.finished(),
            })
        }
    }
}

/// The node's share of the checks `req` asks for, in catalog order.
fn node_ids(req: &MatrixRunRequest) -> Result<Vec<CheckId>, ApiError> {
    let checks = ironclad_contract::matrix::select(&req.checks, req.destructive)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    Ok(checks
        .iter()
        .filter(|c| c.runner == Runner::Node)
        .map(|c| c.id)
        .collect())
}

/// The sha256 of the node's image manifest, when it has one.
fn manifest_sha256(env: &NodeEnv) -> Option<String> {
    let manifest = env.root.join(NODE_MARKER.trim_start_matches('/'));
    std::fs::read(&manifest)
        .ok()
        .map(|data| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)))
}

/// How long a node's run may take before it answers with what it has
/// ([`NodeEnv::run_budget`]): well under the host's request timeout
/// (15 min), and about three times a run of every check with gVisor on a
/// busy TCG node.
pub const RUN_BUDGET: Duration = Duration::from_secs(600);

/// How long a run waits for the offline images to be imported.
const IMAGE_WAIT: Duration = Duration::from_secs(180);
/// How long a node's run waits for containerd to answer ([`NodeEnv::containerd_wait`]).
pub const CONTAINERD_WAIT: Duration = Duration::from_secs(120);

/// What a run answers: its report, or why it could not run.
type Answer = tokio::sync::oneshot::Sender<Result<NodeMatrixReport, ApiError>>;

/// Runs the checks, sends the report to `answer`, then removes the run's
/// pods.
async fn run_locked(ids: &[CheckId], env: &NodeEnv, inflight: &InFlight, answer: Answer) {
    let started = Instant::now();
    // `ready` does not wait for containerd, and machined imports the offline
    // images after containerd answers: a run asked for at once waits for
    // both (bounded).
    let deadline = Instant::now() + env.containerd_wait;
    let waiting = inflight.track("waiting for containerd to answer");
    let (mut client, version) = loop {
        let reply = match Cri::connect_tracked(&env.socket, inflight.clone()).await {
            Ok(mut c) => c.version().await.map(|v| (c, v)),
            Err(e) => Err(e),
        };
        match reply {
            Ok(ok) => break ok,
            Err(e) if Instant::now() >= deadline => {
                let _ = answer.send(Err(ApiError::new(ErrorCode::Unavailable, e.to_string())));
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    drop(waiting);
    let runtime = format!("{} {}", version.runtime_name, version.runtime_version);
    // Leftovers of an interrupted run.
    let _ = client.remove_labelled().await;
    let deadline = Instant::now() + IMAGE_WAIT;
    let waiting = inflight.track(format!("waiting for image {}", env.toolbox_image));
    let image_ok = loop {
        let present = client.image_present(&env.toolbox_image).await;
        if !matches!(present, Ok(false)) || Instant::now() >= deadline {
            break present;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    drop(waiting);
    let mut pods = Pods::new(client, env, run_id());
    let mut results = Vec::new();
    match image_ok {
        Ok(true) => run_checks(ids, &mut pods, &mut results).await,
        other => {
            let why = match other {
                Ok(_) => format!("image {} is not in containerd", env.toolbox_image),
                Err(e) => e.to_string(),
            };
            for id in ids {
                results.push(CheckResult::new(
                    id.as_str(),
                    &env.node,
                    Verdict::Fail,
                    vec![why.clone()],
                ));
            }
        }
    }
    let _ = answer.send(Ok(NodeMatrixReport {
        node: env.node.clone(),
        runtime,
        image_manifest_sha256: manifest_sha256(env),
        results,
        duration_ms: started.elapsed().as_millis() as u64,
        steps: inflight.finished(),
    }));
    let errors = pods.cleanup().await;
    if !errors.is_empty() {
        crate::console::say(&format!(
            "machined: matrix: removing the run's pods failed: {}",
            errors.join("; ")
        ));
    }
}

/// A check's verdict and the evidence behind it.
pub type Finding = (Verdict, Vec<String>);

/// What the checks read once the variants' batches (and CONF-03's job pods
/// beside them) are done.
pub(crate) struct Batches {
    /// Each variant's probe outputs.
    pub(crate) outputs: Outputs,
    /// What the node's kernel answered to blocked connections meanwhile
    /// ([`network::refusals`]).
    pub(crate) refusals: String,
    /// CONF-03's finding, when it was asked for.
    pub(crate) conf03: Option<Finding>,
}

/// A check evaluated from the batches (its duration is theirs).
type FromBatch = fn(CheckId, &Batches, &NodeEnv) -> Finding;
/// A check that does its own work after the batches (timed on its own).
type OwnRun = for<'a, 'b> fn(&'a mut Pods<'b>, &'a Batches) -> BoxFuture<'a, Finding>;

/// How the node runs a check.
pub(crate) enum Handler {
    /// Evaluated from the probes the variants' pods ran in their batches.
    Batch(FromBatch),
    /// Runs on its own after the batches.
    Own(OwnRun),
    /// Runs after every other check: it ends with the node powering off.
    Last(OwnRun),
    /// The host runs it (node API, TLS, etcd, clocks): never asked of a node.
    Host,
}

/// The node's runner of every catalogued check. The match is exhaustive
/// with no wildcard: a check added to the catalog does not build until it
/// has a runner here, or is marked as the host's.
pub(crate) fn handler(id: CheckId) -> Handler {
    use ironclad_contract::matrix::CheckId::*;
    match id {
        Brk01 | Brk02 | Brk03 | Brk04 | Brk05 | Brk06 | Brk07 | Brk08 | Brk09 | Brk10 => {
            Handler::Batch(breakout::check)
        }
        Brk04O => Handler::Last(|pods, _| Box::pin(breakout::sysrq_power_off(pods))),
        Rt01 => Handler::Batch(runtime::rt01_check),
        Rt02 => Handler::Batch(runtime::rt02_check),
        Rt03 => Handler::Batch(runtime::rt03_check),
        Rt04 => Handler::Batch(runtime::rt04_check),
        Rt06 => Handler::Own(|pods, _| Box::pin(runtime::rt06(pods))),
        Rt07 => Handler::Own(|pods, _| Box::pin(std::future::ready(runtime::rt07(&pods.env.root)))),
        Rt08 => Handler::Batch(runtime::rt08_check),
        Rt09 => Handler::Batch(runtime::rt09_check),
        Rt10 => Handler::Batch(runtime::rt10_check),
        Net01 => Handler::Batch(network::net01_check),
        Net02 => Handler::Own(|pods, batches| Box::pin(network::net02_check(pods.env, batches))),
        Conf03 => Handler::Batch(conformance::conf03_check),
        Conf04 => Handler::Own(|pods, _| Box::pin(conformance::conf04(&pods.env.peers))),
        Api04 | Conf01 | Conf02 | Conf05 => Handler::Host,
    }
}

/// Runs the node's checks `ids` (catalog order): every variant's batch and
/// CONF-03's job pods at once, then each check through its [`handler`],
/// the power-off last. Results come in the order of `ids`.
async fn run_checks(ids: &[CheckId], pods: &mut Pods<'_>, results: &mut Vec<CheckResult>) {
    let node = pods.env.node.clone();
    let t = Instant::now();
    // CONF-03's job pods run beside the variants' pods.
    let conf03_job = {
        let (cri, env, run_id) = (pods.cri.clone(), pods.env.clone(), pods.run_id.clone());
        let wanted = ids.contains(&CheckId::Conf03);
        async move {
            if wanted {
                Some(conformance::conf03(cri, &env, &run_id).await)
            } else {
                None
            }
        }
    };
    let counters_before = network::net_counters(&pods.env.root);
    let (outputs, conf03) = tokio::join!(batch::run_batches(ids, pods), conf03_job);
    let conf03 = conf03.map(|(finding, sandboxes)| {
        pods.jobs.extend(sandboxes);
        finding
    });
    let batch_ms = t.elapsed().as_millis() as u64;
    let refusals = network::refusals(&counters_before, &network::net_counters(&pods.env.root));
    let batches = Batches {
        outputs,
        refusals,
        conf03,
    };
    let mut push = |id: CheckId, (verdict, evidence): Finding, ms: u64| {
        let mut r = CheckResult::new(id.as_str(), &node, verdict, evidence);
        r.duration_ms = ms;
        results.push(r);
    };
    let mut last = Vec::new();
    for &id in ids {
        let t = Instant::now();
        match handler(id) {
            Handler::Batch(eval) => push(id, eval(id, &batches, pods.env), batch_ms),
            Handler::Own(run) => {
                let finding = run(pods, &batches).await;
                push(id, finding, t.elapsed().as_millis() as u64);
            }
            Handler::Last(run) => last.push((id, run)),
            Handler::Host => {}
        }
    }
    for (id, run) in last {
        let t = Instant::now();
        let finding = run(pods, &batches).await;
        push(id, finding, t.elapsed().as_millis() as u64);
    }
}

#[cfg(test)]
mod tests;
