//! clusters/dev.yaml: whole-cluster snapshots. A running snapshot, a key
//! written after it, a restore: the key is gone, the key before it is there,
//! etcd takes writes, and no node rebooted (same QEMU pids, no second
//! `machined: ready` on any serial console). The snapshot survives
//! `stop`/`start`; a stopped cluster's snapshot holds the disks; bad input
//! is refused with status 2, a restore that does not fit the cluster's state
//! with 1; `rm` takes it out of every disk; `destroy` takes the rest.

use crate::harness::Harness;
use crate::{BOOT, all_in};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn get(h: &Harness, key: &str) -> Option<String> {
    let out = h.ok(&["etcd", "get", key, "--cluster", "dev", "--output", "json"]);
    let v: Value = serde_json::from_str(&out).expect("kv JSON");
    v["value"].as_str().map(str::to_string)
}

fn put(h: &Harness, key: &str, value: &str) {
    h.ok(&["etcd", "put", key, value, "--cluster", "dev"]);
}

/// `ironclad snapshot ARGS -o json`, timed.
fn snapshot(h: &Harness, args: &[&str]) -> (Value, Duration) {
    let mut all = vec!["snapshot"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let t = Instant::now();
    let out = h.ok(&all);
    let took = t.elapsed();
    (serde_json::from_str(&out).expect("snapshot JSON"), took)
}

fn status_code(h: &Harness, args: &[&str]) -> Option<i32> {
    h.run(args).status.code()
}

/// How many times each node's current serial log says it is ready.
fn ready_lines(dir: &Path) -> Vec<usize> {
    ["dev-cp-1", "dev-worker-1"]
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("logs/{n}.log"))).unwrap();
            log.matches("machined: ready").count()
        })
        .collect()
}

fn pids(h: &Harness) -> Vec<u64> {
    h.status("dev")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["pid"].as_u64().expect("a running node's pid"))
        .collect()
}

/// The snapshot tags a node's disk holds.
fn disk_tags(dir: &Path, node: &str) -> Vec<String> {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(dir.join(format!("disks/{node}.qcow2")))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dev_cluster_snapshot_restore_forgets_a_later_key() {
    let h = Harness::new("dev_snapshot");
    let timeout = BOOT.as_secs().to_string();
    h.create_ok("clusters/dev.yaml");
    let dir = h.cluster_dir("dev");

    put(&h, "kept", "before");
    let (saved, took) = snapshot(&h, &["save", "dev", "before-change"]);
    eprintln!("snapshot save took {:.2} s", took.as_secs_f64());
    assert_eq!(saved["action"], "saved", "{saved}");
    assert_eq!(saved["live"], true, "{saved}");
    assert_eq!(saved["snapshot"]["state"], "running", "{saved}");
    assert_eq!(
        saved["snapshot"]["nodes"],
        serde_json::json!(["dev-cp-1", "dev-worker-1"])
    );
    for node in ["dev-cp-1", "dev-worker-1"] {
        assert_eq!(disk_tags(&dir, node), ["before-change"]);
    }
    let before_pids = pids(&h);
    let before_ready = ready_lines(&dir);

    put(&h, "later", "after");
    assert_eq!(get(&h, "later").as_deref(), Some("after"));

    let (restored, took) = snapshot(&h, &["restore", "dev", "before-change"]);
    eprintln!(
        "snapshot restore took {:.2} s (to every node answering)",
        took.as_secs_f64()
    );
    assert_eq!(restored["action"], "restored", "{restored}");
    assert_eq!(restored["live"], true, "{restored}");
    // The key written after the snapshot is gone, the one before is there,
    // and etcd takes a write and serves it.
    assert_eq!(get(&h, "later"), None);
    assert_eq!(get(&h, "kept").as_deref(), Some("before"));
    put(&h, "fresh", "1");
    assert_eq!(get(&h, "fresh").as_deref(), Some("1"));
    // No reboot: the same QEMU processes, no new boot on any console.
    assert_eq!(pids(&h), before_pids);
    assert_eq!(ready_lines(&dir), before_ready);
    assert!(all_in(&h, "dev", "ready"));

    // Bad input: status 2. State that does not fit: status 1.
    assert_eq!(
        status_code(&h, &["snapshot", "save", "dev", "before-change"]),
        Some(2)
    );
    assert_eq!(
        status_code(&h, &["snapshot", "restore", "dev", "nope"]),
        Some(2)
    );
    assert_eq!(status_code(&h, &["snapshot", "rm", "dev", "nope"]), Some(2));
    assert_eq!(
        status_code(&h, &["snapshot", "save", "dev", "../x"]),
        Some(2)
    );
    assert_eq!(
        status_code(&h, &["snapshot", "list", "no-such-cluster"]),
        Some(2)
    );

    // A stopped cluster's snapshot holds the disks (with "fresh" in them).
    h.ok(&["stop", "dev", "--timeout", "10"]);
    let (cold, _) = snapshot(&h, &["save", "dev", "cold"]);
    assert_eq!(cold["snapshot"]["state"], "stopped", "{cold}");
    assert_eq!(cold["live"], false, "{cold}");
    let (list, _) = snapshot(&h, &["list", "dev"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before-change", "cold"], "{list}");
    // A running snapshot restores into running nodes only, a stopped one
    // into stopped nodes only.
    assert_eq!(
        status_code(&h, &["snapshot", "restore", "dev", "before-change"]),
        Some(1)
    );
    h.ok(&["start", "dev", "--timeout", &timeout]);
    assert_eq!(
        status_code(&h, &["snapshot", "restore", "dev", "cold"]),
        Some(1)
    );

    // The running snapshot survives stop/start: a restore into the new
    // QEMUs forgets what was written since the snapshot, "fresh" included.
    put(&h, "after-restart", "x");
    let (_, took) = snapshot(&h, &["restore", "dev", "before-change"]);
    eprintln!(
        "snapshot restore after stop/start took {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!(get(&h, "after-restart"), None);
    assert_eq!(get(&h, "fresh"), None);
    assert_eq!(get(&h, "kept").as_deref(), Some("before"));

    // rm on running nodes takes it out of every disk and out of the list.
    let (removed, _) = snapshot(&h, &["rm", "dev", "before-change"]);
    assert_eq!(removed["action"], "removed", "{removed}");
    for node in ["dev-cp-1", "dev-worker-1"] {
        assert_eq!(disk_tags(&dir, node), ["cold"]);
    }

    // The stopped snapshot's disks come back: "fresh" is there again.
    h.ok(&["stop", "dev", "--timeout", "10"]);
    let (back, _) = snapshot(&h, &["restore", "dev", "cold"]);
    assert_eq!(back["live"], false, "{back}");
    h.ok(&["start", "dev", "--timeout", &timeout]);
    assert_eq!(get(&h, "fresh").as_deref(), Some("1"));

    // destroy takes the rest (the disks that hold them, the records).
    h.ok(&["destroy", "dev"]);
    assert!(!dir.exists());
}
