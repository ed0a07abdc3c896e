//! The matrix on clusters/dev.yaml, the way the README's main job runs it:
//! `create --matrix` with JSON and JUnit output; every check PASS or an
//! explicit SKIP with its reason, no FAIL. The JSON report and the JUnit file
//! are kept in `target/e2e-logs/matrix/` (report.json, junit.xml), pass or
//! fail, for CI to publish.

use crate::harness::Harness;
use crate::{BOOT, repo_file};
use serde_json::Value;

/// Every non-destructive check the report must hold, per node or for the
/// cluster.
const NODE_CHECKS: &[&str] = &[
    "BRK-01", "BRK-02", "BRK-03", "BRK-04", "BRK-05", "BRK-06", "BRK-07", "BRK-08", "BRK-09",
    "BRK-10", "RT-01", "RT-02", "RT-03", "RT-04", "RT-07", "RT-08", "RT-09", "RT-10", "NET-01",
    "NET-02", "API-04", "CONF-01", "CONF-03", "CONF-04",
];
const CLUSTER_CHECKS: &[&str] = &["CONF-02", "CONF-05"];

#[test]
fn matrix_on_the_dev_cluster_passes() {
    let h = Harness::new("matrix_dev");
    let timeout = BOOT.as_secs().to_string();
    let junit = h.root().join("matrix.xml");
    let junit_arg = junit.to_string_lossy().into_owned();
    let out = h.run(&[
        "create",
        "-f",
        &repo_file("clusters/dev.yaml"),
        "--accel",
        "tcg",
        "--timeout",
        &timeout,
        "--matrix",
        "--output",
        "json",
        "--junit",
        &junit_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("e2e-logs")
        .join("matrix");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::write(keep.join("report.json"), stdout.as_bytes());
    let _ = std::fs::copy(&junit, keep.join("junit.xml"));
    let report: Value = serde_json::from_str(&stdout).expect("matrix report JSON on stdout");
    let results = report["results"].as_array().expect("results");
    let mut failed = Vec::new();
    for r in results {
        let verdict = r["verdict"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if verdict == "fail" {
            failed.push(r.to_string());
        }
        if verdict == "skip" {
            // An explicit SKIP carries its reason.
            assert!(
                r["reason"].as_str().is_some_and(|s| !s.is_empty()),
                "SKIP without a reason: {r}"
            );
        }
    }
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    assert!(out.status.success(), "exit status {}", out.status);
    let has = |id: &str, node: &str| results.iter().any(|r| r["id"] == id && r["node"] == node);
    for node in ["dev-cp-1", "dev-worker-1"] {
        for id in NODE_CHECKS {
            assert!(has(id, node), "{id} on {node} missing from the report");
        }
    }
    for id in CLUSTER_CHECKS {
        assert!(has(id, "cluster"), "{id} missing from the report");
    }
    // The checks that must PASS on this file (userns on, gVisor off): the
    // attacks' verdicts rest on the userns variant, which ran.
    for r in results {
        let id = r["id"].as_str().unwrap_or_default();
        let verdict = r["verdict"].as_str().unwrap_or_default();
        if id == "RT-09" {
            assert_eq!(verdict, "SKIP", "gVisor is off in dev.yaml: {r}");
        } else {
            assert_eq!(verdict, "PASS", "{r}");
        }
    }
    let manifest = report["image_manifest_sha256"].as_str().unwrap_or_default();
    assert_eq!(manifest.len(), 64, "image manifest hash: {manifest:?}");
    assert!(report["cluster_file"]["sha256"].is_string(), "{report}");
    let xml = std::fs::read_to_string(&junit).expect("JUnit file");
    assert!(
        xml.contains("<testsuite") && xml.contains("BRK-01"),
        "{xml}"
    );
    h.ok(&["destroy", "dev"]);
}
