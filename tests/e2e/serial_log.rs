//! The host's serial log of a real node is capped: with a tiny cap
//! (`IRONCLAD_LOG_MAX=300`, bytes; a boot prints about 900) a one-node boot
//! rotates it several times, yet the
//! node becomes ready, `status` says so, the console shows the ready line (it
//! is carried into each new file) and no file passes the cap by more than a
//! line. QEMU does not write the file itself (its command line names no log
//! file).

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
        .env("IRONCLAD_LOG_MAX", "300")
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
    // Output keeps coming after ready (containerd, the offline images): wait
    // for the boot's last line, by then the file has rotated past the ready line.
    h.wait_for("the boot's last serial line", BOOT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("machined: images imported"))
    });
    assert!(previous.exists());
    for p in [&log, &previous] {
        // The cap, then up to the end of a line (machined's are short).
        assert!(size(p) <= 300 + 200, "{} is {} bytes", p.display(), size(p));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("current serial log:\n{text}");
    assert!(text.starts_with("ironclad: log rotated after "), "{text}");
    // The ready line itself went to an older file; a carried copy is here.
    assert!(
        !text.lines().any(|l| l.starts_with("machined: ready")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ironclad: carried over: machined: ready t=")),
        "{text}"
    );

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
    assert!(sup.contains("capped at 300 bytes"), "{sup}");

    h.ok(&["destroy", "capped"]);
}
