//! Readiness: the conditions a node must meet, the wait for them, and the etcd
//! converge that runs beside it; `up` boots nodes and does both.

use super::*;

/// What a node has to show before it counts as ready. The wait checks every
/// condition of every node; more conditions (the node API's health over mTLS)
/// slot in here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyCondition {
    /// machined printed [`READY_LINE`] on the serial console of the current boot.
    SerialReady,
    /// The node API answers `health` over mTLS through the host port (the
    /// admin client of `client.yaml`): the host can manage the node.
    ApiHealth,
}

impl ReadyCondition {
    pub(super) fn met(self, engine: &dyn Engine, paths: &ClusterPaths, node: &NodeRecord) -> bool {
        match self {
            ReadyCondition::SerialReady => {
                serial_log_has(&engine.console_log(paths, &node.name), READY_LINE)
            }
            ReadyCondition::ApiHealth => api_answers(paths, &node.name),
        }
    }
}

/// The conditions `create` and `start` wait for, checked in this order.
pub const DEFAULT_READY: &[ReadyCondition] =
    &[ReadyCondition::SerialReady, ReadyCondition::ApiHealth];

pub(super) fn api_answers(paths: &ClusterPaths, node: &NodeName) -> bool {
    let Ok(client) = crate::client::NodeClient::from_client_config(&paths.client_yaml(), node)
    else {
        return false;
    };
    crate::runtime::block_on(async {
        tokio::time::timeout(Duration::from_secs(5), client.health())
            .await
            .is_ok_and(|r| r.is_ok())
    })
    .unwrap_or(false)
}

pub(super) fn serial_log_has(serial_log: &Path, needle: &str) -> bool {
    std::fs::read(serial_log)
        .map(|b| String::from_utf8_lossy(&b).contains(needle))
        .unwrap_or(false)
}

/// The last `machined: <phase>` line of a node's serial log (the current
/// boot's, [`Engine::console_log`]), with control characters made visible
/// (it is printed).
pub fn last_phase(serial_log: &Path) -> Option<String> {
    let bytes = std::fs::read(serial_log).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().rev().find_map(|l| {
        l.find(PHASE_PREFIX)
            .map(|i| crate::cluster::console::escape_str(l[i + PHASE_PREFIX.len()..].trim()))
    })
}

/// Boots `only` (or every node), waits for them to be ready, converges.
pub(super) fn up(
    engine: &dyn Engine,
    paths: &ClusterPaths,
    state: &ClusterState,
    only: Option<&NodeName>,
    started: Instant,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<UpReport> {
    progress.event(&Event::Stage(Stage::Supervisor, None));
    engine.launch(paths, progress)?;
    let names: Vec<NodeName> = state
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|o| *o == n.name))
        .map(|n| n.name.clone())
        .collect();
    progress.event(&Event::Stage(Stage::Boot, None));
    // Control planes first, the workers once every control plane is ready:
    // under TCG the nodes share the host's cores, and the etcd bootstrap and
    // joins, the long pole of a create, need only the control planes. The
    // workers boot while etcd converges. A single node, or a cluster without
    // both roles, boots at once.
    let is_cp = |n: &NodeName| {
        state
            .node(n)
            .is_some_and(|r| r.role == crate::spec::Role::ControlPlane)
    };
    let (first, later): (Vec<NodeName>, Vec<NodeName>) =
        if only.is_none() && names.iter().any(&is_cp) {
            names.iter().cloned().partition(|n| is_cp(n))
        } else {
            (names.clone(), Vec::new())
        };
    for n in &first {
        engine.start_node(paths, n)?;
        progress.event(&Event::Node(n.as_str(), NodeStep::Booting));
    }
    // etcd bootstrap and join start at once, in parallel with the readiness
    // wait: they only need the node APIs, which answer before `ready`. A
    // single node started again needs none of it: a control plane's etcd
    // starts by itself from the data on its disk.
    let converging = only
        .is_none()
        .then(|| start_converge(paths, listening_hint(engine, paths, state)));
    let deadline = Instant::now() + timeout;
    let booted = Instant::now();
    let mut nodes = wait_ready(
        engine,
        paths,
        &first,
        DEFAULT_READY,
        deadline,
        converging.as_ref(),
        progress,
    )?;
    if !later.is_empty() {
        let offset = booted.elapsed().as_secs_f64();
        for n in &later {
            engine.start_node(paths, n)?;
            progress.event(&Event::Node(n.as_str(), NodeStep::Booting));
        }
        let workers = wait_ready(
            engine,
            paths,
            &later,
            DEFAULT_READY,
            deadline,
            converging.as_ref(),
            progress,
        )?;
        nodes.extend(workers.into_iter().map(|(n, s)| (n, s + offset)));
    }
    if let Some(c) = converging {
        progress.event(&Event::Stage(Stage::Etcd, None));
        finish_converge(c, progress)?;
    }
    progress.event(&Event::Stage(Stage::Ready, None));
    Ok(UpReport {
        cluster: state.name.clone(),
        dir: paths.dir().to_path_buf(),
        accel: state.accel,
        seconds: started.elapsed().as_secs_f64(),
        nodes,
    })
}

/// The cluster-level setup through the node APIs, running on its own thread:
/// etcd bootstrap on the first control plane and the join (learner, promote)
/// of the others ([`crate::cluster::etcd::converge`]). Its steps (node, step)
/// arrive on the channel.
pub struct Converging {
    steps: std::sync::mpsc::Receiver<(String, String)>,
    task: std::thread::JoinHandle<std::result::Result<usize, String>>,
}

/// Whether a control plane's API listens, read on its console in this boot
/// (the log is the current QEMU's, [`Engine::console_log`]): converge tries a
/// node API only then. A node not in `state` is tried at once.
pub fn listening_hint(
    engine: &dyn Engine,
    paths: &ClusterPaths,
    state: &ClusterState,
) -> crate::cluster::etcd::ListeningHint {
    let logs: std::collections::HashMap<String, PathBuf> = state
        .nodes
        .iter()
        .filter(|n| n.role == crate::spec::Role::ControlPlane)
        .map(|n| (n.name.to_string(), engine.console_log(paths, &n.name)))
        .collect();
    crate::cluster::etcd::ListeningHint::new(move |node| {
        logs.get(node)
            .is_none_or(|log| serial_log_has(log, API_LISTENING_LINE))
    })
}

/// Starts [`Converging`] for the cluster at `paths`.
pub fn start_converge(
    paths: &ClusterPaths,
    listening: crate::cluster::etcd::ListeningHint,
) -> Converging {
    let client_yaml = paths.client_yaml();
    let (tx, steps) = std::sync::mpsc::channel::<(String, String)>();
    let task = std::thread::spawn(move || {
        let mut report = |node: &str, step: &crate::cluster::etcd::Step| {
            let _ = tx.send((node.to_string(), step.to_string()));
        };
        let opts = crate::cluster::etcd::ConvergeOptions {
            listening: Some(listening),
            ..Default::default()
        };
        crate::cluster::etcd::converge_blocking(&client_yaml, opts, &mut report)
            .map(|m| m.members.len())
            .map_err(|e| e.to_string())
    });
    Converging { steps, task }
}

impl Converging {
    /// Reports the steps done so far, without waiting.
    pub fn report_steps(&self, progress: &dyn Progress) {
        while let Ok((node, step)) = self.steps.try_recv() {
            progress.event(&Event::Node(&node, NodeStep::Etcd(&step)));
        }
    }
}

/// Prints the progress of `c` and waits for its end.
pub fn finish_converge(c: Converging, progress: &dyn Progress) -> Result<()> {
    loop {
        if crate::interrupt::requested() {
            return Err(LifecycleError::Interrupted);
        }
        match c.steps.recv_timeout(Duration::from_millis(200)) {
            Ok((node, step)) => progress.event(&Event::Node(&node, NodeStep::Etcd(&step))),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    match c.task.join() {
        Ok(Ok(members)) => {
            progress.event(&Event::Step(&format!(
                "etcd: {members} voting members, healthy"
            )));
            Ok(())
        }
        Ok(Err(e)) => Err(LifecycleError::Etcd(e)),
        Err(_) => Err(LifecycleError::EtcdPanicked),
    }
}

/// Waits until every node of `names` meets every condition, printing each new
/// boot phase, and the steps of `converging` as they are done (the etcd join
/// runs beside the wait). Fails early when a node's VM ends or the engine's
/// process dies. Returns per node the seconds from the call to ready.
pub fn wait_ready(
    engine: &dyn Engine,
    paths: &ClusterPaths,
    names: &[NodeName],
    conditions: &[ReadyCondition],
    deadline: Instant,
    converging: Option<&Converging>,
    progress: &dyn Progress,
) -> Result<Vec<(NodeName, f64)>> {
    let t0 = Instant::now();
    let mut ready: Vec<(NodeName, f64)> = Vec::new();
    let mut phases: std::collections::HashMap<NodeName, String> = Default::default();
    loop {
        if crate::interrupt::requested() {
            return Err(LifecycleError::Interrupted);
        }
        let state = ClusterState::load(&paths.cluster_json())?;
        if engine.running(paths).is_none() {
            return Err(LifecycleError::SupervisorGone {
                log: engine.log(paths),
                tail: tail(&engine.log(paths), 10),
            });
        }
        for name in names {
            if ready.iter().any(|(n, _)| n == name) {
                continue;
            }
            let Some(node) = state.node(name) else {
                return Err(LifecycleError::NodeVanished(name.clone()));
            };
            if !node.state.has_process() {
                return Err(LifecycleError::NodeDown {
                    node: name.clone(),
                    state: node.state,
                    exit: node
                        .last_exit
                        .clone()
                        .unwrap_or_else(|| "no exit status".into()),
                    serial_log: engine.console_log(paths, name),
                    serial_tail: tail(&engine.console_log(paths, name), 10),
                    qemu_tail: tail(&engine.vmm_log(paths, name), 5),
                });
            }
            if let Some(p) = last_phase(&engine.console_log(paths, name))
                && phases.get(name) != Some(&p)
            {
                progress.event(&Event::Node(name.as_str(), NodeStep::Phase(&p)));
                phases.insert(name.clone(), p);
            }
            if conditions.iter().all(|c| c.met(engine, paths, node)) {
                let secs = t0.elapsed().as_secs_f64();
                progress.event(&Event::Node(
                    name.as_str(),
                    NodeStep::Ready { seconds: secs },
                ));
                ready.push((name.clone(), secs));
            }
        }
        if let Some(c) = converging {
            c.report_steps(progress);
        }
        if ready.len() == names.len() {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            let waiting: Vec<&NodeName> = names
                .iter()
                .filter(|n| !ready.iter().any(|(r, _)| r == *n))
                .collect();
            return Err(LifecycleError::NotReady {
                waiting: waiting.into_iter().cloned().collect(),
                logs: paths.logs_dir(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
