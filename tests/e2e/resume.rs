//! A create interrupted half-way (during the etcd join, with a node then
//! killed) is resumed by `create` with the same cluster file, to a healthy
//! cluster: every control plane a voting etcd member. A different cluster
//! file of the same name is refused; a finished cluster is refused as before.

use crate::harness::Harness;
use crate::interrupt::{interrupt_and_wait, remaining, start_create, until_line};
use serde_json::Value;
use std::time::Duration;

const CLUSTER: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: rsm}
spec:
  network: {cidr: 10.8.0.0/24}
  controlPlanes: {count: 3, memory: 768MiB, disk: 1GiB}
  workers: {count: 0}
";

fn voting_members(h: &Harness) -> Vec<String> {
    let out = h.ok(&[
        "etcd",
        "members",
        "--cluster",
        "rsm",
        "--node",
        "rsm-cp-3",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("members JSON");
    let mut names: Vec<String> = v["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| m["is_learner"] == false)
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn create_interrupted_during_etcd_join_is_resumed_by_create() {
    let h = Harness::new("create_resume");
    let file = h.root().join("rsm.yaml");
    std::fs::write(&file, CLUSTER).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let creating = h.cluster_dir("rsm").join("creating");

    // Interrupted once the second control plane was added as an etcd
    // learner (its join not yet told), the cluster kept.
    let (mut child, rx) = start_create(&h, &file, &["--keep-on-interrupt", "--timeout", "900"]);
    until_line(&rx, "rsm-cp-2: added as learner", Duration::from_secs(900));
    let code = interrupt_and_wait(&mut child, Duration::from_secs(60));
    let rest = remaining(&rx);
    assert_eq!(code, Some(130), "{rest:#?}");
    assert!(creating.exists(), "an unfinished create keeps its mark");

    // The third control plane's VM dies: the resume must boot it again.
    let st = h.status("rsm");
    let cp3 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "rsm-cp-3")
        .and_then(|n| n["pid"].as_u64())
        .expect("rsm-cp-3 runs") as i32;
    // SAFETY: kill(2) on the QEMU pid status just reported for our cluster.
    unsafe {
        libc::kill(cp3, libc::SIGKILL);
    }
    h.wait_for(
        "rsm-cp-3 to show as crashed",
        Duration::from_secs(30),
        || {
            h.node_states("rsm")
                .iter()
                .any(|(n, s)| n == "rsm-cp-3" && s == "crashed")
        },
    );

    // Another cluster file under the same name does not resume it.
    let other = h.root().join("other.yaml");
    std::fs::write(&other, format!("{CLUSTER}# edited\n")).unwrap();
    let out = h.run(&["create", "-f", &other.to_string_lossy(), "--accel", "tcg"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ironclad::lifecycle::cannot_resume"), "{err}");
    assert!(err.contains("different cluster file"), "{err}");
    assert!(creating.exists());

    // The same file resumes it: every control plane a voting member.
    let out = h.run(&[
        "create",
        "-f",
        &file_arg,
        "--accel",
        "tcg",
        "--timeout",
        "900",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resume failed: {err}");
    assert!(err.contains("resuming it"), "{err}");
    assert!(err.contains("etcd: 3 voting members, healthy"), "{err}");
    assert_eq!(voting_members(&h), ["rsm-cp-1", "rsm-cp-2", "rsm-cp-3"]);
    assert!(!creating.exists(), "a finished create drops its mark");
    assert!(
        h.node_states("rsm").iter().all(|(_, s)| s == "ready"),
        "{:?}",
        h.node_states("rsm")
    );

    // Finished: create of the name is refused as before.
    let out = h.run(&["create", "-f", &file_arg, "--accel", "tcg"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ironclad::lifecycle::already_exists"), "{err}");

    h.ok(&["destroy", "rsm"]);
    assert_eq!(h.leftover_processes(), vec![]);
}
