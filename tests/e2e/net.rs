//! Network faults on the dev cluster (1+1 VMs): `ironclad net partition`
//! cuts the worker off, so the control plane's CONF-04 (a TCP connection to
//! each peer's node API over the cluster network) fails; `net status` and
//! `status` show the fault; `net heal` makes the worker reachable again; a
//! delay shows in the connection time. Every wait has a deadline; the
//! harness destroys the cluster and kills its QEMUs however the test ends.

use crate::harness::Harness;
use serde_json::Value;
use std::time::Duration;

const CP: &str = "dev-cp-1";
const WORKER: &str = "dev-worker-1";

/// CONF-04 as the control plane ran it: (verdict, evidence about the worker).
fn conf04_on_cp(h: &Harness) -> (String, String) {
    let out = h.run(&["matrix", "dev", "--check", "CONF-04", "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("matrix report JSON on stdout");
    let r = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["id"] == "CONF-04" && r["node"] == CP)
        .unwrap_or_else(|| panic!("no CONF-04 on {CP}: {report}"))
        .clone();
    let verdict = r["verdict"].as_str().unwrap_or_default().to_string();
    let evidence = r["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .find(|e| e.starts_with(WORKER))
        .unwrap_or_default()
        .to_string();
    (verdict, evidence)
}

fn worker_network(h: &Harness) -> Value {
    h.status("dev")["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == WORKER)
        .expect("the worker in status")["network"]
        .clone()
}

#[test]
fn partition_cuts_the_worker_off_and_heal_restores_it() {
    let h = Harness::new("net_faults");
    h.create_ok("clusters/dev.yaml");

    // Healthy: the control plane reaches the worker's API on 10.5.0.3.
    let (verdict, evidence) = conf04_on_cp(&h);
    assert_eq!(verdict, "PASS", "{evidence}");
    assert!(!worker_network(&h)["partitioned"].as_bool().unwrap());

    // Partitioned: the fault is shown, and the worker cannot be reached.
    let out = h.ok(&["net", "partition", "dev", "--node", WORKER]);
    assert!(out.contains("partitioned"), "{out}");
    let net: Value = serde_json::from_str(&h.ok(&["net", "status", "dev", "-o", "json"])).unwrap();
    let w = net["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == WORKER)
        .unwrap();
    assert_eq!(w["faults"]["partitioned"], true, "{net}");
    assert_eq!(w["connected"], true, "{net}");
    assert_eq!(worker_network(&h)["partitioned"], true);
    let text = h.ok(&["status", "dev"]);
    assert!(
        text.lines()
            .any(|l| l.contains(WORKER) && l.ends_with("partitioned")),
        "{text}"
    );
    let (verdict, evidence) = conf04_on_cp(&h);
    assert_eq!(verdict, "FAIL", "partitioned, yet: {evidence}");
    let net: Value = serde_json::from_str(&h.ok(&["net", "status", "dev", "-o", "json"])).unwrap();
    let cut = net["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == WORKER)
        .unwrap()["counters"]["droppedPartition"]
        .as_u64()
        .unwrap();
    assert!(cut > 0, "no frame to the worker was cut: {net}");
    // Its API on 127.0.0.1 (the user-mode NIC) is not on the switch.
    h.ok(&["node", "services", "--node", WORKER]);

    // Healed: reachable again (the control plane's neighbour entry may take
    // a new ARP round; poll until CONF-04 passes).
    h.ok(&["net", "heal", "dev"]);
    assert_eq!(worker_network(&h)["partitioned"], false);
    let mut last = String::new();
    h.wait_for(
        "CONF-04 to pass after heal",
        Duration::from_secs(90),
        || {
            let (verdict, evidence) = conf04_on_cp(&h);
            last = evidence;
            verdict == "PASS"
        },
    );

    // A delay on the worker delays both the SYN and the SYN-ACK.
    h.ok(&["net", "delay", "dev", "--node", WORKER, "--ms", "400"]);
    let (verdict, evidence) = conf04_on_cp(&h);
    assert_eq!(verdict, "PASS", "{evidence}");
    let ms: u64 = evidence
        .split("connected in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no connection time in {evidence:?}"));
    assert!(ms >= 800, "delayed 400 ms each way, connected in {ms} ms");
    h.ok(&["net", "heal", "dev", "--node", WORKER]);
    let net = worker_network(&h);
    assert_eq!(net["delayMs"], 0, "{net}");
    h.ok(&["destroy", "dev"]);
}
