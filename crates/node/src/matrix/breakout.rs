//! The breakout family (BRK-*): the attack table (which pod variants run
//! each attack; whether a plain privileged container is beyond the node's
//! protection is the catalog's `exposed_mitigation`), each attack's probe
//! script and classifier, the verdict over the variants ([`attack_verdict`]:
//! FAIL when a variant the node protects got through, EXPOSED when only the
//! plain privileged one did, never PASS when anything got through), and the
//! destructive BRK-04-O (sysrq power-off).

use super::batch::{Outputs, output, timed_out};
use super::network::{CONNECTED, NODE_PORTS, connect_script, pod_icmp, tcp_outcomes};
use super::pods::{Pods, exec_script, start_variant};
use super::{Batches, Finding, NODE_MARKER, NodeEnv, summarize};
use crate::cri::{Cri, ExecOutput, Variant};
use ironclad_contract::matrix::{CheckId, Verdict, find};
use std::net::Ipv4Addr;
use std::time::Duration;

/// A probe's classification: the attack got through or it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Blocked(String),
    Escaped(String),
}

impl Outcome {
    pub(super) fn escaped(&self) -> bool {
        matches!(self, Outcome::Escaped(_))
    }
}

/// One attack of the BRK family: which variants run it.
pub(super) struct Attack {
    pub(super) id: CheckId,
    pub(super) variants: &'static [Variant],
}

impl Attack {
    /// What blocks it when a plain privileged container gets through (the
    /// catalog's `exposed_mitigation`); `None`: the node must block even that.
    pub(super) fn priv_mitigation(&self) -> Option<&'static str> {
        find(self.id.as_str()).and_then(|c| c.exposed_mitigation)
    }
}

pub(super) const SANDBOXED: &[Variant] = &[Variant::Userns, Variant::Gvisor];
const ALL_BUT_RESTRICTED: &[Variant] = &[
    Variant::Priv,
    Variant::Unpriv,
    Variant::Userns,
    Variant::Gvisor,
];

pub(super) const ATTACKS: &[Attack] = &[
    Attack {
        id: CheckId::Brk01,
        variants: &[Variant::Priv],
    },
    Attack {
        id: CheckId::Brk02,
        variants: &[Variant::Priv, Variant::Userns, Variant::Gvisor],
    },
    Attack {
        id: CheckId::Brk03,
        variants: &[Variant::Priv],
    },
    Attack {
        id: CheckId::Brk04,
        variants: &[
            Variant::Priv,
            Variant::Unpriv,
            Variant::Userns,
            Variant::Gvisor,
            Variant::Restricted,
        ],
    },
    Attack {
        id: CheckId::Brk05,
        variants: ALL_BUT_RESTRICTED,
    },
    Attack {
        id: CheckId::Brk06,
        variants: ALL_BUT_RESTRICTED,
    },
    Attack {
        id: CheckId::Brk07,
        variants: ALL_BUT_RESTRICTED,
    },
    Attack {
        id: CheckId::Brk08,
        variants: ALL_BUT_RESTRICTED,
    },
    Attack {
        id: CheckId::Brk09,
        variants: ALL_BUT_RESTRICTED,
    },
    Attack {
        id: CheckId::Brk10,
        variants: &[
            Variant::Unpriv,
            Variant::Userns,
            Variant::Gvisor,
            Variant::Restricted,
        ],
    },
];

/// The pod's gateway (the node's address on the pods' bridge), as a shell
/// word.
pub(super) fn gateway_word() -> String {
    "$(busybox ip route | busybox awk '/^default/{print $3; exit}')".to_string()
}

/// The shell script (busybox `sh -c`) of an attack probe.
pub fn script(id: CheckId, host_network: bool) -> String {
    use ironclad_contract::matrix::CheckId::*;
    let api_host = if host_network {
        "127.0.0.1".to_string()
    } else {
        gateway_word()
    };
    match id {
        // The node has no shell: nsenter into PID 1's namespaces and exec one.
        Brk01 => "for s in /bin/bash /bin/sh; do busybox nsenter -t 1 -m -u -i -n -p -- $s -c 'echo SHELL-RAN; id' 2>&1 && exit 0; done; exit 1".into(),
        Brk02 => brk02_script("1"),
        Brk03 => format!("test -e /proc/1/root{NODE_MARKER} && echo node-root-visible; (exec 3>>/proc/1/root/usr/lib/os-release) 2>&1 && echo OPENED-RW:/proc/1/root/usr/lib/os-release; busybox nsenter -t 1 -m -- /proc/$$/root/bin/busybox mount -o remount,rw / 2>&1 && echo REMOUNTED-RW; exit 0"),
        Brk04 => "test -e /proc/sysrq-trigger || { echo 'absent: /proc/sysrq-trigger'; exit 0; }; (echo h > /proc/sysrq-trigger) 2>&1 && echo WROTE-SYSRQ; exit 0".into(),
        Brk05 => BRK05_SCRIPT.into(),
        // A non-module file: EPERM without CAP_SYS_MODULE, ENOEXEC once the
        // kernel has accepted the call and parsed the file.
        Brk06 => "busybox insmod /bin/busybox 2>&1; echo rc=$?; echo lockdown=$(busybox cat /sys/kernel/security/lockdown 2>/dev/null); echo sig_enforce=$(busybox cat /sys/module/module/parameters/sig_enforce 2>/dev/null); echo modules_disabled=$(busybox cat /proc/sys/kernel/modules_disabled 2>/dev/null)".into(),
        Brk07 => "for f in /proc/sys/kernel/core_pattern /proc/sys/kernel/modprobe /sys/kernel/uevent_helper; do if [ -e $f ]; then (exec 3>>$f) 2>&1 && echo OPENED-RW:$f; else echo absent:$f; fi; done; exit 0".into(),
        Brk08 => "busybox mkdir -p /tmp/cg; if busybox mount -t cgroup -o none,name=ironclad cgroup /tmp/cg 2>&1; then echo mounted-cgroup-v1; if [ -e /tmp/cg/release_agent ]; then (exec 3>>/tmp/cg/release_agent) 2>&1 && echo OPENED-RW:release_agent; fi; busybox umount /tmp/cg; fi; exit 0".into(),
        // A host process is one whose cmdline names containerd (not a shim).
        Brk09 => "p=; for d in /proc/[0-9]*; do c=$(busybox tr '\\0' ' ' < $d/cmdline 2>/dev/null); case \"$c\" in */containerd\\ *|*/containerd) p=${d#/proc/}; break;; esac; done; if [ -z \"$p\" ]; then echo 'no host process visible'; exit 0; fi; echo host-pid=$p; (exec 3>>/proc/$p/mem) 2>&1 && echo OPENED-RW:/proc/$p/mem; exit 0".into(),
        Brk10 => brk10_script(&[api_host], &[]),
        // Not an attack.
        Brk04O | Rt01 | Rt02 | Rt03 | Rt04 | Rt06 | Rt07 | Rt08 | Rt09 | Rt10 | Net01 | Net02
        | Api04 | Conf01 | Conf02 | Conf03 | Conf04 | Conf05 => "exit 2".into(),
    }
}

/// BRK-02's probe against the namespaces of process `target` (`1` on a
/// node; a test's stand-in elsewhere): bring your own shell, the pod's
/// static busybox, through `/proc/$$/root` of the probe's shell, which stays
/// in the pod's root. The nsenter must not be the script's last command:
/// busybox sh would exec it in place of itself, `$$` would then be nsenter,
/// whose root setns(2) moves to the node's, which has no `/bin/busybox`
/// (`can't execute ...: No such file or directory`, the attack never ran:
/// how BRK-02 read PASS before).
pub fn brk02_script(target: &str) -> String {
    format!(
        "busybox nsenter -t {target} -m -u -i -n -p -- /proc/$$/root/bin/busybox sh -c 'test -e {NODE_MARKER} && echo NODE-ROOT-SEEN; busybox id' 2>&1; exit $?"
    )
}

/// BRK-05's probe, on each of the node's disks (`vda`, `vdb`: the squashfs
/// root and the ext4 state disk, in either order), through `/dev` or, where
/// the pod has no node for it, a `mknod` copy from `/sys/block/*/dev`:
/// open it read-write (`OPENED-RW`; refused for a mounted disk by
/// `bdev_allow_write_mounted=0`), read its first 4 KiB raw (`READ-RAW`), and
/// mount it a second time as ext4 (`MOUNTED-AGAIN`, with its top-level
/// names; unmounted at once). The second mount is read-write because a
/// read-only one of a disk mounted read-write is refused (EBUSY) whatever
/// the caller's rights; it shares the mounted superblock and writes nothing.
/// Then `/dev/mem` read-write (refused by `lockdown=integrity`).
pub const BRK05_SCRIPT: &str = "for d in vda vdb; do p=/dev/$d; if [ ! -e $p ]; then echo absent:$p; p=; fi; if [ -n \"$p\" ]; then (exec 3<>$p) 2>&1 && echo OPENED-RW:$p; fi; mm=$(busybox cat /sys/block/$d/dev 2>/dev/null) && busybox mknod /tmp/m-$d b ${mm%%:*} ${mm##*:} 2>&1 && { (exec 3<>/tmp/m-$d) 2>&1 && echo OPENED-RW:mknod-$d; test -n \"$p\" || p=/tmp/m-$d; }; if [ -n \"$p\" ] && (exec 3<$p) 2>&1; then n=$(busybox dd if=$p bs=4096 count=1 2>/dev/null | busybox wc -c); test \"$n\" -gt 0 && echo READ-RAW:$p:${n}B; busybox mkdir -p /tmp/mnt-$d; if busybox mount -t ext4 $p /tmp/mnt-$d 2>&1; then echo MOUNTED-AGAIN:$p: $(busybox ls /tmp/mnt-$d); busybox umount /tmp/mnt-$d; fi; fi; busybox rm -f /tmp/m-$d; done; if [ -e /dev/mem ]; then (exec 3<>/dev/mem) 2>&1 && echo OPENED-RW:/dev/mem; else echo absent:/dev/mem; fi; exit 0";

/// What a probe prints when its attack got through (the markers [`evaluate`]
/// looks for; BRK-06 has none: its escape is an errno other than EPERM).
/// The host's check of a node's verdicts reads the same list
/// ([`ironclad_contract::matrix::ESCAPE_MARKERS`]).
pub use ironclad_contract::matrix::ESCAPE_MARKERS;

/// Why a probe that shows nothing getting through did not actually try:
/// a binary it execs is missing or not executable (`can't execute`,
/// `applet not found`, `Exec format error`, a shell's `not found`). `None`
/// when it ran. BRK-01 expects `can't execute` for the node's own shells:
/// the node having none is what blocks it.
pub fn exec_failure(id: CheckId, text: &str) -> Option<String> {
    text.lines().map(str::trim).find_map(|l| {
        let failed = l.contains("can't execute")
            || l.contains("applet not found")
            || l.contains("Exec format error")
            || l.contains("cannot execute")
            || (l.starts_with("sh: ") && l.ends_with(": not found"));
        let expected = id == CheckId::Brk01
            && (l.contains("can't execute '/bin/bash'") || l.contains("can't execute '/bin/sh'"));
        (failed && !expected && !(id == CheckId::Brk06 && l.starts_with("insmod:")))
            .then(|| l.to_string())
    })
}

/// A probe's output in one line (`a | b`) with the lines that show an
/// escape first, so that the cap of `max` characters never cuts them off.
fn escape_first(text: &str, max: usize) -> String {
    let (first, rest): (Vec<&str>, Vec<&str>) = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .partition(|l| ESCAPE_MARKERS.iter().any(|m| l.contains(m)));
    let s = [first, rest].concat().join(" | ");
    if s.is_empty() {
        "(no output)".into()
    } else if s.chars().count() > max {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    } else {
        s
    }
}

/// How much of a probe's output its evidence keeps: BRK-05's says what
/// happened to each of two disks four ways, and `/dev/mem`.
const DETAIL_MAX: usize = 300;
const BRK05_DETAIL_MAX: usize = 1200;

/// Classifies an attack probe's output.
pub fn evaluate(id: CheckId, out: &ExecOutput) -> Outcome {
    use ironclad_contract::matrix::CheckId::*;
    let text = out.combined();
    let detail = match id {
        Brk10 => brk10_detail(&text),
        Brk05 => escape_first(&text, BRK05_DETAIL_MAX),
        _ => escape_first(&text, DETAIL_MAX),
    };
    let escaped = match id {
        Brk01 => text.contains("SHELL-RAN") || text.contains("uid="),
        Brk02 => text.contains("NODE-ROOT-SEEN"),
        Brk03 => text.contains("OPENED-RW") || text.contains("REMOUNTED-RW"),
        Brk04 => text.contains("WROTE-SYSRQ"),
        Brk05 => ["OPENED-RW", "READ-RAW", "MOUNTED-AGAIN"]
            .iter()
            .any(|m| text.contains(m)),
        Brk07 | Brk08 | Brk09 => text.contains("OPENED-RW"),
        // Anything but "no permission" means init_module was reachable.
        Brk06 => {
            let first = text.lines().next().unwrap_or("");
            !(first.contains("not permitted")
                || first.contains("Permission denied")
                || first.contains("not implemented")
                || first.contains("does not support")
                || first.contains("Function not implemented")
                || first.contains("No such file"))
        }
        Brk10 => text.contains("SOCKET-VISIBLE") || text.contains(CONNECTED),
        // Not an attack: nothing shows it blocked.
        Brk04O | Rt01 | Rt02 | Rt03 | Rt04 | Rt06 | Rt07 | Rt08 | Rt09 | Rt10 | Net01 | Net02
        | Api04 | Conf01 | Conf02 | Conf03 | Conf04 | Conf05 => true,
    };
    if escaped {
        Outcome::Escaped(detail)
    } else {
        Outcome::Blocked(detail)
    }
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

/// The note for an attack a plain privileged container gets through.
pub const UNPROTECTABLE: &str = "unprotectable at node level on a shared kernel: a privileged container holds every capability of the node's kernel";

/// The verdict of an attack from its variants' outcomes (`Err`: the variant
/// could not run, with why). `priv_mitigation` is `Some` (what would block
/// it) for an attack a plain privileged container gets through on a shared
/// kernel.
///
/// FAIL when a variant the node protects got through; else EXPOSED when the
/// plain privileged variant got through (with what it did, whether the
/// sandboxed variants held, and the mitigation); else SKIP when the
/// privileged variant of an exposable attack could not run, or no variant
/// could; else PASS. An attack that got through is never a PASS, and one
/// whose privileged variant never ran is not either.
pub fn attack_verdict(
    priv_mitigation: Option<&str>,
    outcomes: &[(Variant, Result<Outcome, String>)],
) -> (Verdict, Vec<String>) {
    let mut evidence = Vec::new();
    let mut considered_ran = 0;
    let mut escaped_any = false;
    let mut priv_through = None;
    let mut not_run = Vec::new();
    let mut priv_not_run = None;
    for (v, o) in outcomes {
        let exposable = priv_mitigation.is_some() && *v == Variant::Priv;
        match o {
            // A blocked attack counts for every variant, priv included.
            Ok(Outcome::Blocked(d)) => {
                evidence.push(format!("{v}: blocked: {d}"));
                considered_ran += 1;
            }
            Ok(Outcome::Escaped(d)) if exposable => {
                evidence.push(format!("{v}: got through ({UNPROTECTABLE}): {d}"));
                priv_through = Some(d.clone());
            }
            Ok(Outcome::Escaped(d)) => {
                evidence.push(format!("{v}: ESCAPED: {d}"));
                considered_ran += 1;
                escaped_any = true;
            }
            Err(why) => {
                evidence.push(format!("{v}: not run: {why}"));
                if exposable {
                    priv_not_run = Some(why.clone());
                } else {
                    not_run.push(format!("{v}: {why}"));
                }
            }
        }
    }
    let sandboxed: Vec<String> = outcomes
        .iter()
        .filter(|(v, o)| SANDBOXED.contains(v) && o.is_ok())
        .map(|(v, _)| v.to_string())
        .collect();
    let verdict = match (escaped_any, priv_through, priv_mitigation) {
        (true, _, _) => Verdict::Fail,
        (false, Some(d), Some(mitigation)) => {
            let sandboxes = if sandboxed.is_empty() {
                format!(
                    "neither the userns nor the gvisor variant could run ({})",
                    not_run.join("; ")
                )
            } else {
                format!("blocked in {}", sandboxed.join(" and "))
            };
            Verdict::exposed(
                format!(
                    "a privileged container got through ({d}); the node cannot refuse it on a shared kernel; {sandboxes}"
                ),
                mitigation,
            )
        }
        // The privileged variant is the one the kernel defences answer for:
        // when it did not run, whether they hold is untested.
        (false, None, Some(_)) if priv_not_run.is_some() => Verdict::skip(format!(
            "the privileged variant could not run ({}): whether the node refuses it is untested",
            priv_not_run.unwrap_or_default()
        )),
        _ if considered_ran == 0 => Verdict::skip(format!(
            "no variant that the node can protect could run ({})",
            not_run.join("; ")
        )),
        _ => Verdict::Pass,
    };
    (verdict, evidence)
}

/// How long after answering the node's privileged pod writes sysrq `o`.
pub const POWER_OFF_DELAY: Duration = Duration::from_secs(10);
/// The destructive sysrq probe.
pub const SYSRQ_O_SCRIPT: &str = "test -e /proc/sysrq-trigger || { echo 'absent: /proc/sysrq-trigger'; exit 0; }; (echo o > /proc/sysrq-trigger) 2>&1 && echo WROTE-SYSRQ; exit 0";

/// BRK-04-O: the sandboxable variants try sysrq `o` (if one gets through, the
/// node powers off now and the host sees the node's report missing: FAIL);
/// then a privileged pod is scheduled to do it [`POWER_OFF_DELAY`] after this
/// answer, and the host watches the node go down.
pub(super) async fn sysrq_power_off(pods: &mut Pods<'_>) -> Finding {
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
            .map(|out| evaluate(CheckId::Brk04, &out));
        outcomes.push((v, o));
    }
    let (verdict, mut ev) = attack_verdict(None, &outcomes);
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
    // The privileged variant's outcome is the node's fate, which only the
    // host sees: it turns this PASS into EXPOSED when the node went down.
    ev.push(format!(
        "priv: scheduled `echo o > /proc/sysrq-trigger` from a privileged pod {}s after this answer ({UNPROTECTABLE}); the host watches the node's fate",
        POWER_OFF_DELAY.as_secs()
    ));
    (verdict, ev)
}

/// The attack table's entry of `id`.
pub(super) fn attack(id: CheckId) -> Option<&'static Attack> {
    ATTACKS.iter().find(|a| a.id == id)
}

/// Each variant's outcome of `attack` from the batches (`Err`: it did not
/// run, with why); only the sandboxed variants unless `all`.
fn outcomes(
    attack: &Attack,
    outputs: &Outputs,
    all: bool,
) -> Vec<(Variant, Result<Outcome, String>)> {
    attack
        .variants
        .iter()
        .filter(|v| all || SANDBOXED.contains(v))
        .map(|&v| {
            // A probe killed at its timeout did not show the attack blocked:
            // unless it got through first, that variant did not run.
            // One that could not exec its tools did not try the attack.
            let o = output(outputs, v, attack.id.as_str()).and_then(|out| {
                match evaluate(attack.id, &out) {
                    Outcome::Blocked(d) if timed_out(&out) => Err(format!("probe timed out: {d}")),
                    Outcome::Blocked(d) => match exec_failure(attack.id, &out.combined()) {
                        Some(why) => Err(format!("probe could not exec ({why}): {d}")),
                        None => Ok(Outcome::Blocked(d)),
                    },
                    o => Ok(o),
                }
            });
            (v, o)
        })
        .collect()
}

/// An attack's finding from the batches.
pub(super) fn check(id: CheckId, batches: &Batches, env: &NodeEnv) -> Finding {
    let Some(attack) = attack(id) else {
        return (
            Verdict::Fail,
            vec![format!("{id} has no entry in the attack table")],
        );
    };
    let (verdict, mut evidence) = attack_verdict(
        attack.priv_mitigation(),
        &outcomes(attack, &batches.outputs, true),
    );
    if id == CheckId::Brk10 && !env.host_network {
        evidence.push(batches.refusals.clone());
    }
    (verdict, evidence)
}

/// The sandboxed variants' outcomes of every attack but BRK-10, for RT-10.
pub(super) fn sandboxed(outputs: &Outputs) -> Vec<(CheckId, Variant, Result<Outcome, String>)> {
    ATTACKS
        .iter()
        .filter(|a| a.id != CheckId::Brk10)
        .flat_map(|a| {
            outcomes(a, outputs, false)
                .into_iter()
                .map(move |(v, o)| (a.id, v, o))
        })
        .collect()
}
