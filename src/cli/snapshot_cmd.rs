//! `ironclad snapshot save|list|restore|rm NAME [SNAPSHOT]`: whole-cluster
//! snapshots. Parses, calls [`crate::cluster::lifecycle::snapshot`] (which
//! goes through the cluster's engine), prints; progress per node on stderr.

use super::out::{json, out, outln};
use super::{CliResult, Exit, Failure, Global, Output, cluster_name_arg};
use crate::cluster::lifecycle::snapshot::SNAPSHOT_NAME_RULE;
use crate::cluster::lifecycle::{
    SnapshotError, SnapshotMeta, SnapshotName, SnapshotReport, snapshot_list, snapshot_restore,
    snapshot_rm, snapshot_save,
};
use crate::spec::ClusterName;

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot the whole cluster: running, every node paused at the same
    /// instant, memory and disks saved, all resumed; stopped, the disks.
    Save(TargetArgs),
    /// The cluster's snapshots (from their records; no node is asked).
    List(ListArgs),
    /// Bring every node back to a snapshot: a running cluster to a running
    /// snapshot (no reboot), a stopped cluster to a stopped one.
    Restore(TargetArgs),
    /// Delete a snapshot from every node's disk and its record.
    Rm(TargetArgs),
}

#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// The cluster.
    #[arg(value_name = "NAME", value_parser = cluster_name_arg)]
    name: ClusterName,
    /// The snapshot (letters, digits, '.', '_', '-'; at most 64).
    #[arg(value_name = "SNAPSHOT", value_parser = snapshot_name_arg)]
    snapshot: SnapshotName,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The cluster (default: the only one there is).
    #[arg(value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    name: Option<ClusterName>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// A snapshot name from the command line (clap exits with status 2).
fn snapshot_name_arg(s: &str) -> Result<SnapshotName, String> {
    s.parse().map_err(|e| format!("{e}; {SNAPSHOT_NAME_RULE}"))
}

/// The exit status of each failure: every variant named.
fn exit_of(e: &SnapshotError) -> Exit {
    use SnapshotError as E;
    match e {
        E::Lifecycle(l) => super::lifecycle::exit_of(l),
        E::BadName { .. } | E::Exists { .. } | E::Unknown { .. } => Exit::BadInput,
        E::PartlyRunning { .. }
        | E::Stopping { .. }
        | E::NeedsRunning { .. }
        | E::NeedsStopped { .. }
        | E::NodesChanged { .. }
        | E::Missing { .. }
        | E::Busy { .. }
        | E::BadRecord { .. }
        | E::NotAnswering { .. } => Exit::Failed,
    }
}

fn failure(e: SnapshotError) -> Failure {
    match e {
        // Its own diagnostic (code, help) is kept.
        SnapshotError::Lifecycle(l) => Failure::new(super::lifecycle::exit_of(&l), *l),
        e => Failure::new(exit_of(&e), e),
    }
}

pub fn run(g: &Global, cmd: SnapshotCommand) -> CliResult {
    let root = g.state_root()?;
    let progress = super::progress::lifecycle_progress();
    let (a, op): (TargetArgs, fn(_, _, _, _) -> _) = match cmd {
        SnapshotCommand::List(a) => {
            let name = super::select::cluster(&root, a.name)?;
            let list = snapshot_list(&root, &name).map_err(failure)?;
            return print_list(&name, &list, a.output);
        }
        SnapshotCommand::Save(a) => (a, snapshot_save),
        SnapshotCommand::Restore(a) => (a, snapshot_restore),
        SnapshotCommand::Rm(a) => (a, snapshot_rm),
    };
    let report = op(&root, &a.name, &a.snapshot, progress.as_ref()).map_err(failure)?;
    print_report(&report, a.output)
}

fn print_report(r: &SnapshotReport, output: Output) -> CliResult {
    match output {
        Output::Json => outln!("{}", json(r)?),
        Output::Text => {
            let what = match (r.action, r.live) {
                ("restored", false) => format!(
                    "; the disks are back, `ironclad start {}` boots from them",
                    r.cluster
                ),
                ("restored", true) => " (running, no reboot); every node answers".to_string(),
                ("saved", true) => " (running: memory and disks)".to_string(),
                ("saved", false) => " (stopped: disks)".to_string(),
                _ => String::new(),
            };
            outln!(
                "snapshot {} of cluster {} {} in {:.1} s{what}",
                r.snapshot.name,
                r.cluster,
                r.action,
                r.seconds
            );
        }
    }
    Ok(())
}

/// `created_ms` as `YYYY-MM-DD HH:MM:SS UTC`.
fn when(ms: u64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .map_or_else(|| format!("@{ms}"), |t| format!("{t} UTC"))
}

fn print_list(cluster: &ClusterName, list: &[SnapshotMeta], output: Output) -> CliResult {
    if output == Output::Json {
        outln!("{}", json(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        outln!("cluster {cluster} has no snapshots");
        return Ok(());
    }
    out!("{}", table(list));
    Ok(())
}

fn table(list: &[SnapshotMeta]) -> String {
    let mut s = format!("{:<24} {:<23} {:<8} NODES\n", "SNAPSHOT", "TAKEN", "STATE");
    for m in list {
        s += &format!(
            "{:<24} {:<23} {:<8} {}\n",
            m.name,
            when(m.created_ms),
            m.state.as_str(),
            m.nodes
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lifecycle::SnapshotKind;
    use crate::cluster::lifecycle::snapshot::{SNAPSHOT_API_VERSION, SNAPSHOT_KIND};

    #[test]
    fn the_list_table() {
        let m = SnapshotMeta {
            api_version: SNAPSHOT_API_VERSION.into(),
            kind: SNAPSHOT_KIND.into(),
            name: "before".parse().unwrap(),
            cluster: "dev".parse().unwrap(),
            created_ms: 1_700_000_000_000,
            state: SnapshotKind::Stopped,
            nodes: vec!["dev-cp-1".parse().unwrap(), "dev-worker-1".parse().unwrap()],
            save_seconds: 0.2,
        };
        assert_eq!(
            table(&[m]),
            "SNAPSHOT                 TAKEN                   STATE    NODES\n\
             before                   2023-11-14 22:13:20 UTC stopped  dev-cp-1,dev-worker-1\n"
        );
        assert!(snapshot_name_arg("a/b").unwrap_err().contains("'/'"));
        assert!(snapshot_name_arg("ok-1").is_ok());
    }
}
