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
