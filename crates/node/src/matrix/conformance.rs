//! The conformance checks the node runs (CONF-03 a pod to completion on
//! each runtime class, CONF-04 node-to-node traffic); the host runs the
//! others.

use super::{Batches, Finding, NodeEnv};
use crate::cri::{Cri, PodOptions, Variant};
use ironclad_contract::matrix::{CheckId, Verdict};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// CONF-03's job: two lines, one per stream, then exit status 7.
const CONF03_JOB: &str = "echo conf03-out; echo conf03-err >&2; exit 7";
/// The exit status CONF-03's job must report.
const CONF03_EXIT: i32 = 7;

/// CONF-03: one job pod per runtime handler runs [`CONF03_JOB`] to
/// completion with a CRI log, as a kubelet's job would; the runtime passes
/// when the container's exit status is 7 and both lines are in its CRI log
/// (stdout and stderr). The runtimes' pods run at once. They are left in
/// place with their sandbox ids returned: the run removes them with its
/// other pods once it has answered (a gVisor sandbox's removal takes 20–30 s
/// under TCG).
pub(super) async fn conf03(cri: Cri, env: &NodeEnv, run_id: &str) -> (Finding, Vec<String>) {
    let jobs = env.runtimes.iter().map(|rt| {
        let mut cri = cri.clone();
        let name = format!("matrix-conf03-{rt}-{run_id}");
        let log_dir = env.root.join("var/log/pods").join(&name);
        let opts = PodOptions {
            host_network: env.host_network,
            runtime_handler: Some(rt.clone()),
            image: env.toolbox_image.clone(),
            cgroup_parent: String::new(),
            log_dir: log_dir.to_string_lossy().into_owned(),
        };
        async move {
            let t = Instant::now();
            let job = cri
                .run_job(
                    Variant::Unpriv,
                    &name,
                    &opts,
                    &["/bin/busybox", "sh", "-c", CONF03_JOB],
                    Duration::from_secs(120),
                )
                .await;
            let ms = t.elapsed().as_millis();
            let (sandbox, done) = match job {
                Ok(j) => (Some(j.sandbox_id), j.done),
                Err(e) => (None, Err(e)),
            };
            let log = match &done {
                Ok(_) => read_job_log(&log_dir.join("job.log")).await,
                Err(_) => String::new(),
            };
            let _ = std::fs::remove_dir_all(&log_dir);
            let finding = match done {
                Ok(c) => {
                    let (ok, what) = conf03_job_verdict(c.exit_code, &log);
                    let ev = format!("{rt}: {what} in {ms} ms");
                    if ok {
                        (true, ev)
                    } else {
                        (false, format!("{ev}; reason {:?}", c.reason))
                    }
                }
                Err(e) => (false, format!("{rt}: {e}")),
            };
            (finding, sandbox)
        }
    });
    let done = futures::future::join_all(jobs).await;
    let ok = done.iter().all(|((ok, _), _)| *ok);
    let mut evidence = Vec::new();
    let mut sandboxes = Vec::new();
    for ((_, ev), sandbox) in done {
        evidence.push(ev);
        sandboxes.extend(sandbox);
    }
    ((Verdict::pass_if(ok), evidence), sandboxes)
}

/// The job's CRI log, read until both of its lines are there (the shim's
/// copy may trail the exit it reports) or 5 s have passed.
async fn read_job_log(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if conf03_job_verdict(CONF03_EXIT, &log).0 || Instant::now() >= deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a CONF-03 job ended as it must (exit 7, both lines in its CRI
/// log, each on its stream), and what it did.
pub(super) fn conf03_job_verdict(exit_code: i32, log: &str) -> (bool, String) {
    let has = |stream: &str, text: &str| {
        log.lines().any(|l| {
            let mut f = l.splitn(4, ' ');
            let (_, s, _, rest) = (f.next(), f.next(), f.next(), f.next());
            s == Some(stream) && rest == Some(text)
        })
    };
    let out = has("stdout", "conf03-out");
    let err = has("stderr", "conf03-err");
    let ok = exit_code == CONF03_EXIT && out && err;
    let what = format!(
        "exit {exit_code} (want {CONF03_EXIT}), CRI log: stdout line {}, stderr line {}",
        if out { "seen" } else { "missing" },
        if err { "seen" } else { "missing" },
    );
    (ok, what)
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

/// CONF-03's finding: its job pods ran beside the batches.
pub(super) fn conf03_check(_: CheckId, batches: &Batches, _: &NodeEnv) -> Finding {
    batches.conf03.clone().unwrap_or_else(|| {
        (
            Verdict::Fail,
            vec!["CONF-03's job pods were not started".into()],
        )
    })
}
