//! The host's serial log of a real node is capped: with a tiny cap
//! (`IRONCLAD_LOG_MAX=1KiB`) a one-node boot rotates it several times, yet the
//! node becomes ready, `status` says so, the console shows the ready line (it
//! is carried into each new file) and no file passes the cap by more than the
//! line slack. QEMU does not write the file itself (its command line names no
//! log file).

use super::harness::{Harness, image_cache};
use super::{BOOT, solo_cluster};
use std::process::Command;

#[test]
fn serial_log_is_capped_and_readiness_survives_rotations() {
    let h = Harness::new("serial_log_capped");
    let files = tempfile::tempdir().unwrap();
    let file = solo_cluster(files.path(), "capped");
    let out = Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(["create", "-f", &file, "--accel", "tcg", "--timeout"])
        .arg(BOOT.as_secs().to_string())
        .env("IRONCLAD_STATE_DIR", h.root())
        .env("IRONCLAD_CACHE_DIR", image_cache())
        .env("IRONCLAD_LOG_MAX", "1KiB")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(out.status.success(), "create failed");
    // The image's origin and its verified cache hit (or build) are reported.
    assert!(err.contains("image: recipe trixie (built in)"), "{err}");

    let logs = h.cluster_dir("capped").join("logs");
    let log = logs.join("capped-cp-1.log");
    let previous = logs.join("capped-cp-1.log.1");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // Output keeps coming after ready (containerd, images): wait until the
    // log has rotated at least once after create returned.
    h.wait_for("a rotation of the serial log", BOOT, || previous.exists());
    for p in [&log, &previous] {
        assert!(
            size(p) <= 1024 + 4096,
            "{} is {} bytes",
            p.display(),
            size(p)
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("ironclad: log rotated after "), "{text}");

    // Ready survives the rotations: status and the console read the current file.
    let st = h.status("capped");
    assert_eq!(st["nodes"][0]["state"], "ready", "{st}");
    let console = h.ok(&["console", "capped-cp-1", "--no-follow"]);
    assert!(
        console.contains("ironclad: carried over: machined: ready"),
        "{console}"
    );

    // QEMU writes the console into a pipe, not into a file it names.
    let pid = st["nodes"][0]["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("path=/dev/fdset/1"), "{cmdline}");
    assert!(!cmdline.contains("capped-cp-1.log"), "{cmdline}");
    let sup = std::fs::read_to_string(logs.join("supervisor.log")).unwrap();
    assert!(sup.contains("capped at 1024 bytes"), "{sup}");

    h.ok(&["destroy", "capped"]);
}
