//! The host side of the matrix against real apid servers on loopback (real
//! TLS, real client certificates, the in-memory controller behind them): the
//! node call `POST /v1/matrix/run`, CONF-01, CONF-02, CONF-05, API-04, the
//! merged report and its renderers.

use ironclad_contract::api::{ErrorCode, MatrixRunRequest, Role};
use ironclad_host::client::ClientError;
use ironclad_host::matrix::run::{HostContext, Target, run};
use ironclad_host::matrix::{Verdict, exit_status, render};
use ironclad_testkit::apid::{MemoryNode, TestPki};

#[tokio::test]
async fn host_checks_and_node_calls_merge_into_one_report() {
    let pki = TestPki::new("mx");
    let n1 = MemoryNode::serve(&pki, "mx-cp-1", &["etcd", "containerd"]).await;
    let n2 = MemoryNode::serve(&pki, "mx-w-1", &["etcd", "containerd"]).await;
    let (cp, w) = (n1.addr, n2.addr);
    let cp_client = pki.client("mx-cp-1", cp, Role::Admin);
    cp_client.bootstrap().await.unwrap();

    // The route: admin only, strict body, ids checked at the edge.
    let reader = pki.client("mx-cp-1", cp, Role::Reader);
    let code = |r: Result<_, ClientError>| match r {
        Err(ClientError::Api(e)) => e.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(reader.matrix_run(&MatrixRunRequest::default()).await),
        ErrorCode::Forbidden
    );
    let bad = MatrixRunRequest {
        checks: vec!["NOPE-1".into()],
        destructive: false,
        ..Default::default()
    };
    assert_eq!(
        code(cp_client.matrix_run(&bad).await),
        ErrorCode::BadRequest
    );
    let destructive = MatrixRunRequest {
        checks: vec!["RT-06".into()],
        destructive: false,
        ..Default::default()
    };
    assert_eq!(
        code(cp_client.matrix_run(&destructive).await),
        ErrorCode::BadRequest
    );
    let raw = cp_client
        .post_raw("/v1/matrix/run", br#"{"checks":[],"extra":1}"#.to_vec())
        .await;
    assert!(matches!(raw, Err(ClientError::Api(e)) if e.code == ErrorCode::BadRequest));

    let ctx = HostContext {
        cluster: "mx".into(),
        os_ca_pem: pki.os_ca_pem().to_string(),
        targets: vec![
            Target {
                name: "mx-cp-1".into(),
                control_plane: true,
                endpoint: cp,
                client: cp_client,
            },
            Target {
                name: "mx-w-1".into(),
                control_plane: false,
                endpoint: w,
                client: pki.client("mx-w-1", w, Role::Admin),
            },
        ],
        cluster_file: None,
    };
    let checks: Vec<String> = ["CONF-01", "CONF-02", "CONF-05", "API-04", "RT-01"]
        .map(String::from)
        .to_vec();
    let heard = std::sync::Mutex::new(Vec::<String>::new());
    let progress = |l: &str| heard.lock().unwrap().push(l.to_string());
    let report = run(&ctx, &checks, false, &progress).await.unwrap();
    // One line per node as its run ends, with its counts.
    let lines = heard.lock().unwrap().clone();
    for node in ["mx-cp-1", "mx-w-1"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!(
                "{node}: 1 checks (0 passed, 0 failed, 0 exposed, 1 skipped)"
            ))),
            "{lines:?}"
        );
    }
    let table = render::table(&report);
    eprintln!("{table}");
    let get = |id: &str, node: &str| {
        report
            .results
            .iter()
            .find(|r| r.id == id && r.node == node)
            .unwrap_or_else(|| panic!("no {id} for {node}:\n{table}"))
            .verdict
            .clone()
    };
    assert_eq!(get("CONF-01", "mx-cp-1"), Verdict::Pass);
    assert_eq!(get("CONF-01", "mx-w-1"), Verdict::Pass);
    assert_eq!(get("CONF-02", "cluster"), Verdict::Pass);
    assert_eq!(get("CONF-05", "cluster"), Verdict::Pass);
    assert_eq!(get("API-04", "mx-cp-1"), Verdict::Pass);
    assert_eq!(get("API-04", "mx-w-1"), Verdict::Pass);
    // The node's own answer comes through the API, on each node.
    assert!(
        matches!(get("RT-01", "mx-w-1"), Verdict::Skip { reason } if reason.contains("no containerd"))
    );
    assert_eq!(report.results.len(), 2 + 1 + 1 + 2 + 2);

    // NET-02: the host listens on its loopback for the run and passes the
    // port; both (defenceless, in-memory) nodes reach it, and the host's
    // count fails the check on each.
    let net02 = run(&ctx, &["NET-02".to_string()], false, &|_: &str| {})
        .await
        .unwrap();
    assert_eq!(net02.results.len(), 2, "{:?}", net02.results);
    for r in &net02.results {
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert!(r.evidence[0].contains("reached 127.0.0.1:"), "{r:?}");
        assert!(r.evidence[1].contains("accepted 2 connection(s)"), "{r:?}");
    }
    assert_eq!(exit_status(&report, false), 0);
    assert!(render::junit(&report, false).contains("<testcase "));
    // Ordering: catalog order, then node.
    let ids: Vec<&str> = report.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.first(), Some(&"RT-01"));

    // A node that is gone (nothing listens on its endpoint): its checks FAIL
    // with the reason, and so does the exit status.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut ctx = ctx;
    ctx.targets[1].endpoint = closed;
    ctx.targets[1].client = pki.client("mx-w-1", closed, Role::Admin);
    let report = run(&ctx, &["CONF-01".into(), "RT-02".into()], false, &progress)
        .await
        .unwrap();
    assert!(
        heard
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("mx-w-1: the run failed after")),
        "{:?}",
        heard.lock().unwrap()
    );
    let down: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.node == "mx-w-1")
        .collect();
    assert!(down.iter().all(|r| r.verdict == Verdict::Fail), "{down:?}");
    assert_eq!(exit_status(&report, false), 1);
    drop((n1, n2));
}

/// `ironclad matrix` end to end: a state dir with a client.yaml whose nodes
/// are loopback apids, JSON on stdout, JUnit to a file, exit statuses.
#[test]
fn cli_runs_the_matrix_from_the_state_dir() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_ironclad");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = TestPki::new("mx");
    let (n1, n2) = rt.block_on(async {
        let a = MemoryNode::serve(&pki, "mx-cp-1", &["etcd", "containerd"]).await;
        let b = MemoryNode::serve(&pki, "mx-w-1", &["etcd", "containerd"]).await;
        pki.client("mx-cp-1", a.addr, Role::Admin)
            .bootstrap()
            .await
            .unwrap();
        (a, b)
    });
    let (cp, w) = (n1.addr, n2.addr);
    let state = tempfile::tempdir().unwrap();
    let mx: ironclad_host::spec::ClusterName = "mx".parse().unwrap();
    let paths = ironclad_host::cluster::paths::ClusterPaths::new(state.path(), &mx);
    paths.claim(&mx).unwrap();
    let dir = paths.dir().to_path_buf();
    // The kept cluster file: `matrix` reads its spec.matrix (all checks).
    std::fs::write(
        dir.join("cluster.yaml"),
        "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata: {name: mx}\n",
    )
    .unwrap();
    pki.write_client_config(
        &dir,
        &mx,
        &[
            ("mx-cp-1", ironclad_host::spec::Role::ControlPlane, cp),
            ("mx-w-1", ironclad_host::spec::Role::Worker, w),
        ],
    );
    let junit = state.path().join("matrix.xml");
    let out = Command::new(bin)
        .env_remove("CI")
        .args([
            "matrix", "--check", "CONF-01", "--check", "API-04", "--check", "RT-02", "--output",
            "json", "--junit",
        ])
        .arg(&junit)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: ironclad_host::matrix::Report = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report.cluster, "mx");
    let f = report.cluster_file.unwrap();
    assert!(f.path.ends_with("clusters/mx/cluster.yaml"));
    assert_eq!(f.sha256.len(), 64);
    assert_eq!(report.results.len(), 6);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 6);
    assert_eq!(xml.matches("<skipped ").count(), 2);

    // Bad input: exit 2 with the reason, before anything is contacted.
    let out = Command::new(bin)
        .env_remove("CI")
        .args(["matrix", "mx", "--check", "NOPE-9"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOPE-9"));
    let out = Command::new(bin)
        .env_remove("CI")
        .args(["matrix", "nope"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin)
        .env_remove("CI")
        .args(["matrix", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("BRK-10"));

    // A node down: its checks FAIL and the exit status is 1.
    drop(n2);
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    pki.write_client_config(
        &dir,
        &mx,
        &[
            ("mx-cp-1", ironclad_host::spec::Role::ControlPlane, cp),
            ("mx-w-1", ironclad_host::spec::Role::Worker, gone),
        ],
    );
    let out = Command::new(bin)
        .env_remove("CI")
        .args(["matrix", "--check", "CONF-01"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
    drop(n1);
}

/// A node that answers `POST /v1/matrix/run` with the results it is given
/// (a node whose matrix is wrong, or lies), everything else as the
/// in-memory controller does.
struct ScriptedNode {
    inner: ironclad_node::apid::memory::MemoryController,
    results: Vec<ironclad_contract::matrix::CheckResult>,
}

impl ironclad_node::apid::Controller for ScriptedNode {
    async fn execute(
        &self,
        action: ironclad_contract::api::Action,
    ) -> Result<ironclad_contract::api::Reply, ironclad_contract::api::ApiError> {
        use ironclad_contract::api::{Action, Reply};
        match action {
            Action::MatrixRun(_) => {
                Ok(Reply::Matrix(ironclad_contract::matrix::NodeMatrixReport {
                    node: "mx-cp-1".into(),
                    runtime: "scripted".into(),
                    image_manifest_sha256: None,
                    results: self.results.clone(),
                    duration_ms: 0,
                    steps: vec![ironclad_contract::matrix::Step {
                        what: "CRI RunPodSandbox matrix-gvisor-1".into(),
                        start_ms: 12,
                        ms: 34_567,
                    }],
                }))
            }
            other => self.inner.execute(other).await,
        }
    }

    async fn follow_logs(
        &self,
        service: String,
        tail: Option<usize>,
    ) -> Result<
        futures::stream::BoxStream<'static, ironclad_contract::api::LogLine>,
        ironclad_contract::api::ApiError,
    > {
        self.inner.follow_logs(service, tail).await
    }
}

/// The host does not take a node's word for its verdicts: through the real
/// report path (mTLS node API, `run`, the counts and the exit status), a
/// node's EXPOSED for a check the catalog gives no mitigation is FAIL, a
/// PASS whose evidence shows the privileged variant got through is EXPOSED
/// (with the catalog's mitigation), one where a protected variant did is
/// FAIL, and an honest EXPOSED stays.
#[tokio::test]
async fn the_host_corrects_a_nodes_verdicts() {
    use ironclad_contract::matrix::{CheckResult, find};
    let pki = TestPki::new("mx");
    let node = "mx-cp-1";
    let r = |id: &str, v: Verdict, ev: &[&str]| {
        CheckResult::new(id, node, v, ev.iter().map(|s| s.to_string()).collect())
    };
    let honest = Verdict::exposed(
        "a privileged container got through (OPENED-RW:/proc/sys/kernel/core_pattern)",
        find("BRK-07").unwrap().exposed_mitigation.unwrap(),
    );
    let scripted = ScriptedNode {
        inner: ironclad_node::apid::memory::MemoryController::new(node, &[]),
        results: vec![
            r(
                "BRK-01",
                Verdict::exposed("shell ran", "nothing"),
                &["priv: got through: SHELL-RAN"],
            ),
            r(
                "BRK-04",
                Verdict::Pass,
                &["priv: blocked: WROTE-SYSRQ", "userns: blocked: EROFS"],
            ),
            r(
                "BRK-05",
                Verdict::Pass,
                &[
                    "priv: blocked: EBUSY",
                    "userns: blocked: OPENED-RW:/dev/vdb",
                ],
            ),
            r(
                "BRK-07",
                honest.clone(),
                &[
                    "priv: got through (...): OPENED-RW:/proc/sys/kernel/core_pattern",
                    "userns: blocked: EROFS",
                ],
            ),
        ],
    };
    let apid = ironclad_node::apid::Apid::bind_with(
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        pki.server_tls(node),
    )
    .await
    .unwrap();
    let addr = apid.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = apid.serve(std::sync::Arc::new(scripted)).await;
    });
    let ctx = HostContext {
        cluster: "mx".into(),
        os_ca_pem: pki.os_ca_pem().to_string(),
        targets: vec![Target {
            name: node.into(),
            control_plane: true,
            endpoint: addr,
            client: pki.client(node, addr, Role::Admin),
        }],
        cluster_file: None,
    };
    let checks: Vec<String> = ["BRK-01", "BRK-04", "BRK-05", "BRK-07"]
        .map(String::from)
        .to_vec();
    let heard = std::sync::Mutex::new(Vec::<String>::new());
    let progress = |l: &str| heard.lock().unwrap().push(l.to_string());
    let report = run(&ctx, &checks, false, &progress).await.unwrap();
    server.abort();
    // The node's steps reach the report under its name.
    assert_eq!(report.steps.len(), 1, "{:?}", report.steps);
    assert_eq!(report.steps[0].node, node);
    assert_eq!(
        report.steps[0].steps[0].what,
        "CRI RunPodSandbox matrix-gvisor-1"
    );
    assert_eq!(report.steps[0].steps[0].ms, 34_567);
    let get = |id: &str| {
        report
            .results
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no {id}: {report:?}"))
            .clone()
    };
    let brk01 = get("BRK-01");
    assert_eq!(brk01.verdict, Verdict::Fail, "{brk01:?}");
    assert!(
        brk01
            .evidence
            .last()
            .unwrap()
            .contains("names no mitigation")
    );
    match get("BRK-04").verdict {
        Verdict::Exposed { reason, mitigation } => {
            assert!(
                reason.contains("WROTE-SYSRQ") && reason.contains("said PASS"),
                "{reason}"
            );
            assert_eq!(mitigation, ironclad_contract::matrix::SYSRQ_MITIGATION);
        }
        other => panic!("BRK-04: {other:?}"),
    }
    let brk05 = get("BRK-05");
    assert_eq!(brk05.verdict, Verdict::Fail, "{brk05:?}");
    assert!(
        brk05
            .evidence
            .last()
            .unwrap()
            .contains("userns: blocked: OPENED-RW")
    );
    assert_eq!(get("BRK-07").verdict, honest);
    let n = report.counts();
    assert_eq!(
        (n.passed, n.failed, n.exposed, n.skipped),
        (0, 2, 2, 0),
        "{n:?}"
    );
    assert_eq!(exit_status(&report, false), 1);
    // The node's progress line counts the corrected verdicts.
    let lines = heard.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("mx-cp-1: 4 checks (0 passed, 2 failed, 2 exposed, 0 skipped)")),
        "{lines:?}"
    );
    let json = render::json(&report);
    assert!(!json.contains("\"PASS\""), "{json}");
}
