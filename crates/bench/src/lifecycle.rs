//! `etcd` and `ha`: clusters made with `ironclad create` (the CLI, timed as a
//! user runs it) in a scratch state root, until every control plane is a
//! voting etcd member whose etcd service runs, asked through the library's
//! node API client; then destroyed with the library. The guest-uptime figure
//! is machined's `etcd healthy` phase line in the node's serial log.

use crate::bench::{Bench, log};
use crate::vm::round3;
use crate::{BenchError, Result};
use ironclad_contract::api::ServiceState;
use ironclad_contract::console::parse_phase_line;
use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_host::spec::{ClusterName, NodeName};
use std::path::Path;
use std::time::{Duration, Instant};

const SINGLE: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata:
  name: bench-single
spec:
  image: trixie
  network:
    cidr: 10.7.0.0/24
  controlPlanes:
    count: 1
    cpus: 2
    memory: 1GiB
  workers:
    count: 0
";

/// How long `create` and then etcd health may take.
const DEADLINE: Duration = Duration::from_secs(900);
/// One node API call.
const CALL: Duration = Duration::from_secs(5);

/// Why the lifecycle figures cannot be taken with this ironclad, if so.
fn lifecycle_missing(b: &Bench) -> Option<String> {
    let ok = std::process::Command::new(&b.ironclad)
        .args(["create", "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "`ironclad create` does not exist in this binary".to_string())
}

/// Whether at least `n` voting members are listed and each one's etcd
/// service runs.
async fn etcd_all_healthy(client_yaml: &Path, n: usize) -> bool {
    let Ok(cps) = ironclad_host::cluster::etcd::control_planes(client_yaml) else {
        return false;
    };
    let mut members = None;
    for cp in &cps {
        if let Ok(Ok(m)) = tokio::time::timeout(CALL, cp.client.etcd_members()).await {
            members = Some(m);
            break;
        }
    }
    let Some(members) = members else {
        return false;
    };
    let voting: Vec<&str> = members
        .members
        .iter()
        .filter(|m| !m.is_learner && !m.name.is_empty())
        .map(|m| m.name.as_str())
        .collect();
    if voting.len() < n {
        return false;
    }
    for name in voting {
        let Some(cp) = cps.iter().find(|c| c.name == name) else {
            return false;
        };
        let running = matches!(
            tokio::time::timeout(CALL, cp.client.services()).await,
            Ok(Ok(list)) if list.services.iter().any(|s| s.name == "etcd" && s.state == ServiceState::Running)
        );
        if !running {
            return false;
        }
    }
    true
}

/// `ironclad create -f file` until `n` etcd members are healthy: wall seconds.
pub fn create_until_healthy(
    b: &mut Bench,
    file: &Path,
    name: &ClusterName,
    n: usize,
) -> Result<Result<f64, String>> {
    let log = b.scratch(&format!("create-{name}.log"));
    let help = std::process::Command::new(&b.ironclad)
        .args(["create", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut cmd = std::process::Command::new(&b.ironclad);
    cmd.arg("create").arg("-f").arg(file);
    if help.contains("--accel") {
        cmd.args(["--accel", b.accel.qemu_name()]);
    }
    if help.contains("--timeout") {
        cmd.args(["--timeout", "900"]);
    }
    cmd.env("IRONCLAD_STATE_DIR", b.state.path());
    b.clusters.push(name.clone());
    let t0 = Instant::now();
    if let Err(e) = crate::boot::command(&mut cmd, "ironclad create", &log) {
        return match e {
            BenchError::Failed(msg) => {
                eprintln!("{msg}");
                Ok(Err("create failed".into()))
            }
            e => Err(e),
        };
    }
    let client_yaml = ClusterPaths::new(b.state.path(), name).client_yaml();
    let healthy = ironclad_host::runtime::block_on(async {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if etcd_all_healthy(&client_yaml, n).await {
                return Ok(true);
            }
            if ironclad_host::interrupt::requested() {
                return Err(BenchError::Interrupted);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .map_err(|e| BenchError::Failed(format!("the async runtime: {e}")))??;
    if !healthy {
        log!("timeout waiting for {n} healthy etcd members of {name}");
        return Ok(Err(format!(
            "no {n} healthy etcd members within {} s",
            DEADLINE.as_secs()
        )));
    }
    Ok(Ok(round3(t0.elapsed().as_secs_f64())))
}

pub fn destroy(b: &mut Bench, name: &ClusterName) {
    if let Err(e) = ironclad_host::cluster::lifecycle::destroy(b.state.path(), name) {
        log!("destroy {name} failed: {e}");
    }
    b.clusters.retain(|c| c != name);
}

/// The guest uptime of the node's first `machined: ...etcd...healthy... t=` line.
fn etcd_uptime_from_log(log: &Path) -> Option<f64> {
    let text = std::fs::read(log).ok()?;
    first_etcd_healthy(&String::from_utf8_lossy(&text))
}

fn first_etcd_healthy(text: &str) -> Option<f64> {
    text.lines()
        .filter_map(parse_phase_line)
        .find(|p| p.phase.contains("etcd") && p.phase.contains("healthy"))
        .map(|p| p.uptime)
}

fn name(s: &str) -> Result<ClusterName> {
    s.parse()
        .map_err(|e| BenchError::Failed(format!("cluster name {s}: {e}")))
}

const ETCD_UPTIME: &str = "one control plane, etcd healthy after bootstrap (guest uptime)";
const ETCD_WALL: &str = "ironclad create to etcd healthy, one control plane (wall)";
const HA_WALL: &str = "ironclad create -f clusters/ha.yaml to all etcd members healthy (wall)";

pub fn bench_etcd(b: &mut Bench) -> Result<()> {
    if let Some(why) = lifecycle_missing(b) {
        b.skip("ironclad", "etcd_healthy_uptime", "s", &why, ETCD_UPTIME);
        b.skip("ironclad", "etcd_healthy_wall", "s", &why, ETCD_WALL);
        return Ok(());
    }
    let file = b.scratch("single.yaml");
    std::fs::write(&file, SINGLE)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", file.display())))?;
    let cluster = name("bench-single")?;
    let node: NodeName = "bench-single-cp-1"
        .parse()
        .map_err(|e| BenchError::Failed(format!("node name: {e}")))?;
    for i in 1..=b.opts.runs {
        b.check_interrupt()?;
        log!("etcd (one control plane) run {i}/{}", b.opts.runs);
        let r = create_until_healthy(b, &file, &cluster, 1);
        let serial = ClusterPaths::new(b.state.path(), &cluster).serial_log(&node);
        match r {
            Ok(Ok(w)) => {
                b.sample("ironclad", "etcd_healthy_wall", "s", w, ETCD_WALL);
                match etcd_uptime_from_log(&serial) {
                    Some(u) => b.sample("ironclad", "etcd_healthy_uptime", "s", u, ETCD_UPTIME),
                    None => b.failed(
                        "ironclad",
                        "etcd_healthy_uptime",
                        "s",
                        format!("run {i}: no 'machined: ... etcd ... healthy t=' line in the node's serial log"),
                    ),
                }
            }
            Ok(Err(e)) => b.failed(
                "ironclad",
                "etcd_healthy_wall",
                "s",
                format!("run {i}: {e}"),
            ),
            Err(e) => {
                destroy(b, &cluster);
                return Err(e);
            }
        }
        destroy(b, &cluster);
    }
    Ok(())
}

pub fn bench_ha(b: &mut Bench) -> Result<()> {
    if let Some(why) = lifecycle_missing(b) {
        b.skip("ironclad", "ha_create_to_healthy_wall", "s", &why, HA_WALL);
        return Ok(());
    }
    let file = b.repo.join("clusters/ha.yaml");
    let cluster = ironclad_host::spec::parse_cluster_file(&file)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", file.display())))?;
    let cps = cluster
        .nodes
        .iter()
        .filter(|n| n.role == ironclad_host::spec::Role::ControlPlane)
        .count();
    for i in 1..=b.opts.runs {
        b.check_interrupt()?;
        log!("ha create run {i}/{}", b.opts.runs);
        let r = create_until_healthy(b, &file, &cluster.name, cps);
        match r {
            Ok(Ok(w)) => b.sample("ironclad", "ha_create_to_healthy_wall", "s", w, HA_WALL),
            Ok(Err(e)) => b.failed(
                "ironclad",
                "ha_create_to_healthy_wall",
                "s",
                format!("run {i}: {e}"),
            ),
            Err(e) => {
                destroy(b, &cluster.name);
                return Err(e);
            }
        }
        destroy(b, &cluster.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_healthy_line() {
        let log = "[ 1.0] x\nmachined: etcd started t=7.100\nmachined: fact state-disk formatted=true boot=1\r\nmachined: etcd healthy t=9.160\nmachined: etcd healthy t=20.0\n";
        assert_eq!(first_etcd_healthy(log), Some(9.16));
        assert_eq!(first_etcd_healthy("machined: etcd started t=1.0\n"), None);
    }

    #[test]
    fn the_single_cluster_file_parses() {
        let c = ironclad_host::spec::parse_cluster(SINGLE, "single.yaml").unwrap();
        assert_eq!(c.name.as_str(), "bench-single");
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].name.to_string(), "bench-single-cp-1");
    }
}
