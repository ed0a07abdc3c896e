//! The host side of `ironclad matrix`: loads a cluster's client config from
//! the state dir, asks every node to run its CRI-level checks
//! (`POST /v1/matrix/run`, all nodes at once), runs the checks that belong to
//! the host (CONF-01 version and role, CONF-02 etcd, CONF-05 clocks, API-04
//! anonymous and foreign-CA TLS), and merges everything into one [`Report`]
//! that names the cluster file and the image manifest it ran against. Every
//! verdict a node sends is checked first ([`super::normalize`]).
//!
//! For NET-02 it listens on a free port of the host's 127.0.0.1 during the
//! run ([`LoopbackListener`]), passes the port in the request, and fails the
//! check if anything connected to it.
//!
//! The destructive BRK-04-O (sysrq power-off) needs a throw-away node whose
//! QEMU exit the host observes; it is an explicit SKIP until the lifecycle code
//! can provide one.

use super::{
    CLUSTER_NODE, CheckId, CheckResult, FileRef, NodeSteps, REPORT_API_VERSION, Report, Runner,
    SelectError, Verdict, select,
};
use crate::api::MatrixRunRequest;
use crate::client::{BOOT_WATCH, ClientError, NodeClient};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod checks;

pub use checks::{
    Anonymous, MAX_CLOCK_OFFSET_SECS, anonymous_request, clock_offset, kept_out, parse_http_date,
};
use checks::{api04, conf01, conf02, conf05};

/// Why a matrix run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("no cluster {name:?} in {root} (is it created?)")]
    NoCluster { name: String, root: PathBuf },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] crate::clientconfig::ClientConfigError),
}

/// Written out rather than derived: a node's refusal keeps the client's own
/// code and help (`ClientError` has an inherent `code()` that a derived
/// `transparent` would call instead of the diagnostic's).
impl miette::Diagnostic for MatrixError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let code = match self {
            MatrixError::Client(e) => return miette::Diagnostic::code(e),
            MatrixError::Select(_) => "ironclad::matrix::select",
            MatrixError::NoCluster { .. } => "ironclad::lifecycle::not_found",
            MatrixError::Config(_) => "ironclad::client::config",
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let help = match self {
            MatrixError::Client(e) => return miette::Diagnostic::help(e),
            MatrixError::Select(_) => "`ironclad matrix --list` lists the checks",
            MatrixError::NoCluster { .. } => {
                "`ironclad list` shows the clusters; `ironclad create -f FILE` makes one"
            }
            MatrixError::Config(_) => {
                "the cluster's client.yaml is not usable; `ironclad gen config` writes it again"
            }
        };
        Some(Box::new(help))
    }
}

/// One node the host talks to.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub control_plane: bool,
    pub endpoint: SocketAddr,
    pub client: NodeClient,
}

/// Everything the host side needs about a cluster.
#[derive(Debug, Clone)]
pub struct HostContext {
    pub cluster: String,
    /// The OS CA (PEM) that node API certificates chain to.
    pub os_ca_pem: String,
    pub targets: Vec<Target>,
    /// The cluster file the cluster was created from, with its hash.
    pub cluster_file: Option<FileRef>,
}

/// `path` by name and sha256, or `None` when it cannot be read.
pub fn file_ref(path: &Path) -> Option<FileRef> {
    let data = std::fs::read(path).ok()?;
    Some(FileRef {
        path: path.display().to_string(),
        sha256: hex::encode(Sha256::digest(&data)),
    })
}

/// Loads cluster `name` from the state root: its client config (nodes,
/// endpoints, admin certificate) and its cluster file.
pub fn load(root: &Path, name: &crate::spec::ClusterName) -> Result<HostContext, MatrixError> {
    let paths = crate::cluster::paths::ClusterPaths::new(root, name);
    let client_yaml = paths.client_yaml();
    if !client_yaml.is_file() {
        return Err(MatrixError::NoCluster {
            name: name.to_string(),
            root: root.to_path_buf(),
        });
    }
    load_client(&client_yaml, &paths.cluster_yaml())
}

/// Loads a cluster from any client config (`ironclad matrix --client-config
/// FILE`): its nodes, endpoints and admin certificate; `cluster_file` is
/// named in the report when it can be read. Every node needs an endpoint.
pub fn load_client(client_yaml: &Path, cluster_file: &Path) -> Result<HostContext, MatrixError> {
    let cfg = crate::clientconfig::ClientConfig::load(client_yaml)?;
    let mut targets = Vec::new();
    for n in &cfg.nodes {
        let client = NodeClient::from_client_config(client_yaml, &n.name)?;
        let endpoint = n.endpoint.ok_or_else(|| {
            ClientError::Setup(format!("node {} has no API endpoint yet", n.name))
        })?;
        targets.push(Target {
            name: n.name.to_string(),
            control_plane: n.role == crate::spec::Role::ControlPlane,
            endpoint,
            client,
        });
    }
    Ok(HostContext {
        cluster: cfg.cluster.to_string(),
        os_ca_pem: cfg.os_ca.clone(),
        targets,
        cluster_file: file_ref(cluster_file),
    })
}

/// How often a run says that the nodes are still at work.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Runs the selected checks on the cluster and returns the merged report.
/// `progress` hears one line as each node finishes, and a heartbeat while
/// nodes are still at work.
pub async fn run(
    ctx: &HostContext,
    checks: &[String],
    destructive: bool,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, MatrixError> {
    let started = Instant::now();
    let selected = select(checks, destructive)?;
    let node_ids: Vec<CheckId> = selected
        .iter()
        .filter(|c| c.runner == Runner::Node)
        .map(|c| c.id)
        .collect();
    let host_ids: Vec<CheckId> = selected
        .iter()
        .filter(|c| c.runner == Runner::Host)
        .map(|c| c.id)
        .collect();

    // NET-02: a listener on the host's loopback for the run; the nodes try
    // it through 10.0.2.2 and it counts who got through.
    let loopback = if node_ids.contains(&CheckId::Net02) {
        Some(LoopbackListener::start().await)
    } else {
        None
    };
    let host_port = loopback
        .as_ref()
        .and_then(|l| l.as_ref().ok())
        .map(|l| l.port);

    // The nodes' checks run concurrently with the host's.
    let node_fut = async {
        if node_ids.is_empty() {
            return Vec::new();
        }
        let req = MatrixRunRequest {
            checks: node_ids.iter().map(|id| id.as_str().to_string()).collect(),
            destructive,
            host_port,
        };
        on_nodes(ctx, &req, started, progress).await
    };
    let host_fut = on_host(ctx, &host_ids);
    // With the sysrq power-off, nodes go down after answering: the host's own
    // checks run first.
    let power_off = node_ids.contains(&CheckId::Brk04O);
    let (node_reports, host_results) = if power_off {
        let h = host_fut.await;
        (node_fut.await, h)
    } else {
        futures::join!(node_fut, host_fut)
    };

    let mut results = host_results;
    let (manifests, steps) = merge_node_reports(node_reports, &node_ids, &mut results);
    if power_off {
        node_fates(ctx, &mut results).await;
    }
    if let Some(l) = loopback {
        net02_host_half(l, &mut results);
    }
    let image_manifest_sha256 = match manifests.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(format!("MIXED: {}", many.join(","))),
    };
    let mut report = Report {
        api_version: REPORT_API_VERSION.into(),
        cluster: ctx.cluster.clone(),
        cluster_file: ctx.cluster_file.clone(),
        image_manifest_sha256,
        destructive,
        results,
        duration_ms: started.elapsed().as_millis() as u64,
        steps,
    };
    report.sort();
    Ok(report)
}

/// Every node's answer to `req`, all nodes at once, with RT-06's host half
/// added to each; `progress` hears each node finish, and a heartbeat.
async fn on_nodes(
    ctx: &HostContext,
    req: &MatrixRunRequest,
    started: Instant,
    progress: &(dyn Fn(&str) + Sync),
) -> Vec<(String, Result<super::NodeMatrixReport, ClientError>)> {
    let pending = std::sync::Mutex::new(
        ctx.targets
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>(),
    );
    let calls = ctx.targets.iter().map(|t| {
        let pending = &pending;
        async move {
            let mut r = t
                .client
                .unless_rebooted("its matrix run", BOOT_WATCH, t.client.matrix_run(req))
                .await;
            // RT-06's host half at once: with BRK-04-O in the run the
            // node powers itself off seconds after answering.
            if let Ok(rep) = &mut r {
                // The node's verdicts, checked against the catalog and
                // their evidence before anything counts them.
                for res in &mut rep.results {
                    super::normalize::normalize(res);
                }
                rt06_node_fate(&t.client, &mut rep.results).await;
            }
            if let Ok(mut p) = pending.lock() {
                p.retain(|n| n != &t.name);
            }
            progress(&node_done(&t.name, &r, started.elapsed()));
            (t.name.clone(), r)
        }
    });
    let all = futures::future::join_all(calls);
    tokio::pin!(all);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            done = &mut all => break done,
            _ = tick.tick() => {
                let waiting = pending.lock().map(|p| p.join(", ")).unwrap_or_default();
                progress(&format!(
                    "still running on {waiting} ({} s)",
                    started.elapsed().as_secs()
                ));
            }
        }
    }
}

/// The host's own checks `ids`, one after the other.
async fn on_host(ctx: &HostContext, ids: &[CheckId]) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for &id in ids {
        let t = Instant::now();
        let mut rs = match host_runner(id) {
            Some(run) => run(ctx).await,
            None => vec![CheckResult::new(
                id.as_str(),
                CLUSTER_NODE,
                Verdict::skip("no host-side runner for this check"),
                vec![],
            )],
        };
        let ms = t.elapsed().as_millis() as u64;
        for r in &mut rs {
            r.duration_ms = ms;
        }
        out.extend(rs);
    }
    out
}

/// Adds the nodes' results to `results` (a node whose run failed fails
/// every node check with why) and returns their image manifests' hashes,
/// sorted and without duplicates, and the steps of each node that reported
/// some, in node name order.
fn merge_node_reports(
    reports: Vec<(String, Result<super::NodeMatrixReport, ClientError>)>,
    node_ids: &[CheckId],
    results: &mut Vec<CheckResult>,
) -> (Vec<String>, Vec<NodeSteps>) {
    let mut manifests = Vec::new();
    let mut steps = Vec::new();
    for (node, rep) in reports {
        match rep {
            Ok(r) => {
                if let Some(h) = &r.image_manifest_sha256 {
                    manifests.push(h.clone());
                }
                results.extend(r.results);
                if !r.steps.is_empty() {
                    steps.push(NodeSteps {
                        node,
                        steps: bounded_steps(r.steps),
                    });
                }
            }
            Err(e) => {
                for id in node_ids {
                    results.push(CheckResult::new(
                        id.as_str(),
                        &node,
                        Verdict::Fail,
                        vec![format!("the node's matrix run failed: {e}")],
                    ));
                }
            }
        }
    }
    manifests.sort();
    manifests.dedup();
    steps.sort_by(|a, b| a.node.cmp(&b.node));
    (manifests, steps)
}

/// The most steps a report keeps per node, and the longest description:
/// a node's run has a few dozen, and a node that sends more is not
/// believed further (the steps are informative, never a verdict).
const MAX_STEPS: usize = 500;
const MAX_STEP_CHARS: usize = 200;

/// A node's steps, at most [`MAX_STEPS`] of them, each description cut to
/// [`MAX_STEP_CHARS`] characters.
fn bounded_steps(mut steps: Vec<super::Step>) -> Vec<super::Step> {
    steps.truncate(MAX_STEPS);
    for s in &mut steps {
        if s.what.chars().count() > MAX_STEP_CHARS {
            s.what = s.what.chars().take(MAX_STEP_CHARS).collect::<String>() + "…";
        }
    }
    steps
}

/// A check the host runs, with one result per node or one for the cluster.
type HostRun = for<'a> fn(&'a HostContext) -> BoxFuture<'a, Vec<CheckResult>>;

/// The host's runner of every catalogued check; `None` for the checks the
/// nodes run (machined's matrix module). The match is exhaustive with no
/// wildcard: a check added to the catalog does not build until it is given
/// to one side.
fn host_runner(id: CheckId) -> Option<HostRun> {
    use CheckId::*;
    match id {
        Conf01 => Some(|ctx| Box::pin(conf01(ctx))),
        Conf02 => Some(|ctx| Box::pin(async move { vec![conf02(ctx).await] })),
        Conf05 => Some(|ctx| Box::pin(async move { vec![conf05(ctx).await] })),
        Api04 => Some(|ctx| Box::pin(api04(ctx))),
        Brk01 | Brk02 | Brk03 | Brk04 | Brk05 | Brk06 | Brk07 | Brk08 | Brk09 | Brk10 | Rt01
        | Rt02 | Rt03 | Rt04 | Brk04O | Rt06 | Rt07 | Rt08 | Rt09 | Rt10 | Net01 | Net02
        | Conf03 | Conf04 => None,
    }
}

/// A TCP listener on the host's 127.0.0.1 (a free port) that accepts and
/// counts connections until dropped: what a service on the host's loopback
/// would see of NET-02's attempts.
pub struct LoopbackListener {
    pub port: u16,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackListener {
    pub async fn start() -> Result<LoopbackListener, String> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on the host's 127.0.0.1: {e}"))?;
        let port = l
            .local_addr()
            .map_err(|e| format!("listener address: {e}"))?
            .port();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                if l.accept().await.is_ok() {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        Ok(LoopbackListener {
            port,
            accepted,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for LoopbackListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// NET-02's host half: every node's result gets what the listener saw; a
/// connection that reached it fails the check (whichever node made it), and
/// so does a listener that could not start.
fn net02_host_half(l: Result<LoopbackListener, String>, results: &mut [CheckResult]) {
    for r in results
        .iter_mut()
        .filter(|r| r.id == CheckId::Net02.as_str())
    {
        match &l {
            Ok(l) => {
                let n = l.accepted();
                r.evidence.push(format!(
                    "host: the listener on 127.0.0.1:{} accepted {n} connection(s) during the run",
                    l.port
                ));
                if n > 0 {
                    r.verdict = Verdict::Fail;
                }
            }
            Err(e) => {
                r.verdict = Verdict::Fail;
                r.evidence.push(format!("host: {e}"));
            }
        }
    }
}

/// RT-06's host half: the node's API still answers after the fork bomb.
async fn rt06_node_fate(client: &NodeClient, results: &mut [CheckResult]) {
    for r in results
        .iter_mut()
        .filter(|r| r.id == CheckId::Rt06.as_str())
    {
        match client.health().await {
            Ok(h) => r.evidence.push(format!(
                "node API after the fork bomb (from the host): healthy={}",
                h.healthy
            )),
            Err(e) => {
                r.verdict = Verdict::Fail;
                r.evidence
                    .push(format!("node API after the fork bomb: {e}"));
            }
        }
    }
}

/// The progress line of a node whose run ended.
fn node_done(
    node: &str,
    r: &Result<super::NodeMatrixReport, ClientError>,
    elapsed: Duration,
) -> String {
    match r {
        Ok(rep) => {
            let count =
                |v: fn(&Verdict) -> bool| rep.results.iter().filter(|r| v(&r.verdict)).count();
            format!(
                "{node}: {} checks ({} passed, {} failed, {} exposed, {} skipped) in {:.1} s",
                rep.results.len(),
                count(|v| matches!(v, Verdict::Pass)),
                count(|v| matches!(v, Verdict::Fail)),
                count(|v| matches!(v, Verdict::Exposed { .. })),
                count(|v| matches!(v, Verdict::Skip { .. })),
                elapsed.as_secs_f64()
            )
        }
        Err(e) => format!(
            "{node}: the run failed after {:.1} s: {e}",
            elapsed.as_secs_f64()
        ),
    }
}

/// How long the host waits for a node to go down after the sysrq power-off.
pub const POWER_OFF_WAIT: Duration = Duration::from_secs(120);

/// BRK-04-O's host half: every node that answered is expected to power off
/// (its privileged pod writes sysrq `o`); record when its API went down.
async fn node_fates(ctx: &HostContext, results: &mut [CheckResult]) {
    let watch = ctx.targets.iter().map(|t| async move {
        let start = Instant::now();
        while start.elapsed() < POWER_OFF_WAIT {
            let probe = tokio::time::timeout(Duration::from_secs(5), t.client.health()).await;
            if !matches!(probe, Ok(Ok(_))) {
                return (t.name.clone(), Some(start.elapsed()));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (t.name.clone(), None)
    });
    for (node, down) in futures::future::join_all(watch).await {
        if let Some(r) = results
            .iter_mut()
            .find(|r| r.id == CheckId::Brk04O.as_str() && r.node == node)
        {
            node_fate(r, down);
        }
    }
}

/// Records a node's fate in its BRK-04-O result. The node went down: the
/// privileged pod's sysrq `o` got through, so the check is EXPOSED (unless
/// a sandboxed variant already made it FAIL), never PASS.
fn node_fate(r: &mut CheckResult, down: Option<Duration>) {
    match down {
        Some(after) => {
            r.evidence.push(format!(
                "host: the node API went down {:.0}s after the run: the privileged pod powered the node off (unprotectable at node level)",
                after.as_secs_f64()
            ));
            if r.verdict != Verdict::Fail {
                r.verdict = Verdict::exposed(
                    format!(
                        "a privileged container powered the node off with sysrq o (the API went down {:.0}s after the run); the node cannot refuse it on a shared kernel",
                        after.as_secs_f64()
                    ),
                    super::SYSRQ_MITIGATION,
                );
            }
        }
        None => r.evidence.push(format!(
            "host: the node API still answers {}s after the run: the privileged sysrq o had no effect",
            POWER_OFF_WAIT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ServerDate;
    use std::time::SystemTime;

    /// The host's runners cover exactly the checks the catalog gives the
    /// host (the node's dispatch has the same test for the rest).
    #[test]
    fn every_host_check_has_a_runner_here() {
        for c in super::super::CATALOG {
            assert_eq!(
                host_runner(c.id).is_some(),
                c.runner == Runner::Host,
                "{}",
                c.id
            );
        }
    }

    /// A node that sends too many steps, or too long a one, is cut short.
    #[test]
    fn a_nodes_steps_are_bounded() {
        let step = |what: String| super::super::Step {
            what,
            start_ms: 0,
            ms: 100,
        };
        let many: Vec<_> = (0..MAX_STEPS + 10).map(|i| step(i.to_string())).collect();
        assert_eq!(bounded_steps(many).len(), MAX_STEPS);
        let long = bounded_steps(vec![step("x".repeat(MAX_STEP_CHARS * 4))]);
        assert_eq!(long[0].what.chars().count(), MAX_STEP_CHARS + 1);
        assert!(long[0].what.ends_with('…'));
        let short = bounded_steps(vec![step("CRI ExecSync gvisor batch (10 probes)".into())]);
        assert_eq!(short[0].what, "CRI ExecSync gvisor batch (10 probes)");
    }

    #[test]
    fn http_dates_and_offsets() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(parse_http_date("yesterday").is_none());
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        let d = ServerDate {
            sent: base + Duration::from_millis(100),
            received: base + Duration::from_millis(300),
            date: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
            node_ms: None,
        };
        let o = clock_offset(&d).unwrap();
        assert!((o - 0.3).abs() < 1e-6, "{o}");
        let late = ServerDate {
            date: Some("Sun, 06 Nov 1994 08:49:47 GMT".into()),
            ..d.clone()
        };
        assert!(clock_offset(&late).unwrap() > MAX_CLOCK_OFFSET_SECS);
        // The node's milliseconds win over the header's whole second: 0.75 s
        // behind the middle of the round trip (0.2 s), not the header's 0.3
        // ahead.
        let precise = ServerDate {
            node_ms: Some(784111777 * 1000 - 550),
            ..d.clone()
        };
        let o = clock_offset(&precise).unwrap();
        assert!((o + 0.75).abs() < 1e-6, "{o}");
        assert!(clock_offset(&ServerDate { date: None, ..d }).is_none());
    }

    #[test]
    fn kept_out_rule() {
        assert!(kept_out(&Anonymous::Refused("handshake".into())));
        assert!(kept_out(&Anonymous::Answered(
            "HTTP/1.1 401 Unauthorized".into()
        )));
        assert!(!kept_out(&Anonymous::Answered("HTTP/1.1 200 OK".into())));
        assert!(!kept_out(&Anonymous::Unverified(
            "handshake: not the node".into()
        )));
    }

    #[test]
    fn file_refs_hash_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "abc").unwrap();
        let f = file_ref(&p).unwrap();
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(file_ref(&dir.path().join("nope")).is_none());
    }

    #[tokio::test]
    async fn net02_fails_when_the_host_listener_was_reached() {
        let result = |v| CheckResult::new(CheckId::Net02.as_str(), "n1", v, vec![]);
        let l = LoopbackListener::start().await.unwrap();
        let mut quiet = vec![
            result(Verdict::Pass),
            result(Verdict::Skip { reason: "x".into() }),
        ];
        let _c = tokio::net::TcpStream::connect(("127.0.0.1", l.port))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.accepted() == 0 {
            assert!(Instant::now() < deadline, "the listener saw nothing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        net02_host_half(Ok(l), &mut quiet);
        assert_eq!(quiet[0].verdict, Verdict::Fail);
        assert!(quiet[0].evidence[0].contains("accepted 1 connection"));
        let mut none = vec![result(Verdict::Pass)];
        net02_host_half(Ok(LoopbackListener::start().await.unwrap()), &mut none);
        assert_eq!(none[0].verdict, Verdict::Pass);
        assert!(none[0].evidence[0].contains("accepted 0 connection"));
        let mut broken = vec![result(Verdict::Pass)];
        net02_host_half(Err("no".into()), &mut broken);
        assert_eq!(broken[0].verdict, Verdict::Fail);
    }

    #[test]
    fn a_node_powered_off_by_sysrq_is_exposed_not_passed() {
        let result = |v| CheckResult::new(CheckId::Brk04O.as_str(), "n1", v, vec![]);
        let mut down = result(Verdict::Pass);
        node_fate(&mut down, Some(Duration::from_secs(4)));
        match &down.verdict {
            Verdict::Exposed { reason, mitigation } => {
                assert!(reason.contains("sysrq o"), "{reason}");
                assert_eq!(mitigation, super::super::SYSRQ_MITIGATION);
            }
            other => panic!("{other:?}"),
        }
        // The sandboxed variants already failed: it stays FAIL.
        let mut failed = result(Verdict::Fail);
        node_fate(&mut failed, Some(Duration::from_secs(4)));
        assert_eq!(failed.verdict, Verdict::Fail);
        // The node still answers: the attack had no effect.
        let mut held = result(Verdict::Pass);
        node_fate(&mut held, None);
        assert_eq!(held.verdict, Verdict::Pass);
        assert!(held.evidence[0].contains("had no effect"));
    }

    #[test]
    fn missing_cluster_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        match load(dir.path(), &"dev".parse().unwrap()) {
            Err(MatrixError::NoCluster { name, .. }) => assert_eq!(name, "dev"),
            other => panic!("{other:?}"),
        }
    }
}
