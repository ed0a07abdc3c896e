//! `ironclad net ...` and the faults in `ironclad status`, end to end without
//! VMs: the real binary against a real cluster supervisor (`ironclad
//! __supervise`, which binds the cluster's switch) on a state dir whose
//! nodes are not booted. Two unix-socket clients stand in for the nodes'
//! NICs on the switch ports, so a partition is seen to stop real frames and
//! a heal to let them through.

use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_testkit::process::Guard;
use ironclad_testkit::state::stopped_cluster;
use ironclad_testkit::wait;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CP: &str = "dev-cp-1";
const WORKER: &str = "dev-worker-1";
const WAIT: Duration = Duration::from_secs(20);

/// A state root (short: socket paths stay under 108 bytes) with cluster
/// `name` of two stopped nodes.
fn state_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ic-net-")
        .tempdir()
        .unwrap()
}

fn write_cluster(root: &Path, name: &str) -> ClusterPaths {
    stopped_cluster(root, name, &[CP, WORKER])
}

/// The cluster's supervisor, as `create`/`start` run it (no node started):
/// killed with the test however it ends.
fn supervise(paths: &ClusterPaths) -> Guard {
    std::fs::create_dir_all(paths.logs_dir()).unwrap();
    let log = std::fs::File::create(paths.logs_dir().join("test-supervisor.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironclad"));
    cmd.arg("__supervise")
        .arg("--dir")
        .arg(paths.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let guard = Guard::spawn(cmd, "the ironclad binary");
    wait::until_true("the supervisor's switch", wait::deadline(WAIT), || {
        paths.supervisor_pid().exists() && paths.switch_control().exists()
    });
    guard
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ironclad(root: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .arg("--state-dir")
        .arg(root)
        .args(args)
        .env_remove("IRONCLAD_STATE_DIR")
        .env_remove("IRONCLAD_CLUSTER")
        .output()
        .unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ ironclad {} -> {}\n{}{}",
        args.join(" "),
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

fn ok(root: &Path, args: &[&str]) -> String {
    let r = ironclad(root, args);
    assert_eq!(r.code, 0, "ironclad {args:?}: {}", r.stderr);
    r.stdout
}

fn json(root: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(root, args)).unwrap()
}

/// `net status`'s entry for `node`.
fn net_node(st: &Value, node: &str) -> Value {
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap_or_else(|| panic!("{node} not in {st}"))
        .clone()
}

/// `status`'s network entry for `node`.
fn status_network(root: &Path, node: &str) -> Value {
    let st = json(root, &["status", "dev", "-o", "json"]);
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap()["network"]
        .clone()
}

/// A NIC on a switch port: frames are a 4-byte big-endian length and the
/// bytes, as QEMU's stream netdev sends them.
struct Nic(UnixStream);

impl Nic {
    fn connect(paths: &ClusterPaths, node: &str) -> Nic {
        let s = UnixStream::connect(paths.switch_port(&node.parse().unwrap())).unwrap();
        Nic(s)
    }

    /// A broadcast frame from `src` carrying `tag`.
    fn send(&mut self, src: u8, tag: &[u8]) {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, src]);
        frame.extend_from_slice(&[0x88, 0xb5]); // a local experimental EtherType
        frame.extend_from_slice(tag);
        frame.resize(frame.len().max(60), 0);
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&frame);
        self.0.write_all(&out).unwrap();
    }

    /// The next frame's payload, or `None` if none comes within `within`.
    fn recv(&mut self, within: Duration) -> Option<Vec<u8>> {
        self.0.set_read_timeout(Some(within)).unwrap();
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("{e}"),
        }
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut frame).unwrap();
        Some(frame[14..].to_vec())
    }
}

/// Partition, loss, delay and heal through the real binary: the switch's
/// answer in `net status` (text and JSON), the faults in `status`, real
/// frames stopped by the partition and let through after the heal.
#[test]
fn faults_are_set_shown_and_healed() {
    let root = state_root();
    let root = root.path();
    let paths = write_cluster(root, "dev");
    let _supervisor = supervise(&paths);
    let mut cp = Nic::connect(&paths, CP);
    let mut worker = Nic::connect(&paths, WORKER);
    wait::until_true("both links up", wait::deadline(WAIT), || {
        let st = json(root, &["net", "status", "dev", "-o", "json"]);
        net_node(&st, CP)["connected"] == true && net_node(&st, WORKER)["connected"] == true
    });

    // No fault yet: frames flow, status shows none.
    cp.send(1, b"before");
    assert!(worker.recv(WAIT).unwrap().starts_with(b"before"));
    let net = status_network(root, WORKER);
    assert_eq!(net["partitioned"], false, "{net}");
    let text = ok(root, &["status", "dev"]);
    assert!(text.contains("NETWORK"), "{text}");
    assert!(!text.contains("partitioned"), "{text}");

    // Partition the worker (the only cluster is chosen without a name).
    let out = ok(root, &["net", "partition", "--node", WORKER]);
    assert!(out.contains("node dev-worker-1 partitioned"), "{out}");
    let row = out.lines().find(|l| l.contains(WORKER)).unwrap();
    assert!(row.contains("partitioned"), "{out}");
    cp.send(1, b"cut");
    wait::until_true("the frame counted as cut", wait::deadline(WAIT), || {
        let st = json(root, &["net", "status", "-o", "json"]);
        net_node(&st, WORKER)["counters"]["droppedPartition"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    assert_eq!(worker.recv(Duration::from_millis(300)), None);
    assert_eq!(status_network(root, WORKER)["partitioned"], true);
    assert_eq!(status_network(root, CP)["partitioned"], false);
    let text = ok(root, &["status", "dev"]);
    let row = text.lines().find(|l| l.contains(WORKER)).unwrap();
    assert!(row.ends_with("partitioned"), "{text}");

    // Loss and delay add to it, per node.
    ok(
        root,
        &["net", "loss", "dev", "--node", CP, "--percent", "30"],
    );
    ok(root, &["net", "delay", "dev", "--node", CP, "--ms", "250"]);
    let st = json(root, &["net", "status", "dev", "--output", "json"]);
    assert_eq!(
        net_node(&st, CP)["faults"],
        serde_json::json!({"partitioned": false, "lossPercent": 30, "delayMs": 250}),
        "{st}"
    );
    assert_eq!(st["faults"]["partitioned"], serde_json::json!([WORKER]));
    let text = ok(root, &["net", "status", "dev"]);
    let row = text.lines().find(|l| l.contains(CP)).unwrap();
    assert!(row.contains("loss 30%, delay 250 ms"), "{text}");

    // Heal one node: the other's faults stay.
    ok(root, &["net", "heal", "dev", "--node", WORKER]);
    let st = json(root, &["net", "status", "dev", "-o", "json"]);
    assert_eq!(net_node(&st, WORKER)["faults"]["partitioned"], false);
    assert_eq!(net_node(&st, CP)["faults"]["lossPercent"], 30);
    // Loss drops real frames: at 100% none of the control plane's frames
    // reaches the worker, and the worker's port counts them as dropped.
    ok(
        root,
        &["net", "loss", "dev", "--node", CP, "--percent", "100"],
    );
    for _ in 0..5 {
        cp.send(1, b"lost");
    }
    wait::until_true("the lost frames counted", wait::deadline(WAIT), || {
        let st = json(root, &["net", "status", "-o", "json"]);
        net_node(&st, WORKER)["counters"]["droppedFault"]
            .as_u64()
            .unwrap_or(0)
            >= 5
    });
    assert_eq!(worker.recv(Duration::from_millis(300)), None);

    // Without the loss the worker gets frames again (neither the cut frame
    // nor the lost ones ever arrive: the first is the one sent now), each
    // held for the control plane's delay of 250 ms.
    ok(
        root,
        &["net", "loss", "dev", "--node", CP, "--percent", "0"],
    );
    let sent = std::time::Instant::now();
    cp.send(1, b"after");
    assert!(worker.recv(WAIT).unwrap().starts_with(b"after"));
    let held = sent.elapsed();
    assert!(
        held >= Duration::from_millis(240),
        "a frame under a 250 ms delay arrived after {held:?}"
    );

    // Heal everything.
    let out = ok(root, &["net", "heal"]);
    assert!(out.contains("every fault healed"), "{out}");
    let st = json(root, &["net", "status", "dev", "-o", "json"]);
    for n in [CP, WORKER] {
        assert_eq!(
            net_node(&st, n)["faults"],
            serde_json::json!({"partitioned": false, "lossPercent": 0, "delayMs": 0})
        );
    }
}

/// Faults live in the running switch: stopping the cluster ends them, and a
/// new supervisor starts with a healed network.
#[test]
fn a_restart_clears_the_faults() {
    let root = state_root();
    let root = root.path();
    let paths = write_cluster(root, "dev");
    let mut supervisor = supervise(&paths);
    ok(root, &["net", "partition", "dev", "--node", WORKER]);
    assert_eq!(status_network(root, WORKER)["partitioned"], true);
    ok(root, &["stop", "dev", "--timeout", "5"]);
    supervisor.wait_exit(wait::deadline(WAIT), || "the supervisor after stop".into());
    // Stopped: no faults shown, and net says to start the cluster.
    let st = json(root, &["status", "dev", "-o", "json"]);
    assert!(st["nodes"][1].get("network").is_none(), "{st}");
    let r = ironclad(root, &["net", "status", "dev"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("ironclad start dev"), "{}", r.stderr);
    let _again = supervise(&paths);
    assert_eq!(status_network(root, WORKER)["partitioned"], false);
}

/// Bad input: exit 2 with what was wrong, before anything is sent; a cluster
/// that does not run: exit 1 saying to start it.
#[test]
fn bad_input_and_a_stopped_cluster_are_refused() {
    let root = state_root();
    let root = root.path();

    // No cluster at all.
    let r = ironclad(root, &["net", "status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no clusters under"), "{}", r.stderr);

    write_cluster(root, "dev");
    for (args, want) in [
        (
            &["net", "loss", "dev", "--node", WORKER, "--percent", "101"][..],
            "101 is not in 0..=100",
        ),
        (
            &["net", "loss", "dev", "--node", WORKER, "--percent", "-1"][..],
            "--percent",
        ),
        (
            &["net", "delay", "dev", "--node", WORKER, "--ms", "60001"][..],
            "60001 is not in 0..=60000",
        ),
        (&["net", "partition", "dev"][..], "--node"),
        (
            &["net", "partition", "dev", "--node", "Bad_Name"][..],
            "DNS-1123",
        ),
        (
            &["net", "partition", "Bad_Name", "--node", WORKER][..],
            "DNS-1123",
        ),
        (
            &["net", "partition", "dev", "--node", "dev-worker-9"][..],
            "cluster dev has no node named \"dev-worker-9\"; its nodes: dev-cp-1, dev-worker-1",
        ),
        (
            &["net", "heal", "dev", "--node", "nope"][..],
            "its nodes: dev-cp-1, dev-worker-1",
        ),
        (&["net", "status", "prod"][..], "no cluster named \"prod\""),
    ] {
        let r = ironclad(root, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }

    // Not running: every subcommand says to start it, exit 1.
    for args in [
        &["net", "status", "dev"][..],
        &["net", "partition", "dev", "--node", WORKER][..],
        &["net", "heal"][..],
    ] {
        let r = ironclad(root, args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("cluster dev is not running")
                && r.stderr.contains("`ironclad start dev`"),
            "{args:?}: {}",
            r.stderr
        );
    }

    // Two clusters: the name is needed, or IRONCLAD_CLUSTER.
    write_cluster(root, "other");
    let r = ironclad(root, &["net", "status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("(dev, other): name one"), "{}", r.stderr);
    let out = Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .arg("--state-dir")
        .arg(root)
        .args(["net", "status"])
        .env("IRONCLAD_CLUSTER", "other")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cluster other is not running"), "{stderr}");
}
