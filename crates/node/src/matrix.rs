//! The node side of the matrix: machined runs the CRI-level checks of
//! MATRIX.md on request (`POST /v1/matrix/run`), starting attacker workloads
//! through containerd's CRI ([`crate::cri`]) the way a kubelet would,
//! and turns each probe's output into a verdict with evidence.
//!
//! One pod per variant is started lazily and reused by every check that needs
//! it (TCG is slow); every pod is removed at the end, whatever happened, and so
//! is any leftover of an earlier run (sandboxes carry [`cri::LABEL`]).
//!
//! Attacks that a plain privileged container cannot be stopped from on a
//! shared kernel (BRK-02, BRK-04..09 for `priv`) are recorded as such in the
//! evidence; their verdict rests on the `userns` and `gvisor` variants of the
//! same attack failing. Probes are non-destructive: writability is tested by
//! opening for append without writing, sysrq with `h` (help).
//!
//! Evaluation is pure ([`evaluate`], [`attack_verdict`], [`compare_sysctls`])
//! and unit-tested; the probes themselves run against a real containerd in
//! `tests/cri_host.rs` and on the nodes.

use super::cri::{Cri, ExecOutput, Pod, PodOptions, Variant};
use crate::api::{ApiError, ErrorCode, MatrixRunRequest};
use ironclad_contract::matrix::{CheckResult, NodeMatrixReport, Runner, Verdict};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A file that exists on the node's root and in no container image: seeing it
/// means seeing the node's filesystem.
pub const NODE_MARKER: &str = ironclad_contract::layout::MANIFEST;
/// The recipe's declared sysctls in the image.
pub const SYSCTL_JSON: &str = ironclad_contract::layout::SYSCTL_JSON;
/// The QEMU user-net gateway (the host, seen from the guest).
pub const USERNET_GATEWAY: &str = "10.0.2.2";
/// How long one probe may run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the executor needs to know about the node it runs on.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    pub node: String,
    /// containerd's socket.
    pub socket: PathBuf,
    /// The node's root (`/`; a temp dir in tests) for /proc/sys and the image files.
    pub root: PathBuf,
    /// The toolbox image reference.
    pub toolbox_image: String,
    /// Pods share the node's network (no CNI): only for hosts without CNI.
    pub host_network: bool,
    /// Runtime handlers registered in containerd (runc always).
    pub runtimes: Vec<String>,
    /// Whether the cluster file turned user namespaces on.
    pub user_namespaces: bool,
    /// Whether the cluster has egress to the outside.
    pub egress: bool,
    /// The other members' node API addresses on the cluster network.
    pub peers: Vec<(String, SocketAddr)>,
    /// The node's own addresses (user-mode NIC, cluster), where BRK-10's
    /// pods knock besides their gateway.
    pub addresses: Vec<Ipv4Addr>,
    /// The host's loopback port NET-02 tries through 10.0.2.2 (from the
    /// request: the host side listens there for the run).
    pub host_port: Option<u16>,
    /// How long a run waits for containerd to answer: `ready` does not wait
    /// for it, so a run asked for right after boot finds it starting.
    pub containerd_wait: Duration,
}

impl NodeEnv {
    /// The environment of a node from its machine config.
    pub fn from_machine_config(cfg: &crate::machine::MachineConfig) -> NodeEnv {
        let mut runtimes = vec!["runc".to_string()];
        for r in &cfg.containerd.runtimes {
            if !runtimes.contains(r) {
                runtimes.push(r.clone());
            }
        }
        NodeEnv {
            node: cfg.node.name.to_string(),
            socket: PathBuf::from(super::containerd::SOCKET),
            root: PathBuf::from("/"),
            toolbox_image: ironclad_contract::layout::TOOLBOX_REF.to_string(),
            host_network: false,
            runtimes,
            user_namespaces: cfg.containerd.user_namespaces,
            egress: cfg.cluster.egress,
            peers: cfg
                .cluster
                .members
                .iter()
                .filter(|m| m.name != cfg.node.name)
                .map(|m| {
                    (
                        m.name.to_string(),
                        SocketAddr::from((m.address, crate::machine::API_PORT)),
                    )
                })
                .collect(),
            addresses: vec![crate::machine::USER_NET_GUEST, cfg.node.address],
            host_port: None,
            containerd_wait: CONTAINERD_WAIT,
        }
    }

    fn has_runtime(&self, name: &str) -> bool {
        self.runtimes.iter().any(|r| r == name)
    }
}

/// A probe's classification: the attack got through or it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Blocked(String),
    Escaped(String),
}

impl Outcome {
    fn escaped(&self) -> bool {
        matches!(self, Outcome::Escaped(_))
    }
}

/// One attack of the BRK family: which variants run it, the script, and
/// whether a plain privileged container is beyond the node's protection.
struct Attack {
    id: &'static str,
    variants: &'static [Variant],
    priv_unprotectable: bool,
}

const SANDBOXED: &[Variant] = &[Variant::Userns, Variant::Gvisor];
const ALL_BUT_RESTRICTED: &[Variant] = &[
    Variant::Priv,
    Variant::Unpriv,
    Variant::Userns,
    Variant::Gvisor,
];

const ATTACKS: &[Attack] = &[
    Attack {
        id: "BRK-01",
        variants: &[Variant::Priv],
        priv_unprotectable: false,
    },
    Attack {
        id: "BRK-02",
        variants: &[Variant::Priv, Variant::Userns, Variant::Gvisor],
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-03",
        variants: &[Variant::Priv],
        priv_unprotectable: false,
    },
    Attack {
        id: "BRK-04",
        variants: &[
            Variant::Priv,
            Variant::Unpriv,
            Variant::Userns,
            Variant::Gvisor,
            Variant::Restricted,
        ],
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-05",
        variants: ALL_BUT_RESTRICTED,
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-06",
        variants: ALL_BUT_RESTRICTED,
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-07",
        variants: ALL_BUT_RESTRICTED,
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-08",
        variants: ALL_BUT_RESTRICTED,
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-09",
        variants: ALL_BUT_RESTRICTED,
        priv_unprotectable: true,
    },
    Attack {
        id: "BRK-10",
        variants: &[
            Variant::Unpriv,
            Variant::Userns,
            Variant::Gvisor,
            Variant::Restricted,
        ],
        priv_unprotectable: false,
    },
];

/// The shell script (busybox `sh -c`) of an attack probe.
/// The pod's gateway (the node's address on the pods' bridge), as a shell
/// word.
fn gateway_word() -> String {
    "$(busybox ip route | busybox awk '/^default/{print $3; exit}')".to_string()
}

pub fn script(id: &str, host_network: bool) -> String {
    let api_host = if host_network {
        "127.0.0.1".to_string()
    } else {
        gateway_word()
    };
    match id {
        // The node has no shell: nsenter into PID 1's namespaces and exec one.
        "BRK-01" => "for s in /bin/bash /bin/sh; do busybox nsenter -t 1 -m -u -i -n -p -- $s -c 'echo SHELL-RAN; id' 2>&1 && exit 0; done; exit 1".into(),
        // Bring your own shell: the pod's busybox through /proc/<self>/root.
        "BRK-02" => format!("busybox nsenter -t 1 -m -u -i -n -p -- /proc/$$/root/bin/busybox sh -c 'test -e {NODE_MARKER} && echo NODE-ROOT-SEEN; busybox id' 2>&1"),
        "BRK-03" => format!("test -e /proc/1/root{NODE_MARKER} && echo node-root-visible; (exec 3>>/proc/1/root/usr/lib/os-release) 2>&1 && echo OPENED-RW:/proc/1/root/usr/lib/os-release; busybox nsenter -t 1 -m -- /proc/$$/root/bin/busybox mount -o remount,rw / 2>&1 && echo REMOUNTED-RW; exit 0"),
        "BRK-04" => "test -e /proc/sysrq-trigger || { echo 'absent: /proc/sysrq-trigger'; exit 0; }; (echo h > /proc/sysrq-trigger) 2>&1 && echo WROTE-SYSRQ; exit 0".into(),
        "BRK-05" => "for d in vda vdb; do if [ -e /dev/$d ]; then (exec 3<>/dev/$d) 2>&1 && echo OPENED-RW:/dev/$d; else echo absent:/dev/$d; fi; mm=$(busybox cat /sys/block/$d/dev 2>/dev/null) || continue; busybox mknod /tmp/m-$d b ${mm%%:*} ${mm##*:} 2>&1 && { (exec 3<>/tmp/m-$d) 2>&1 && echo OPENED-RW:mknod-$d; busybox rm -f /tmp/m-$d; }; done; exit 0".into(),
        // A non-module file: EPERM without CAP_SYS_MODULE, ENOEXEC once the
        // kernel has accepted the call and parsed the file.
        "BRK-06" => "busybox insmod /bin/busybox 2>&1; echo rc=$?; echo lockdown=$(busybox cat /sys/kernel/security/lockdown 2>/dev/null); echo sig_enforce=$(busybox cat /sys/module/module/parameters/sig_enforce 2>/dev/null)".into(),
        "BRK-07" => "for f in /proc/sys/kernel/core_pattern /proc/sys/kernel/modprobe /sys/kernel/uevent_helper; do if [ -e $f ]; then (exec 3>>$f) 2>&1 && echo OPENED-RW:$f; else echo absent:$f; fi; done; exit 0".into(),
        "BRK-08" => "busybox mkdir -p /tmp/cg; if busybox mount -t cgroup -o none,name=ironclad cgroup /tmp/cg 2>&1; then echo mounted-cgroup-v1; if [ -e /tmp/cg/release_agent ]; then (exec 3>>/tmp/cg/release_agent) 2>&1 && echo OPENED-RW:release_agent; fi; busybox umount /tmp/cg; fi; exit 0".into(),
        // A host process is one whose cmdline names containerd (not a shim).
        "BRK-09" => "p=; for d in /proc/[0-9]*; do c=$(busybox tr '\\0' ' ' < $d/cmdline 2>/dev/null); case \"$c\" in */containerd\\ *|*/containerd) p=${d#/proc/}; break;; esac; done; if [ -z \"$p\" ]; then echo 'no host process visible'; exit 0; fi; echo host-pid=$p; (exec 3>>/proc/$p/mem) 2>&1 && echo OPENED-RW:/proc/$p/mem; exit 0".into(),
        "BRK-10" => brk10_script(&[api_host], &[]),
        _ => "exit 2".into(),
    }
}

/// Classifies an attack probe's output.
pub fn evaluate(id: &str, out: &ExecOutput) -> Outcome {
    let text = out.combined();
    let detail = match id {
        "BRK-10" => brk10_detail(&text),
        _ => summarize(&text),
    };
    let escaped = match id {
        "BRK-01" => text.contains("SHELL-RAN") || text.contains("uid="),
        "BRK-02" => text.contains("NODE-ROOT-SEEN"),
        "BRK-03" => text.contains("OPENED-RW") || text.contains("REMOUNTED-RW"),
        "BRK-04" => text.contains("WROTE-SYSRQ"),
        "BRK-05" | "BRK-07" | "BRK-08" | "BRK-09" => text.contains("OPENED-RW"),
        // Anything but "no permission" means init_module was reachable.
        "BRK-06" => {
            let first = text.lines().next().unwrap_or("");
            !(first.contains("not permitted")
                || first.contains("Permission denied")
                || first.contains("not implemented")
                || first.contains("does not support")
                || first.contains("Function not implemented")
                || first.contains("No such file"))
        }
        "BRK-10" => text.contains("SOCKET-VISIBLE") || text.contains(CONNECTED),
        _ => true,
    };
    if escaped {
        Outcome::Escaped(detail)
    } else {
        Outcome::Blocked(detail)
    }
}

/// What [`connect_script`]'s helper prints when a connection opened.
pub const CONNECTED: &str = "CONNECTED";
/// The ports of the node's control surface: the node API, etcd's client
/// and peer ports.
pub const NODE_PORTS: &[u16] = &[
    crate::machine::API_PORT,
    crate::machine::ETCD_CLIENT_PORT,
    crate::machine::ETCD_PEER_PORT,
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
fn pod_icmp(text: &str) -> Option<&str> {
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

/// The pod's view in one line: every target and its reason (`10.88.0.1:50000
/// no route to host, ...`), and any visible containerd socket.
pub fn brk10_detail(text: &str) -> String {
    let mut parts: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("SOCKET-VISIBLE"))
        .map(str::to_string)
        .collect();
    parts.extend(
        tcp_outcomes(text)
            .into_iter()
            .map(|(t, why, _)| format!("{t} {why}")),
    );
    if let Some(n) = pod_icmp(text) {
        parts.push(format!("pod counters: {n}"));
    }
    if parts.is_empty() {
        summarize(text)
    } else {
        parts.join(", ")
    }
}

/// BRK-10's probe: containerd's socket through the usual paths, then TCP
/// to the node API and etcd ports on every one of `hosts` (shell words) and
/// of the node's `addresses`.
pub fn brk10_script(hosts: &[String], addresses: &[Ipv4Addr]) -> String {
    let mut all = hosts.to_vec();
    all.extend(addresses.iter().map(Ipv4Addr::to_string));
    let sockets = "for s in /run/containerd/containerd.sock /var/run/containerd/containerd.sock /proc/1/root/run/containerd/containerd.sock; do test -S $s && echo SOCKET-VISIBLE:$s; done;";
    format!("{}; exit 0", connect_script(sockets, &all, NODE_PORTS))
}

/// The output folded to one line of at most 300 characters.
fn summarize(text: &str) -> String {
    let one: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let s = one.join(" | ");
    if s.chars().count() > 300 {
        let mut t: String = s.chars().take(300).collect();
        t.push('…');
        t
    } else if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

/// The note for an attack a plain privileged container gets through.
pub const UNPROTECTABLE: &str = "unprotectable at node level on a shared kernel: a privileged container holds every capability of the node's kernel; admission must refuse privileged pods. The verdict rests on the userns and gvisor variants";

/// The verdict of an attack from its variants' outcomes (`Err`: the variant
/// could not run, with why).
pub fn attack_verdict(
    priv_unprotectable: bool,
    outcomes: &[(Variant, Result<Outcome, String>)],
) -> (Verdict, Vec<String>) {
    let mut evidence = Vec::new();
    let mut considered_ran = 0;
    let mut escaped_any = false;
    let mut not_run = Vec::new();
    for (v, o) in outcomes {
        let counts = !(priv_unprotectable && *v == Variant::Priv);
        match o {
            // A blocked attack counts for every variant, priv included.
            Ok(Outcome::Blocked(d)) => {
                evidence.push(format!("{v}: blocked: {d}"));
                considered_ran += 1;
            }
            Ok(Outcome::Escaped(d)) => {
                if counts {
                    evidence.push(format!("{v}: ESCAPED: {d}"));
                    considered_ran += 1;
                    escaped_any = true;
                } else {
                    evidence.push(format!("{v}: got through ({UNPROTECTABLE}): {d}"));
                }
            }
            Err(why) => {
                evidence.push(format!("{v}: not run: {why}"));
                if counts {
                    not_run.push(format!("{v}: {why}"));
                }
            }
        }
    }
    let sandboxed_ran = outcomes
        .iter()
        .any(|(v, o)| SANDBOXED.contains(v) && o.is_ok());
    let priv_got_through = outcomes
        .iter()
        .any(|(v, o)| *v == Variant::Priv && matches!(o, Ok(Outcome::Escaped(_))));
    let verdict = if escaped_any {
        Verdict::Fail
    } else if priv_got_through && !sandboxed_ran {
        Verdict::skip(format!(
            "a plain privileged container cannot be stopped here on a shared kernel, and neither the userns nor the gvisor variant could run ({})",
            not_run.join("; ")
        ))
    } else if considered_ran == 0 {
        Verdict::skip(format!(
            "no variant that the node can protect could run ({})",
            not_run.join("; ")
        ))
    } else {
        Verdict::Pass
    };
    (verdict, evidence)
}

/// Parses `CapEff:` from /proc/self/status.
pub fn cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// The value of a `Key:\tvalue` line of /proc/self/status.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

const CAP_MKNOD: u32 = 27;
const CAP_NET_RAW: u32 = 13;

/// RT-01 from a default container's /proc/self/status.
pub fn rt01(status: &str) -> (Verdict, Vec<String>) {
    let Some(eff) = cap_eff(status) else {
        return (
            Verdict::Fail,
            vec![format!("no CapEff line: {}", summarize(status))],
        );
    };
    let raw = eff & (1 << CAP_NET_RAW) != 0;
    let mknod = eff & (1 << CAP_MKNOD) != 0;
    let ev = vec![
        format!("CapEff: {eff:016x}"),
        format!(
            "NET_RAW: {}, MKNOD: {}",
            if raw { "present" } else { "absent" },
            if mknod { "present" } else { "absent" }
        ),
    ];
    (Verdict::pass_if(!raw && !mknod), ev)
}

/// RT-02 from a default container's /proc/self/status.
pub fn rt02(status: &str) -> (Verdict, Vec<String>) {
    match status_field(status, "Seccomp") {
        Some(v) => (Verdict::pass_if(v == "2"), vec![format!("Seccomp: {v}")]),
        None => (
            Verdict::Fail,
            vec!["no Seccomp line in /proc/self/status".into()],
        ),
    }
}

/// RT-04 from a restricted container's /proc/self/status.
pub fn rt04(status: &str) -> (Verdict, Vec<String>) {
    let nnp = status_field(status, "NoNewPrivs").unwrap_or("?");
    let uid = status_field(status, "Uid").unwrap_or("?");
    let eff = cap_eff(status);
    let ev = vec![
        format!("NoNewPrivs: {nnp}"),
        format!("Uid: {uid}"),
        format!(
            "CapEff: {}",
            eff.map(|e| format!("{e:016x}")).unwrap_or("?".into())
        ),
    ];
    let non_root = uid.split_whitespace().next().is_some_and(|u| u != "0");
    (
        Verdict::pass_if(nnp == "1" && eff == Some(0) && non_root),
        ev,
    )
}

/// The probe of RT-03 and its evaluation.
pub const RT03_SCRIPT: &str = "echo kcore=$(busybox stat -c '%F %t:%T' /proc/kcore 2>&1); echo firmware_entries=$(busybox ls -A /sys/firmware 2>/dev/null | busybox wc -l); for f in /proc/sysrq-trigger /proc/sys/kernel/hostname /proc/irq/default_smp_affinity; do if [ -e $f ]; then (exec 3>>$f) 2>&1 && echo OPENED-RW:$f; else echo absent:$f; fi; done; exit 0";

pub fn rt03(out: &ExecOutput) -> (Verdict, Vec<String>) {
    let text = out.combined();
    let kcore_masked = text
        .lines()
        .find_map(|l| l.strip_prefix("kcore="))
        .is_some_and(|k| k.contains("character special file 1:3") || k.contains("No such file"));
    let firmware_empty = text
        .lines()
        .find_map(|l| l.strip_prefix("firmware_entries="))
        .is_some_and(|n| n.trim() == "0");
    // Each of the three files is read-only or (on kernels without it) absent.
    let ro_count = text.matches("Read-only file system").count();
    let ro = !text.contains("OPENED-RW")
        && ro_count >= 1
        && ro_count + text.matches("absent:").count() >= 3;
    let ev = text.lines().map(str::to_string).collect();
    (Verdict::pass_if(kcore_masked && firmware_empty && ro), ev)
}

/// RT-08 from a userns container's /proc/self/uid_map.
pub fn rt08(uid_map: &str) -> (Verdict, Vec<String>) {
    let first: Vec<u64> = uid_map
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let ev = vec![format!("uid_map: {}", summarize(uid_map))];
    match first.as_slice() {
        [0, 0, 4294967295] => {
            let mut ev = ev;
            ev.push("the runtime ignored the user namespace request (identity map)".into());
            (Verdict::Fail, ev)
        }
        [0, host, len] if *host > 0 && *len > 0 => (Verdict::Pass, ev),
        _ => (Verdict::Fail, ev),
    }
}

/// RT-09 from a gVisor container's `dmesg` and `uname -r` against the node's
/// kernel release.
pub fn rt09(dmesg: &str, uname_r: &str, host_release: &str) -> (Verdict, Vec<String>) {
    let gvisor = dmesg.contains("gVisor");
    let r = uname_r.trim();
    let hidden = !r.is_empty() && r != host_release.trim();
    let ev = vec![
        format!("dmesg: {}", summarize(dmesg.lines().next().unwrap_or(""))),
        format!(
            "uname -r in the pod: {r}; node kernel: {}",
            host_release.trim()
        ),
    ];
    (Verdict::pass_if(gvisor && hidden), ev)
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

/// Compares the declared sysctls with what `read` returns for each key.
pub fn compare_sysctls(
    declared: &BTreeMap<String, String>,
    read: impl Fn(&str) -> Result<String, String>,
) -> (Verdict, Vec<String>) {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut bad = Vec::new();
    let mut good = 0;
    for (k, want) in declared {
        match read(k) {
            Ok(got) if norm(&got) == norm(want) => good += 1,
            Ok(got) => bad.push(format!("{k}: declared {want}, node has {}", norm(&got))),
            Err(e) => bad.push(format!("{k}: declared {want}, cannot read: {e}")),
        }
    }
    let mut ev = vec![format!("{good}/{} declared sysctls match", declared.len())];
    ev.extend(bad.iter().cloned());
    if declared.is_empty() {
        return (Verdict::Fail, vec!["the image declares no sysctls".into()]);
    }
    (Verdict::pass_if(bad.is_empty()), ev)
}

/// The /proc/sys path of a sysctl key under `root`.
pub fn sysctl_path(root: &Path, key: &str) -> Option<PathBuf> {
    if key.is_empty()
        || key
            .split('.')
            .any(|c| c.is_empty() || c == ".." || c.contains('/'))
    {
        return None;
    }
    Some(root.join("proc/sys").join(key.replace('.', "/")))
}

fn rt07(root: &Path) -> (Verdict, Vec<String>) {
    let path = root.join(SYSCTL_JSON.trim_start_matches('/'));
    let declared: BTreeMap<String, String> = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => return (Verdict::Fail, vec![format!("{}: {e}", path.display())]),
    };
    compare_sysctls(&declared, |k| {
        let p = sysctl_path(root, k).ok_or("bad key")?;
        std::fs::read_to_string(&p).map_err(|e| e.to_string())
    })
}

/// The pods of one run, started on first use.
struct Pods<'a> {
    cri: Cri,
    env: &'a NodeEnv,
    run_id: String,
    pods: HashMap<Variant, Result<Pod, String>>,
}

/// Why a variant cannot run on this node at all (before trying).
fn unavailable(env: &NodeEnv, v: Variant) -> Option<String> {
    match v {
        Variant::Gvisor if !env.has_runtime("runsc") => {
            Some("runsc is not a runtime of this cluster (cluster file: runtimes)".into())
        }
        Variant::Userns if !env.user_namespaces => {
            Some("user namespaces are off in the cluster file".into())
        }
        _ => None,
    }
}

async fn exec_script(cri: &mut Cri, pod: &Pod, script: &str) -> Result<ExecOutput, String> {
    cri.exec(
        &pod.container_id,
        &["/bin/busybox", "sh", "-c", script],
        PROBE_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Starts the pod of `v`. A userns pod whose user namespace the runtime
/// silently ignored is removed again and reported as not started.
async fn start_variant(
    cri: &mut Cri,
    env: &NodeEnv,
    run_id: &str,
    v: Variant,
) -> Result<Pod, String> {
    if let Some(why) = unavailable(env, v) {
        return Err(why);
    }
    let opts = PodOptions {
        host_network: env.host_network,
        runtime_handler: None,
        image: env.toolbox_image.clone(),
        cgroup_parent: String::new(),
    };
    let name = format!("matrix-{}-{run_id}", v.name());
    let pod = cri
        .run_pod(v, &name, &opts)
        .await
        .map_err(|e| format!("pod did not start: {e}"))?;
    if v != Variant::Userns {
        return Ok(pod);
    }
    let check = match exec_script(cri, &pod, "busybox cat /proc/self/uid_map").await {
        Ok(o) if rt08(&o.stdout).0 == Verdict::Pass => return Ok(pod),
        Ok(o) => format!(
            "the runtime ignored the user namespace (uid_map {})",
            summarize(&o.stdout)
        ),
        Err(e) => e,
    };
    let _ = cri.remove_sandbox(&pod.sandbox_id).await;
    Err(check)
}

impl Pods<'_> {
    fn unavailable(&self, v: Variant) -> Option<String> {
        unavailable(self.env, v)
    }

    /// Starts the pods of `variants` at once (pod start-up is mostly waiting
    /// on shims and mounts, so this saves wall time under TCG).
    async fn prestart(&mut self, variants: &[Variant]) {
        let env = self.env;
        let run_id = self.run_id.clone();
        let starts = variants
            .iter()
            .filter(|v| !self.pods.contains_key(v))
            .map(|&v| {
                let mut cri = self.cri.clone();
                let run_id = run_id.clone();
                async move { (v, start_variant(&mut cri, env, &run_id, v).await) }
            })
            .collect::<Vec<_>>();
        for (v, r) in futures::future::join_all(starts).await {
            self.pods.insert(v, r);
        }
    }

    async fn get(&mut self, v: Variant) -> Result<Pod, String> {
        if let Some(p) = self.pods.get(&v) {
            return p.clone();
        }
        let res = start_variant(&mut self.cri, self.env, &self.run_id, v).await;
        // Kept for cleanup even if a later check fails.
        self.pods.insert(v, res.clone());
        res
    }

    async fn exec_on(&mut self, pod: &Pod, script: &str) -> Result<ExecOutput, String> {
        exec_script(&mut self.cri, pod, script).await
    }

    async fn exec(&mut self, v: Variant, script: &str) -> Result<ExecOutput, String> {
        let pod = self.get(v).await?;
        self.exec_on(&pod, script).await
    }

    /// Removes every pod of this run (all at once), then any labelled
    /// leftover.
    async fn cleanup(&mut self) -> Vec<String> {
        let removals = self
            .pods
            .drain()
            .filter_map(|(_, p)| p.ok())
            .map(|p| {
                let mut cri = self.cri.clone();
                async move { cri.remove_sandbox(&p.sandbox_id).await }
            })
            .collect::<Vec<_>>();
        let mut errors: Vec<String> = futures::future::join_all(removals)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if let Err(e) = self.cri.remove_labelled().await {
            errors.push(e.to_string());
        }
        errors
    }
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:x}{:04x}", t, rand::random::<u16>())
}

/// Runs the requested node-level checks and returns the node's results.
///
/// Unknown ids are `bad_request`; destructive checks without `destructive`
/// too; host-level ids are ignored (the host runs them). containerd not
/// answering is `unavailable`.
///
/// Runs are serialized: a second request waits for the first (each removes
/// every labelled pod, so two at once would break each other). The run is its
/// own task: if the caller goes away (the HTTP client hung up), it still
/// finishes and removes its pods.
pub async fn run(req: &MatrixRunRequest, env: &NodeEnv) -> Result<NodeMatrixReport, ApiError> {
    let (req, mut env) = (req.clone(), env.clone());
    if req.host_port.is_some() {
        env.host_port = req.host_port;
    }
    tokio::spawn(async move {
        static RUN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = RUN_LOCK.lock().await;
        run_locked(&req, &env).await
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("matrix run aborted: {e}")))?
}

/// How long a run waits for the offline images to be imported.
const IMAGE_WAIT: Duration = Duration::from_secs(180);
/// How long a node's run waits for containerd to answer ([`NodeEnv::containerd_wait`]).
pub const CONTAINERD_WAIT: Duration = Duration::from_secs(120);

async fn run_locked(req: &MatrixRunRequest, env: &NodeEnv) -> Result<NodeMatrixReport, ApiError> {
    let started = Instant::now();
    let checks = ironclad_contract::matrix::select(&req.checks, req.destructive)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let ids: Vec<&'static str> = checks
        .iter()
        .filter(|c| c.runner == Runner::Node)
        .map(|c| c.id)
        .collect();
    // `ready` does not wait for containerd, and machined imports the offline
    // images after containerd answers: a run asked for at once waits for
    // both (bounded).
    let deadline = Instant::now() + env.containerd_wait;
    let (mut client, version) = loop {
        let answer = match Cri::connect(&env.socket).await {
            Ok(mut c) => c.version().await.map(|v| (c, v)),
            Err(e) => Err(e),
        };
        match answer {
            Ok(ok) => break ok,
            Err(e) if Instant::now() >= deadline => {
                return Err(ApiError::new(ErrorCode::Unavailable, e.to_string()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let runtime = format!("{} {}", version.runtime_name, version.runtime_version);
    // Leftovers of an interrupted run.
    let _ = client.remove_labelled().await;
    let deadline = Instant::now() + IMAGE_WAIT;
    let image_ok = loop {
        let present = client.image_present(&env.toolbox_image).await;
        if !matches!(present, Ok(false)) || Instant::now() >= deadline {
            break present;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut pods = Pods {
        cri: client,
        env,
        run_id: run_id(),
        pods: HashMap::new(),
    };
    let mut results = Vec::new();
    match image_ok {
        Ok(true) => run_checks(&ids, &mut pods, &mut results).await,
        other => {
            let why = match other {
                Ok(_) => format!("image {} is not in containerd", env.toolbox_image),
                Err(e) => e.to_string(),
            };
            for id in &ids {
                results.push(CheckResult::new(
                    id,
                    &env.node,
                    Verdict::Fail,
                    vec![why.clone()],
                ));
            }
        }
    }
    let errors = pods.cleanup().await;
    if !errors.is_empty() {
        results.push(CheckResult::new(
            "CLEANUP",
            &env.node,
            Verdict::Fail,
            errors,
        ));
    }
    let manifest = env.root.join(NODE_MARKER.trim_start_matches('/'));
    Ok(NodeMatrixReport {
        node: env.node.clone(),
        runtime,
        image_manifest_sha256: std::fs::read(&manifest)
            .ok()
            .map(|data| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))),
        results,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Marks the start of one probe's output in a batch.
const BATCH_BEGIN: &str = "@@ironclad-probe";
/// Marks the end of one probe's output, followed by its exit status.
const BATCH_END: &str = "@@ironclad-rc";

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One script that runs `probes` (key, script) one after the other, each in
/// its own busybox shell killed after `timeout` (whole seconds, at least 1), framed by markers
/// for [`split_batch`]. One `ExecSync` per pod instead of one per probe:
/// under TCG every exec costs the runtime's start-up and the shim's round
/// trips. Each probe writes to a file in a private temp dir, printed after
/// it ended, so that a child it left running (nsenter's shell, nc) cannot
/// hold the exec's output open and stall the probes after it.
pub fn batch_script(probes: &[(String, String)], timeout: Duration) -> String {
    let mut s = String::from(
        "d=$(busybox mktemp -d /tmp/ironclad-probe.XXXXXX) || { echo 'no temp dir for the probes'; exit 1; }; ",
    );
    for (key, script) in probes {
        s.push_str(&format!(
            "echo '{BATCH_BEGIN} {key}'; busybox timeout -s KILL {} busybox sh -c {} </dev/null >$d/out 2>&1; r=$?; busybox cat $d/out; echo; echo \"{BATCH_END} $r\"; ",
            timeout.as_secs().max(1),
            shell_quote(script)
        ));
    }
    s.push_str("busybox rm -rf $d; exit 0");
    s
}

/// Whether a probe of a batch was killed at its timeout.
pub fn timed_out(out: &ExecOutput) -> bool {
    out.exit_code == 137
}

/// Splits a batch's output into each probe's output (stdout holds both
/// streams; the exit status is the probe's, 137 when it was killed at its
/// timeout). A batch that printed no probe at all is an error with what it
/// printed instead.
pub fn split_batch(out: &ExecOutput) -> Result<HashMap<String, ExecOutput>, String> {
    let mut map = HashMap::new();
    let mut cur: Option<(String, String)> = None;
    for line in out.stdout.lines() {
        if let Some(key) = line.strip_prefix(BATCH_BEGIN) {
            cur = Some((key.trim().to_string(), String::new()));
        } else if let Some(rc) = line.strip_prefix(BATCH_END) {
            if let Some((key, mut text)) = cur.take() {
                let exit_code = rc.trim().parse().unwrap_or(-1);
                if exit_code == 137 {
                    text.push_str("(probe killed at its timeout)\n");
                }
                map.insert(
                    key,
                    ExecOutput {
                        exit_code,
                        stdout: text,
                        stderr: String::new(),
                    },
                );
            }
        } else if let Some((_, text)) = cur.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if map.is_empty() && cur.is_none() {
        return Err(format!(
            "the probes did not run (exit {}): {}",
            out.exit_code,
            summarize(&out.combined())
        ));
    }
    Ok(map)
}

/// Probe keys of the non-attack checks in a batch.
const STATUS_KEY: &str = "status";

/// Which probes each variant's pod runs for the checks `ids` (attack ids
/// as keys, [`STATUS_KEY`] and the check id for the others).
fn plan(ids: &[&str], env: &NodeEnv) -> BTreeMap<Variant, Vec<(String, String)>> {
    let mut plan: BTreeMap<Variant, Vec<(String, String)>> = BTreeMap::new();
    let mut add = |v: Variant, key: &str, script: String| {
        let probes = plan.entry(v).or_default();
        if !probes.iter().any(|(k, _)| k == key) {
            probes.push((key.to_string(), script));
        }
    };
    let needs_rt10 = ids.contains(&"RT-10");
    for attack in ATTACKS {
        let wanted = ids.contains(&attack.id);
        let for_rt10 = needs_rt10 && attack.id != "BRK-10";
        for &v in attack.variants {
            if wanted || (for_rt10 && SANDBOXED.contains(&v)) {
                let sc = if attack.id == "BRK-10" && !env.host_network {
                    brk10_script(&[gateway_word()], &env.addresses)
                } else {
                    script(attack.id, env.host_network)
                };
                add(v, attack.id, sc);
            }
        }
    }
    let status = || "busybox cat /proc/self/status".to_string();
    for &id in ids {
        match id {
            "RT-01" | "RT-02" => add(Variant::Unpriv, STATUS_KEY, status()),
            "RT-03" => add(Variant::Unpriv, id, RT03_SCRIPT.into()),
            "RT-04" => add(Variant::Restricted, STATUS_KEY, status()),
            "RT-08" => add(
                Variant::Userns,
                id,
                "busybox cat /proc/self/uid_map; busybox id".into(),
            ),
            "RT-09" => add(
                Variant::Gvisor,
                id,
                "busybox dmesg 2>&1 | busybox head -n 3; echo ---; busybox uname -r".into(),
            ),
            "NET-01" if !env.egress && !env.host_network => {
                add(Variant::Unpriv, id, net01_script())
            }
            "NET-02" if !env.host_network => {
                if let Some(port) = env.host_port {
                    add(Variant::Unpriv, id, net02_script(port))
                }
            }
            _ => {}
        }
    }
    plan
}

/// Each variant's probe outputs by key, or why the variant did not run.
type Outputs = HashMap<Variant, Result<HashMap<String, ExecOutput>, String>>;

fn output(outputs: &Outputs, v: Variant, key: &str) -> Result<ExecOutput, String> {
    match outputs.get(&v) {
        None => Err(format!("{v} was not run")),
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(map)) => map
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no output for {key}: the {v} batch ended before this probe")),
    }
}

/// Starts the variants' pods at once, then runs each pod's batch, all pods
/// at once.
async fn run_batches(ids: &[&str], pods: &mut Pods<'_>) -> Outputs {
    let plan = plan(ids, pods.env);
    let mut variants: Vec<Variant> = plan.keys().copied().collect();
    if ids.contains(&"BRK-04-O") {
        // Its probes come last (they may power the node off), on pods started now.
        for v in [Variant::Unpriv, Variant::Userns, Variant::Gvisor] {
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
    }
    pods.prestart(&variants).await;
    let runs = plan.into_iter().map(|(v, probes)| {
        let pod = pods
            .pods
            .get(&v)
            .cloned()
            .unwrap_or_else(|| Err(format!("{v} was not started")));
        let mut cri = pods.cri.clone();
        async move {
            let pod = match pod {
                Ok(p) => p,
                Err(e) => return (v, Err(e)),
            };
            let timeout = PROBE_TIMEOUT * (probes.len() as u32 + 1);
            let script = batch_script(&probes, PROBE_TIMEOUT);
            let res = cri
                .exec(
                    &pod.container_id,
                    &["/bin/busybox", "sh", "-c", &script],
                    timeout,
                )
                .await
                .map_err(|e| e.to_string())
                .and_then(|out| split_batch(&out));
            (v, res)
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

async fn run_checks(ids: &[&'static str], pods: &mut Pods<'_>, results: &mut Vec<CheckResult>) {
    let node = pods.env.node.clone();
    let t = Instant::now();
    // CONF-03's job pods run beside the variants' pods.
    let conf03_job = {
        let (cri, env, run_id) = (pods.cri.clone(), pods.env.clone(), pods.run_id.clone());
        let wanted = ids.contains(&"CONF-03");
        async move {
            if wanted {
                Some(conf03(cri, &env, &run_id).await)
            } else {
                None
            }
        }
    };
    let counters_before = net_counters(&pods.env.root);
    let (outputs, conf03_result) = tokio::join!(run_batches(ids, pods), conf03_job);
    let batch_ms = t.elapsed().as_millis() as u64;
    let node_refusals = refusals(&counters_before, &net_counters(&pods.env.root));
    let mut push = |id: &str, (verdict, evidence): (Verdict, Vec<String>), ms: u64| {
        let mut r = CheckResult::new(id, &node, verdict, evidence);
        r.duration_ms = ms;
        results.push(r);
    };
    // Outcomes of the sandboxed variants, for RT-10.
    let mut sandboxed: Vec<(String, Variant, Result<Outcome, String>)> = Vec::new();
    for attack in ATTACKS {
        let wanted = ids.contains(&attack.id);
        let mut outcomes = Vec::new();
        for &v in attack.variants {
            if !wanted && !SANDBOXED.contains(&v) {
                continue;
            }
            // A probe killed at its timeout did not show the attack blocked:
            // unless it got through first, that variant did not run.
            let o =
                output(&outputs, v, attack.id).and_then(|out| match evaluate(attack.id, &out) {
                    Outcome::Blocked(d) if timed_out(&out) => Err(format!("probe timed out: {d}")),
                    o => Ok(o),
                });
            if SANDBOXED.contains(&v) && attack.id != "BRK-10" {
                sandboxed.push((attack.id.to_string(), v, o.clone()));
            }
            outcomes.push((v, o));
        }
        if wanted {
            let (verdict, mut evidence) = attack_verdict(attack.priv_unprotectable, &outcomes);
            if attack.id == "BRK-10" && !pods.env.host_network {
                evidence.push(node_refusals.clone());
            }
            push(attack.id, (verdict, evidence), batch_ms);
        }
    }
    for &id in ids {
        if id.starts_with("BRK-") {
            continue;
        }
        let t = Instant::now();
        let from_batch =
            |v: Variant, key: &str, f: &dyn Fn(&ExecOutput) -> (Verdict, Vec<String>)| match output(
                &outputs, v, key,
            ) {
                Ok(o) => f(&o),
                Err(e) => (Verdict::Fail, vec![e]),
            };
        let result = match id {
            "RT-01" => from_batch(Variant::Unpriv, STATUS_KEY, &|o| rt01(&o.stdout)),
            "RT-02" => from_batch(Variant::Unpriv, STATUS_KEY, &|o| rt02(&o.stdout)),
            "RT-03" => from_batch(Variant::Unpriv, id, &rt03),
            "RT-04" => from_batch(Variant::Restricted, STATUS_KEY, &|o| rt04(&o.stdout)),
            "RT-06" => rt06(pods).await,
            "RT-07" => rt07(&pods.env.root),
            "RT-08" => match pods.unavailable(Variant::Userns) {
                Some(why) => (Verdict::skip(why), vec![]),
                None => from_batch(Variant::Userns, id, &|o| rt08(&o.stdout)),
            },
            "RT-09" => match pods.unavailable(Variant::Gvisor) {
                Some(why) => (Verdict::skip(why), vec![]),
                None => {
                    let host =
                        std::fs::read_to_string(pods.env.root.join("proc/sys/kernel/osrelease"))
                            .unwrap_or_default();
                    from_batch(Variant::Gvisor, id, &|o| {
                        let (d, u) = o.stdout.split_once("---").unwrap_or((&o.stdout, ""));
                        rt09(d, u, &host)
                    })
                }
            },
            "RT-10" => rt10(&sandboxed),
            "NET-01" if pods.env.egress => (
                Verdict::skip(
                    "egress is on in the cluster file: the outside is meant to be reachable (the host's own services are not: NET-02)",
                ),
                vec![],
            ),
            "NET-02" if pods.env.host_network => (
                Verdict::skip("pods share the host network here (no CNI)"),
                vec![],
            ),
            "NET-02" => match pods.env.host_port {
                None => (
                    Verdict::skip(
                        "the request names no host port: `ironclad matrix` listens on one for the run and passes it",
                    ),
                    vec![],
                ),
                Some(port) => {
                    let node = net02_from_node(port).await;
                    let pod = output(&outputs, Variant::Unpriv, id);
                    let (v, mut ev) = net02(pod.as_ref().map_err(String::as_str), &node);
                    ev.push(node_refusals.clone());
                    (v, ev)
                }
            },
            "NET-01" if pods.env.host_network => (
                Verdict::skip("pods share the host network here (no CNI)"),
                vec![],
            ),
            "NET-01" => from_batch(Variant::Unpriv, id, &net01),
            "CONF-03" => match &conf03_result {
                Some(r) => r.clone(),
                None => continue,
            },
            "CONF-04" => conf04(&pods.env.peers).await,
            _ => continue,
        };
        let ms = match id {
            "RT-06" | "RT-07" | "CONF-04" | "NET-02" => t.elapsed().as_millis() as u64,
            _ => batch_ms,
        };
        push(id, result, ms);
    }
    // Last, because it ends with the node powering off.
    if ids.contains(&"BRK-04-O") {
        let t = Instant::now();
        let r = sysrq_power_off(pods).await;
        push("BRK-04-O", r, t.elapsed().as_millis() as u64);
    }
}

fn rt10(sandboxed: &[(String, Variant, Result<Outcome, String>)]) -> (Verdict, Vec<String>) {
    let mut ev = Vec::new();
    let mut ran = 0;
    let mut escaped = false;
    let mut why_not = Vec::new();
    for (id, v, o) in sandboxed {
        match o {
            Ok(o) => {
                ran += 1;
                escaped |= o.escaped();
                let word = if o.escaped() { "ESCAPED" } else { "blocked" };
                ev.push(format!("{id} {v}: {word}"));
            }
            Err(e) => {
                if !why_not.contains(&format!("{v}: {e}")) {
                    why_not.push(format!("{v}: {e}"));
                }
            }
        }
    }
    ev.extend(why_not.iter().map(|w| format!("not run: {w}")));
    if escaped {
        (Verdict::Fail, ev)
    } else if ran == 0 {
        (
            Verdict::skip(format!(
                "neither userns nor gvisor could run ({})",
                why_not.join("; ")
            )),
            ev,
        )
    } else {
        (Verdict::Pass, ev)
    }
}

/// CONF-03: one job pod per runtime handler runs `busybox true` to
/// completion; the runtimes' pods run at once.
async fn conf03(cri: Cri, env: &NodeEnv, run_id: &str) -> (Verdict, Vec<String>) {
    let jobs = env.runtimes.iter().map(|rt| {
        let mut cri = cri.clone();
        let opts = PodOptions {
            host_network: env.host_network,
            runtime_handler: Some(rt.clone()),
            image: env.toolbox_image.clone(),
            cgroup_parent: String::new(),
        };
        let name = format!("matrix-conf03-{rt}-{run_id}");
        async move {
            let t = Instant::now();
            let r = cri
                .run_to_completion(
                    Variant::Unpriv,
                    &name,
                    &opts,
                    &["/bin/busybox", "true"],
                    Duration::from_secs(120),
                )
                .await;
            match r {
                Ok(c) if c.exit_code == 0 => (
                    true,
                    format!("{rt}: exit 0 in {} ms", t.elapsed().as_millis()),
                ),
                Ok(c) => (false, format!("{rt}: exit {} ({})", c.exit_code, c.reason)),
                Err(e) => (false, format!("{rt}: {e}")),
            }
        }
    });
    let done = futures::future::join_all(jobs).await;
    let ok = done.iter().all(|(ok, _)| *ok);
    (
        Verdict::pass_if(ok),
        done.into_iter().map(|(_, ev)| ev).collect(),
    )
}

/// How long after answering the node's privileged pod writes sysrq `o`.
pub const POWER_OFF_DELAY: Duration = Duration::from_secs(10);
/// The destructive sysrq probe.
pub const SYSRQ_O_SCRIPT: &str = "test -e /proc/sysrq-trigger || { echo 'absent: /proc/sysrq-trigger'; exit 0; }; (echo o > /proc/sysrq-trigger) 2>&1 && echo WROTE-SYSRQ; exit 0";

/// BRK-04-O: the sandboxable variants try sysrq `o` (if one gets through, the
/// node powers off now and the host sees the node's report missing: FAIL);
/// then a privileged pod is scheduled to do it [`POWER_OFF_DELAY`] after this
/// answer, and the host watches the node go down.
async fn sysrq_power_off(pods: &mut Pods<'_>) -> (Verdict, Vec<String>) {
    // Never power off a machine that is not an ironclad node (a developer's
    // host running the executor in a test).
    let marker = pods.env.root.join(NODE_MARKER.trim_start_matches('/'));
    if !marker.is_file() {
        return (
            Verdict::skip(format!(
                "not an ironclad node ({} missing): refusing to power this machine off",
                marker.display()
            )),
            vec![],
        );
    }
    let mut outcomes = Vec::new();
    for v in [Variant::Unpriv, Variant::Userns, Variant::Gvisor] {
        let o = pods
            .exec(v, SYSRQ_O_SCRIPT)
            .await
            .map(|out| evaluate("BRK-04", &out));
        outcomes.push((v, o));
    }
    let (verdict, mut ev) = attack_verdict(true, &outcomes);
    let env = pods.env.clone();
    let run_id = pods.run_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(POWER_OFF_DELAY).await;
        if let Ok(mut cri) = Cri::connect(&env.socket).await
            && let Ok(pod) =
                start_variant(&mut cri, &env, &format!("{run_id}-o"), Variant::Priv).await
        {
            let _ = exec_script(&mut cri, &pod, SYSRQ_O_SCRIPT).await;
            // Still here: the kernel ignored it; do not leave the pod behind.
            let _ = cri.remove_sandbox(&pod.sandbox_id).await;
        }
    });
    ev.push(format!(
        "priv: scheduled `echo o > /proc/sysrq-trigger` from a privileged pod {}s after this answer ({UNPROTECTABLE}); the host watches the node's fate",
        POWER_OFF_DELAY.as_secs()
    ));
    (verdict, ev)
}

/// The parent cgroup of the RT-06 pod (cgroupfs driver), with a pids limit as
/// a kubelet's podPidsLimit would set on a pod cgroup.
pub const RT06_CGROUP: &str = "ironclad-matrix-rt06";
/// The pids limit of that cgroup.
pub const RT06_PIDS_MAX: u32 = 64;
/// The fork bomb, bounded: 400 background sleeps against a limit of 64. The
/// sleeps get /dev/null as stdio so that ExecSync's output pipes close.
pub const RT06_SCRIPT: &str = "n=0; while [ $n -lt 400 ]; do busybox sleep 120 </dev/null >/dev/null 2>&1 & n=$((n+1)); done 2>&1 | busybox sort | busybox uniq -c | busybox head -n 3; echo done";

/// The pids cgroup directory of RT-06 under `root` (cgroup v2 unified, or
/// the v1 pids hierarchy).
pub fn rt06_cgroup_dir(root: &Path) -> PathBuf {
    let cg = root.join("sys/fs/cgroup");
    if cg.join("cgroup.controllers").exists() {
        cg.join(RT06_CGROUP)
    } else {
        cg.join("pids").join(RT06_CGROUP)
    }
}

/// RT-06 from the fork bomb's output: forks hit EAGAIN at the limit.
pub fn rt06_eval(out: &ExecOutput) -> (Verdict, Vec<String>) {
    let text = out.combined();
    let limited = text.contains("Resource temporarily unavailable") || text.contains("can't fork");
    (
        Verdict::pass_if(limited),
        vec![format!("fork bomb: {}", summarize(&text))],
    )
}

async fn rt06(pods: &mut Pods<'_>) -> (Verdict, Vec<String>) {
    let dir = rt06_cgroup_dir(&pods.env.root);
    let cg = pods.env.root.join("sys/fs/cgroup");
    if cg.join("cgroup.controllers").exists() {
        // The root must delegate the pids controller (best effort: usually on).
        let _ = std::fs::write(cg.join("cgroup.subtree_control"), "+pids");
    }
    let setup = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("pids.max"), RT06_PIDS_MAX.to_string()));
    if let Err(e) = setup {
        return (
            Verdict::Fail,
            vec![format!("cannot set a pids limit in {}: {e}", dir.display())],
        );
    }
    let opts = PodOptions {
        host_network: pods.env.host_network,
        runtime_handler: None,
        image: pods.env.toolbox_image.clone(),
        cgroup_parent: format!("/{RT06_CGROUP}"),
    };
    let name = format!("matrix-rt06-{}", pods.run_id);
    let mut ev = vec![format!(
        "pod cgroup parent /{RT06_CGROUP}, pids.max {RT06_PIDS_MAX}"
    )];
    let res = match pods.cri.run_pod(Variant::Unpriv, &name, &opts).await {
        Ok(pod) => {
            let out = exec_script(&mut pods.cri, &pod, RT06_SCRIPT).await;
            if let Err(e) = pods.cri.remove_sandbox(&pod.sandbox_id).await {
                ev.push(format!("cleanup: {e}"));
            }
            out
        }
        Err(e) => Err(format!("pod did not start: {e}")),
    };
    // The containers' cgroups are gone with the pod; the parent can go too.
    let _ = std::fs::remove_dir(&dir);
    match res {
        Ok(o) => {
            let (v, e) = rt06_eval(&o);
            ev.extend(e);
            ev.push(
                "machined (this answer) kept running; the host checks the node API after the run"
                    .into(),
            );
            (v, ev)
        }
        Err(e) => {
            ev.push(e);
            (Verdict::Fail, ev)
        }
    }
}

/// CONF-04: a TCP connection to every peer's node API on the cluster network.
pub async fn conf04(peers: &[(String, SocketAddr)]) -> (Verdict, Vec<String>) {
    if peers.is_empty() {
        return (
            Verdict::skip("single-node cluster: no peer to reach"),
            vec![],
        );
    }
    let mut ev = Vec::new();
    let mut ok = true;
    for (name, addr) in peers {
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => ev.push(format!(
                "{name} {addr}: connected in {} ms",
                t.elapsed().as_millis()
            )),
            Ok(Err(e)) => {
                ok = false;
                ev.push(format!("{name} {addr}: {e}"));
            }
            Err(_) => {
                ok = false;
                ev.push(format!("{name} {addr}: no answer within 5s"));
            }
        }
    }
    (Verdict::pass_if(ok), ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stderr: &str) -> ExecOutput {
        ExecOutput {
            exit_code: code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn brk01_no_shell_is_blocked() {
        let o = out(
            1,
            "nsenter: can't execute '/bin/bash': No such file or directory\nnsenter: can't execute '/bin/sh': No such file or directory\n",
            "",
        );
        assert!(matches!(evaluate("BRK-01", &o), Outcome::Blocked(_)));
        let o = out(0, "SHELL-RAN\nuid=0(root) gid=0(root)\n", "");
        assert!(evaluate("BRK-01", &o).escaped());
    }

    #[test]
    fn brk_probes_classify() {
        let ro = out(
            0,
            "sh: can't create /proc/sysrq-trigger: Read-only file system\n",
            "",
        );
        assert!(!evaluate("BRK-04", &ro).escaped());
        assert!(evaluate("BRK-04", &out(0, "WROTE-SYSRQ\n", "")).escaped());
        assert!(
            !evaluate(
                "BRK-06",
                &out(
                    0,
                    "insmod: can't insert '/bin/busybox': Operation not permitted\nrc=1\n",
                    ""
                )
            )
            .escaped()
        );
        assert!(
            evaluate(
                "BRK-06",
                &out(
                    0,
                    "insmod: can't insert '/bin/busybox': Exec format error\nrc=1\n",
                    ""
                )
            )
            .escaped()
        );
        assert!(
            evaluate(
                "BRK-07",
                &out(0, "OPENED-RW:/proc/sys/kernel/core_pattern\n", "")
            )
            .escaped()
        );
        let unreachable = "tcp 10.88.0.1:50000: nc: can't connect to remote host (10.88.0.1): No route to host  rc=1\ntcp 10.5.0.2:2379: nc: can't connect to remote host (10.5.0.2): Connection refused  rc=1\n";
        let blocked = evaluate("BRK-10", &out(0, unreachable, ""));
        assert_eq!(
            blocked,
            Outcome::Blocked("10.88.0.1:50000 no route to host, 10.5.0.2:2379 refused".into())
        );
        // A connection that opened, even one TLS would refuse, got through.
        let open = "tcp 10.88.0.1:50000: nc: can't connect to remote host (10.88.0.1): No route to host  rc=1\ntcp 10.5.0.2:50000: CONNECTED  rc=0\n";
        assert_eq!(
            evaluate("BRK-10", &out(0, open, "")),
            Outcome::Escaped("10.88.0.1:50000 no route to host, 10.5.0.2:50000 CONNECTED".into())
        );
        assert!(
            evaluate(
                "BRK-10",
                &out(0, "SOCKET-VISIBLE:/run/containerd/containerd.sock\n", "")
            )
            .escaped()
        );
        assert!(evaluate("BRK-99", &out(0, "", "")).escaped());
    }

    #[test]
    fn unprotectable_priv_rests_on_sandboxed_variants() {
        let esc = || Ok(Outcome::Escaped("WROTE-SYSRQ".into()));
        let blk = || Ok(Outcome::Blocked("EROFS".into()));
        let (v, ev) = attack_verdict(
            true,
            &[
                (Variant::Priv, esc()),
                (Variant::Userns, blk()),
                (Variant::Gvisor, blk()),
            ],
        );
        assert_eq!(v, Verdict::Pass);
        assert!(ev[0].contains("unprotectable at node level"));
        let (v, _) = attack_verdict(true, &[(Variant::Priv, esc()), (Variant::Userns, esc())]);
        assert_eq!(v, Verdict::Fail);
        // A protectable attack fails when priv gets through.
        let (v, _) = attack_verdict(false, &[(Variant::Priv, esc())]);
        assert_eq!(v, Verdict::Fail);
        // Nothing protectable ran: an explicit skip with the reasons.
        // priv blocked too (e.g. a kernel without modules): a pass.
        let (v, _) = attack_verdict(
            true,
            &[
                (Variant::Priv, blk()),
                (Variant::Unpriv, blk()),
                (Variant::Gvisor, Err("x".into())),
            ],
        );
        assert_eq!(v, Verdict::Pass);
        // unpriv blocked is not enough when priv got through: the sandboxed
        // variants must have run.
        let (v, _) = attack_verdict(
            true,
            &[
                (Variant::Priv, esc()),
                (Variant::Unpriv, blk()),
                (Variant::Gvisor, Err("runsc missing".into())),
            ],
        );
        match v {
            Verdict::Skip { reason } => assert!(reason.contains("runsc missing")),
            other => panic!("{other:?}"),
        }
    }

    const STATUS: &str =
        "Name:\tcat\nUid:\t0\t0\t0\t0\nNoNewPrivs:\t0\nSeccomp:\t2\nCapEff:\t00000000a80425fb\n";

    #[test]
    fn status_based_checks() {
        // containerd's default set: NET_RAW and MKNOD present.
        assert_eq!(rt01(STATUS).0, Verdict::Fail);
        let hardened = STATUS.replace("a80425fb", "a00405fb");
        assert_eq!(cap_eff(&hardened), Some(0xa00405fb));
        assert_eq!(rt01(&hardened).0, Verdict::Pass);
        assert_eq!(rt01("garbage").0, Verdict::Fail);
        assert_eq!(rt02(STATUS).0, Verdict::Pass);
        assert_eq!(
            rt02(&STATUS.replace("Seccomp:\t2", "Seccomp:\t0")).0,
            Verdict::Fail
        );
        assert_eq!(rt04(STATUS).0, Verdict::Fail);
        let r = "Uid:\t65534\t65534\t65534\t65534\nNoNewPrivs:\t1\nCapEff:\t0000000000000000\n";
        assert_eq!(rt04(r).0, Verdict::Pass);
    }

    #[test]
    fn uid_map_and_gvisor() {
        assert_eq!(rt08("         0    1048576      65536\n").0, Verdict::Pass);
        assert_eq!(rt08("         0          0 4294967295\n").0, Verdict::Fail);
        assert_eq!(rt08("").0, Verdict::Fail);
        assert_eq!(
            rt09(
                "[    0.000000] Starting gVisor...\n",
                "4.4.0\n",
                "6.12.48-amd64\n"
            )
            .0,
            Verdict::Pass
        );
        assert_eq!(
            rt09(
                "[    0.000000] Linux version",
                "6.12.48-amd64",
                "6.12.48-amd64"
            )
            .0,
            Verdict::Fail
        );
    }

    #[test]
    fn rt03_and_net01() {
        let good = out(
            0,
            "kcore=character special file 1:3\nfirmware_entries=0\n",
            "sh: can't create /proc/sysrq-trigger: Read-only file system\nsh: can't create /proc/sys/kernel/hostname: Read-only file system\nsh: can't create /proc/irq/default_smp_affinity: Read-only file system\n",
        );
        assert_eq!(rt03(&good).0, Verdict::Pass);
        let no_sysrq = out(
            0,
            "kcore=stat: can't stat '/proc/kcore': No such file or directory\nfirmware_entries=0\nabsent:/proc/sysrq-trigger\n",
            "sh: can't create /proc/sys/kernel/hostname: Read-only file system\nsh: can't create /proc/irq/default_smp_affinity: Read-only file system\n",
        );
        assert_eq!(rt03(&no_sysrq).0, Verdict::Pass);
        let bad = out(
            0,
            "kcore=regular empty file 0:0\nfirmware_entries=3\nOPENED-RW:/proc/sysrq-trigger\n",
            "",
        );
        assert_eq!(rt03(&bad).0, Verdict::Fail);
        assert_eq!(net01(&out(0, "nc: timeout\nrc=1\n", "")).0, Verdict::Pass);
        assert_eq!(
            net01(&out(
                0,
                "nc: can't connect to remote host (10.0.2.2): Connection refused\nrc=1\n",
                ""
            ))
            .0,
            Verdict::Fail
        );
    }

    #[test]
    fn sysctls() {
        let mut d = BTreeMap::new();
        d.insert("kernel.kptr_restrict".to_string(), "2".to_string());
        d.insert(
            "net.ipv4.ip_local_port_range".to_string(),
            "32768 60999".to_string(),
        );
        let ok = compare_sysctls(&d, |k| {
            Ok(if k == "kernel.kptr_restrict" {
                "2\n".into()
            } else {
                "32768\t60999\n".into()
            })
        });
        assert_eq!(ok.0, Verdict::Pass);
        let bad = compare_sysctls(&d, |k| {
            if k == "kernel.kptr_restrict" {
                Ok("0\n".into())
            } else {
                Err("ENOENT".into())
            }
        });
        assert_eq!(bad.0, Verdict::Fail);
        assert!(bad.1.iter().any(|l| l.contains("declared 2, node has 0")));
        assert_eq!(
            compare_sysctls(&BTreeMap::new(), |_| Ok(String::new())).0,
            Verdict::Fail
        );
        assert_eq!(
            sysctl_path(Path::new("/"), "kernel.yama.ptrace_scope").unwrap(),
            Path::new("/proc/sys/kernel/yama/ptrace_scope")
        );
        assert!(sysctl_path(Path::new("/"), "a..b").is_none());
        assert!(sysctl_path(Path::new("/"), "a/b").is_none());
    }

    #[test]
    fn rt07_reads_the_image_file_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib/ironclad")).unwrap();
        std::fs::create_dir_all(root.join("proc/sys/kernel/yama")).unwrap();
        std::fs::write(
            root.join("usr/lib/ironclad/sysctl.json"),
            r#"{"kernel.yama.ptrace_scope":"1"}"#,
        )
        .unwrap();
        std::fs::write(root.join("proc/sys/kernel/yama/ptrace_scope"), "1\n").unwrap();
        assert_eq!(rt07(root).0, Verdict::Pass);
        std::fs::write(root.join("proc/sys/kernel/yama/ptrace_scope"), "0\n").unwrap();
        assert_eq!(rt07(root).0, Verdict::Fail);
        std::fs::write(root.join("usr/lib/ironclad/sysctl.json"), "not json").unwrap();
        assert_eq!(rt07(root).0, Verdict::Fail);
    }

    #[tokio::test]
    async fn conf04_connects_to_peers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closed = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            t.local_addr().unwrap()
        };
        assert_eq!(conf04(&[("a".into(), addr)]).await.0, Verdict::Pass);
        assert_eq!(
            conf04(&[("a".into(), addr), ("b".into(), closed)]).await.0,
            Verdict::Fail
        );
        assert!(matches!(conf04(&[]).await.0, Verdict::Skip { .. }));
    }

    #[test]
    fn rt10_aggregates() {
        let s = vec![
            (
                "BRK-04".to_string(),
                Variant::Userns,
                Ok(Outcome::Blocked("x".into())),
            ),
            (
                "BRK-04".to_string(),
                Variant::Gvisor,
                Err("runsc missing".into()),
            ),
        ];
        assert_eq!(rt10(&s).0, Verdict::Pass);
        let s2 = vec![(
            "BRK-05".to_string(),
            Variant::Gvisor,
            Ok(Outcome::Escaped("y".into())),
        )];
        assert_eq!(rt10(&s2).0, Verdict::Fail);
        assert!(matches!(rt10(&[]).0, Verdict::Skip { .. }));
    }

    #[test]
    fn rt06_needs_eagain() {
        let hit = out(
            0,
            "    336 sh: can't fork: Resource temporarily unavailable\ndone\n",
            "",
        );
        assert_eq!(rt06_eval(&hit).0, Verdict::Pass);
        assert_eq!(rt06_eval(&out(0, "done\n", "")).0, Verdict::Fail);
        let dir = tempfile::tempdir().unwrap();
        assert!(rt06_cgroup_dir(dir.path()).ends_with("sys/fs/cgroup/pids/ironclad-matrix-rt06"));
        std::fs::create_dir_all(dir.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(
            dir.path().join("sys/fs/cgroup/cgroup.controllers"),
            "pids\n",
        )
        .unwrap();
        assert!(rt06_cgroup_dir(dir.path()).ends_with("sys/fs/cgroup/ironclad-matrix-rt06"));
    }

    /// The host's busybox (package busybox-static in CI), if any.
    fn busybox() -> Option<&'static str> {
        ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
    }

    /// Every probe script parses as busybox sh (syntax only: `sh -n`).
    #[test]
    fn probe_scripts_parse() {
        let Some(bb) = busybox() else {
            eprintln!("no busybox here: syntax check skipped");
            return;
        };
        let mut scripts: Vec<String> = ATTACKS
            .iter()
            .flat_map(|a| [script(a.id, false), script(a.id, true)])
            .collect();
        scripts.extend([RT03_SCRIPT, RT06_SCRIPT, SYSRQ_O_SCRIPT].map(String::from));
        scripts.push(net01_script());
        scripts.push(net02_script(40001));
        scripts.push(brk10_script(
            &[gateway_word()],
            &[Ipv4Addr::new(10, 5, 0, 2)],
        ));
        for sc in scripts {
            let out = std::process::Command::new(bb)
                .args(["sh", "-n", "-c", &sc])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{sc}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(script("BRK-10", false).contains("awk '/^default/{print $3; exit}'"));
        let brk10 = brk10_script(&[gateway_word()], &[Ipv4Addr::new(10, 5, 0, 2)]);
        assert!(
            brk10.contains("10.5.0.2; do for p in 50000 2379 2380;"),
            "{brk10}"
        );
    }

    fn env() -> NodeEnv {
        NodeEnv {
            node: "n".into(),
            socket: PathBuf::from("/nonexistent.sock"),
            root: PathBuf::from("/"),
            toolbox_image: "ironclad.local/toolbox:1".into(),
            host_network: false,
            runtimes: vec!["runc".into()],
            user_namespaces: true,
            egress: false,
            peers: vec![],
            addresses: vec![],
            host_port: None,
            containerd_wait: Duration::ZERO,
        }
    }

    fn planned(ids: &[&str]) -> Vec<Variant> {
        plan(ids, &env()).keys().copied().collect()
    }

    #[test]
    fn variants_needed_by_checks() {
        assert_eq!(planned(&["RT-02"]), [Variant::Unpriv]);
        assert_eq!(
            planned(&["BRK-01", "RT-04"]),
            [Variant::Priv, Variant::Restricted]
        );
        assert_eq!(planned(&["RT-10"]), [Variant::Userns, Variant::Gvisor]);
        assert!(planned(&["RT-07", "CONF-04"]).is_empty());
        // RT-01 and RT-02 share one read of /proc/self/status.
        let p = plan(&["RT-01", "RT-02", "NET-01"], &env());
        let keys: Vec<&str> = p[&Variant::Unpriv]
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, [STATUS_KEY, "NET-01"]);
        // With egress on, NET-01 has nothing to probe.
        let mut e = env();
        e.egress = true;
        assert!(plan(&["NET-01"], &e).is_empty());
        // NET-02 probes only with the host's port, egress on or off.
        assert!(plan(&["NET-02"], &e).is_empty());
        e.host_port = Some(40001);
        let p = plan(&["NET-02"], &e);
        assert!(
            p[&Variant::Unpriv][0]
                .1
                .contains("10.0.2.2; do for p in 40001;")
        );
    }

    /// A batch runs every probe in its own shell (one that exits early or
    /// quotes does not disturb the next), and splits back by key with each
    /// probe's exit status; a probe is killed at its timeout, and a child it
    /// left running does not hold up the batch.
    #[test]
    fn batches_run_and_split() {
        let Some(bb) = busybox() else {
            eprintln!("no busybox here: batch run skipped");
            return;
        };
        let probes = [
            ("a", "echo 'it''s'; echo err >&2; exit 3"),
            ("b", "busybox printf 'no newline'"),
            ("c", &script("BRK-04", false)),
            ("bg", "busybox sleep 8 & echo left-a-child"),
            ("slow", "echo partial; busybox sleep 8; echo never"),
            ("after", "echo still-ran"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let t = Instant::now();
        let out = std::process::Command::new(bb)
            .args(["sh", "-c", &batch_script(&probes, Duration::from_secs(1))])
            .output()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "the batch waited for a probe's child: {:?}",
            t.elapsed()
        );
        assert!(out.status.success());
        let split = split_batch(&out_of(&String::from_utf8_lossy(&out.stdout))).unwrap();
        assert_eq!(split.len(), probes.len(), "{split:?}");
        assert_eq!(split["a"].exit_code, 3);
        assert_eq!(split["a"].combined(), "its\nerr");
        assert_eq!(split["b"].combined(), "no newline");
        assert_eq!(split["b"].exit_code, 0);
        assert!(!timed_out(&split["bg"]));
        assert_eq!(split["bg"].combined(), "left-a-child");
        assert!(timed_out(&split["slow"]), "{:?}", split["slow"]);
        assert!(split["slow"].combined().starts_with("partial"));
        assert!(!split["slow"].combined().contains("never"));
        assert_eq!(split["after"].combined(), "still-ran");
        // A batch that printed no probe at all is an error.
        assert!(
            split_batch(&out_of("no temp dir for the probes"))
                .unwrap_err()
                .contains("did not run")
        );
        // A batch cut short: the probes after the cut are missing.
        let cut = split_batch(&out_of(&format!(
            "{BATCH_BEGIN} a\nx\n{BATCH_END} 0\n{BATCH_BEGIN} b\ny\n"
        )))
        .unwrap();
        assert_eq!(cut.len(), 1);
        let mut outputs: Outputs = HashMap::new();
        outputs.insert(Variant::Unpriv, Ok(cut));
        assert!(
            output(&outputs, Variant::Unpriv, "b")
                .unwrap_err()
                .contains("ended before")
        );
        assert!(
            output(&outputs, Variant::Priv, "a")
                .unwrap_err()
                .contains("not run")
        );
    }

    fn out_of(stdout: &str) -> ExecOutput {
        ExecOutput {
            exit_code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn net02_passes_only_when_neither_pod_nor_node_connected() {
        let pod = out(
            0,
            "tcp 10.0.2.2:40001: nc: can't connect to remote host (10.0.2.2): No route to host  rc=1\n",
            "",
        );
        let denied: Result<(), String> = Err("Permission denied (os error 13)".into());
        let (v, ev) = net02(Ok(&pod), &denied);
        assert_eq!(v, Verdict::Pass, "{ev:?}");
        assert_eq!(
            ev,
            [
                "pod: tcp 10.0.2.2:40001: no route to host",
                "node: tcp 10.0.2.2: Permission denied (os error 13)"
            ]
        );
        assert_eq!(net02(Ok(&pod), &Ok(())).0, Verdict::Fail);
        let open = out(0, "tcp 10.0.2.2:40001: CONNECTED  rc=0\n", "");
        assert_eq!(net02(Ok(&open), &denied).0, Verdict::Fail);
        // A probe that printed nothing proves nothing.
        assert_eq!(net02(Ok(&out(1, "", "")), &denied).0, Verdict::Fail);
        // Without a pod, the node's own attempt decides.
        assert_eq!(net02(Err("no pod"), &denied).0, Verdict::Pass);
    }

    /// The connection probe against real listeners on this host's loopback:
    /// an open port says CONNECTED, a closed one is refused.
    #[test]
    fn connect_probe_tells_open_from_refused() {
        let Some(bb) = busybox() else {
            eprintln!("no busybox here: connect probe skipped");
            return;
        };
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (p_open, p_closed) = (
            open.local_addr().unwrap().port(),
            closed.local_addr().unwrap().port(),
        );
        drop(closed);
        let sc = connect_script("", &["127.0.0.1".into()], &[p_open, p_closed]);
        let o = std::process::Command::new(bb)
            .args(["sh", "-c", &sc])
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let got = tcp_outcomes(&text);
        assert_eq!(
            got,
            [
                (format!("127.0.0.1:{p_open}"), "CONNECTED", true),
                (format!("127.0.0.1:{p_closed}"), "refused", false),
            ],
            "{text}"
        );
        // And the ICMP counters of its network namespace.
        assert!(
            pod_icmp(&text).is_some_and(|n| n.contains("Icmp:InDestUnreachs=")),
            "{text}"
        );
    }

    #[test]
    fn node_counters_tell_what_the_kernel_did() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("proc/net");
        std::fs::create_dir_all(&net).unwrap();
        let write = |icmp_out: u64, no_route: u64| {
            std::fs::write(
                net.join("snmp"),
                format!("Ip: Forwarding InAddrErrors\nIp: 1 0\nIcmp: InMsgs OutRateLimitGlobal OutRateLimitHost OutDestUnreachs\nIcmp: 3 0 1 {icmp_out}\n"),
            )
            .unwrap();
            std::fs::write(
                net.join("netstat"),
                format!("IpExt: InNoRoutes InOctets\nIpExt: {no_route} 99\n"),
            )
            .unwrap();
        };
        write(4, 0);
        let before = net_counters(dir.path());
        assert_eq!(before["Icmp:OutDestUnreachs"], 4);
        assert_eq!(before["IpExt:InOctets"], 99);
        write(13, 2);
        assert_eq!(
            refusals(&before, &net_counters(dir.path())),
            "node: answered 9 attempts with ICMP destination unreachable during the probes (0 more held back by the ICMP rate limits)"
        );
    }

    #[tokio::test]
    async fn run_refuses_bad_requests_and_reports_a_missing_containerd() {
        let dir = tempfile::tempdir().unwrap();
        let env = NodeEnv {
            node: "n".into(),
            socket: dir.path().join("absent.sock"),
            root: dir.path().into(),
            toolbox_image: "ironclad.local/toolbox:1".into(),
            host_network: true,
            runtimes: vec!["runc".into()],
            user_namespaces: false,
            egress: false,
            peers: vec![],
            addresses: vec![],
            host_port: None,
            containerd_wait: Duration::ZERO,
        };
        let bad = MatrixRunRequest {
            checks: vec!["BRK-99".into()],
            destructive: false,
            ..Default::default()
        };
        assert_eq!(
            run(&bad, &env).await.unwrap_err().code,
            ErrorCode::BadRequest
        );
        let e = run(&MatrixRunRequest::default(), &env).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("absent.sock"), "{e}");
    }
}
