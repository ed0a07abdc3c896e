//! The e2e harness: runs the real `ironclad` binary with a private state root
//! and the shared image cache, waits on conditions with deadlines, and cleans
//! up on drop, even when the test failed: every cluster it made is destroyed,
//! any QEMU or supervisor process still naming the state root is killed, and
//! the serial and supervisor logs of every cluster still there (a failed test's)
//! are copied to `target/e2e-logs/<test>/<cluster>/` for a CI reader. When
//! the test failed, each cluster's status, the tail of each node's serial
//! and containerd logs and its services are printed to stderr first (a CI
//! clone's files go with it; its output stays), and a support bundle is kept.

use ironclad_testkit::{process, wait};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Where the image is built once and shared by every test binary.
pub fn image_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-cache")
}

pub struct Harness {
    test: String,
    /// Short (under the system temp dir) so socket paths stay below 108 bytes.
    root: tempfile::TempDir,
}

impl Harness {
    pub fn new(test: &str) -> Harness {
        let root = tempfile::Builder::new()
            .prefix("ic-e2e-")
            .tempdir()
            .expect("temp dir");
        Harness {
            test: test.to_string(),
            root,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn cluster_dir(&self, name: &str) -> PathBuf {
        self.root().join("clusters").join(name)
    }

    /// Runs `ironclad ARGS` with this harness's state root and the shared cache.
    pub fn run(&self, args: &[&str]) -> Output {
        // Without `CI`: a failing command would write a support bundle into
        // the working directory (the serial logs are kept by `Drop`).
        let out = Command::new(env!("CARGO_BIN_EXE_ironclad"))
            .args(args)
            .env_remove("CI")
            .env("IRONCLAD_STATE_DIR", self.root())
            .env("IRONCLAD_CACHE_DIR", image_cache())
            .output()
            .expect("run ironclad");
        eprintln!(
            "$ ironclad {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ironclad {} failed", args.join(" "));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ironclad create -f <repo file> --accel tcg --timeout <BOOT>`, then
    /// `extra`; the caller judges the outcome.
    pub fn create(&self, file: &str, extra: &[&str]) -> Output {
        self.create_from(&crate::repo_file(file), extra)
    }

    /// [`Harness::create`] of a cluster file anywhere (one a test wrote).
    pub fn create_from(&self, file: &str, extra: &[&str]) -> Output {
        let timeout = crate::BOOT.as_secs().to_string();
        let mut args = vec![
            "create",
            "-f",
            file,
            "--accel",
            "tcg",
            "--timeout",
            &timeout,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// [`Harness::create`] that must succeed.
    pub fn create_ok(&self, file: &str) {
        self.create_from_ok(&crate::repo_file(file));
    }

    /// [`Harness::create_from`] that must succeed.
    pub fn create_from_ok(&self, file: &str) {
        let out = self.create_from(file, &[]);
        assert!(out.status.success(), "ironclad create -f {file} failed");
    }

    pub fn status(&self, name: &str) -> Value {
        let text = self.ok(&["status", name, "--output", "json"]);
        serde_json::from_str(&text).expect("status JSON")
    }

    /// The state of each node, by name.
    pub fn node_states(&self, name: &str) -> Vec<(String, String)> {
        self.status(name)["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap_or_default().to_string(),
                    n["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Polls `cond` until it holds or `timeout` passes.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        wait::until_true(what, wait::deadline(timeout), cond);
    }

    /// Pids of processes whose command line names this state root.
    pub fn leftover_processes(&self) -> Vec<(u32, String)> {
        process::processes_mentioning(self.root())
    }

    fn save_logs(&self) {
        // <target>/e2e-logs, wherever the target dir is.
        let dest = process::kept_logs_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), &self.test);
        let clusters = self.root().join("clusters");
        for c in std::fs::read_dir(&clusters).into_iter().flatten().flatten() {
            let logs = c.path().join("logs");
            let to = dest.join(c.file_name());
            let _ = std::fs::create_dir_all(&to);
            for f in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                let _ = std::fs::copy(f.path(), to.join(f.file_name()));
            }
            let _ = std::fs::copy(c.path().join("cluster.json"), to.join("cluster.json"));
        }
    }

    /// Runs `ironclad ARGS` for at most `limit` (a wedged node must not
    /// hold a failed test's report up); stdout and stderr together, or why
    /// there is none.
    fn run_bounded(&self, args: &[&str], limit: Duration) -> String {
        let out = self.root().join(".bounded.out");
        let Ok(file) = std::fs::File::create(&out) else {
            return "(no output file)".into();
        };
        let Ok(err_file) = file.try_clone() else {
            return "(no output file)".into();
        };
        let child = Command::new(env!("CARGO_BIN_EXE_ironclad"))
            .args(args)
            .env_remove("CI")
            .env("IRONCLAD_STATE_DIR", self.root())
            .env("IRONCLAD_CACHE_DIR", image_cache())
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .spawn();
        let Ok(mut child) = child else {
            return "(could not run ironclad)".into();
        };
        let deadline = wait::deadline(limit);
        let finished = loop {
            match child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
            }
        };
        let mut text = std::fs::read_to_string(&out).unwrap_or_default();
        if !finished {
            text.push_str(&format!("(killed after {} s)\n", limit.as_secs()));
        }
        text
    }

    /// What a CI reader needs when a test failed and its logs go with the
    /// clone: each cluster's status, the tail of each node's serial log,
    /// each node's services and the tail of its containerd log, printed to
    /// stderr (where the test's failure output is); and a support bundle
    /// beside the kept logs.
    fn report_failure(&self) {
        let dest = process::kept_logs_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), &self.test);
        let clusters = self.root().join("clusters");
        let limit = Duration::from_secs(20);
        for c in std::fs::read_dir(&clusters).into_iter().flatten().flatten() {
            let Some(name) = c.file_name().to_str().map(str::to_string) else {
                continue;
            };
            eprintln!("==== the test failed: cluster {name} as it was then");
            eprint!("{}", self.run_bounded(&["status", &name], limit));
            let mut nodes: Vec<String> = std::fs::read_dir(c.path().join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.file_name().to_str().map(str::to_string))
                .filter_map(|f| f.strip_suffix(".log").map(str::to_string))
                .filter(|n| !n.ends_with(".qemu") && n != "supervisor")
                .collect();
            nodes.sort();
            for node in &nodes {
                let serial =
                    std::fs::read_to_string(c.path().join("logs").join(format!("{node}.log")))
                        .unwrap_or_default();
                let lines: Vec<&str> = serial.lines().collect();
                eprintln!("---- {node}: the last lines of its serial log");
                for l in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("{l}");
                }
                eprintln!("---- {node}: services");
                eprint!(
                    "{}",
                    self.run_bounded(
                        &["node", "services", "--cluster", &name, "--node", node],
                        limit
                    )
                );
                eprintln!("---- {node}: the last lines of containerd's log");
                eprint!(
                    "{}",
                    self.run_bounded(
                        &[
                            "node",
                            "logs",
                            "containerd",
                            "--cluster",
                            &name,
                            "--node",
                            node,
                            "--tail",
                            "15"
                        ],
                        limit
                    )
                );
            }
            let _ = std::fs::create_dir_all(&dest);
            let bundle = dest.join(format!("support-{name}.tar.gz"));
            let bundle_arg = bundle.to_string_lossy().into_owned();
            let made = self.run_bounded(
                &["support", &name, "--file", &bundle_arg],
                Duration::from_secs(60),
            );
            eprintln!(
                "---- support bundle: {} ({})",
                bundle.display(),
                made.lines().last().unwrap_or("")
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report_failure();
        }
        self.save_logs();
        let clusters = self.root().join("clusters");
        for c in std::fs::read_dir(&clusters).into_iter().flatten().flatten() {
            if let Some(name) = c.file_name().to_str() {
                let _ = self.run(&["destroy", name]);
            }
        }
        process::kill_mentioning(self.root());
    }
}
