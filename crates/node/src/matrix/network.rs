//! The network family (NET-*) and the TCP probe helpers BRK-10 shares:
//! [`connect_script`] (a pod's connection attempts, one line per target),
//! [`tcp_outcomes`] to read them back, and the node's ICMP counters
//! ([`net_counters`], [`refusals`]) that tell what its kernel did meanwhile.

use super::batch::output;
use super::{Batches, Finding, NodeEnv, USERNET_GATEWAY, summarize};
use crate::cri::{ExecOutput, Variant};
use ironclad_contract::matrix::{CheckId, Verdict};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// What [`connect_script`]'s helper prints when a connection opened.
pub const CONNECTED: &str = "CONNECTED";
/// The ports of the node's control surface: the node API, etcd's client,
/// peer and metrics ports.
pub const NODE_PORTS: &[u16] = &[
    crate::machine::API_PORT,
    crate::machine::ETCD_CLIENT_PORT,
    crate::machine::ETCD_PEER_PORT,
    crate::machine::ETCD_METRICS_PORT,
];

/// A script that tries a TCP connection to every `host` (shell words: an
/// address or `$var`) on every port, all at once (each at most 4 s), and
/// prints one line per target: `tcp HOST:PORT: CONNECTED` when it opened
/// (busybox nc runs a helper that says so), else nc's error and exit
/// status. `prelude` runs first (it may set the variables).
pub fn connect_script(prelude: &str, hosts: &[String], ports: &[u16]) -> String {
    let hosts = hosts.join(" ");
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "t=$(busybox mktemp -d /tmp/ironclad-tcp.XXXXXX) || exit 1; printf '#!/bin/busybox sh\\necho {CONNECTED} >&2\\n' >$t/c; busybox chmod 755 $t/c; {prelude} for h in {hosts}; do for p in {ports}; do (busybox timeout 4 busybox nc -w 3 $h $p -e $t/c </dev/null >$t/$h-$p 2>&1; echo \" rc=$?\" >>$t/$h-$p) & done; done; wait; for h in {hosts}; do for p in {ports}; do echo \"tcp $h:$p: $(busybox tr '\\n' ' ' <$t/$h-$p)\"; done; done; busybox rm -rf $t; busybox awk 'BEGIN{{w[\"Icmp:InDestUnreachs\"];w[\"Icmp:InErrors\"];w[\"TcpExt:OutOfWindowIcmps\"];w[\"TcpExt:LockDroppedIcmps\"]}} {{g=$1; if(seen[FILENAME g]++ % 2 == 0){{for(i=2;i<=NF;i++)n[i]=$i}} else {{for(i=2;i<=NF;i++){{k=g n[i]; if(k in w) o=o\" \"k\"=\"$i}}}}}} END{{print \"pod-counters\"o}}' /proc/net/snmp /proc/net/netstat"
    )
}

/// The pod's own ICMP counters after [`connect_script`]'s attempts (its
/// `pod-counters ...` line): unreachables received, and those its TCP could
/// not match to a connection.
pub(super) fn pod_icmp(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("pod-counters "))
        .map(str::trim)
}

/// The kernel's network counters under `root` (`/proc/net/snmp` and
/// `/proc/net/netstat`), by `Group:Name` (`Icmp:OutDestUnreachs`).
pub fn net_counters(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in ["proc/net/snmp", "proc/net/netstat"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut n = names.split_whitespace();
            let mut v = values.split_whitespace();
            let (Some(group), Some(_)) = (n.next(), v.next()) else {
                continue;
            };
            for (name, value) in n.zip(v) {
                if let Ok(value) = value.parse() {
                    out.insert(format!("{group}{name}"), value);
                }
            }
        }
    }
    out
}

/// What the node's kernel answered to blocked connection attempts between
/// two [`net_counters`] readings, in one line. A pod seldom sees that answer
/// as "no route to host": the ICMP "prohibited" for its first SYN comes back
/// while its connect(2) still holds the socket (the kernel then only notes
/// it, TcpExt LockDroppedIcmps), and the answers to its retransmissions fall
/// under the ICMP rate limits; its attempt times out instead. Either way no
/// connection opens.
pub fn refusals(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let d = |k: &str| {
        after
            .get(k)
            .unwrap_or(&0)
            .saturating_sub(*before.get(k).unwrap_or(&0))
    };
    format!(
        "node: answered {} attempts with ICMP destination unreachable during the probes ({} more held back by the ICMP rate limits)",
        d("Icmp:OutDestUnreachs"),
        d("Icmp:OutRateLimitGlobal") + d("Icmp:OutRateLimitHost"),
    )
}

/// The outcome of each `tcp HOST:PORT: ...` line of [`connect_script`]:
/// the target, a short reason, and whether the connection opened.
pub fn tcp_outcomes(text: &str) -> Vec<(String, &'static str, bool)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tcp "))
        .filter_map(|l| l.split_once(": "))
        .map(|(target, rest)| {
            let (why, connected) = if rest.contains(CONNECTED) {
                ("CONNECTED", true)
            } else if rest.contains("No route to host") {
                ("no route to host", false)
            } else if rest.contains("refused") {
                ("refused", false)
            } else if rest.contains("Permission denied") {
                ("permission denied", false)
            } else if rest.contains("unreachable") {
                ("unreachable", false)
            } else if rest.contains("timeout") || rest.contains("timed out") {
                ("timed out", false)
            } else {
                ("no connection", false)
            };
            (target.to_string(), why, connected)
        })
        .collect()
}

/// NET-01 probe and evaluation: a TCP connection to the user-net gateway.
pub fn net01_script() -> String {
    format!("busybox timeout 6 busybox nc -w 4 {USERNET_GATEWAY} 9 </dev/null 2>&1; echo rc=$?")
}

pub fn net01(out: &ExecOutput) -> (Verdict, Vec<String>) {
    let text = out.combined();
    let reached = text.contains("refused") || text.contains("rc=0");
    let ev = vec![format!("nc {USERNET_GATEWAY}:9: {}", summarize(&text))];
    (Verdict::pass_if(!reached), ev)
}

/// NET-02's probe from a pod: TCP to the host's loopback `port` through
/// the user-net gateway.
pub fn net02_script(port: u16) -> String {
    format!(
        "{}; exit 0",
        connect_script("", &[USERNET_GATEWAY.to_string()], &[port])
    )
}

/// NET-02 from the pod's probe output and machined's own attempt (`node`:
/// `Ok` if it connected, else its error): PASS when neither connected.
pub fn net02(pod: Result<&ExecOutput, &str>, node: &Result<(), String>) -> (Verdict, Vec<String>) {
    let mut ev = Vec::new();
    let mut reached = false;
    match pod {
        Ok(out) => {
            let text = out.combined();
            let outcomes = tcp_outcomes(&text);
            if outcomes.is_empty() {
                reached = true;
                ev.push(format!("pod: no result: {}", summarize(&text)));
            }
            for (t, why, connected) in outcomes {
                reached |= connected;
                ev.push(format!("pod: tcp {t}: {why}"));
            }
            if let Some(n) = pod_icmp(&text) {
                ev.push(format!("pod: counters: {n}"));
            }
        }
        Err(e) => ev.push(format!("pod: not run: {e}")),
    }
    match node {
        Ok(()) => {
            reached = true;
            ev.push(format!("node: tcp {USERNET_GATEWAY}: CONNECTED"));
        }
        Err(e) => ev.push(format!("node: tcp {USERNET_GATEWAY}: {e}")),
    }
    (Verdict::pass_if(!reached), ev)
}

/// machined's own NET-02 attempt: TCP to 10.0.2.2:`port`, 4 s at most.
async fn net02_from_node(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([10, 0, 2, 2], port));
    match tokio::time::timeout(Duration::from_secs(4), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 4 s".into()),
    }
}

/// NET-01's finding: skipped where the gateway is meant to be reachable.
pub(super) fn net01_check(id: CheckId, batches: &Batches, env: &NodeEnv) -> Finding {
    if env.egress {
        return (
            Verdict::skip(
                "egress is on in the cluster file: the outside is meant to be reachable (the host's own services are not: NET-02)",
            ),
            vec![],
        );
    }
    if env.host_network {
        return (
            Verdict::skip("pods share the host network here (no CNI)"),
            vec![],
        );
    }
    match output(&batches.outputs, Variant::Unpriv, id.as_str()) {
        Ok(o) => net01(&o),
        Err(e) => (Verdict::Fail, vec![e]),
    }
}

/// NET-02's finding: the pod's probe from the batch and machined's own
/// attempt, now.
pub(super) async fn net02_check(env: &NodeEnv, batches: &Batches) -> Finding {
    if env.host_network {
        return (
            Verdict::skip("pods share the host network here (no CNI)"),
            vec![],
        );
    }
    let Some(port) = env.host_port else {
        return (
            Verdict::skip(
                "the request names no host port: `ironclad matrix` listens on one for the run and passes it",
            ),
            vec![],
        );
    };
    let node = net02_from_node(port).await;
    let pod = output(&batches.outputs, Variant::Unpriv, CheckId::Net02.as_str());
    let (v, mut ev) = net02(pod.as_ref().map_err(String::as_str), &node);
    ev.push(batches.refusals.clone());
    (v, ev)
}
