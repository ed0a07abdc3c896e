//! The batch protocol: all the probes one variant's pod runs in a run go
//! into one script ([`batch_script`]), run with one `ExecSync`, and come back
//! apart by key ([`split_batch`]). [`plan`] decides which pod runs which
//! probes for the requested checks; [`run_batches`] runs every pod's batch
//! at once.

use super::breakout::{ATTACKS, SANDBOXED, brk10_script, gateway_word, script};
use super::network::{net01_script, net02_script};
use super::pods::{Pods, start_variant};
use super::runtime::RT03_SCRIPT;
use super::{NodeEnv, PROBE_TIMEOUT, summarize};
use crate::cri::{ExecOutput, Variant};
use ironclad_contract::matrix::CheckId;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Marks the start of one probe's output in a batch.
pub(super) const BATCH_BEGIN: &str = "@@ironclad-probe";
/// Marks the end of one probe's output, followed by its exit status.
pub(super) const BATCH_END: &str = "@@ironclad-rc";

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
pub(super) const STATUS_KEY: &str = "status";

/// Which probes each variant's pod runs for the checks `ids` (attack ids
/// as keys, [`STATUS_KEY`] and the check id for the others).
pub(super) fn plan(ids: &[CheckId], env: &NodeEnv) -> BTreeMap<Variant, Vec<(String, String)>> {
    let mut plan: BTreeMap<Variant, Vec<(String, String)>> = BTreeMap::new();
    let mut add = |v: Variant, key: &str, script: String| {
        let probes = plan.entry(v).or_default();
        if !probes.iter().any(|(k, _)| k == key) {
            probes.push((key.to_string(), script));
        }
    };
    let needs_rt10 = ids.contains(&CheckId::Rt10);
    for attack in ATTACKS {
        let wanted = ids.contains(&attack.id);
        let for_rt10 = needs_rt10 && attack.id != CheckId::Brk10;
        for &v in attack.variants {
            if wanted || (for_rt10 && SANDBOXED.contains(&v)) {
                let sc = if attack.id == CheckId::Brk10 && !env.host_network {
                    brk10_script(&[gateway_word()], &env.addresses)
                } else {
                    script(attack.id, env.host_network)
                };
                add(v, attack.id.as_str(), sc);
            }
        }
    }
    let status = || "busybox cat /proc/self/status".to_string();
    for &id in ids {
        use ironclad_contract::matrix::CheckId::*;
        let key = id.as_str();
        match id {
            Rt01 | Rt02 => add(Variant::Unpriv, STATUS_KEY, status()),
            Rt03 => add(Variant::Unpriv, key, RT03_SCRIPT.into()),
            Rt04 => add(Variant::Restricted, STATUS_KEY, status()),
            Rt08 => add(
                Variant::Userns,
                key,
                "busybox cat /proc/self/uid_map; busybox id".into(),
            ),
            Rt09 => add(
                Variant::Gvisor,
                key,
                "busybox dmesg 2>&1 | busybox head -n 3; echo ---; busybox uname -r".into(),
            ),
            Net01 => {
                if !env.egress && !env.host_network {
                    add(Variant::Unpriv, key, net01_script())
                }
            }
            Net02 => {
                if let (false, Some(port)) = (env.host_network, env.host_port) {
                    add(Variant::Unpriv, key, net02_script(port))
                }
            }
            // The attacks' probes come from their table above (RT-10's
            // too); these checks probe on their own, or on the host.
            Brk01 | Brk02 | Brk03 | Brk04 | Brk05 | Brk06 | Brk07 | Brk08 | Brk09 | Brk10
            | Brk04O | Rt06 | Rt07 | Rt10 | Conf03 | Conf04 | Api04 | Conf01 | Conf02 | Conf05 => {}
        }
    }
    plan
}

/// Each variant's probe outputs by key, or why the variant did not run.
pub(crate) type Outputs = HashMap<Variant, Result<HashMap<String, ExecOutput>, String>>;

pub(super) fn output(outputs: &Outputs, v: Variant, key: &str) -> Result<ExecOutput, String> {
    match outputs.get(&v) {
        None => Err(format!("{v} was not run")),
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(map)) => map
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no output for {key}: the {v} batch ended before this probe")),
    }
}

/// Starts the variants' pods at once, and runs each pod's batch as soon as
/// that pod is up: the quick runc and crun pods probe while the gVisor
/// sandboxes are still starting, instead of every batch waiting for the
/// slowest pod (under TCG on one vCPU, a gVisor pod takes a minute or more
/// to start among eight).
pub(super) async fn run_batches(ids: &[CheckId], pods: &mut Pods<'_>) -> Outputs {
    let mut plan = plan(ids, pods.env);
    let mut variants: Vec<Variant> = plan.keys().copied().collect();
    if ids.contains(&CheckId::Brk04O) {
        // Its probes come last (they may power the node off), on pods started now.
        for v in [Variant::Unpriv, Variant::Userns, Variant::Gvisor] {
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
    }
    let (env, run_id) = (pods.env, pods.run_id.clone());
    let runs = variants.into_iter().map(|v| {
        let mut cri = pods.cri.clone();
        let started = pods.pods.get(&v).cloned();
        let probes = plan.remove(&v);
        let run_id = run_id.clone();
        async move {
            let pod = match started {
                Some(p) => p,
                None => start_variant(&mut cri, env, &run_id, v).await,
            };
            let out = match (&pod, probes) {
                (_, None) => None,
                (Err(e), Some(_)) => Some(Err(e.clone())),
                (Ok(p), Some(probes)) => {
                    let timeout = PROBE_TIMEOUT * (probes.len() as u32 + 1);
                    let script = batch_script(&probes, PROBE_TIMEOUT);
                    let res = cri
                        .exec_as(
                            &format!("{v} batch ({} probes)", probes.len()),
                            &p.container_id,
                            &["/bin/busybox", "sh", "-c", &script],
                            timeout,
                        )
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|out| split_batch(&out));
                    Some(res)
                }
            };
            (v, pod, out)
        }
    });
    let mut outputs = Outputs::new();
    for (v, pod, out) in futures::future::join_all(runs).await {
        // Kept for the later checks and for cleanup.
        pods.pods.insert(v, pod);
        if let Some(out) = out {
            outputs.insert(v, out);
        }
    }
    outputs
}
