//! End-to-end tests: the real `ironclad` binary boots real QEMU VMs (TCG) from
//! the real node image. Scheduled one at a time in nextest's `vm` group (see
//! `.config/nextest.toml`). The image is built once into a cache shared by the
//! test binaries (`<target tmp>/image-cache`); the first run builds it.
//!
//! Kept small on purpose (CI has 2 cores): the dev cluster (1+1) and 1-node
//! clusters (one with egress on); every wait polls a condition with a
//! deadline.

mod egress;
mod etcd;
mod harness;
mod interrupt;
mod matrix;
mod net;
mod repro;
mod resume;
mod serial_log;
mod snapshot;
mod support;

use harness::Harness;
use std::time::{Duration, Instant};

/// Generous for TCG on a busy 2-core machine.
pub(crate) const BOOT: Duration = Duration::from_secs(300);

pub(crate) fn repo_file(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn all_in(h: &Harness, name: &str, state: &str) -> bool {
    h.node_states(name).iter().all(|(_, s)| s == state)
}

/// Writes a 1-node cluster file (one control plane, no worker).
fn solo_cluster(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  network:\n    cidr: 10.5.0.0/24\n  controlPlanes:\n    count: 1\n    memory: 768MiB\n    disk: 1GiB\n  workers:\n    count: 0\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// clusters/dev.yaml: create, status, a crashed node and `start --node`,
/// stop/start of the whole cluster from its disks, destroy with nothing left.
#[test]
fn dev_cluster_lifecycle() {
    let h = Harness::new("dev_cluster_lifecycle");
    let timeout = BOOT.as_secs().to_string();
    h.create_ok("clusters/dev.yaml");

    // Status: every node ready with a pid, its address and a distinct API port.
    let st = h.status("dev");
    assert!(st["supervisor"].as_u64().is_some(), "{st}");
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let mut ports = Vec::new();
    for n in nodes {
        assert_eq!(n["state"], "ready", "{n}");
        assert!(n["pid"].as_u64().is_some(), "{n}");
        assert!(n["uptimeSeconds"].as_u64().is_some(), "{n}");
        ports.push(n["apiPort"].as_u64().unwrap());
    }
    assert_ne!(ports[0], ports[1]);
    // Under TCG (the harness's accelerator) QEMU runs without transparent
    // huge pages, so the host's khugepaged cannot fill back the memory the
    // guests hand back.
    for n in nodes {
        let pid = n["pid"].as_u64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("\nTHP_enabled:\t0\n"), "{n}: {status}");
        // glibc's fixed mmap threshold, so QEMU's freed TLB tables leave.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let tunables = environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"GLIBC_TUNABLES="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert!(
            tunables.as_deref().is_some_and(|t| t
                .split(':')
                .any(|t| t.starts_with("glibc.malloc.mmap_threshold="))),
            "{n}: GLIBC_TUNABLES {tunables:?}"
        );
    }
    // Each QEMU's copies of the kernel and initramfs went back to the host
    // after boot (the supervisor rewrote the files with direct I/O on stage
    // 1's line).
    for n in nodes {
        let pid = n["pid"].as_u64().unwrap() as u32;
        h.wait_for(
            "QEMU's kernel and initramfs pages to be handed back",
            Duration::from_secs(20),
            || boot_files_handed_back(pid),
        );
    }
    assert_eq!(nodes[0]["address"], "10.5.0.2");
    assert_eq!(nodes[1]["address"], "10.5.0.3");
    // Human status and list.
    assert!(h.ok(&["status", "dev"]).contains("dev-worker-1"));
    assert!(h.ok(&["list"]).contains("2/2 nodes ready"));

    // The state dir: private, endpoints recorded for the API client.
    use std::os::unix::fs::PermissionsExt;
    let dir = h.cluster_dir("dev");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let client = ironclad_host::clientconfig::ClientConfig::load(&dir.join("client.yaml")).unwrap();
    for n in &client.nodes {
        let ep = n.endpoint.expect("endpoint recorded");
        assert!(ep.ip().is_loopback());
    }

    // A support bundle of the running cluster.
    support::bundle_of_running_dev_cluster(&h);

    // The console shows the boot.
    let console = h.ok(&["console", "dev-cp-1", "--no-follow"]);
    assert!(console.contains("machined: ready"), "{console}");
    // create formatted the state disk on the host (mke2fs is installed with
    // e2fsprogs): the first boot finds it formatted.
    assert!(
        console.contains("machined: fact state-disk formatted=false boot=1"),
        "{console}"
    );

    // A QEMU killed with SIGKILL shows as crashed; start --node boots it again.
    let worker_pid = nodes[1]["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on the pid status just reported for our own test cluster.
    unsafe {
        libc::kill(worker_pid, libc::SIGKILL);
    }
    h.wait_for(
        "the worker to show as crashed",
        Duration::from_secs(20),
        || h.node_states("dev")[1].1 == "crashed",
    );
    assert_eq!(
        h.node_states("dev")[0].1,
        "ready",
        "the other node is untouched"
    );
    h.ok(&[
        "start",
        "dev",
        "--node",
        "dev-worker-1",
        "--timeout",
        &timeout,
    ]);
    let st = h.status("dev");
    assert_eq!(st["nodes"][1]["state"], "ready");
    assert_ne!(st["nodes"][1]["pid"].as_u64().unwrap() as i32, worker_pid);
    let new_pid = st["nodes"][1]["pid"].as_u64().unwrap() as u32;
    h.wait_for(
        "the new QEMU's kernel and initramfs pages to be handed back",
        Duration::from_secs(20),
        || boot_files_handed_back(new_pid),
    );
    let sup_log = std::fs::read_to_string(h.cluster_dir("dev").join("logs/supervisor.log"))
        .unwrap_or_default();
    assert!(
        sup_log.contains("dev-worker-1: QEMU's copies of the kernel and initramfs handed back"),
        "{sup_log}"
    );

    // Stop keeps the state; no process remains.
    h.ok(&["stop", "dev", "--timeout", "5"]);
    assert!(all_in(&h, "dev", "stopped"));
    assert!(h.status("dev")["supervisor"].is_null());
    assert!(
        h.leftover_processes().is_empty(),
        "{:?}",
        h.leftover_processes()
    );
    assert!(dir.join("disks/dev-cp-1.qcow2").exists());

    // Start boots again from the kept disks (no re-format: the log says so).
    h.ok(&["start", "dev", "--timeout", &timeout]);
    assert!(all_in(&h, "dev", "ready"));
    let log = std::fs::read_to_string(dir.join("logs/dev-cp-1.log")).unwrap();
    assert!(
        log.contains("state-disk formatted=false") && !log.contains("formatted=true"),
        "state disk formatted again:\n{log}"
    );
    assert_eq!(
        h.status("dev")["nodes"][0]["apiPort"].as_u64().unwrap(),
        ports[0]
    );

    // The cluster switch: both nodes' ports connected, fault-injection control answers.
    let switch = switch_status(&dir.join("run/switch-ctl.sock"));
    for node in ["dev-cp-1", "dev-worker-1"] {
        assert!(
            switch.ports.iter().any(|p| p.node == node && p.connected),
            "{switch:?}"
        );
    }

    // A following console ends when its cluster is destroyed.
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(["console", "dev-cp-1"])
        .env("IRONCLAD_STATE_DIR", h.root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Destroy: quick, nothing left.
    let t = Instant::now();
    h.ok(&["destroy", "dev"]);
    let took = t.elapsed();
    eprintln!("destroy took {:.2} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(5), "destroy took {took:?}");
    assert!(!dir.exists());
    assert!(
        h.leftover_processes().is_empty(),
        "{:?}",
        h.leftover_processes()
    );
    assert!(h.ok(&["list"]).contains("no clusters"));
    h.wait_for("the console to end", Duration::from_secs(10), || {
        matches!(follower.try_wait(), Ok(Some(_)))
    });
    let mut followed = String::new();
    use std::io::Read;
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(followed.contains("machined: ready"), "{followed}");
}

/// Whether QEMU `pid` keeps at most one page of its `-kernel` and of its
/// `-initrd` file resident (a file's last, partial block is not rewritten).
fn boot_files_handed_back(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    ["-kernel", "-initrd"].iter().all(|opt| {
        let Some(path) = args
            .iter()
            .position(|a| *a == opt.as_bytes())
            .and_then(|i| args.get(i + 1))
        else {
            panic!(
                "QEMU {pid} has no {opt}: {}",
                String::from_utf8_lossy(&cmdline)
            );
        };
        let path = std::path::PathBuf::from(String::from_utf8_lossy(path).into_owned());
        ironclad_host::qemu::boot_files::resident_bytes_of(pid, &path)
            .ok()
            .flatten()
            .is_some_and(|b| b <= 4096)
    })
}

fn switch_status(path: &std::path::Path) -> ironclad_host::network::Status {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ctl = ironclad_host::network::ControlClient::connect(path)
            .await
            .unwrap();
        match ctl
            .request(&ironclad_host::network::Request::Status {})
            .await
            .unwrap()
        {
            ironclad_host::network::Response::Status { status } => status,
            other => panic!("unexpected {other:?}"),
        }
    })
}

/// Two clusters side by side (same CIDR, separate switches): distinct ports,
/// both ready; destroying one leaves the other running.
#[test]
fn two_clusters_side_by_side() {
    let h = Harness::new("two_clusters_side_by_side");
    let files = tempfile::tempdir().unwrap();
    let a = solo_cluster(files.path(), "side-a");
    let b = solo_cluster(files.path(), "side-b");
    let timeout = BOOT.as_secs().to_string();
    h.ok(&["create", "-f", &a, "--accel", "tcg", "--timeout", &timeout]);
    h.ok(&["create", "-f", &b, "--accel", "auto", "--timeout", &timeout]);
    let pa = h.status("side-a")["nodes"][0]["apiPort"].as_u64().unwrap();
    let pb = h.status("side-b")["nodes"][0]["apiPort"].as_u64().unwrap();
    assert_ne!(pa, pb);
    assert!(all_in(&h, "side-a", "ready"));
    assert!(all_in(&h, "side-b", "ready"));
    let list = h.ok(&["list", "--output", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    h.ok(&["destroy", "side-a"]);
    assert!(!h.cluster_dir("side-a").exists());
    let st = h.status("side-b");
    assert_eq!(st["nodes"][0]["state"], "ready");
    let pid = st["nodes"][0]["pid"].as_u64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // A supervisor killed with SIGKILL takes its QEMU with it; the node shows
    // as crashed and destroy still cleans up.
    let sup = st["supervisor"].as_u64().unwrap();
    // SAFETY: kill(2) on the supervisor pid status just reported for our cluster.
    unsafe {
        libc::kill(sup as i32, libc::SIGKILL);
    }
    h.wait_for(
        "QEMU to die with its supervisor",
        Duration::from_secs(20),
        || {
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty())
        },
    );
    assert_eq!(h.node_states("side-b")[0].1, "crashed");
    h.ok(&["destroy", "side-b"]);
    assert!(
        h.leftover_processes().is_empty(),
        "{:?}",
        h.leftover_processes()
    );
}

/// Refusals that need no VM: a second cluster of the same name, a directory
/// at the cluster's place that is not a cluster's, socket paths over the
/// limit, an unknown cluster.
#[test]
fn refusals() {
    let h = Harness::new("refusals");
    // A cluster dir that exists (a half-made cluster is enough: create
    // writes the marker first).
    let dev: ironclad_host::spec::ClusterName = "dev".parse().unwrap();
    ironclad_host::cluster::paths::ClusterPaths::new(h.root(), &dev)
        .claim(&dev)
        .unwrap();
    let create_dev = [
        "create",
        "-f",
        &repo_file("clusters/dev.yaml"),
        "--accel",
        "tcg",
    ];
    let out = h.run(&create_dev);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // destroy removes the half-made cluster.
    h.ok(&["destroy", "dev"]);
    assert!(!h.cluster_dir("dev").exists());
    // A directory without the marker is not a cluster: create and destroy
    // both leave it alone.
    std::fs::create_dir_all(h.cluster_dir("dev")).unwrap();
    std::fs::write(h.cluster_dir("dev").join("mine"), "x").unwrap();
    let out = h.run(&create_dev);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cluster directory"));
    let out = h.run(&["destroy", "dev"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(h.cluster_dir("dev").join("mine").exists());
    std::fs::remove_dir_all(h.cluster_dir("dev")).unwrap();

    let long = h.root().join("x".repeat(80));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(["--state-dir"])
        .arg(&long)
        .args([
            "create",
            "-f",
            &repo_file("clusters/dev.yaml"),
            "--accel",
            "tcg",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unix socket path"), "{err}");
    assert!(!long.exists(), "nothing is created");

    // Nothing to destroy is not an error (teardown steps run twice).
    let out = h.run(&["destroy", "nope"]);
    assert_eq!(out.status.code(), Some(0));
    let out = h.run(&["status", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A cluster dir as a failed test leaves it: claimed, no state yet, and the
/// serial log of its node `NAME-cp-1` saying it was ready.
fn left_behind(h: &Harness, name: &str) {
    let cluster: ironclad_host::spec::ClusterName = name.parse().unwrap();
    ironclad_host::cluster::paths::ClusterPaths::new(h.root(), &cluster)
        .claim(&cluster)
        .unwrap();
    let logs = h.cluster_dir(name).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join(format!("{name}-cp-1.log")),
        "machined: ready t=1.0\n",
    )
    .unwrap();
}

/// The harness itself: a cluster left behind (as after a failed test) has its
/// logs copied for CI and is destroyed.
#[test]
fn harness_keeps_logs_of_leftover_clusters() {
    let h = Harness::new("harness_keeps_logs");
    left_behind(&h, "leftover");
    let dir = h.cluster_dir("leftover");
    drop(h);
    assert!(!dir.exists(), "the harness destroys what is left");
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e-logs/harness_keeps_logs/leftover/leftover-cp-1.log");
    assert!(kept.exists(), "{}", kept.display());
}

/// A test that fails leaves a report: the harness, dropped while the test
/// panics, prints the cluster's state and logs to stderr and keeps a support
/// bundle beside the logs (a CI clone's files go with it).
#[test]
fn harness_reports_a_failed_test() {
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e-logs/harness_reports_failure");
    let _ = std::fs::remove_dir_all(&kept);
    let failed = std::panic::catch_unwind(|| {
        let h = Harness::new("harness_reports_failure");
        left_behind(&h, "crashed");
        panic!("a test that fails with a cluster left");
    });
    assert!(failed.is_err());
    let bundle = kept.join("support-crashed.tar.gz");
    assert!(bundle.exists(), "{}", bundle.display());
    assert!(kept.join("crashed/crashed-cp-1.log").exists());
}
