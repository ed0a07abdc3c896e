//! The e2e harness: runs the real `ironclad` binary with a private state root
//! and the shared image cache, waits on conditions with deadlines, and cleans
//! up on drop, even when the test failed: every cluster it made is destroyed,
//! any QEMU or supervisor process still naming the state root is killed, and
//! the serial and supervisor logs of every cluster still there (a failed test's)
//! are copied to `target/e2e-logs/<test>/<cluster>/` for a CI reader.

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
}

impl Drop for Harness {
    fn drop(&mut self) {
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
