use super::batch::*;
use super::breakout::*;
use super::conformance::*;
use super::network::*;
use super::runtime::*;
use super::*;
use crate::cri::{ExecOutput, Variant};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
    assert!(matches!(evaluate(CheckId::Brk01, &o), Outcome::Blocked(_)));
    let o = out(0, "SHELL-RAN\nuid=0(root) gid=0(root)\n", "");
    assert!(evaluate(CheckId::Brk01, &o).escaped());
}

#[test]
fn brk_probes_classify() {
    let ro = out(
        0,
        "sh: can't create /proc/sysrq-trigger: Read-only file system\n",
        "",
    );
    assert!(!evaluate(CheckId::Brk04, &ro).escaped());
    assert!(evaluate(CheckId::Brk04, &out(0, "WROTE-SYSRQ\n", "")).escaped());
    assert!(
        !evaluate(
            CheckId::Brk06,
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
            CheckId::Brk06,
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
            CheckId::Brk07,
            &out(0, "OPENED-RW:/proc/sys/kernel/core_pattern\n", "")
        )
        .escaped()
    );
    let unreachable = "tcp 10.88.0.1:50000: nc: can't connect to remote host (10.88.0.1): No route to host  rc=1\ntcp 10.5.0.2:2379: nc: can't connect to remote host (10.5.0.2): Connection refused  rc=1\n";
    let blocked = evaluate(CheckId::Brk10, &out(0, unreachable, ""));
    assert_eq!(
        blocked,
        Outcome::Blocked("10.88.0.1:50000 no route to host, 10.5.0.2:2379 refused".into())
    );
    // A connection that opened, even one TLS would refuse, got through.
    let open = "tcp 10.88.0.1:50000: nc: can't connect to remote host (10.88.0.1): No route to host  rc=1\ntcp 10.5.0.2:50000: CONNECTED  rc=0\n";
    assert_eq!(
        evaluate(CheckId::Brk10, &out(0, open, "")),
        Outcome::Escaped("10.88.0.1:50000 no route to host, 10.5.0.2:50000 CONNECTED".into())
    );
    assert!(
        evaluate(
            CheckId::Brk10,
            &out(0, "SOCKET-VISIBLE:/run/containerd/containerd.sock\n", "")
        )
        .escaped()
    );
    assert!(evaluate(CheckId::Rt01, &out(0, "", "")).escaped());
}

/// An attack that got through is never a PASS: the privileged variant of an
/// attack the node cannot refuse makes it EXPOSED (with the mitigation),
/// any other variant getting through makes it FAIL.
#[test]
fn got_through_is_exposed_or_failed_never_pass() {
    let esc = || Ok(Outcome::Escaped("WROTE-SYSRQ".into()));
    let blk = || Ok(Outcome::Blocked("EROFS".into()));
    let m = Some("user namespaces");
    let (v, ev) = attack_verdict(
        m,
        &[
            (Variant::Priv, esc()),
            (Variant::Userns, blk()),
            (Variant::Gvisor, blk()),
        ],
    );
    match &v {
        Verdict::Exposed { reason, mitigation } => {
            assert!(reason.contains("WROTE-SYSRQ"), "{reason}");
            assert!(reason.contains("blocked in userns and gvisor"), "{reason}");
            assert_eq!(mitigation, "user namespaces");
        }
        other => panic!("{other:?}"),
    }
    assert!(ev[0].starts_with("priv: got through (unprotectable at node level"));
    // A sandboxed variant getting through is the node's failure.
    let (v, _) = attack_verdict(m, &[(Variant::Priv, esc()), (Variant::Userns, esc())]);
    assert_eq!(v, Verdict::Fail);
    // A protectable attack fails when priv gets through.
    let (v, _) = attack_verdict(None, &[(Variant::Priv, esc())]);
    assert_eq!(v, Verdict::Fail);
    // priv blocked too (e.g. a kernel refusing modules): a pass.
    let (v, _) = attack_verdict(
        m,
        &[
            (Variant::Priv, blk()),
            (Variant::Unpriv, blk()),
            (Variant::Gvisor, Err("x".into())),
        ],
    );
    assert_eq!(v, Verdict::Pass);
    // priv got through and no sandboxed variant ran: still EXPOSED (the
    // attack ran and succeeded), saying why the sandboxes did not run.
    let (v, _) = attack_verdict(
        m,
        &[
            (Variant::Priv, esc()),
            (Variant::Unpriv, blk()),
            (Variant::Gvisor, Err("runsc missing".into())),
        ],
    );
    match v {
        Verdict::Exposed { reason, .. } => {
            assert!(
                reason.contains("neither the userns nor the gvisor"),
                "{reason}"
            );
            assert!(reason.contains("runsc missing"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The privileged variant of an exposable attack did not run while the
    // others were blocked: the kernel's defences were not tried, so SKIP
    // saying so, not PASS.
    let (v, _) = attack_verdict(
        m,
        &[
            (Variant::Priv, Err("pod did not start".into())),
            (Variant::Unpriv, blk()),
            (Variant::Userns, blk()),
        ],
    );
    assert!(
        matches!(&v, Verdict::Skip { reason } if reason.contains("privileged variant could not run") && reason.contains("pod did not start")),
        "{v:?}"
    );
    // Nothing ran at all: an explicit skip with the reasons.
    let (v, _) = attack_verdict(m, &[(Variant::Userns, Err("no userns".into()))]);
    assert!(matches!(v, Verdict::Skip { reason } if reason.contains("no userns")));
    // Exhaustively over small outcome sets: whenever any variant's outcome
    // is Escaped, the verdict is not PASS.
    let choices = [esc(), blk(), Err("n/a".to_string())];
    for p in &choices {
        for u in &choices {
            for n in &choices {
                for mit in [m, None] {
                    let o = [
                        (Variant::Priv, p.clone()),
                        (Variant::Userns, u.clone()),
                        (Variant::Unpriv, n.clone()),
                    ];
                    let through = o.iter().any(|(_, x)| matches!(x, Ok(Outcome::Escaped(_))));
                    let (v, ev) = attack_verdict(mit, &o);
                    if through {
                        assert_ne!(v, Verdict::Pass, "{o:?} {ev:?}");
                    }
                }
            }
        }
    }
}

/// The attacks a plain privileged container gets through take their
/// mitigation from the catalog; BRK-01, BRK-03 and BRK-10 have none (the
/// node must block even a privileged container there).
#[test]
fn attack_table_takes_exposure_from_the_catalog() {
    for a in ATTACKS {
        let exposable = !matches!(a.id, CheckId::Brk01 | CheckId::Brk03 | CheckId::Brk10);
        assert_eq!(a.priv_mitigation().is_some(), exposable, "{}", a.id);
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
    // Module loading still on: machined's lock is missing.
    std::fs::write(root.join("proc/sys/kernel/modules_disabled"), "0\n").unwrap();
    let (v, ev) = rt07(root);
    assert_eq!(v, Verdict::Fail, "{ev:?}");
    assert!(
        ev.iter()
            .any(|e| e.contains("kernel.modules_disabled: machined sets 1, node has 0"))
    );
    std::fs::write(root.join("proc/sys/kernel/modules_disabled"), "1\n").unwrap();
    let (v, ev) = rt07(root);
    assert_eq!(v, Verdict::Pass, "{ev:?}");
    assert!(ev.contains(&"kernel.modules_disabled=1 (set by machined)".to_string()));
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
            CheckId::Brk04,
            Variant::Userns,
            Ok(Outcome::Blocked("x".into())),
        ),
        (CheckId::Brk04, Variant::Gvisor, Err("runsc missing".into())),
    ];
    assert_eq!(rt10(&s).0, Verdict::Pass);
    let s2 = vec![(
        CheckId::Brk05,
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
    assert!(script(CheckId::Brk10, false).contains("awk '/^default/{print $3; exit}'"));
    let brk10 = brk10_script(&[gateway_word()], &[Ipv4Addr::new(10, 5, 0, 2)]);
    assert!(
        brk10.contains("10.5.0.2; do for p in 50000 2379 2380 2381;"),
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
        run_budget: RUN_BUDGET,
    }
}

fn ids(ids: &[&str]) -> Vec<CheckId> {
    ids.iter().map(|i| i.parse().unwrap()).collect()
}

fn planned(list: &[&str]) -> Vec<Variant> {
    plan(&ids(list), &env()).keys().copied().collect()
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
    let p = plan(&ids(&["RT-01", "RT-02", "NET-01"]), &env());
    let keys: Vec<&str> = p[&Variant::Unpriv]
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, [STATUS_KEY, "NET-01"]);
    // With egress on, NET-01 has nothing to probe.
    let mut e = env();
    e.egress = true;
    assert!(plan(&ids(&["NET-01"]), &e).is_empty());
    // NET-02 probes only with the host's port, egress on or off.
    assert!(plan(&ids(&["NET-02"]), &e).is_empty());
    e.host_port = Some(40001);
    let p = plan(&ids(&["NET-02"]), &e);
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
        ("c", &script(CheckId::Brk04, false)),
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
        run_budget: RUN_BUDGET,
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

/// A containerd that accepts connections and never answers: the run answers
/// at its budget, every check it was asked for a FAIL naming the step it was
/// stuck in, instead of leaving the host to time out with nothing.
#[tokio::test]
async fn a_run_stuck_on_containerd_answers_at_its_budget_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let env = NodeEnv {
        socket,
        root: dir.path().into(),
        containerd_wait: Duration::from_secs(300),
        run_budget: Duration::from_secs(2),
        ..env()
    };
    let req = MatrixRunRequest {
        checks: vec!["RT-01".into(), "BRK-03".into(), "CONF-01".into()],
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let rep = run(&req, &env).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    // The node's checks only (CONF-01 is the host's), in catalog order.
    let got: Vec<(&str, Verdict)> = rep
        .results
        .iter()
        .map(|r| (r.id.as_str(), r.verdict.clone()))
        .collect();
    assert_eq!(got, [("BRK-03", Verdict::Fail), ("RT-01", Verdict::Fail)]);
    let why = &rep.results[0].evidence[0];
    assert!(why.contains("budget of 2 s"), "{why}");
    assert!(why.contains("waiting for containerd to answer"), "{why}");
    assert!(why.contains("CRI Version"), "{why}");
    held.abort();
}

/// The node's dispatch handles exactly the checks the catalog gives the
/// node, and every attack it evaluates has a probe in the attack table.
#[test]
fn every_node_check_has_a_runner_here() {
    use ironclad_contract::matrix::CATALOG;
    for c in CATALOG {
        let on_host = matches!(handler(c.id), Handler::Host);
        assert_eq!(on_host, c.runner == Runner::Host, "{}", c.id);
    }
    for &id in CheckId::ALL {
        let attack_like = id.as_str().starts_with("BRK-") && id != CheckId::Brk04O;
        assert_eq!(breakout::attack(id).is_some(), attack_like, "{id}");
        if attack_like {
            assert!(matches!(handler(id), Handler::Batch(_)), "{id}");
            assert_ne!(script(id, false), "exit 2", "{id}");
        }
    }
}

/// Batches whose `variant`s printed `text` for check `id`.
fn batches_of(id: CheckId, outputs: &[(Variant, &str)]) -> Batches {
    let mut all: Outputs = HashMap::new();
    for (v, text) in outputs {
        let mut map = HashMap::new();
        map.insert(id.as_str().to_string(), out(0, text, ""));
        all.insert(*v, Ok(map));
    }
    Batches {
        outputs: all,
        refusals: String::new(),
        conf03: None,
    }
}

/// The evidence BRK-02 had on the dev cluster before its fix: its nsenter
/// could not exec the pod's busybox. The attack never ran: not a PASS (it
/// read PASS), but a SKIP saying why.
#[test]
fn a_probe_that_could_not_exec_did_not_run() {
    let enoent =
        "nsenter: can't execute '/proc/1234/root/bin/busybox': No such file or directory\n";
    let b = batches_of(
        CheckId::Brk02,
        &[
            (Variant::Priv, enoent),
            (Variant::Userns, "uid=0(root) gid=0(root)\n"),
        ],
    );
    let (v, ev) = check(CheckId::Brk02, &b, &env());
    match &v {
        Verdict::Skip { reason } => {
            assert!(
                reason.contains("privileged variant could not run"),
                "{reason}"
            );
            assert!(reason.contains("can't execute"), "{reason}");
        }
        other => panic!("{other:?} {ev:?}"),
    }
    assert!(
        ev[0].starts_with("priv: not run: probe could not exec"),
        "{ev:?}"
    );
    // Every way a binary fails to start; BRK-01's own shells excepted (the
    // node having none is what blocks it).
    for text in [
        enoent,
        "nsenter: can't execute '/x': Exec format error\n",
        "busybox: applet not found\n",
        "sh: busybox: not found\n",
    ] {
        assert!(exec_failure(CheckId::Brk03, text).is_some(), "{text}");
    }
    assert_eq!(
        exec_failure(
            CheckId::Brk01,
            "nsenter: can't execute '/bin/bash': No such file or directory\nnsenter: can't execute '/bin/sh': No such file or directory\n"
        ),
        None
    );
    assert!(exec_failure(CheckId::Brk01, enoent).is_some());
    // A genuine refusal with ENOENT (no cgroup v1 to mount) is a block.
    assert_eq!(
        exec_failure(
            CheckId::Brk08,
            "mount: mounting cgroup on /tmp/cg failed: No such file or directory\n"
        ),
        None
    );
    // The same check, the probe having run: the node's root seen by the
    // privileged pod is EXPOSED, the userns pod's own root a block.
    let b = batches_of(
        CheckId::Brk02,
        &[
            (Variant::Priv, "NODE-ROOT-SEEN\nuid=0(root) gid=0(root)\n"),
            (Variant::Userns, "uid=0(root) gid=0(root)\n"),
        ],
    );
    let (v, ev) = check(CheckId::Brk02, &b, &env());
    assert!(
        matches!(&v, Verdict::Exposed { reason, .. } if reason.contains("NODE-ROOT-SEEN")),
        "{v:?} {ev:?}"
    );
    assert!(
        ev.iter().any(|e| e.starts_with("userns: blocked")),
        "{ev:?}"
    );
}

/// BRK-05 is EXPOSED when the privileged pod reads a disk raw or mounts
/// the state disk again, even with every write refused; the escape leads
/// its evidence, so the summary's cap never hides it.
#[test]
fn brk05_counts_raw_reads_and_second_mounts() {
    let busy = "sh: can't open '/dev/vda': Device or resource busy\nsh: can't open '/tmp/m-vda': Device or resource busy\n".repeat(4);
    for line in [
        "READ-RAW:/dev/vdb:4096B",
        "MOUNTED-AGAIN:/dev/vdb: etc lost+found var",
    ] {
        let o = evaluate(CheckId::Brk05, &out(0, &format!("{busy}{line}\n"), ""));
        match o {
            Outcome::Escaped(d) => assert!(d.starts_with(line), "{d}"),
            other => panic!("{other:?}"),
        }
    }
    let b = batches_of(
        CheckId::Brk05,
        &[
            (Variant::Priv, &format!("{busy}READ-RAW:/dev/vdb:4096B\n")),
            (
                Variant::Unpriv,
                "absent:/dev/vda\nmknod: /tmp/m-vda: Operation not permitted\n",
            ),
            (
                Variant::Userns,
                "absent:/dev/vda\nmknod: /tmp/m-vda: Operation not permitted\n",
            ),
        ],
    );
    let (v, _) = check(CheckId::Brk05, &b, &env());
    assert!(matches!(v, Verdict::Exposed { .. }), "{v:?}");
    assert!(!evaluate(CheckId::Brk05, &out(0, &busy, "")).escaped());
    let s = script(CheckId::Brk05, false);
    for part in [
        "busybox dd if=$p",
        "busybox mount -t ext4 $p",
        "busybox umount",
        "(exec 3<>$p)",
        "/dev/mem",
    ] {
        assert!(s.contains(part), "{part}: {s}");
    }
    // Every marker the probes print is one the host reads.
    for m in [
        "READ-RAW",
        "MOUNTED-AGAIN",
        "NODE-ROOT-SEEN",
        "OPENED-RW",
        "WROTE-SYSRQ",
    ] {
        assert!(ESCAPE_MARKERS.contains(&m), "{m}");
    }
}

/// BRK-02's probe for real, as root with the build host's busybox: a
/// stand-in for the node (a process in its own mount namespace whose root
/// has the node's manifest and no `/bin/busybox`, as a node's squashfs
/// root) is entered with nsenter. The probe sees its root; the form it had
/// before (nsenter as the script's last command, exec'ed in place of the
/// shell, so that `$$` named nsenter and its moved root) could not exec.
/// Skipped (with a note) where it cannot be set up: not root, no busybox
/// or unshare.
#[test]
fn brk02_probe_reaches_a_foreign_root_for_real() {
    use std::process::{Command, Stdio};
    let have = |t: &str| {
        Command::new(t)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !rustix::process::geteuid().is_root() || !have("busybox") || !have("unshare") {
        eprintln!("skipped: needs root, busybox and unshare");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let marker = root.join(NODE_MARKER.trim_start_matches('/'));
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, "{}").unwrap();
    for d in ["proc", "old", "tools"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v busybox"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::copy(bb.trim(), root.join("tools/busybox")).unwrap();
    let setup = format!(
        "mount --bind {r} {r} && cd {r} && pivot_root . old && /tools/busybox mount -t proc proc /proc && /tools/busybox umount -l /old && echo READY && exec /tools/busybox sleep 120",
        r = root.display()
    );
    let mut node = Command::new("unshare")
        .args(["-m", "sh", "-c", &setup])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(node.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let node = Kill(node);
    assert_eq!(line.trim(), "READY", "the stand-in node did not start");
    let pid = node.0.id().to_string();
    let probe = |script: &str| {
        let o = Command::new("busybox")
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        out(
            o.status.code().unwrap_or(-1),
            &String::from_utf8_lossy(&o.stdout),
            &String::from_utf8_lossy(&o.stderr),
        )
    };
    let now = probe(&brk02_script(&pid));
    assert!(evaluate(CheckId::Brk02, &now).escaped(), "{now:?}");
    let before = brk02_script(&pid).replace("; exit $?", "");
    let then = probe(&before);
    assert!(!evaluate(CheckId::Brk02, &then).escaped(), "{then:?}");
    assert!(
        exec_failure(CheckId::Brk02, &then.combined()).is_some(),
        "{then:?}"
    );
    drop(node);
}

#[test]
fn conf03_needs_the_exit_status_and_both_log_lines() {
    use super::conformance::conf03_job_verdict;
    let log =
        "2026-11-27T03:00:00.1Z stdout F conf03-out\n2026-11-27T03:00:00.2Z stderr F conf03-err\n";
    let (ok, what) = conf03_job_verdict(7, log);
    assert!(ok, "{what}");
    // The exit status of the sandbox, not of the job (what a shim that waits
    // on the wrong process reports).
    assert!(!conf03_job_verdict(0, log).0);
    // An empty log (the runc shim's hang with runsc left it empty).
    let (ok, what) = conf03_job_verdict(7, "");
    assert!(!ok);
    assert!(what.contains("stdout line missing"), "{what}");
    // Lines on the wrong stream, or partial lines, do not count.
    let swapped = "t stderr F conf03-out\nt stdout F conf03-err\n";
    assert!(!conf03_job_verdict(7, swapped).0);
    assert!(!conf03_job_verdict(7, "t stdout P conf03-o\nt stderr F conf03-err\n").0);
}
