//! The pod pool of one matrix run: one pod per [`Variant`], started on
//! first use (the batches start theirs at once, `batch::run_batches`) and reused by every
//! check that needs it; [`Pods::cleanup`] removes them all, and any labelled
//! leftover of an earlier run. It knows nothing of checks beyond RT-08's
//! user-namespace test, which a userns pod must pass to count as started.

use super::runtime::rt08;
use super::{NodeEnv, PROBE_TIMEOUT, summarize};
use crate::cri::{Cri, ExecOutput, Pod, PodOptions, Variant};
use ironclad_contract::matrix::Verdict;
use std::collections::HashMap;

/// The pods of one run, started on first use.
pub(crate) struct Pods<'a> {
    pub(super) cri: Cri,
    pub(super) env: &'a NodeEnv,
    pub(super) run_id: String,
    pub(super) pods: HashMap<Variant, Result<Pod, String>>,
    /// Sandbox ids of job pods (CONF-03's), removed with the rest.
    pub(super) jobs: Vec<String>,
}

/// Why a variant cannot run on this node at all (before trying).
pub(super) fn unavailable(env: &NodeEnv, v: Variant) -> Option<String> {
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

pub(super) async fn exec_script(
    cri: &mut Cri,
    pod: &Pod,
    script: &str,
) -> Result<ExecOutput, String> {
    cri.exec_as(
        pod.variant.name(),
        &pod.container_id,
        &["/bin/busybox", "sh", "-c", script],
        PROBE_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Starts the pod of `v`. A userns pod whose user namespace the runtime
/// silently ignored is removed again and reported as not started.
pub(super) async fn start_variant(
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
        log_dir: String::new(),
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

impl<'a> Pods<'a> {
    pub(super) fn new(cri: Cri, env: &'a NodeEnv, run_id: String) -> Self {
        Pods {
            cri,
            env,
            run_id,
            pods: HashMap::new(),
            jobs: Vec::new(),
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

    pub(super) async fn exec(&mut self, v: Variant, script: &str) -> Result<ExecOutput, String> {
        let pod = self.get(v).await?;
        self.exec_on(&pod, script).await
    }

    /// Removes every pod of this run, job pods included (all at once), then
    /// any labelled leftover.
    pub(super) async fn cleanup(&mut self) -> Vec<String> {
        let removals = self
            .pods
            .drain()
            .filter_map(|(_, p)| p.ok().map(|p| p.sandbox_id))
            .chain(self.jobs.drain(..))
            .map(|id| {
                let mut cri = self.cri.clone();
                async move { cri.remove_sandbox(&id).await }
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
