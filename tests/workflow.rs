//! The GitHub workflow (`.github/workflows/e2e.yml`), parsed as YAML: the
//! steps the KVM runner relies on are there, in an order that works, and the
//! paths it publishes are the ones the tests and scripts write. actionlint
//! (`ci/actionlint`) checks the syntax; this checks the project's own needs:
//! KVM through a udev rule, the AppArmor user-namespace sysctl, the caches
//! (cargo keyed on Cargo.lock, the image base keyed on the recipes), a
//! prebuilt nextest, the `ci` nextest profile with its JUnit file, uploads and
//! the job summary under `if: always()`, read-only permissions, a concurrency
//! group, and `ci/test` run as the runner user (no sudo).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
struct Workflow {
    #[serde(default)]
    on: Value,
    #[serde(default)]
    permissions: Value,
    #[serde(default)]
    concurrency: Value,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Clone, Deserialize)]
struct Job {
    #[serde(rename = "runs-on")]
    runs_on: Value,
    #[serde(rename = "timeout-minutes")]
    timeout_minutes: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
struct Step {
    name: Option<String>,
    uses: Option<String>,
    run: Option<String>,
    #[serde(rename = "if")]
    condition: Option<String>,
    #[serde(default)]
    with: BTreeMap<String, Value>,
}

impl Step {
    fn run(&self) -> &str {
        self.run.as_deref().unwrap_or_default()
    }
    fn uses(&self, action: &str) -> bool {
        self.uses
            .as_deref()
            .is_some_and(|u| u.starts_with(&format!("{action}@")))
    }
    fn with(&self, key: &str) -> String {
        match self.with.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }
    fn always(&self) -> bool {
        self.condition
            .as_deref()
            .is_some_and(|c| c.replace(' ', "").contains("always()"))
    }
    fn label(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.uses.clone())
            .unwrap_or_else(|| self.run().lines().next().unwrap_or_default().to_string())
    }
}

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn load(text: &str) -> Workflow {
    serde_saphyr::from_str(text).expect("the workflow parses")
}

fn string(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

fn need(p: &mut Vec<String>, ok: bool, what: &str) {
    if !ok {
        p.push(what.to_string());
    }
}

/// What the workflow lacks, one line per problem.
fn problems(w: &Workflow) -> Vec<String> {
    let mut p = Vec::new();
    need(
        &mut p,
        w.on.get("push").is_some() && w.on.get("pull_request").is_some(),
        "runs on push and pull_request",
    );
    need(
        &mut p,
        w.permissions
            .as_object()
            .is_some_and(|o| o.len() == 1 && string(o.get("contents")) == Some("read")),
        "permissions: contents: read (and nothing else)",
    );
    need(
        &mut p,
        string(w.concurrency.get("group")).is_some_and(|g| g.contains("github.ref")),
        "a concurrency group per ref",
    );
    need(&mut p, w.jobs.len() == 1, "one job");
    let Some(job) = w.jobs.values().next() else {
        return p;
    };
    need(
        &mut p,
        job.runs_on.as_str() == Some("ubuntu-24.04"),
        "runs-on: ubuntu-24.04",
    );
    need(
        &mut p,
        job.timeout_minutes.is_some_and(|m| m <= 60),
        "timeout-minutes of at most 60",
    );
    let env = |k: &str| {
        string(job.env.get(k))
            .or(string(w.env.get(k)))
            .map(str::to_string)
    };
    need(
        &mut p,
        env("NEXTEST_PROFILE").as_deref() == Some("ci"),
        "NEXTEST_PROFILE=ci (the JUnit profile)",
    );
    need(
        &mut p,
        env("IRONCLAD_REQUIRE_ROOTLESS").as_deref() == Some("1"),
        "IRONCLAD_REQUIRE_ROOTLESS=1 (a skipped rootless test fails on the runner)",
    );
    for s in &job.steps {
        if let Some(u) = &s.uses {
            need(
                &mut p,
                u.contains('@'),
                &format!("step {:?} pins its action", s.label()),
            );
        }
    }

    let find = |f: &dyn Fn(&Step) -> bool| job.steps.iter().position(f);
    let checkout = find(&|s| s.uses("actions/checkout"));
    let udev = find(&|s| {
        s.run().contains("KERNEL==\"kvm\"")
            && s.run().contains("/etc/udev/rules.d/")
            && s.run().contains("udevadm trigger")
    });
    let sysctl = find(&|s| {
        s.run()
            .contains("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    });
    let nextest = find(&|s| s.uses("taiki-e/install-action") && s.with("tool") == "cargo-nextest");
    let cargo_cache = find(&|s| {
        let path = s.with("path");
        s.uses("actions/cache")
            && path.contains("~/.cargo/registry")
            && path.lines().any(|l| l.trim() == "target/")
            && path.contains("!target/tmp/")
            && s.with("key").contains("hashFiles('Cargo.lock')")
    });
    let base_cache = find(&|s| {
        s.uses("actions/cache")
            && s.with("path").trim() == "target/tmp/image-cache/base/"
            && s.with("key").contains("hashFiles('images/*.yaml')")
    });
    let stage_cache = find(&|s| {
        s.uses("actions/cache")
            && s.with("path").trim() == "target/tmp/image-cache/stages/"
            && s.with("key").contains("crates/host/src/image/gvisor.patch")
    });
    let install_deps = find(&|s| s.run().contains("ci/install-deps"));
    let test = find(&|s| s.run().trim() == "ci/test");
    need(&mut p, checkout.is_some(), "actions/checkout");
    need(
        &mut p,
        udev.is_some(),
        "a step giving /dev/kvm to the runner with a udev rule",
    );
    need(
        &mut p,
        sysctl.is_some(),
        "a step setting kernel.apparmor_restrict_unprivileged_userns=0",
    );
    need(
        &mut p,
        nextest.is_some(),
        "cargo-nextest installed prebuilt (taiki-e/install-action, tool: cargo-nextest)",
    );
    need(
        &mut p,
        cargo_cache.is_some(),
        "a cargo cache (registry + target, without target/tmp) keyed on Cargo.lock",
    );
    need(
        &mut p,
        base_cache.is_some(),
        "an image-base cache (target/tmp/image-cache/base/) keyed on images/*.yaml",
    );
    need(
        &mut p,
        stage_cache.is_some(),
        "a gVisor stage cache (target/tmp/image-cache/stages/) keyed on the recipes and the stage's code",
    );
    need(&mut p, test.is_some(), "a step running ci/test");
    if let Some(t) = test {
        for (what, at) in [
            ("checkout", checkout),
            ("the udev rule", udev),
            ("the sysctl", sysctl),
            ("nextest", nextest),
            ("the cargo cache", cargo_cache),
            ("the image-base cache", base_cache),
        ] {
            need(
                &mut p,
                at.is_some_and(|a| a < t),
                &format!("{what} comes before ci/test"),
            );
        }
        need(
            &mut p,
            !job.steps[t].run().contains("sudo"),
            "ci/test runs as the runner user, without sudo",
        );
    }
    if let (Some(n), Some(d)) = (nextest, install_deps) {
        need(
            &mut p,
            n < d,
            "nextest is installed before ci/install-deps (which would compile it)",
        );
    }

    let upload_has = |wanted: &str| {
        job.steps.iter().any(|s| {
            s.uses("actions/upload-artifact")
                && s.always()
                && s.with("path").lines().any(|l| l.trim() == wanted)
        })
    };
    for path in [
        "target/nextest/ci/junit.xml",
        "target/e2e-logs/matrix/junit.xml",
        "target/e2e-logs/rootless/junit.xml",
        "target/e2e-logs/",
    ] {
        need(
            &mut p,
            upload_has(path),
            &format!("an upload of {path} with if: always()"),
        );
    }
    need(
        &mut p,
        job.steps.iter().any(|s| {
            s.always()
                && s.run().contains("$GITHUB_STEP_SUMMARY")
                && s.run().contains("target/e2e-logs/matrix/report.json")
        }),
        "the matrix table in $GITHUB_STEP_SUMMARY with if: always()",
    );
    p
}

fn workflow_text() -> String {
    std::fs::read_to_string(repo(".github/workflows/e2e.yml")).expect("the workflow exists")
}

#[test]
fn the_workflow_has_every_step_it_relies_on() {
    let w = load(&workflow_text());
    let p = problems(&w);
    assert!(p.is_empty(), "the workflow lacks:\n{}", p.join("\n"));
    assert!(
        !repo("ci/github/e2e.yml").exists(),
        "the inactive copy is gone"
    );
}

/// The paths the workflow publishes are the ones the project writes.
#[test]
fn published_paths_are_written_by_the_project() {
    let nextest = std::fs::read_to_string(repo(".config/nextest.toml")).unwrap();
    let ci = nextest
        .split("[profile.ci.junit]")
        .nth(1)
        .expect("a [profile.ci.junit] section");
    assert!(
        ci.lines()
            .take_while(|l| !l.starts_with('['))
            .any(|l| l.replace(' ', "") == "path=\"junit.xml\""),
        "[profile.ci.junit] path = \"junit.xml\""
    );
    let matrix = std::fs::read_to_string(repo("tests/e2e/matrix.rs")).unwrap();
    for needle in [
        "\"e2e-logs\"",
        "\"matrix\"",
        "\"report.json\"",
        "\"junit.xml\"",
    ] {
        assert!(
            matrix.contains(needle),
            "tests/e2e/matrix.rs writes {needle}"
        );
    }
    let rootless = std::fs::read_to_string(repo("ci/rootless-e2e")).unwrap();
    assert!(rootless.contains("logs=$repo/target/e2e-logs/rootless"));
    assert!(rootless.contains("$logs/junit.xml") && rootless.contains("$logs/result.txt"));
    assert!(rootless.contains("$repo/target/tmp/image-cache"));
    let test = std::fs::read_to_string(repo("ci/test")).unwrap();
    assert!(test.contains("ci/rootless-e2e") && test.contains("ci/actionlint"));
    // The cache the tests share is the one the workflow caches the base of.
    let harness = std::fs::read_to_string(repo("tests/e2e/harness.rs")).unwrap();
    assert!(harness.contains("join(\"image-cache\")"));
}

/// The checker itself catches a missing piece.
#[test]
fn a_workflow_missing_a_piece_is_reported() {
    let text = workflow_text();
    let w = load(&text);

    let mut no_sysctl = w.clone();
    no_sysctl.jobs.values_mut().for_each(|j| {
        j.steps
            .retain(|s| !s.run().contains("apparmor_restrict_unprivileged_userns"))
    });
    assert!(problems(&no_sysctl).iter().any(|p| p.contains("sysctl")));

    let mut not_always = w.clone();
    not_always.jobs.values_mut().for_each(|j| {
        j.steps.iter_mut().for_each(|s| {
            if s.uses("actions/upload-artifact") {
                s.condition = Some("failure()".into());
            }
        })
    });
    let p = problems(&not_always);
    assert!(
        p.iter()
            .any(|p| p.contains("target/nextest/ci/junit.xml") && p.contains("always")),
        "{p:?}"
    );

    let mut late_nextest = w.clone();
    late_nextest.jobs.values_mut().for_each(|j| {
        let i = j
            .steps
            .iter()
            .position(|s| s.uses("taiki-e/install-action"))
            .unwrap();
        let s = j.steps.remove(i);
        j.steps.push(s);
    });
    let p = problems(&late_nextest);
    assert!(
        p.iter().any(|p| p.contains("nextest comes before ci/test")),
        "{p:?}"
    );

    let sudo = text.replace("run: ci/test\n", "run: sudo ci/test\n");
    assert_ne!(sudo, text);
    let p = problems(&load(&sudo));
    assert!(
        p.iter().any(|p| p.contains("a step running ci/test")),
        "{p:?}"
    );

    let writable = text.replace("contents: read", "contents: write");
    assert!(
        problems(&load(&writable))
            .iter()
            .any(|p| p.contains("permissions"))
    );
    let no_group = text.replace("group: e2e-${{ github.ref }}", "group: e2e");
    assert!(
        problems(&load(&no_group))
            .iter()
            .any(|p| p.contains("concurrency"))
    );
}
