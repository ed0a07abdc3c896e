//! `dev`: what a developer waits for with clusters/dev.yaml (one control
//! plane and one worker, every runtime on, gVisor included): `ironclad
//! create` with the image cached until etcd is healthy, each node's QEMU
//! resident memory once the cluster is idle ([`idle`](crate::scale::idle)), and
//! `ironclad matrix` of the file's checks. The largest node's idle RSS is the
//! figure with a target; every node's is a note.

use crate::bench::{Bench, log};
use crate::lifecycle::{create_until_healthy, destroy};
use crate::scale::node_rss;
use crate::vm::round3;
use crate::{BenchError, Result};
use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_host::spec::ClusterName;
use std::time::Instant;

const CREATE: &str = "ironclad create -f clusters/dev.yaml, image cached, to etcd healthy (wall)";
const RSS: &str = "the largest idle QEMU RSS among the dev cluster's nodes";
const MATRIX: &str = "ironclad matrix on the dev cluster, its file's checks (wall)";

pub fn bench_dev(b: &mut Bench) -> Result<()> {
    let file = b.repo.join("clusters/dev.yaml");
    let cluster = ironclad_host::spec::parse_cluster_file(&file)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", file.display())))?;
    for i in 1..=b.opts.runs {
        b.check_interrupt()?;
        log!(
            "dev run {i}/{} (load {:.2})",
            b.opts.runs,
            crate::bench::loadavg1()
        );
        match create_until_healthy(b, &file, &cluster.name, 1) {
            Ok(Ok(w)) => b.sample("dev", "create_wall", "s", w, CREATE),
            Ok(Err(e)) => {
                b.failed("dev", "create_wall", "s", format!("run {i}: {e}"));
                destroy(b, &cluster.name);
                continue;
            }
            Err(e) => {
                destroy(b, &cluster.name);
                return Err(e);
            }
        }
        let r = idle_then_matrix(b, &cluster.name, i);
        destroy(b, &cluster.name);
        r?;
    }
    Ok(())
}

fn idle_then_matrix(b: &mut Bench, name: &ClusterName, i: u32) -> Result<()> {
    let paths = ClusterPaths::new(b.state.path(), name);
    let idled = crate::scale::idle(b, &paths)?;
    b.note(idled.note(&format!("dev run {i}")));
    match node_rss(&paths) {
        Some(nodes) => {
            let max = nodes.iter().map(|(_, m)| *m).fold(0.0, f64::max);
            b.sample("dev", "rss_node_max", "MiB", max, RSS);
            let each: Vec<String> = nodes.iter().map(|(n, m)| format!("{n} {m:.1}")).collect();
            b.note(format!("dev run {i}: idle RSS MiB: {}", each.join(", ")));
        }
        None => b.failed(
            "dev",
            "rss_node_max",
            "MiB",
            format!("run {i}: a node's QEMU is not running"),
        ),
    }
    let log = b.scratch(&format!("matrix-{name}-{i}.log"));
    let mut cmd = std::process::Command::new(&b.ironclad);
    cmd.arg("matrix")
        .arg(name.as_str())
        .env("IRONCLAD_STATE_DIR", b.state.path());
    let t0 = Instant::now();
    match crate::boot::command(&mut cmd, "ironclad matrix", &log) {
        Ok(()) => {
            b.sample(
                "dev",
                "matrix_wall",
                "s",
                round3(t0.elapsed().as_secs_f64()),
                MATRIX,
            );
            // Where the nodes' time went (the table's per-node lines).
            let table = std::fs::read_to_string(&log).unwrap_or_default();
            for line in table.lines().filter(|l| l.contains(": slowest steps: ")) {
                b.note(format!("dev run {i}: {line}"));
            }
        }
        Err(BenchError::Failed(msg)) => b.failed(
            "dev",
            "matrix_wall",
            "s",
            format!("run {i}: {msg} (after {:.1} s)", t0.elapsed().as_secs_f64()),
        ),
        Err(e) => return Err(e),
    }
    Ok(())
}
