//! The conformance checks the node runs (CONF-03 a pod to completion on
//! each runtime class, CONF-04 node-to-node traffic); the host runs the
//! others.

use super::{Batches, Finding, NodeEnv};
use crate::cri::{Cri, PodOptions, Variant};
use ironclad_contract::matrix::{CheckId, Verdict};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// CONF-03: one job pod per runtime handler runs `busybox true` to
/// completion; the runtimes' pods run at once.
pub(super) async fn conf03(cri: Cri, env: &NodeEnv, run_id: &str) -> (Verdict, Vec<String>) {
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
