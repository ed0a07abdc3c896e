//! `ironclad node services|logs|dmesg|reboot|shutdown [--node NODE]`: one
//! node's API from the command line, through [`crate::client::NodeClient`]
//! and a `client.yaml` (the cluster's, or `--client-config FILE`). Which
//! cluster and node: [`super::select`]; `--node` may be left out when the
//! cluster has one node. Also holds the API-failure mapping shared with
//! `ironclad etcd` ([`client_failure`]).

use super::out::{json, outln};
use super::select::{ClientArgs, Selected};
use super::{CliResult, Exit, Failure, Global, Output};
use crate::api::{ErrorCode, LogLine, LogLines};
use crate::client::{ClientError, NodeClient};
use crate::spec::{ClusterName, NodeName};
use futures::StreamExt;

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
    #[command(flatten)]
    pub client: ClientArgs,
    /// The node [default: the cluster's only node; a cluster of several
    /// needs it].
    #[arg(long, value_name = "NODE", value_parser = super::node_name_arg)]
    pub node: Option<NodeName>,
}

impl Target {
    /// The selected cluster (see [`super::select::client_config`]).
    pub fn select(&self, g: &Global) -> Result<Selected, Failure> {
        super::select::client_config(
            g,
            self.client.cluster.as_ref(),
            self.client.client_config.as_deref(),
            "--cluster",
        )
    }
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
    /// Output format (`json`: what was asked of which node).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
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
    let sel = t.select(g)?;
    sel.client(&sel.node(t.node.as_ref())?)
}

async fn services(g: &Global, a: ServicesArgs) -> CliResult {
    let client = client_for(g, &a.target)?;
    let list = client.services().await.map_err(client_failure)?;
    match a.output {
        Output::Json => outln!("{}", json(&list)?),
        Output::Text => {
            outln!(
                "{:<16} {:<10} {:>8} {:>8}  LAST ERROR",
                "SERVICE",
                "STATE",
                "RESTARTS",
                "RSS MiB"
            );
            for s in &list.services {
                let state = serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let rss = s
                    .rss_kib
                    .map_or_else(|| "-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
                outln!(
                    "{:<16} {:<10} {:>8} {:>8}  {}",
                    s.name,
                    state,
                    s.restarts,
                    rss,
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
            outln!("{s}");
        }
        Output::Text => outln!("{}", l.line),
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
        Output::Json => outln!("{}", json(&lines)?),
        Output::Text => print_lines(&lines, Output::Text)?,
    }
    Ok(())
}

/// What `node reboot|shutdown -o json` prints.
#[derive(Debug, serde::Serialize)]
pub struct PowerDone {
    pub cluster: ClusterName,
    pub node: NodeName,
    /// `reboot` or `shutdown`.
    pub action: &'static str,
    /// `requested`: the node accepted; it powers off or reboots right after.
    pub result: &'static str,
}

async fn power(g: &Global, a: PowerArgs, reboot: bool) -> CliResult {
    let sel = a.target.select(g)?;
    let node = sel.node(a.target.node.as_ref())?;
    let client = sel.client(&node)?;
    let action = if reboot {
        client.reboot().await.map_err(client_failure)?;
        "reboot"
    } else {
        client.shutdown().await.map_err(client_failure)?;
        "shutdown"
    };
    match a.output {
        Output::Json => outln!(
            "{}",
            json(&PowerDone {
                cluster: sel.name,
                node,
                action,
                result: "requested",
            })?
        ),
        Output::Text => eprintln!("{node}: {action} requested"),
    }
    Ok(())
}
