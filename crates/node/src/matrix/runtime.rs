//! The runtime family (RT-*): what a default, restricted, userns or gVisor
//! container sees of its own confinement (capabilities, seccomp, masked
//! paths, no_new_privs, uid_map, kernel), the node's sysctls against the
//! image's declared ones, RT-10 over the sandboxed attacks, and the fork
//! bomb of RT-06 under a pids limit.

use super::batch::{STATUS_KEY, output};
use super::breakout::{Outcome, sandboxed};
use super::pods::{Pods, exec_script, unavailable};
use super::{Batches, Finding, NodeEnv, SYSCTL_JSON, summarize};
use crate::cri::{ExecOutput, PodOptions, Variant};
use ironclad_contract::matrix::{CheckId, Verdict};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// RT-07: the image's declared sysctls, and the ones machined sets itself
/// once the node's modules are in ([`crate::sysctl::AFTER_MODULES`]:
/// `kernel.modules_disabled=1`), against the node's /proc/sys.
pub(super) fn rt07(root: &Path) -> Finding {
    let path = root.join(SYSCTL_JSON.trim_start_matches('/'));
    let declared: BTreeMap<String, String> = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => return (Verdict::Fail, vec![format!("{}: {e}", path.display())]),
    };
    let read = |k: &str| {
        let p = sysctl_path(root, k).ok_or("bad key")?;
        std::fs::read_to_string(&p).map_err(|e| e.to_string())
    };
    let (verdict, mut ev) = compare_sysctls(&declared, read);
    let mut locked = true;
    for (k, want) in crate::sysctl::AFTER_MODULES {
        match read(k) {
            Ok(got) if got.trim() == *want => ev.push(format!("{k}={want} (set by machined)")),
            Ok(got) => {
                locked = false;
                ev.push(format!(
                    "{k}: machined sets {want}, node has {}",
                    got.trim()
                ));
            }
            Err(e) => {
                locked = false;
                ev.push(format!("{k}: machined sets {want}, cannot read: {e}"));
            }
        }
    }
    let verdict = if locked { verdict } else { Verdict::Fail };
    (verdict, ev)
}

/// RT-10 from the sandboxed variants' outcomes of the attacks.
pub(super) fn rt10(sandboxed: &[(CheckId, Variant, Result<Outcome, String>)]) -> Finding {
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

/// RT-06: a fork bomb in a pod under a pids limit.
pub(super) async fn rt06(pods: &mut Pods<'_>) -> Finding {
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
        log_dir: String::new(),
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

/// A check's finding from a probe's output in a variant's batch.
fn from_batch(
    batches: &Batches,
    v: Variant,
    key: &str,
    eval: impl Fn(&ExecOutput) -> Finding,
) -> Finding {
    match output(&batches.outputs, v, key) {
        Ok(o) => eval(&o),
        Err(e) => (Verdict::Fail, vec![e]),
    }
}

pub(super) fn rt01_check(_: CheckId, batches: &Batches, _: &NodeEnv) -> Finding {
    from_batch(batches, Variant::Unpriv, STATUS_KEY, |o| rt01(&o.stdout))
}

pub(super) fn rt02_check(_: CheckId, batches: &Batches, _: &NodeEnv) -> Finding {
    from_batch(batches, Variant::Unpriv, STATUS_KEY, |o| rt02(&o.stdout))
}

pub(super) fn rt03_check(id: CheckId, batches: &Batches, _: &NodeEnv) -> Finding {
    from_batch(batches, Variant::Unpriv, id.as_str(), rt03)
}

pub(super) fn rt04_check(_: CheckId, batches: &Batches, _: &NodeEnv) -> Finding {
    from_batch(batches, Variant::Restricted, STATUS_KEY, |o| {
        rt04(&o.stdout)
    })
}

pub(super) fn rt08_check(id: CheckId, batches: &Batches, env: &NodeEnv) -> Finding {
    match unavailable(env, Variant::Userns) {
        Some(why) => (Verdict::skip(why), vec![]),
        None => from_batch(batches, Variant::Userns, id.as_str(), |o| rt08(&o.stdout)),
    }
}

pub(super) fn rt09_check(id: CheckId, batches: &Batches, env: &NodeEnv) -> Finding {
    if let Some(why) = unavailable(env, Variant::Gvisor) {
        return (Verdict::skip(why), vec![]);
    }
    let host =
        std::fs::read_to_string(env.root.join("proc/sys/kernel/osrelease")).unwrap_or_default();
    from_batch(batches, Variant::Gvisor, id.as_str(), |o| {
        let (d, u) = o.stdout.split_once("---").unwrap_or((&o.stdout, ""));
        rt09(d, u, &host)
    })
}

pub(super) fn rt10_check(_: CheckId, batches: &Batches, _: &NodeEnv) -> Finding {
    rt10(&sandboxed(&batches.outputs))
}
