//! The matrix on clusters/dev.yaml, the way the README's main job runs it:
//! `create --matrix` with JSON and JUnit output; every check PASS or an
//! explicit SKIP with its reason, no FAIL.

use crate::harness::Harness;
use crate::{BOOT, repo_file};
use serde_json::Value;

#[test]
#[ignore = "takes over 8 minutes under TCG on 2 cores (pods start slowly); \
            run with `cargo nextest run --run-ignored all -E 'test(matrix_on_the_dev)'`"]
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
    let report: Value = serde_json::from_str(&stdout).expect("matrix report JSON on stdout");
    let results = report["results"].as_array().expect("results");
    let mut failed = Vec::new();
    for r in results {
        let verdict = r["verdict"]["verdict"]
            .as_str()
            .or_else(|| r["verdict"].as_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if verdict == "fail" {
            failed.push(r.to_string());
        }
        if verdict == "skip" {
            // An explicit SKIP carries its reason.
            assert!(
                r.to_string().contains("reason"),
                "SKIP without a reason: {r}"
            );
        }
    }
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    assert!(out.status.success(), "exit status {}", out.status);
    for id in [
        "BRK-01", "BRK-03", "RT-01", "RT-02", "RT-07", "CONF-01", "CONF-02", "API-04",
    ] {
        assert!(
            results.iter().any(|r| r["id"] == id),
            "{id} missing from the report"
        );
    }
    assert!(report["image_manifest_sha256"].is_string() || stdout.contains("manifest"));
    let xml = std::fs::read_to_string(&junit).expect("JUnit file");
    assert!(
        xml.contains("<testsuite") && xml.contains("BRK-01"),
        "{xml}"
    );
    h.ok(&["destroy", "dev"]);
}
