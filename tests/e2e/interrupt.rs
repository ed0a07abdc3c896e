//! Ctrl-C during `create`: what create started is stopped and removed, or
//! kept with `--keep-on-interrupt`; never left running silently.

use crate::harness::{Harness, image_cache};
use ironclad_testkit::process::Guard;
use ironclad_testkit::wait;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CLUSTER: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: intr}
spec:
  controlPlanes: {count: 1}
  workers: {count: 0}
";

/// Starts `ironclad create -f FILE`; returns the child and its
/// stderr lines as they come.
pub(crate) fn start_create(
    h: &Harness,
    file: &std::path::Path,
    extra: &[&str],
) -> (Guard, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironclad"));
    cmd.args(["create", "-f"])
        .arg(file)
        .args(["--accel", "tcg"])
        .args(extra)
        .env("IRONCLAD_STATE_DIR", h.root())
        .env("IRONCLAD_CACHE_DIR", image_cache())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Guard::spawn(cmd, "this build's ironclad");
    let stderr = child.take_stderr().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("create: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads lines until one contains `needle` (all lines read so far returned).
pub(crate) fn until_line(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {needle:?} within {within:?}; saw {seen:#?}"),
        }
    }
}

/// The lines until stderr closes (the child has ended; nothing else holds
/// the pipe: the supervisor logs to its own file).
pub(crate) fn remaining(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(l);
    }
    lines
}

pub(crate) fn interrupt_and_wait(child: &mut Guard, within: Duration) -> Option<i32> {
    // As a terminal's Ctrl-C.
    child.signal(libc::SIGINT);
    let status = child.wait_exit(wait::deadline(within), || {
        format!("create did not end within {within:?} of SIGINT")
    });
    status.code()
}

#[test]
fn ctrl_c_during_create_stops_and_removes_what_it_started() {
    let h = Harness::new("ctrl_c_during_create");
    let file = h.root().join("intr.yaml");
    std::fs::write(&file, CLUSTER).unwrap();

    // Interrupted once its supervisor runs (its QEMU is starting): nothing
    // of the cluster is left, the exit status is 130 and stderr says what
    // was undone.
    let (mut child, rx) = start_create(&h, &file, &[]);
    until_line(&rx, "supervisor running", Duration::from_secs(600));
    let code = interrupt_and_wait(&mut child, Duration::from_secs(60));
    let rest = remaining(&rx);
    assert_eq!(code, Some(130), "{rest:#?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted: stopped what create started")),
        "{rest:#?}"
    );
    assert!(!h.cluster_dir("intr").exists());
    assert_eq!(h.leftover_processes(), vec![]);

    // With --keep-on-interrupt the half-made cluster stays, says so, and
    // destroy removes it and everything of it that runs.
    let (mut child, rx) = start_create(&h, &file, &["--keep-on-interrupt"]);
    until_line(&rx, "supervisor running", Duration::from_secs(120));
    let code = interrupt_and_wait(&mut child, Duration::from_secs(60));
    let rest = remaining(&rx);
    assert_eq!(code, Some(130), "{rest:#?}");
    assert!(rest.iter().any(|l| l.contains("is kept in")), "{rest:#?}");
    assert!(h.cluster_dir("intr").join("cluster.json").exists());
    assert!(
        !h.leftover_processes().is_empty(),
        "the kept supervisor runs"
    );
    h.ok(&["destroy", "intr"]);
    assert!(!h.cluster_dir("intr").exists());
    assert_eq!(h.leftover_processes(), vec![]);
}
