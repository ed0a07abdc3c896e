//! What the lifecycle commands print, end to end with the real binary and a
//! state root holding a stopped cluster (no VM): `stop` and `destroy` with
//! `-o json`, and every printing command writing into a pipe whose reader is
//! already gone (`ironclad list | head -0`), which must end quietly, never
//! with a panic.

use ironclad_testkit::state::stopped_cluster;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn ironclad(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ironclad"));
    c.arg("--state-dir")
        .arg(root)
        .env_remove("IRONCLAD_STATE_DIR")
        .env_remove("IRONCLAD_CLUSTER")
        .env_remove("IRONCLAD_CLIENT_CONFIG");
    c
}

fn run(root: &Path, args: &[&str]) -> Output {
    ironclad(root).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {out:?}"))
}

#[test]
fn stop_and_destroy_say_what_they_did_in_json() {
    let root = tempfile::tempdir().unwrap();
    let paths = stopped_cluster(root.path(), "dev", &["dev-cp-1", "dev-worker-1"]);

    let done = json(&run(root.path(), &["stop", "dev", "-o", "json"]));
    assert_eq!(
        done,
        serde_json::json!({
            "cluster": "dev",
            "nodes": ["dev-cp-1", "dev-worker-1"],
            "result": "not-running",
            "stateKept": true,
        })
    );
    let done = json(&run(
        root.path(),
        &["stop", "--node", "dev-worker-1", "-o", "json"],
    ));
    assert_eq!(done["nodes"], serde_json::json!(["dev-worker-1"]));
    // Text stays as it was.
    let out = run(root.path(), &["stop", "dev"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cluster dev stopped (state kept)\n"
    );

    let done = json(&run(root.path(), &["destroy", "dev", "-o", "json"]));
    assert_eq!(done["cluster"], "dev", "{done}");
    assert_eq!(done["result"], "destroyed", "{done}");
    assert_eq!(
        done["dir"].as_str(),
        Some(paths.dir().to_str().unwrap()),
        "{done}"
    );
    assert!(done["seconds"].is_number(), "{done}");
    assert!(!paths.dir().exists());

    // Twice: nothing to destroy is not an error, and says so.
    let done = json(&run(root.path(), &["destroy", "dev", "-o", "json"]));
    assert_eq!(
        done,
        serde_json::json!({"cluster": "dev", "result": "absent", "seconds": done["seconds"]})
    );
    let done = json(&run(root.path(), &["destroy", "-o", "json"]));
    assert_eq!(done["cluster"], serde_json::Value::Null, "{done}");
    assert_eq!(done["result"], "absent", "{done}");
}

/// Runs `args` with stdout a pipe whose reading end is closed before the
/// command starts, so its first write fails with EPIPE.
fn into_closed_pipe(root: &Path, args: &[&str]) -> Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two descriptors of a fresh array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just made by pipe2 and are owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    ironclad(root)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let root = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let paths = stopped_cluster(root.path(), "dev", &["dev-cp-1"]);
    // A serial log longer than a pipe's buffer, for `console`.
    let log = paths.serial_log(&"dev-cp-1".parse().unwrap());
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "machined: booting\n".repeat(10_000)).unwrap();
    let cases: &[(&Path, &[&str])] = &[
        (empty.path(), &["list"]),
        (root.path(), &["list"]),
        (root.path(), &["list", "-o", "json"]),
        (root.path(), &["status", "-o", "json"]),
        (root.path(), &["status"]),
        (root.path(), &["stop", "-o", "json"]),
        (root.path(), &["matrix", "--list"]),
        (root.path(), &["version", "-o", "json"]),
        (root.path(), &["completion", "bash"]),
        (root.path(), &["console", "dev-cp-1", "--no-follow"]),
    ];
    for (state, args) in cases {
        let out = into_closed_pipe(state, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    // The same write into a full device is an error, said, not a panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = ironclad(root.path())
        .args(["list"])
        .stdout(Stdio::from(full))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
}
