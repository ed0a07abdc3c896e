//! clusters/ha.yaml: three control planes form one etcd cluster of voting
//! members; keys written through one node are read through the others; a
//! control plane killed with SIGKILL leaves a working quorum and, started
//! again from its disk, catches up; a live snapshot of the whole cluster,
//! restored, brings every member back to it together.

use crate::harness::Harness;
use crate::{BOOT, repo_file};
use serde_json::Value;
use std::time::Duration;

fn members(h: &Harness, via: &str) -> Vec<Value> {
    let out = h.ok(&[
        "etcd",
        "members",
        "--cluster",
        "ha",
        "--node",
        via,
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("members JSON");
    v["members"].as_array().cloned().unwrap_or_default()
}

/// `etcd get KEY` through the control plane `via`, as JSON.
fn get_args<'a>(via: &'a str, key: &'a str) -> [&'a str; 9] {
    [
        "etcd",
        "get",
        key,
        "--cluster",
        "ha",
        "--node",
        via,
        "--output",
        "json",
    ]
}

/// The value of `key` as read through `via` (`None`: no such key).
fn get(h: &Harness, via: &str, key: &str) -> Option<String> {
    value(h.ok(&get_args(via, key)).as_bytes())
}

/// As [`get`], but `None` when the command fails (a node still joining or
/// electing), for waits.
fn try_get(h: &Harness, via: &str, key: &str) -> Option<Option<String>> {
    let out = h.run(&get_args(via, key));
    out.status.success().then(|| value(&out.stdout))
}

fn value(json: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(json).expect("kv JSON");
    v["value"].as_str().map(str::to_string)
}

fn put(h: &Harness, via: &str, key: &str, value: &str) {
    h.ok(&["etcd", "put", key, value, "--cluster", "ha", "--node", via]);
}

#[test]
fn ha_cluster_etcd_quorum_survives_a_killed_control_plane() {
    let h = Harness::new("ha_etcd");
    let timeout = (2 * BOOT.as_secs()).to_string();
    h.ok(&[
        "create",
        "-f",
        &repo_file("clusters/ha.yaml"),
        "--accel",
        "tcg",
        "--timeout",
        &timeout,
    ]);

    // The workers were booted after the control planes were ready (they
    // would compete with the etcd bootstrap for the host's cores): each
    // worker's QEMU started seconds after every control plane's.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.cluster_dir("ha").join("cluster.json")).expect("cluster.json"),
    )
    .expect("cluster.json is JSON");
    let started = |role: &str| -> Vec<u64> {
        state["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["role"] == role)
            .map(|n| n["startedAtMs"].as_u64().expect("startedAtMs"))
            .collect()
    };
    let (cps, workers) = (started("control-plane"), started("worker"));
    assert_eq!((cps.len(), workers.len()), (3, 2));
    let last_cp = cps.iter().max().unwrap();
    assert!(
        workers.iter().all(|w| *w > last_cp + 2000),
        "workers started at {workers:?}, control planes at {cps:?}"
    );

    // Three voting members, named after the control planes.
    let m = members(&h, "ha-cp-2");
    let mut names: Vec<&str> = m.iter().filter_map(|x| x["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["ha-cp-1", "ha-cp-2", "ha-cp-3"], "{m:?}");
    assert!(m.iter().all(|x| x["is_learner"] == false), "{m:?}");

    // Workers run no etcd.
    let svc = h.ok(&[
        "node",
        "services",
        "--cluster",
        "ha",
        "--node",
        "ha-worker-1",
        "--output",
        "json",
    ]);
    assert!(!svc.contains("\"etcd\""), "{svc}");
    // Each running service says how much memory its process holds.
    let list: serde_json::Value = serde_json::from_str(&svc).unwrap();
    let containerd = list["services"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "containerd"))
        .unwrap_or_else(|| panic!("no containerd in {svc}"));
    assert!(
        containerd["rss_kib"].as_u64().is_some_and(|k| k > 1024),
        "{svc}"
    );

    // A write through one control plane is read through every other.
    put(&h, "ha-cp-1", "/e2e/before", "one");
    for cp in ["ha-cp-2", "ha-cp-3"] {
        assert_eq!(get(&h, cp, "/e2e/before").as_deref(), Some("one"), "{cp}");
    }

    // SIGKILL one control plane: the other two still serve reads and writes.
    let st = h.status("ha");
    let cp3 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "ha-cp-3")
        .unwrap()["pid"]
        .as_u64()
        .unwrap() as i32;
    // SAFETY: kill(2) on the QEMU pid status just reported for our cluster.
    unsafe {
        libc::kill(cp3, libc::SIGKILL);
    }
    h.wait_for(
        "ha-cp-3 to show as crashed",
        Duration::from_secs(30),
        || {
            h.node_states("ha")
                .iter()
                .any(|(n, s)| n == "ha-cp-3" && s == "crashed")
        },
    );
    put(&h, "ha-cp-2", "/e2e/during", "two");
    assert_eq!(get(&h, "ha-cp-1", "/e2e/during").as_deref(), Some("two"));

    // Started again from its disk, it rejoins with its data and catches up.
    h.ok(&["start", "ha", "--node", "ha-cp-3", "--timeout", &timeout]);
    h.wait_for(
        "ha-cp-3 to serve the key written while it was down",
        Duration::from_secs(120),
        || try_get(&h, "ha-cp-3", "/e2e/during") == Some(Some("two".into())),
    );
    assert_eq!(get(&h, "ha-cp-3", "/e2e/before").as_deref(), Some("one"));
    let m = members(&h, "ha-cp-3");
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m.iter().all(|x| x["is_learner"] == false), "{m:?}");

    // A live snapshot of the whole 3-member cluster, a write after it, a
    // restore: every member is back at the snapshot's instant together (the
    // later key gone on each), the quorum takes writes again, and no QEMU
    // was replaced.
    let pids = |h: &Harness| -> Vec<u64> {
        h.status("ha")["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["pid"].as_u64().expect("a running node's pid"))
            .collect()
    };
    h.ok(&["snapshot", "save", "ha", "quorum"]);
    let before = pids(&h);
    put(&h, "ha-cp-2", "/e2e/after-snapshot", "three");
    assert_eq!(
        get(&h, "ha-cp-3", "/e2e/after-snapshot").as_deref(),
        Some("three")
    );
    h.ok(&["snapshot", "restore", "ha", "quorum"]);
    for cp in ["ha-cp-1", "ha-cp-2", "ha-cp-3"] {
        // `restore` returns once every node's API answers; etcd's raft
        // may need a heartbeat more before a member serves reads.
        h.wait_for(
            &format!("{cp} to serve reads after the restore"),
            Duration::from_secs(60),
            || try_get(&h, cp, "/e2e/during").is_some(),
        );
        assert_eq!(get(&h, cp, "/e2e/after-snapshot"), None, "{cp}");
        assert_eq!(get(&h, cp, "/e2e/during").as_deref(), Some("two"), "{cp}");
    }
    put(&h, "ha-cp-3", "/e2e/after-restore", "four");
    assert_eq!(
        get(&h, "ha-cp-1", "/e2e/after-restore").as_deref(),
        Some("four")
    );
    assert_eq!(pids(&h), before);
    let m = members(&h, "ha-cp-1");
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m.iter().all(|x| x["is_learner"] == false), "{m:?}");

    h.ok(&["destroy", "ha"]);
    assert!(
        h.leftover_processes().is_empty(),
        "{:?}",
        h.leftover_processes()
    );
}
