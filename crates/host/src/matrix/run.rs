//! The host side of `ironclad matrix`: loads a cluster's client config from
//! the state dir, asks every node to run its CRI-level checks
//! (`POST /v1/matrix/run`, all nodes at once), runs the checks that belong to
//! the host (CONF-01 version and role, CONF-02 etcd, CONF-05 clocks, API-04
//! anonymous and foreign-CA TLS), and merges everything into one [`Report`]
//! that names the cluster file and the image manifest it ran against.
//!
//! For NET-02 it listens on a free port of the host's 127.0.0.1 during the
//! run ([`LoopbackListener`]), passes the port in the request, and fails the
//! check if anything connected to it.
//!
//! The destructive BRK-04-O (sysrq power-off) needs a throw-away node whose
//! QEMU exit the host observes; it is an explicit SKIP until the lifecycle code
//! can provide one.

use super::{
    CLUSTER_NODE, CheckId, CheckResult, FileRef, REPORT_API_VERSION, Report, Runner, SelectError,
    Verdict, select,
};
use crate::api::MatrixRunRequest;
use crate::client::{ClientError, NodeClient, ServerDate};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The largest clock offset (node vs host, and between nodes) CONF-05 accepts.
/// The `Date` header has one-second resolution, so this is 1 s of real skew
/// plus the header's granularity.
pub const MAX_CLOCK_OFFSET_SECS: f64 = 2.0;

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
    let cfg = crate::clientconfig::ClientConfig::load(&client_yaml)?;
    let mut targets = Vec::new();
    for n in &cfg.nodes {
        let client = NodeClient::from_client_config(&client_yaml, &n.name)?;
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
        cluster_file: file_ref(&paths.cluster_yaml()),
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
    let manifests = merge_node_reports(node_reports, &node_ids, &mut results);
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
            let mut r = t.client.matrix_run(req).await;
            // RT-06's host half at once: with BRK-04-O in the run the
            // node powers itself off seconds after answering.
            if let Ok(rep) = &mut r {
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
/// sorted and without duplicates.
fn merge_node_reports(
    reports: Vec<(String, Result<super::NodeMatrixReport, ClientError>)>,
    node_ids: &[CheckId],
    results: &mut Vec<CheckResult>,
) -> Vec<String> {
    let mut manifests = Vec::new();
    for (node, rep) in reports {
        match rep {
            Ok(r) => {
                if let Some(h) = &r.image_manifest_sha256 {
                    manifests.push(h.clone());
                }
                results.extend(r.results);
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
    manifests
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
                "{node}: {} checks ({} passed, {} failed, {} skipped) in {:.1} s",
                rep.results.len(),
                count(|v| matches!(v, Verdict::Pass)),
                count(|v| matches!(v, Verdict::Fail)),
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
            r.evidence.push(match down {
                Some(after) => format!(
                    "host: the node API went down {:.0}s after the run: the privileged pod powered the node off (unprotectable at node level)",
                    after.as_secs_f64()
                ),
                None => format!(
                    "host: the node API still answers {}s after the run: the privileged sysrq o had no effect",
                    POWER_OFF_WAIT.as_secs()
                ),
            });
        }
    }
}

/// CONF-01: every node answers `version` with this build's version, its own
/// name and API v1, and its role shows: control planes run etcd, workers not.
async fn conf01(ctx: &HostContext) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for t in &ctx.targets {
        let role = if t.control_plane {
            "control-plane"
        } else {
            "worker"
        };
        let (v, h) = futures::join!(t.client.version(), t.client.health());
        let (verdict, ev) = match (v, h) {
            (Ok(v), Ok(h)) => {
                let ok = v.version == crate::VERSION
                    && v.node == t.name
                    && v.api == "v1"
                    && h.etcd_bootstrapped == t.control_plane;
                (
                    Verdict::pass_if(ok),
                    vec![
                        format!(
                            "version {} (host {}), api {}, node {}",
                            v.version,
                            crate::VERSION,
                            v.api,
                            v.node
                        ),
                        format!(
                            "role {role}: etcd running = {} (expected {})",
                            h.etcd_bootstrapped, t.control_plane
                        ),
                    ],
                )
            }
            (Err(e), _) | (_, Err(e)) => (Verdict::Fail, vec![e.to_string()]),
        };
        out.push(CheckResult::new(
            CheckId::Conf01.as_str(),
            &t.name,
            verdict,
            ev,
        ));
    }
    out
}

/// CONF-02: every control plane is a voting member, etcd is up on all of
/// them, and a key written through one is read back through every one.
async fn conf02(ctx: &HostContext) -> CheckResult {
    let cps: Vec<&Target> = ctx.targets.iter().filter(|t| t.control_plane).collect();
    let Some(first) = cps.first() else {
        return CheckResult::new(
            CheckId::Conf02.as_str(),
            CLUSTER_NODE,
            Verdict::skip("no control plane"),
            vec![],
        );
    };
    let mut ev = Vec::new();
    let mut ok = true;
    match first.client.etcd_members().await {
        Ok(m) => {
            let voting = m.members.iter().filter(|m| !m.is_learner).count();
            for t in &cps {
                if !m.members.iter().any(|m| m.name == t.name && !m.is_learner) {
                    ok = false;
                    ev.push(format!("{} is not a voting member", t.name));
                }
            }
            ev.push(format!(
                "{} members, {voting} voting, {} control planes",
                m.members.len(),
                cps.len()
            ));
        }
        Err(e) => {
            ok = false;
            ev.push(format!("members via {}: {e}", first.name));
        }
    }
    // etcd's own service, not the node's overall health: `ready` does not
    // wait for containerd, and this runs while the nodes' checks start.
    for t in &cps {
        let etcd = t.client.services().await.map(|l| {
            l.services
                .into_iter()
                .find(|s| s.name == ironclad_contract::services::ETCD)
                .map(|s| s.state)
        });
        match etcd {
            Ok(Some(crate::api::ServiceState::Running)) => {}
            Ok(Some(state)) => {
                ok = false;
                ev.push(format!("{}: etcd {state:?}", t.name));
            }
            Ok(None) => {
                ok = false;
                ev.push(format!("{}: no etcd service", t.name));
            }
            Err(e) => {
                ok = false;
                ev.push(format!("{}: {e}", t.name));
            }
        }
    }
    let key = format!("/ironclad/matrix/conf-02/{}", rand::random::<u32>());
    let value = format!("{:016x}", rand::random::<u64>());
    match first.client.etcd_put(&key, &value).await {
        Ok(_) => {
            for t in &cps {
                match t.client.etcd_get(&key).await {
                    Ok(kv) if kv.value.as_deref() == Some(value.as_str()) => {
                        ev.push(format!(
                            "{}: read back the value written on {}",
                            t.name, first.name
                        ));
                    }
                    Ok(kv) => {
                        ok = false;
                        ev.push(format!("{}: read {:?}, wrote {value:?}", t.name, kv.value));
                    }
                    Err(e) => {
                        ok = false;
                        ev.push(format!("{}: get: {e}", t.name));
                    }
                }
            }
        }
        Err(e) => {
            ok = false;
            ev.push(format!("put via {}: {e}", first.name));
        }
    }
    CheckResult::new(
        CheckId::Conf02.as_str(),
        CLUSTER_NODE,
        Verdict::pass_if(ok),
        ev,
    )
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s.trim(), &fmt).ok()?;
    Some(t.assume_utc().into())
}

/// A node's clock offset from the host's in seconds (positive: node ahead):
/// the middle of the header's one-second window minus the middle of the
/// request's round trip.
pub fn clock_offset(d: &ServerDate) -> Option<f64> {
    let node = parse_http_date(d.date.as_deref()?)?;
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let mid = (secs(d.sent) + secs(d.received)) / 2.0;
    Some(secs(node) + 0.5 - mid)
}

/// CONF-05: each node's clock against the host's, and so against each other.
async fn conf05(ctx: &HostContext) -> CheckResult {
    let mut ev = Vec::new();
    let mut offsets = Vec::new();
    let mut ok = true;
    for t in &ctx.targets {
        match t.client.server_date().await.map(|d| (clock_offset(&d), d)) {
            Ok((Some(o), _)) => {
                ev.push(format!("{}: {o:+.2}s against the host", t.name));
                offsets.push(o);
            }
            Ok((None, d)) => {
                ok = false;
                ev.push(format!("{}: no usable Date header ({:?})", t.name, d.date));
            }
            Err(e) => {
                ok = false;
                ev.push(format!("{}: {e}", t.name));
            }
        }
    }
    let worst = offsets.iter().fold(0.0f64, |a, o| a.max(o.abs()));
    let spread = offsets.iter().cloned().fold(f64::NAN, f64::max)
        - offsets.iter().cloned().fold(f64::NAN, f64::min);
    if !offsets.is_empty() {
        ev.insert(
            0,
            format!("largest offset {worst:.2}s, spread between nodes {:.2}s (limit {MAX_CLOCK_OFFSET_SECS}s)", if spread.is_nan() { 0.0 } else { spread }),
        );
    }
    let spread = if spread.is_nan() { 0.0 } else { spread };
    ok &= worst <= MAX_CLOCK_OFFSET_SECS && spread <= MAX_CLOCK_OFFSET_SECS;
    CheckResult::new(
        CheckId::Conf05.as_str(),
        CLUSTER_NODE,
        Verdict::pass_if(ok && !offsets.is_empty()),
        ev,
    )
}

/// What an unauthenticated TLS client got from the node API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anonymous {
    /// The handshake or the first read failed: refused.
    Refused(String),
    /// An HTTP answer came back (its status line).
    Answered(String),
    /// The answer could not be judged: what answered is not the node (its
    /// certificate does not name it), or the check could not be set up.
    /// Never counts as kept out.
    Unverified(String),
}

/// Connects to node `node` at `endpoint` (verifying, as every host client
/// does, that the certificate which answers is `node`'s), with `identity`
/// (cert, key) or no client certificate, sends `GET /v1/version` and reports
/// what happened. Only the node's own refusal counts as [`Anonymous::Refused`]:
/// a certificate that is not the node's, or a setup failure, is
/// [`Anonymous::Unverified`].
pub async fn anonymous_request(
    node: &str,
    endpoint: SocketAddr,
    os_ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Anonymous {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match crate::client::NodeVerifier::new(node, os_ca_pem) {
        Ok(v) => Arc::new(v),
        Err(e) => return Anonymous::Unverified(e.to_string()),
    };
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.dangerous().with_custom_certificate_verifier(verifier),
        Err(e) => return Anonymous::Unverified(format!("client setup: {e}")),
    };
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .flatten()
                .collect();
            let Ok(key) = PrivateKeyDer::from_pem_slice(key.as_bytes()) else {
                return Anonymous::Unverified("client setup: bad key".into());
            };
            match builder.with_client_auth_cert(certs, key) {
                Ok(c) => c,
                Err(e) => return Anonymous::Unverified(format!("client setup: {e}")),
            }
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(endpoint.ip().into());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(endpoint)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            // This client refused the server: nothing was learnt about the node.
            Err(e) if client_refused_server(&e) => {
                return Ok(Err(format!("handshake: {e}")));
            }
            Err(e) => return Err(format!("handshake: {e}")),
        };
        tls.write_all(b"GET /v1/version HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        match tls.read_to_end(&mut buf).await {
            Ok(_) if !buf.is_empty() => Ok(Ok(String::from_utf8_lossy(&buf)
                .lines()
                .next()
                .unwrap_or("")
                .to_string())),
            Ok(_) => Err("closed without an answer".to_string()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(Ok(status))) => Anonymous::Answered(status),
        Ok(Ok(Err(e))) => Anonymous::Unverified(e),
        Ok(Err(e)) => Anonymous::Refused(e),
        Err(_) => Anonymous::Refused("no answer within 10s".into()),
    }
}

/// Whether a failed handshake is this client refusing the server's
/// certificate (as opposed to the server refusing the client).
fn client_refused_server(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|t| matches!(t, rustls::Error::InvalidCertificate(_)))
}

/// Whether an anonymous attempt was kept out: refused at TLS, or a 401/403.
pub fn kept_out(a: &Anonymous) -> bool {
    match a {
        Anonymous::Refused(_) => true,
        Anonymous::Unverified(_) => false,
        Anonymous::Answered(status) => {
            let code = status.split_whitespace().nth(1).unwrap_or("");
            code == "401" || code == "403"
        }
    }
}

/// API-04 from the host: no client certificate, and a certificate from a
/// foreign CA claiming `os:admin`, must both be refused by every node.
async fn api04(ctx: &HostContext) -> Vec<CheckResult> {
    let foreign = crate::pki::Ca::generate("ironclad-matrix-foreign-ca").and_then(|(ca, _)| {
        ca.issue_client("intruder", Some(crate::api::Role::Admin.organization()))
    });
    let mut out = Vec::new();
    for t in &ctx.targets {
        let none = anonymous_request(&t.name, t.endpoint, &ctx.os_ca_pem, None).await;
        let mut ev = vec![format!("no client certificate: {none:?}")];
        let mut ok = kept_out(&none);
        match &foreign {
            Ok(cert) => {
                let f = anonymous_request(
                    &t.name,
                    t.endpoint,
                    &ctx.os_ca_pem,
                    Some((&cert.cert_pem, &cert.key_pem)),
                )
                .await;
                ok &= kept_out(&f);
                ev.push(format!("foreign CA (os:admin): {f:?}"));
            }
            Err(e) => {
                ok = false;
                ev.push(format!("cannot make a foreign CA: {e}"));
            }
        }
        out.push(CheckResult::new(
            CheckId::Api04.as_str(),
            &t.name,
            Verdict::pass_if(ok),
            ev,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let o = clock_offset(&d).unwrap();
        assert!((o - 0.3).abs() < 1e-6, "{o}");
        let late = ServerDate {
            date: Some("Sun, 06 Nov 1994 08:49:47 GMT".into()),
            ..d.clone()
        };
        assert!(clock_offset(&late).unwrap() > MAX_CLOCK_OFFSET_SECS);
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
    fn missing_cluster_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        match load(dir.path(), &"dev".parse().unwrap()) {
            Err(MatrixError::NoCluster { name, .. }) => assert_eq!(name, "dev"),
            other => panic!("{other:?}"),
        }
    }
}
