//! `ironclad net status|partition|loss|delay|heal|seed [NAME]`: network faults on
//! a running cluster's switch, for reproducing bug reports. Parses and
//! validates flags, calls [`crate::cluster::lifecycle::net_apply`] /
//! [`net_status`](crate::cluster::lifecycle::net_status) (which go through
//! the cluster's engine), prints.

use super::out::{out, outln};
use super::{CliResult, Exit, Failure, Global, Output, cluster_name_arg, node_name_arg};
use crate::cluster::lifecycle::{MAX_DELAY_MS, NetAction, NetError, NetStatus};
use crate::network::ErrorCode;
use crate::spec::{ClusterName, NodeName};

#[derive(Debug, clap::Subcommand)]
pub enum NetCommand {
    /// The cluster network: per node its link, the faults in force and the
    /// switch's counters.
    Status(StatusArgs),
    /// Cut a node off from every other node (its API on 127.0.0.1 stays reachable).
    Partition(NodeArgs),
    /// Drop a share of the frames to and from a node (0 removes the loss).
    Loss(LossArgs),
    /// Delay the frames to and from a node (0 removes the delay).
    Delay(DelayArgs),
    /// Undo the faults of one node, or (without --node) every fault.
    Heal(HealArgs),
    /// Restart the drop decisions from a seed (the `drop seed` of a bug
    /// report's `net status`): the same frames in the same order then meet
    /// the same decisions.
    Seed(SeedArgs),
}

/// The cluster, by the one selection rule (`select.rs`).
#[derive(Debug, clap::Args)]
pub struct ClusterArg {
    /// The cluster (default: the only one there is).
    #[arg(value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    name: Option<ClusterName>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// The node whose frames the fault hits.
    #[arg(long, value_name = "NODE", value_parser = node_name_arg)]
    node: NodeName,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct LossArgs {
    #[command(flatten)]
    target: NodeArgs,
    /// Share of the node's frames to drop, 0 to 100.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(0..=100))]
    percent: u8,
}

#[derive(Debug, clap::Args)]
pub struct DelayArgs {
    #[command(flatten)]
    target: NodeArgs,
    /// Delay of each of the node's frames in milliseconds, 0 to 60000.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct HealArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// Heal only this node's faults (default: every fault).
    #[arg(long, value_name = "NODE", value_parser = node_name_arg)]
    node: Option<NodeName>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// The seed, an unsigned 64-bit number.
    #[arg(long, value_name = "N")]
    seed: u64,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// The exit status of each failure: every variant named.
fn exit_of(e: &NetError) -> Exit {
    match e {
        NetError::Lifecycle(l) => super::lifecycle::exit_of(l),
        NetError::UnknownNode { .. } => Exit::BadInput,
        NetError::Refused { code, .. } => match code {
            // Values and nodes are checked before they are sent; the
            // switch saying so means the input was bad after all.
            ErrorCode::BadValue | ErrorCode::UnknownNode => Exit::BadInput,
            ErrorCode::BadRequest | ErrorCode::LineTooLong => Exit::Failed,
        },
        NetError::NotRunning { .. } | NetError::Unexpected(_) => Exit::Failed,
    }
}

fn failure(e: NetError) -> Failure {
    Failure::msg(exit_of(&e), e)
}

pub fn run(g: &Global, cmd: NetCommand) -> CliResult {
    let root = g.state_root()?;
    let (cluster, action, output) = match cmd {
        NetCommand::Status(a) => {
            let name = super::select::cluster(&root, a.cluster.name)?;
            let st = crate::cluster::lifecycle::net_status(&root, &name).map_err(failure)?;
            return print(&st, None, a.output);
        }
        NetCommand::Partition(a) => (a.cluster, NetAction::Partition(a.node), a.output),
        NetCommand::Loss(a) => (
            a.target.cluster,
            NetAction::Loss {
                node: a.target.node,
                percent: a.percent,
            },
            a.target.output,
        ),
        NetCommand::Delay(a) => (
            a.target.cluster,
            NetAction::Delay {
                node: a.target.node,
                ms: a.ms,
            },
            a.target.output,
        ),
        NetCommand::Heal(a) => (a.cluster, NetAction::Heal(a.node), a.output),
        NetCommand::Seed(a) => (a.cluster, NetAction::Seed(a.seed), a.output),
    };
    let name = super::select::cluster(&root, cluster.name)?;
    let st = crate::cluster::lifecycle::net_apply(&root, &name, &action).map_err(failure)?;
    print(&st, Some(&action), output)
}

/// What was done, in one line.
fn done(action: &NetAction) -> String {
    match action {
        NetAction::Partition(n) => format!("node {n} partitioned from the other nodes"),
        NetAction::Loss { node, percent: 0 } => format!("loss on node {node} removed"),
        NetAction::Loss { node, percent } => {
            format!("node {node}: {percent}% of its frames dropped")
        }
        NetAction::Delay { node, ms: 0 } => format!("delay on node {node} removed"),
        NetAction::Delay { node, ms } => format!("node {node}: its frames delayed by {ms} ms"),
        NetAction::Heal(Some(n)) => format!("node {n} healed"),
        NetAction::Heal(None) => "every fault healed".to_string(),
        NetAction::Seed(seed) => format!("drop decisions restarted from seed {seed}"),
    }
}

fn print(st: &NetStatus, action: Option<&NetAction>, output: Output) -> CliResult {
    match output {
        Output::Json => outln!("{}", super::out::json(st)?),
        Output::Text => {
            if let Some(a) = action {
                outln!("{}", done(a));
            }
            out!("{}", table(st));
        }
    }
    Ok(())
}

/// `net status`'s text: a line for the cluster, a row per node.
fn table(st: &NetStatus) -> String {
    let mut out = format!("cluster {} network (drop seed {})\n", st.cluster, st.seed);
    // Frames: received from the node, sent to it, not sent to it because
    // of a partition, an injected loss, a full queue. The faults come last:
    // their width varies.
    let row = |c: [&dyn std::fmt::Display; 8]| {
        let [node, link, rx, tx, cut, lost, full, faults] = c;
        format!("  {node:<18} {link:<5} {rx:>8} {tx:>8} {cut:>8} {lost:>8} {full:>8}  {faults}\n")
    };
    out += &row([
        &"NODE",
        &"LINK",
        &"RX",
        &"TX",
        &"CUT",
        &"LOST",
        &"OVERFLOW",
        &"FAULTS",
    ]);
    for n in &st.nodes {
        let c = &n.counters;
        out += &row([
            &n.name,
            &if n.connected { "up" } else { "down" },
            &c.rx_frames,
            &c.tx_frames,
            &c.dropped_partition,
            &c.dropped_fault,
            &c.dropped_overflow,
            &n.faults,
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::control::{Counters, Faults};

    #[test]
    fn table_has_a_row_per_node_with_its_faults() {
        let faults = Faults {
            partitioned: vec!["dev-worker-1".into()],
            ..Faults::default()
        };
        let st = NetStatus {
            cluster: "dev".parse().unwrap(),
            nodes: ["dev-cp-1", "dev-worker-1"]
                .iter()
                .map(|n| crate::cluster::lifecycle::NodeNet {
                    name: n.to_string(),
                    connected: true,
                    faults: faults.of_node(n),
                    counters: Counters {
                        rx_frames: 7,
                        ..Counters::default()
                    },
                })
                .collect(),
            faults,
            seed: 42,
        };
        let t = table(&st);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "cluster dev network (drop seed 42)");
        assert!(lines[1].contains("FAULTS"), "{t}");
        assert!(lines[2].starts_with("  dev-cp-1") && lines[2].ends_with("  -"));
        assert!(lines[3].ends_with("  partitioned"), "{t}");
        assert_eq!(
            lines[1].find("OVERFLOW").map(|i| i + "OVERFLOW".len()),
            lines[2].rfind("0  -").map(|i| i + 1),
            "{t}"
        );
    }

    #[test]
    fn every_failure_has_its_exit() {
        let refused = |code| NetError::Refused {
            code,
            message: String::new(),
        };
        assert_eq!(exit_of(&refused(ErrorCode::BadValue)), Exit::BadInput);
        assert_eq!(exit_of(&refused(ErrorCode::BadRequest)), Exit::Failed);
        let not_running = NetError::NotRunning {
            cluster: "dev".parse().unwrap(),
        };
        assert_eq!(exit_of(&not_running), Exit::Failed);
        assert!(not_running.to_string().contains("ironclad start dev"));
    }
}
