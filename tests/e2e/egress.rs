//! A 1-node cluster with `egress: true`, written by the test. QEMU's
//! user-mode NIC is then unrestricted, and 10.0.2.2 is the host's own
//! 127.0.0.1: only the node's policy rules keep the host's loopback
//! services out of reach. The node API still answers through hostfwd (its
//! replies to 10.0.2.2 pass), NET-02 shows that neither the node nor a pod
//! reaches a listener on the host's 127.0.0.1 (the listener accepted
//! nothing), and BRK-10 that pods cannot open a connection to the node API
//! or etcd on any of the node's addresses (the node's rule answers every
//! attempt; none is even refused by a closed port).

use crate::harness::Harness;
use serde_json::Value;

/// Writes a 1-node cluster file with egress on (gVisor off: its pods are
/// slow under TCG and add nothing to these checks).
fn egress_cluster(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  network:\n    cidr: 10.5.0.0/24\n    egress: true\n  controlPlanes:\n    count: 1\n    memory: 768MiB\n    disk: 1GiB\n  workers:\n    count: 0\n  runtimes:\n    gvisor: false\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn result<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing: {results:?}"))
}

fn evidence(r: &Value) -> String {
    r["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// N of the node's "answered N attempts with ICMP destination unreachable".
fn answered(ev: &str) -> u64 {
    ev.lines()
        .find_map(|l| l.strip_prefix("node: answered "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn egress_keeps_the_hosts_loopback_and_the_node_ports_out_of_reach() {
    let h = Harness::new("egress");
    let files = tempfile::tempdir().unwrap();
    let file = egress_cluster(files.path(), "egress");
    h.create_from_ok(&file);

    // The user-mode NIC is unrestricted (egress), so the block is the node's.
    let pid = h.status("egress")["nodes"][0]["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("restrict=off"), "{cmdline}");
    let console = h.ok(&["console", "egress-cp-1", "--no-follow"]);
    assert!(console.contains("machined: network rules (4)"), "{console}");
    assert!(
        console.contains("machined: open files: 1048576"),
        "{console}"
    );

    let out = h.run(&[
        "matrix", "egress", "--check", "NET-02", "--check", "BRK-10", "--check", "NET-01",
        "--check", "CONF-01", "--output", "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).expect("matrix report JSON");
    let results = report["results"].as_array().expect("results").clone();

    // NET-02: refused on the node itself (EACCES from the prohibit rule);
    // the pod's attempt answered "prohibited" by the node (it sees no route,
    // or a timeout: see ironclad_node::matrix::refusals); the host's listener saw
    // nothing.
    let net02 = result(&results, "NET-02");
    let ev = evidence(net02);
    eprintln!("NET-02 {}:\n{ev}", net02["verdict"]);
    assert_eq!(net02["verdict"], "PASS", "{net02}");
    assert!(ev.contains("node: tcp 10.0.2.2: Permission denied"), "{ev}");
    let pod = ev
        .lines()
        .find(|l| l.starts_with("pod: tcp 10.0.2.2:"))
        .unwrap_or_else(|| panic!("no pod attempt: {ev}"));
    assert!(
        pod.ends_with("no route to host") || pod.ends_with("timed out"),
        "{pod}"
    );
    assert!(ev.contains("accepted 0 connection(s)"), "{ev}");
    assert!(answered(&ev) > 0, "the node answered nothing: {ev}");

    // BRK-10: no connection to 50000, 2379, 2380 on the pod's gateway, the
    // user-mode NIC's address or the cluster address, from any variant: the
    // node's rule answers them all ("refused" would mean a packet got past
    // it to a port nothing listens on).
    let brk10 = result(&results, "BRK-10");
    let ev = evidence(brk10);
    eprintln!("BRK-10 {}:\n{ev}", brk10["verdict"]);
    assert_eq!(brk10["verdict"], "PASS", "{brk10}");
    for host in ["10.88.0.1", "10.0.2.15", "10.5.0.2"] {
        for port in [50000, 2379, 2380] {
            let target = format!("{host}:{port} ");
            for variant in ["unpriv:", "userns:", "restricted:"] {
                let line = ev
                    .lines()
                    .find(|l| l.starts_with(variant))
                    .unwrap_or_else(|| panic!("no {variant} line: {ev}"));
                assert!(
                    line.contains(&format!("{target}no route to host"))
                        || line.contains(&format!("{target}timed out")),
                    "{variant} {target}: {line}"
                );
            }
        }
    }
    assert!(!ev.contains("CONNECTED") && !ev.contains("refused"), "{ev}");
    assert!(answered(&ev) > 0, "the node answered nothing: {ev}");

    let net01 = result(&results, "NET-01");
    assert_eq!(net01["verdict"], "SKIP", "{net01}");
    assert!(
        net01["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("egress is on"),
        "{net01}"
    );
    assert_eq!(result(&results, "CONF-01")["verdict"], "PASS");
    assert!(out.status.success(), "exit status {}", out.status);
    h.ok(&["destroy", "egress"]);
}
