//! `spec.matrix` of the cluster file decides which checks `ironclad matrix`
//! runs, and the command line overrides it: the real CLI against a state dir
//! whose client.yaml names loopback apids (real TLS, the in-memory
//! controller behind them), the cluster file being the copy `create` keeps.

use ironclad_contract::api::Role;
use ironclad_host::matrix::Report;
use ironclad_testkit::apid::{MemoryNode, TestPki};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

/// A state dir holding cluster `mx` with one node, `mx-cp-1`, served on
/// loopback, and `cluster_file` as its kept cluster file.
struct Fixture {
    state: tempfile::TempDir,
    _node: MemoryNode,
    _rt: tokio::runtime::Runtime,
}

fn fixture(cluster_file: &str) -> Fixture {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = TestPki::new("mx");
    let node = rt.block_on(async {
        let n = MemoryNode::serve(&pki, "mx-cp-1", &["etcd", "containerd"]).await;
        pki.client("mx-cp-1", n.addr, Role::Admin)
            .bootstrap()
            .await
            .unwrap();
        n
    });
    let state = tempfile::tempdir().unwrap();
    let mx: ironclad_host::spec::ClusterName = "mx".parse().unwrap();
    let paths = ironclad_host::cluster::paths::ClusterPaths::new(state.path(), &mx);
    paths.claim(&mx).unwrap();
    let dir = paths.dir();
    std::fs::write(paths.cluster_yaml(), cluster_file).unwrap();
    pki.write_client_config(
        dir,
        &mx,
        &[(
            "mx-cp-1",
            ironclad_host::spec::Role::ControlPlane,
            node.addr,
        )],
    );
    Fixture {
        state,
        _node: node,
        _rt: rt,
    }
}

fn matrix(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .arg("matrix")
        .args(args)
        .args(["--output", "json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap()
}

/// The check ids of a run's JSON report (exit 0 or 1: a run that ended).
fn ran(out: &Output) -> (BTreeSet<String>, bool) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report = serde_json::from_str(&stdout).unwrap();
    (
        report.results.iter().map(|r| r.id.to_string()).collect(),
        report.destructive,
    )
}

fn ids(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const HEAD: &str = "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata: {name: mx}\n";

#[test]
fn the_cluster_files_checks_are_the_runs_checks() {
    let f = fixture(&format!(
        "{HEAD}spec:\n  matrix:\n    checks: [conf-01, RT-02]\n"
    ));
    let out = matrix(f.state.path(), &[]);
    assert_eq!(ran(&out), (ids(&["CONF-01", "RT-02"]), false));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CONF-01, RT-02 (from the cluster file's spec.matrix)"),
        "{stderr}"
    );

    // --check overrides the file's list.
    let out = matrix(f.state.path(), &["--check", "API-04"]);
    assert_eq!(ran(&out).0, ids(&["API-04"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("API-04 (from --check)"));
}

#[test]
fn the_cluster_files_destructive_is_overridden_by_the_flags() {
    // The file allows the destructive RT-06 and names it.
    let f = fixture(&format!(
        "{HEAD}spec:\n  matrix: {{checks: [RT-06, CONF-01], destructive: true}}\n"
    ));
    // --no-destructive overrides the file: RT-06 is then refused before
    // anything is contacted.
    let out = matrix(f.state.path(), &["--no-destructive"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RT-06 is destructive"), "{stderr}");
    // With the file's own setting, the report says destructive.
    let out = matrix(f.state.path(), &["--check", "CONF-01"]);
    assert_eq!(ran(&out), (ids(&["CONF-01"]), true));
    let out = matrix(f.state.path(), &["--check", "CONF-01", "--no-destructive"]);
    assert_eq!(ran(&out), (ids(&["CONF-01"]), false));
}

#[test]
fn a_kept_cluster_file_that_no_longer_validates_is_bad_input() {
    let f = fixture(&format!("{HEAD}spec:\n  matrix: {{checks: [NOPE-1]}}\n"));
    let out = matrix(f.state.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster.yaml:5:"), "{stderr}");
    assert!(stderr.contains("unknown matrix check"), "{stderr}");
    // When the flags decide everything, the file is not needed.
    let out = matrix(f.state.path(), &["--check", "CONF-01", "--no-destructive"]);
    assert_eq!(ran(&out).0, ids(&["CONF-01"]));
}
