//! `ironclad support` on the running dev cluster (called from
//! `dev_cluster_lifecycle`, which has the cluster up): both nodes' serial
//! logs and service logs are in the bundle, and no secret of the cluster is.

use crate::harness::Harness;

pub fn bundle_of_running_dev_cluster(h: &Harness) {
    // `create` returns at ready; containerd may not have logged yet.
    for node in ["dev-cp-1", "dev-worker-1"] {
        h.wait_for(
            &format!("containerd on {node} to log"),
            std::time::Duration::from_secs(120),
            || {
                let out = h.run(&["node", "logs", "containerd", "--node", node, "--tail", "1"]);
                out.status.success() && !out.stdout.is_empty()
            },
        );
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("bundle.tar.gz");
    let json = h.ok(&[
        "support",
        "dev",
        "--file",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    eprintln!("support bundle: {} bytes, {} files", v["bytes"], v["files"]);

    let x = out.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let b = x.join("support-dev");
    let read =
        |rel: &str| std::fs::read_to_string(b.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    for node in ["dev-cp-1", "dev-worker-1"] {
        assert!(read(&format!("host/{node}.serial.log")).contains("machined: ready"));
        assert!(
            read(&format!("nodes/{node}/logs/containerd.log"))
                .lines()
                .count()
                > 0
        );
        assert!(read(&format!("nodes/{node}/dmesg.log")).contains("Linux version"));
        assert!(read(&format!("nodes/{node}/services.json")).contains("containerd"));
    }
    assert!(read("nodes/dev-cp-1/logs/etcd.log").lines().count() > 0);
    assert!(read("nodes/dev-cp-1/etcd-members.json").contains("dev-cp-1"));
    assert!(read("status.json").contains("\"ready\""));
    assert!(read("network.json").contains("dev-worker-1"));
    assert!(read("image/manifest.json").contains("\"parts\""));

    let secrets = ironclad_testkit::secrets::strings_in(&h.cluster_dir("dev"));
    assert!(
        secrets.len() > 20,
        "the state dir holds keys: {}",
        secrets.len()
    );
    let mut stack = vec![b.clone()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            assert!(
                !text.contains("PRIVATE KEY"),
                "{} holds a private key",
                p.display()
            );
            for s in &secrets {
                assert!(!text.contains(s.as_str()), "{} holds a secret", p.display());
            }
        }
    }
    assert!(files > 20, "{files} files");
}
