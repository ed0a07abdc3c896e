//! `ironclad node services|logs|dmesg|reboot|shutdown --node NODE`: one node's
//! API from the command line, through [`crate::client::NodeClient`] and the
//! cluster's `client.yaml`. Also holds the cluster and node selection shared
//! with `ironclad etcd` ([`Target`]).

use super::{CliResult, Exit, Failure, Global, Output};
use crate::api::{ErrorCode, LogLine, LogLines};
use crate::client::{ClientError, NodeClient};
use crate::clientconfig::ClientConfig;
use crate::cluster::paths::Found;
use crate::spec::{ClusterName, NodeName};
use futures::StreamExt;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List the node's services and their states.
    Services(ServicesArgs),
    /// Print a service's log (`-f` follows it until Ctrl-C).
    Logs(LogsArgs),
    /// Print the node's kernel log.
    Dmesg(DmesgArgs),
    /// Reboot the node.
    Reboot(PowerArgs),
    /// Power the node off.
    Shutdown(PowerArgs),
}

/// Which cluster and node a command talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The cluster [default: the only cluster under the state dir].
    #[arg(long, value_name = "NAME", value_parser = super::cluster_name_arg, env = super::select::CLUSTER_ENV)]
    pub cluster: Option<ClusterName>,
    /// The node.
    #[arg(long, value_name = "NODE", value_parser = super::node_name_arg)]
    pub node: NodeName,
}

#[derive(Debug, clap::Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The service (`etcd`, `containerd`, ...).
    service: String,
    #[command(flatten)]
    target: Target,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Output format (`json`: one JSON object per line, NDJSON).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct DmesgArgs {
    #[command(flatten)]
    target: Target,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct PowerArgs {
    #[command(flatten)]
    target: Target,
}

/// The selected cluster: its name, `client.yaml` path and loaded config.
pub(super) struct Selected {
    pub name: ClusterName,
    pub client_yaml: PathBuf,
    pub config: ClientConfig,
}

impl Selected {
    /// A client for `node`; unknown nodes are bad input.
    pub fn client(&self, node: &str) -> Result<NodeClient, Failure> {
        if self.config.node(node).is_none() {
            let names: Vec<&str> = self.config.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(Failure::msg(
                Exit::BadInput,
                format!(
                    "cluster {:?} has no node {node:?} (nodes: {})",
                    self.name,
                    names.join(", ")
                ),
            ));
        }
        NodeClient::from_client_config(&self.client_yaml, node).map_err(client_failure)
    }
}

/// The cluster named by `--cluster`, or the only one under the state root.
pub(super) fn select_cluster(
    g: &Global,
    cluster: Option<&ClusterName>,
) -> Result<Selected, Failure> {
    let root = g.state_root()?;
    let name = super::select::cluster(&root, cluster.cloned())?;
    let found = crate::cluster::paths::find(&root, &name).map_err(|e| {
        Failure::msg(
            Exit::Failed,
            format!(
                "cannot look for cluster {name:?} in {}: {e}",
                root.display()
            ),
        )
    })?;
    let paths = match found {
        Found::Cluster(paths) => paths,
        Found::Absent => {
            return Err(Failure::msg(
                Exit::BadInput,
                format!("no cluster named {name:?} under {}", root.display()),
            ));
        }
        Found::Foreign { path, why } => {
            return Err(Failure::msg(
                Exit::BadInput,
                Found::foreign_message(&path, &why),
            ));
        }
    };
    let client_yaml = paths.client_yaml();
    let config = ClientConfig::load(&client_yaml).map_err(|e| {
        Failure::msg(
            Exit::Failed,
            format!("cluster {name:?} has no usable client config: {e}"),
        )
    })?;
    Ok(Selected {
        name,
        client_yaml,
        config,
    })
}

/// Exit status and message for a failed API call: a refusal of the input
/// (bad request, unknown service or member) is bad input, the rest failure.
pub(super) fn client_failure(e: ClientError) -> Failure {
    let exit = match e.code() {
        Some(ErrorCode::BadRequest | ErrorCode::NotFound) => Exit::BadInput,
        _ => match e {
            ClientError::Setup(_) | ClientError::Config(_) => Exit::BadInput,
            _ => Exit::Failed,
        },
    };
    // The diagnostic keeps its code and help line (`ironclad::api::*`).
    Failure::new(exit, e)
}

pub(super) fn json(v: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(v).map_err(|e| Failure::failed(miette::miette!("{e}")))
}

pub fn run(g: &Global, cmd: NodeCommand) -> CliResult {
    super::block_on(async move {
        match cmd {
            NodeCommand::Services(a) => services(g, a).await,
            NodeCommand::Logs(a) => logs(g, a).await,
            NodeCommand::Dmesg(a) => dmesg(g, a).await,
            NodeCommand::Reboot(a) => power(g, a, true).await,
            NodeCommand::Shutdown(a) => power(g, a, false).await,
        }
    })?
}

fn client_for(g: &Global, t: &Target) -> Result<NodeClient, Failure> {
    select_cluster(g, t.cluster.as_ref())?.client(&t.node)
}

async fn services(g: &Global, a: ServicesArgs) -> CliResult {
    let client = client_for(g, &a.target)?;
    let list = client.services().await.map_err(client_failure)?;
    match a.output {
        Output::Json => println!("{}", json(&list)?),
        Output::Text => {
            println!(
                "{:<16} {:<10} {:>8}  LAST ERROR",
                "SERVICE", "STATE", "RESTARTS"
            );
            for s in &list.services {
                let state = serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                println!(
                    "{:<16} {:<10} {:>8}  {}",
                    s.name,
                    state,
                    s.restarts,
                    s.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

fn print_line(l: &LogLine, output: Output) -> CliResult {
    match output {
        Output::Json => {
            let s =
                serde_json::to_string(l).map_err(|e| Failure::failed(miette::miette!("{e}")))?;
            println!("{s}");
        }
        Output::Text => println!("{}", l.line),
    }
    Ok(())
}

fn print_lines(lines: &LogLines, output: Output) -> CliResult {
    for l in &lines.lines {
        print_line(l, output)?;
    }
    Ok(())
}

async fn logs(g: &Global, a: LogsArgs) -> CliResult {
    if a.service.parse::<crate::api::ServiceName>().is_err() {
        return Err(Failure::msg(
            Exit::BadInput,
            format!("invalid service name {:?}", a.service),
        ));
    }
    let client = client_for(g, &a.target)?;
    if !a.follow {
        let lines = client
            .logs(&a.service, a.tail)
            .await
            .map_err(client_failure)?;
        return print_lines(&lines, a.output);
    }
    let mut stream = client
        .follow_logs(&a.service, a.tail)
        .await
        .map_err(client_failure)?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(line)) => print_line(&line, a.output)?,
                Some(Err(e)) => return Err(client_failure(e)),
                None => return Ok(()),
            },
        }
    }
}

async fn dmesg(g: &Global, a: DmesgArgs) -> CliResult {
    let client = client_for(g, &a.target)?;
    let lines = client.dmesg(a.tail).await.map_err(client_failure)?;
    match a.output {
        Output::Json => println!("{}", json(&lines)?),
        Output::Text => print_lines(&lines, Output::Text)?,
    }
    Ok(())
}

async fn power(g: &Global, a: PowerArgs, reboot: bool) -> CliResult {
    let client = client_for(g, &a.target)?;
    if reboot {
        client.reboot().await.map_err(client_failure)?;
        eprintln!("{}: reboot requested", a.target.node);
    } else {
        client.shutdown().await.map_err(client_failure)?;
        eprintln!("{}: shutdown requested", a.target.node);
    }
    Ok(())
}
