//! Whole-cluster snapshots on the QEMU engine: internal qcow2 snapshots kept
//! inside each node's state disk (`disks/NODE.qcow2`), so they live as long
//! as the disk (across `stop`/`start`) and go with it (`destroy`).
//!
//! Running nodes are driven through their QMP sockets, every step on all of
//! them at once: `stop` pauses each node's vCPUs (the pauses land within a
//! few milliseconds of each other, well inside one etcd heartbeat), then
//! `savevm`/`loadvm` saves or loads memory, device state and the disk on
//! each, then `cont` resumes them all. QEMU 7.2 offers these three as
//! human-monitor lines (QMP has them only as jobs, `snapshot-save` and
//! friends, which need block node names); a monitor line blocks QEMU's main
//! loop until it is done, so it is given [`LIVE_TIMEOUT`]. QEMU includes
//! only writable disks: the read-only squashfs root is left out (it cannot
//! change), the memory goes into the state disk.
//!
//! Stopped nodes have no QEMU holding their disk: `qemu-img snapshot`
//! creates, applies or deletes the snapshot there (disks only).
//!
//! What this module does not decide: which nodes, whether the cluster runs,
//! names, metadata and the checks before an operation; that is
//! [`crate::cluster::lifecycle::snapshot`]'s.

use super::Result;
use crate::cluster::lifecycle::{LifecycleError, Progress, run_tool};
use crate::cluster::paths::ClusterPaths;
use crate::qemu::Qmp;
use crate::spec::NodeName;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// How long one node's `savevm` or `loadvm` may take (memory of a dev
/// node is about 1 GiB; its written pages take a few seconds under TCG).
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long connecting to a node's QMP socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a snapshot operation is about.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotTarget<'a> {
    /// The snapshot's tag inside each disk (a validated snapshot name).
    pub tag: &'a str,
    /// The nodes, all running (`live`) or all stopped.
    pub nodes: &'a [NodeName],
    /// Whether the nodes run: their memory is part of the snapshot.
    pub live: bool,
}

/// One snapshot held by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    pub tag: String,
    /// Bytes of saved memory and device state (0: disk only).
    pub vm_state_size: u64,
}

fn qemu_failed(node: &NodeName, what: &str, e: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::ToolFailed {
        tool: crate::cluster::supervisor::QEMU,
        what: format!("{what} on node {node}"),
        stderr: e.to_string(),
    }
}

/// Runs `qemu-img snapshot FLAG TAG DISK`.
fn qemu_img_snapshot(flag: &str, tag: &str, disk: &Path) -> Result<()> {
    run_tool(
        "qemu-img",
        std::process::Command::new("qemu-img")
            .args(["snapshot", flag, tag])
            .arg(disk),
        || format!("snapshot {flag} {tag} {}", disk.display()),
    )?;
    Ok(())
}

/// The snapshots in the qcow2 `disk`, read with `qemu-img info -U` (shared:
/// a running QEMU may hold the disk; the snapshot table changes only in
/// the operations of this module, which the lifecycle runs one at a time).
pub fn list(disk: &Path) -> Result<Vec<NodeSnapshot>> {
    let what = || format!("info {}", disk.display());
    let out = run_tool(
        "qemu-img",
        std::process::Command::new("qemu-img")
            .args(["info", "--output=json", "-U"])
            .arg(disk),
        what,
    )?;
    parse_info(&out.stdout).map_err(|e| LifecycleError::ToolFailed {
        tool: "qemu-img",
        what: what(),
        stderr: format!("unreadable answer: {e}"),
    })
}

/// The snapshots in `qemu-img info --output=json`'s answer.
fn parse_info(json: &[u8]) -> std::result::Result<Vec<NodeSnapshot>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(default)]
        snapshots: Vec<Snap>,
    }
    #[derive(serde::Deserialize)]
    struct Snap {
        name: String,
        #[serde(rename = "vm-state-size", default)]
        vm_state_size: u64,
    }
    let info: Info = serde_json::from_slice(json)?;
    Ok(info
        .snapshots
        .into_iter()
        .map(|s| NodeSnapshot {
            tag: s.name,
            vm_state_size: s.vm_state_size,
        })
        .collect())
}

/// One QMP session per node, opened at once.
async fn sessions(paths: &ClusterPaths, nodes: &[NodeName]) -> Result<Vec<Qmp>> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let sockets: Vec<_> = nodes.iter().map(|n| paths.qmp_socket(n)).collect();
    let opened = futures::future::join_all(sockets.iter().map(|s| Qmp::connect(s, deadline))).await;
    let mut out = Vec::new();
    for (node, q) in nodes.iter().zip(opened) {
        out.push(q.map_err(|e| qemu_failed(node, "QMP connect", e))?);
    }
    Ok(out)
}

/// Pauses every node (all `stop`s sent at once); on a failure resumes the
/// ones that paused. Reports how far apart the pauses were.
async fn pause_all(nodes: &[NodeName], qmps: &[Qmp], progress: &dyn Progress) -> Result<()> {
    let start = Instant::now();
    let paused = futures::future::join_all(qmps.iter().map(|q| async {
        let r = q.stop().await;
        (r, start.elapsed())
    }))
    .await;
    let spread = paused.iter().map(|(_, t)| *t).max().unwrap_or_default();
    let mut first_error = None;
    for (node, (r, _)) in nodes.iter().zip(&paused) {
        if let Err(e) = r {
            first_error.get_or_insert_with(|| qemu_failed(node, "stop (pause)", e));
        }
    }
    if let Some(e) = first_error {
        resume_all(nodes, qmps, progress).await;
        return Err(e);
    }
    progress.line(&format!(
        "{} nodes paused within {} ms",
        nodes.len(),
        spread.as_millis()
    ));
    Ok(())
}

/// Resumes every node (all `cont`s at once); a node that cannot be resumed
/// is said, not fatal (the others must run).
async fn resume_all(nodes: &[NodeName], qmps: &[Qmp], progress: &dyn Progress) -> bool {
    let resumed = futures::future::join_all(qmps.iter().map(|q| q.cont())).await;
    let mut all = true;
    for (node, r) in nodes.iter().zip(resumed) {
        if let Err(e) = r {
            all = false;
            progress.line(&format!("{node}: cannot resume: {e}"));
        }
    }
    if all {
        progress.line(&format!("{} nodes resumed", nodes.len()));
    }
    all
}

/// `line` (a monitor line naming the tag) on every node at once; each
/// node's outcome is reported as it comes.
async fn on_each(
    nodes: &[NodeName],
    qmps: &[Qmp],
    line: &str,
    done: &str,
    progress: &dyn Progress,
) -> Vec<Result<()>> {
    let verb = line.split(' ').next().unwrap_or(line);
    futures::future::join_all(nodes.iter().zip(qmps).map(|(node, q)| async move {
        let start = Instant::now();
        match q.human(line, LIVE_TIMEOUT).await {
            Ok(_) => {
                progress.line(&format!(
                    "{node}: {done} in {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            Err(e) => Err(qemu_failed(node, verb, e)),
        }
    }))
    .await
}

fn first_err(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    crate::runtime::block_on(f)?
}

pub(super) fn save(
    paths: &ClusterPaths,
    t: &SnapshotTarget<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    if !t.live {
        let mut made = Vec::new();
        for node in t.nodes {
            if let Err(e) = qemu_img_snapshot("-c", t.tag, &paths.disk(node)) {
                for n in made {
                    let _ = qemu_img_snapshot("-d", t.tag, &paths.disk(n));
                }
                return Err(e);
            }
            progress.line(&format!("{node}: disk saved"));
            made.push(node);
        }
        return Ok(());
    }
    block_on(async {
        let qmps = sessions(paths, t.nodes).await?;
        pause_all(t.nodes, &qmps, progress).await?;
        let saved = on_each(
            t.nodes,
            &qmps,
            &format!("savevm {}", t.tag),
            "memory and disk saved",
            progress,
        )
        .await;
        let failed = saved.iter().any(Result::is_err);
        if failed {
            // No half snapshot: the nodes that saved drop theirs.
            let kept: Vec<(NodeName, &Qmp)> = t
                .nodes
                .iter()
                .zip(&qmps)
                .zip(&saved)
                .filter(|(_, r)| r.is_ok())
                .map(|((n, q), _)| (n.clone(), q))
                .collect();
            for (_, q) in kept {
                let _ = q.human(&format!("delvm {}", t.tag), LIVE_TIMEOUT).await;
            }
        }
        resume_all(t.nodes, &qmps, progress).await;
        first_err(saved)
    })
}

pub(super) fn restore(
    paths: &ClusterPaths,
    t: &SnapshotTarget<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    if !t.live {
        for node in t.nodes {
            qemu_img_snapshot("-a", t.tag, &paths.disk(node))?;
            progress.line(&format!("{node}: disk restored"));
        }
        return Ok(());
    }
    block_on(async {
        let qmps = sessions(paths, t.nodes).await?;
        pause_all(t.nodes, &qmps, progress).await?;
        let loaded = on_each(
            t.nodes,
            &qmps,
            &format!("loadvm {}", t.tag),
            "memory and disk loaded",
            progress,
        )
        .await;
        // A node whose load failed is resumed too: QEMU checks that the
        // snapshot is there before it touches anything, so such a node is
        // still where it was; the error says which it was.
        resume_all(t.nodes, &qmps, progress).await;
        first_err(loaded)
    })
}

pub(super) fn delete(
    paths: &ClusterPaths,
    t: &SnapshotTarget<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    if !t.live {
        for node in t.nodes {
            let disk = paths.disk(node);
            if list(&disk)?.iter().any(|s| s.tag == t.tag) {
                qemu_img_snapshot("-d", t.tag, &disk)?;
            }
            progress.line(&format!("{node}: snapshot deleted"));
        }
        return Ok(());
    }
    block_on(async {
        let qmps = sessions(paths, t.nodes).await?;
        // `delvm` of a tag a node lacks is not an error to QEMU.
        let deleted = on_each(
            t.nodes,
            &qmps,
            &format!("delvm {}", t.tag),
            "snapshot deleted",
            progress,
        )
        .await;
        first_err(deleted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_img_info_snapshots_are_read() {
        let json = br#"{"virtual-size": 4294967296, "filename": "d.qcow2", "format": "qcow2",
            "snapshots": [{"icount": 0, "vm-clock-nsec": 1, "name": "before", "date-sec": 1,
            "date-nsec": 2, "vm-clock-sec": 3, "id": "1", "vm-state-size": 123456}]}"#;
        assert_eq!(
            parse_info(json).unwrap(),
            [NodeSnapshot {
                tag: "before".into(),
                vm_state_size: 123456
            }]
        );
        assert!(parse_info(br#"{"format": "qcow2"}"#).unwrap().is_empty());
        assert!(parse_info(b"not json").is_err());
    }

    /// A real qcow2 disk: a disk-only snapshot is made, listed, applied and
    /// deleted through `qemu-img`, and a half-failed save leaves nothing.
    #[test]
    fn stopped_disks_take_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::at(dir.path());
        std::fs::create_dir_all(paths.disks_dir()).unwrap();
        let a: NodeName = "a-1".parse().unwrap();
        let b: NodeName = "b-1".parse().unwrap();
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(paths.disk(&a))
            .arg("16M")
            .status()
            .unwrap();
        assert!(st.success());
        struct Quiet;
        impl Progress for Quiet {
            fn line(&self, _: &str) {}
        }
        let nodes = [a.clone()];
        let t = SnapshotTarget {
            tag: "s1",
            nodes: &nodes,
            live: false,
        };
        save(&paths, &t, &Quiet).unwrap();
        let held = list(&paths.disk(&a)).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].tag, "s1");
        assert_eq!(held[0].vm_state_size, 0);
        restore(&paths, &t, &Quiet).unwrap();
        delete(&paths, &t, &Quiet).unwrap();
        assert!(list(&paths.disk(&a)).unwrap().is_empty());
        // b has no disk: the save fails there and a's snapshot is undone.
        let both = [a.clone(), b];
        let t2 = SnapshotTarget {
            tag: "s2",
            nodes: &both,
            live: false,
        };
        let err = save(&paths, &t2, &Quiet).unwrap_err();
        assert!(err.to_string().contains("qemu-img"), "{err}");
        assert!(list(&paths.disk(&a)).unwrap().is_empty());
    }
}
