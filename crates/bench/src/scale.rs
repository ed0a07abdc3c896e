//! `scale`: how the cost of `ironclad create` grows with the cluster: 1+1,
//! 3+2 (the shape of clusters/ha.yaml) and 3+7 (control planes + workers),
//! each created with the CLI until every control plane is a healthy voting
//! etcd member (as `ha`), then the total resident memory (VmRSS) of the
//! cluster's QEMU processes, and each node's once the cluster is idle (every
//! node has handed its boot memory back, see [`idle`]; the largest is the
//! figure, all of them a note). Each create's progress lines (the CLI stamps
//! them with the seconds since it started) become a per-node timeline:
//! QEMU started (`booting`), machined's boot phases as the host saw them,
//! the etcd join steps, ready; printed as notes of the report.

use crate::bench::{Bench, log};
use crate::lifecycle::{create_until_healthy, destroy};
use crate::{BenchError, Result};
use ironclad_contract::console::{Phase, parse_phase_line};
use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_host::cluster::state::ClusterState;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One cluster shape.
pub struct Shape {
    pub control_planes: u32,
    pub workers: u32,
    /// The figure of its create time.
    pub wall: &'static str,
    pub wall_what: &'static str,
    /// The figure of its total RSS.
    pub rss: &'static str,
    pub rss_what: &'static str,
    /// The figure of its largest node's RSS once idle ([`idle`]).
    pub node_rss: &'static str,
    pub node_rss_what: &'static str,
}

pub const SHAPES: [Shape; 3] = [
    Shape {
        control_planes: 1,
        workers: 1,
        wall: "create_1_1_wall",
        wall_what: "ironclad create of 1+1 nodes to etcd healthy (wall)",
        rss: "rss_1_1",
        rss_what: "total RSS of the 1+1 cluster's QEMU processes once created",
        node_rss: "rss_node_max_1_1",
        node_rss_what: "the largest QEMU RSS among the 1+1 cluster's nodes, idle",
    },
    Shape {
        control_planes: 3,
        workers: 2,
        wall: "create_3_2_wall",
        wall_what: "ironclad create of 3+2 nodes (clusters/ha.yaml's shape) to all etcd members healthy (wall)",
        rss: "rss_3_2",
        rss_what: "total RSS of the 3+2 cluster's QEMU processes once created",
        node_rss: "rss_node_max_3_2",
        node_rss_what: "the largest QEMU RSS among the 3+2 cluster's nodes, idle",
    },
    Shape {
        control_planes: 3,
        workers: 7,
        wall: "create_3_7_wall",
        wall_what: "ironclad create of 3+7 nodes to all etcd members healthy (wall)",
        rss: "rss_3_7",
        rss_what: "total RSS of the 3+7 cluster's QEMU processes once created",
        node_rss: "rss_node_max_3_7",
        node_rss_what: "the largest QEMU RSS among the 3+7 cluster's nodes, idle",
    },
];

impl Shape {
    pub fn name(&self) -> String {
        format!("scale-{}-{}", self.control_planes, self.workers)
    }

    /// The cluster file: the node sizes of clusters/ha.yaml.
    pub fn file(&self) -> String {
        format!(
            "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata:
  name: {}
spec:
  image: trixie
  network:
    cidr: 10.9.0.0/24
  controlPlanes:
    count: {}
    cpus: 1
    memory: 1GiB
    disk: 4GiB
  workers:
    count: {}
    cpus: 1
    memory: 768MiB
    disk: 4GiB
",
            self.name(),
            self.control_planes,
            self.workers
        )
    }
}

/// VmRSS of `pid` in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    ironclad_host::cluster::supervisor::process::vm_rss_kib(pid).map(|kib| kib as f64 / 1024.0)
}

/// Each node's QEMU RSS (MiB), in the order `cluster.json` lists them;
/// `None` when a node has no running process.
pub fn node_rss(paths: &ClusterPaths) -> Option<Vec<(String, f64)>> {
    let state = ClusterState::load(&paths.cluster_json()).ok()?;
    state
        .nodes
        .iter()
        .map(|n| Some((n.name.to_string(), n.pid.and_then(rss_mib)?)))
        .collect()
}

/// One stamped progress line of `ironclad create` (not on a terminal:
/// `HH:MM:SS.mmm [  12.3s] message`): the seconds and the message.
fn stamped(line: &str) -> Option<(f64, &str)> {
    let open = line.find('[')?;
    let close = open + line[open..].find("s] ")?;
    let secs = line[open + 1..close].trim().parse().ok()?;
    Some((secs, &line[close + 3..]))
}

/// Per node (in `nodes` order) its events: seconds since create started and
/// what happened, from the create's progress lines.
pub fn timeline(log: &str, nodes: &[String]) -> Vec<(String, Vec<(f64, String)>)> {
    let mut out: Vec<(String, Vec<(f64, String)>)> =
        nodes.iter().map(|n| (n.clone(), Vec::new())).collect();
    for (secs, msg) in log.lines().filter_map(stamped) {
        let Some((node, what)) = msg.split_once(": ") else {
            continue;
        };
        if let Some((_, events)) = out.iter_mut().find(|(n, _)| n == node) {
            events.push((secs, what.to_string()));
        }
    }
    out
}

/// The timeline as one line per node.
pub fn timeline_text(shape: &str, t: &[(String, Vec<(f64, String)>)]) -> Vec<String> {
    t.iter()
        .map(|(node, events)| {
            let mut line = format!("{shape} timeline {node}:");
            for (secs, what) in events {
                let _ = write!(line, " {secs:.1} {what};");
            }
            line.trim_end_matches(';').to_string()
        })
        .collect()
}

/// The least a cluster idles after create before its nodes' RSS is read.
pub const IDLE: Duration = Duration::from_secs(20);
/// Once every node has handed its boot memory back (machined's `boot caches
/// dropped` line), the time free page reporting gets to return the freed
/// pages to QEMU (the guest reports them after about 2 s).
pub const AFTER_HAND_BACK: Duration = Duration::from_secs(5);
/// The longest wait for every node to hand its boot memory back. machined
/// does that once its node is quiet, so a node still busy (a control plane
/// of a large cluster under TCG) can take a while.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(180);

/// How a wait for idle nodes ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Idled {
    /// Seconds waited.
    pub waited: f64,
    /// The nodes that had not handed their boot memory back by
    /// [`IDLE_DEADLINE`] (empty when all had).
    pub busy: Vec<String>,
    /// Why the cluster's state could not be read at the last look (then
    /// nobody is known to have handed back, and the wait ran to its
    /// deadline).
    pub unreadable: Option<String>,
}

impl Idled {
    /// A note for the report: how long it took, or who was still busy.
    pub fn note(&self, shape: &str) -> String {
        if let Some(why) = &self.unreadable {
            format!(
                "{shape}: RSS read {:.0} s after create; whether the nodes had handed their boot memory back is unknown: {why}",
                self.waited
            )
        } else if self.busy.is_empty() {
            format!(
                "{shape}: every node had handed its boot memory back; RSS read {:.0} s after create",
                self.waited
            )
        } else {
            format!(
                "{shape}: RSS read {:.0} s after create; boot memory not yet handed back by {}",
                self.waited,
                self.busy.join(", ")
            )
        }
    }
}

/// Whether a serial log has machined's `boot caches dropped` phase line.
pub fn has_handed_back(log: &str) -> bool {
    let dropped = Phase::BootCachesDropped.to_string();
    log.lines()
        .filter_map(parse_phase_line)
        .any(|p| p.phase == dropped)
}

/// The nodes of the cluster whose serial log has no `boot caches dropped`
/// line yet, or why the cluster's state cannot be read.
fn not_handed_back(paths: &ClusterPaths) -> std::result::Result<Vec<String>, String> {
    let state = ClusterState::load(&paths.cluster_json()).map_err(|e| e.to_string())?;
    Ok(state
        .nodes
        .iter()
        .filter(|n| {
            let log = std::fs::read(paths.serial_log(&n.name)).unwrap_or_default();
            !has_handed_back(&String::from_utf8_lossy(&log))
        })
        .map(|n| n.name.to_string())
        .collect())
}

/// Waits until the cluster is idle: every node has handed its boot memory
/// back and [`AFTER_HAND_BACK`] has passed, and at least [`IDLE`] since the
/// call; or [`IDLE_DEADLINE`] (a Ctrl-C ends the wait).
pub fn idle(b: &Bench, paths: &ClusterPaths) -> Result<Idled> {
    let start = Instant::now();
    let mut busy = Vec::new();
    let mut unreadable = None;
    let mut all_by: Option<Instant> = None;
    let mut next_look = start;
    loop {
        b.check_interrupt()?;
        let now = Instant::now();
        if all_by.is_none() && now >= next_look {
            match not_handed_back(paths) {
                Ok(nodes) => {
                    unreadable = None;
                    busy = nodes;
                    if busy.is_empty() {
                        all_by = Some(now);
                    }
                }
                Err(why) => unreadable = Some(why),
            }
            next_look = now + Duration::from_secs(1);
        }
        let done = match all_by {
            Some(t) => now >= (t + AFTER_HAND_BACK).max(start + IDLE),
            None => now >= start + IDLE_DEADLINE,
        };
        if done {
            return Ok(Idled {
                waited: start.elapsed().as_secs_f64(),
                busy,
                unreadable,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn bench_scale(b: &mut Bench) -> Result<()> {
    for shape in &SHAPES {
        let file = b.scratch(&format!("{}.yaml", shape.name()));
        std::fs::write(&file, shape.file())
            .map_err(|e| BenchError::Failed(format!("{}: {e}", file.display())))?;
        let cluster = ironclad_host::spec::parse_cluster(&shape.file(), "scale.yaml")
            .map_err(|e| BenchError::Failed(format!("{}: {e}", shape.name())))?;
        let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.name.to_string()).collect();
        for i in 1..=b.opts.runs {
            b.check_interrupt()?;
            log!(
                "scale {}+{} run {i}/{} (load {:.2})",
                shape.control_planes,
                shape.workers,
                b.opts.runs,
                crate::bench::loadavg1()
            );
            let r = create_until_healthy(b, &file, &cluster.name, shape.control_planes as usize);
            let paths = ClusterPaths::new(b.state.path(), &cluster.name);
            match r {
                Ok(Ok(w)) => {
                    b.sample("scale", shape.wall, "s", w, shape.wall_what);
                    let gone = || format!("run {i}: a node's QEMU is not running");
                    match node_rss(&paths) {
                        Some(nodes) => {
                            let total = nodes.iter().map(|(_, m)| m).sum();
                            b.sample("scale", shape.rss, "MiB", total, shape.rss_what);
                        }
                        None => b.failed("scale", shape.rss, "MiB", gone()),
                    }
                    let idled = idle(b, &paths)?;
                    b.note(idled.note(&format!(
                        "{}+{} run {i}",
                        shape.control_planes, shape.workers
                    )));
                    match node_rss(&paths) {
                        Some(nodes) => {
                            let max = nodes.iter().map(|(_, m)| *m).fold(0.0, f64::max);
                            b.sample("scale", shape.node_rss, "MiB", max, shape.node_rss_what);
                            if i == 1 {
                                let each: Vec<String> =
                                    nodes.iter().map(|(n, m)| format!("{n} {m:.0}")).collect();
                                b.note(format!(
                                    "{}+{} idle RSS MiB: {}",
                                    shape.control_planes,
                                    shape.workers,
                                    each.join(", ")
                                ));
                            }
                        }
                        None => b.failed("scale", shape.node_rss, "MiB", gone()),
                    }
                    if i == 1 {
                        let log = b.scratch(&format!("create-{}.log", cluster.name));
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        let shape_name = format!("{}+{}", shape.control_planes, shape.workers);
                        for l in timeline_text(&shape_name, &timeline(&text, &nodes)) {
                            b.note(l);
                        }
                    }
                }
                Ok(Err(e)) => b.failed("scale", shape.wall, "s", format!("run {i}: {e}")),
                Err(e) => {
                    destroy(b, &cluster.name);
                    return Err(e);
                }
            }
            destroy(b, &cluster.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_has_handed_back_only_with_its_phase_line() {
        let booted = "machined: ready t=2.611\nmachined: etcd healthy t=4.2\n";
        assert!(!has_handed_back(booted));
        assert!(has_handed_back(&format!(
            "{booted}[   20.1] random: x\nmachined: boot caches dropped t=21.502\n"
        )));
        // A later hand-back's message is not the boot's phase line.
        assert!(!has_handed_back(
            "machined: page cache handed back: 46 MiB before, 20 MiB after\n"
        ));
        assert!(!has_handed_back("machined: boot caches dropped\n"));
    }

    #[test]
    fn the_idle_note_names_the_nodes_still_busy() {
        let all = Idled {
            waited: 27.4,
            busy: Vec::new(),
            unreadable: None,
        };
        assert_eq!(
            all.note("3+7 run 1"),
            "3+7 run 1: every node had handed its boot memory back; RSS read 27 s after create"
        );
        let some = Idled {
            waited: 180.2,
            busy: vec!["s-cp-1".into(), "s-cp-2".into()],
            unreadable: None,
        };
        assert_eq!(
            some.note("3+7 run 1"),
            "3+7 run 1: RSS read 180 s after create; boot memory not yet handed back by s-cp-1, s-cp-2"
        );
        let unknown = Idled {
            waited: 180.0,
            busy: Vec::new(),
            unreadable: Some("no such file".into()),
        };
        assert_eq!(
            unknown.note("dev run 2"),
            "dev run 2: RSS read 180 s after create; whether the nodes had handed their boot memory back is unknown: no such file"
        );
    }

    /// A cluster whose state cannot be read is not taken as idle: the wait
    /// says why, and names nobody as having handed back.
    #[test]
    fn an_unreadable_cluster_state_is_reported_not_taken_as_idle() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::new(dir.path(), &"gone".parse().unwrap());
        let why = not_handed_back(&paths).unwrap_err();
        assert!(why.contains("cluster.json"), "{why}");
    }

    #[test]
    fn shapes_parse_with_their_node_counts() {
        for s in &SHAPES {
            let c = ironclad_host::spec::parse_cluster(&s.file(), "s.yaml").unwrap();
            assert_eq!(c.nodes.len() as u32, s.control_planes + s.workers);
            assert_eq!(c.name.as_str(), s.name());
        }
    }

    #[test]
    fn the_timeline_follows_each_node() {
        let log = "03:00:00.000 [   0.1s] image abc (cached)\n\
                   03:00:01.000 [   1.2s] n-cp-1: booting\n\
                   03:00:01.100 [   1.3s] n-worker-1: booting\n\
                   03:00:20.000 [  20.5s] n-cp-1: apid t=9.1\n\
                   03:00:21.000 [  21.0s] n-cp-1: etcd bootstrapped\n\
                   03:00:30.000 [  30.0s] n-cp-1: ready after 28.8 s\n\
                   stray line: without a stamp\n";
        let nodes = vec!["n-cp-1".to_string(), "n-worker-1".to_string()];
        let t = timeline(log, &nodes);
        assert_eq!(t[0].1.len(), 4);
        assert_eq!(t[0].1[1], (20.5, "apid t=9.1".to_string()));
        assert_eq!(t[1].1, vec![(1.3, "booting".to_string())]);
        let text = timeline_text("1+1", &t);
        assert_eq!(text[1], "1+1 timeline n-worker-1: 1.3 booting".to_string());
        assert!(text[0].ends_with("30.0 ready after 28.8 s"), "{}", text[0]);
    }
}
