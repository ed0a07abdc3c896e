//! `ironclad etcd members|put|get`: the cluster's etcd through a control
//! plane's node API (for people, tests and debugging), with the cluster's
//! `client.yaml` or `--client-config FILE` (see [`super::select`]). Without
//! `--node`, the control planes are asked in the order of the client config
//! (the cluster file's) until one whose API and etcd answer; the one that
//! did is said on stderr.

use super::node_cmd::client_failure;
use super::out::{json, out, outln};
use super::select::{ClientArgs, Selected};
use super::{CliResult, Exit, Failure, Global, Output};
use crate::api::{ErrorCode, EtcdMembers};
use crate::client::{ClientError, NodeClient};
use crate::spec::{ClusterName, NodeName, Role};
use std::future::Future;

#[derive(Debug, clap::Subcommand)]
pub enum EtcdCommand {
    /// List the etcd members (voters and learners).
    Members(MembersArgs),
    /// Write a key.
    Put(PutArgs),
    /// Read a key.
    Get(GetArgs),
}

/// Which cluster, and optionally which control plane.
#[derive(Debug, Clone, clap::Args)]
pub struct Via {
    #[command(flatten)]
    client: ClientArgs,
    /// The control plane to ask [default: the first one, in the cluster
    /// file's order, that answers].
    #[arg(long, value_name = "NODE", value_parser = super::node_name_arg)]
    node: Option<crate::spec::NodeName>,
}

#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    #[command(flatten)]
    via: Via,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    key: String,
    value: String,
    #[command(flatten)]
    via: Via,
    /// Output format (`json`: which cluster and node wrote which key).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    key: String,
    #[command(flatten)]
    via: Via,
    /// Output format (`json` prints `{"key":..., "value": null}` for a missing key).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

pub fn run(g: &Global, cmd: EtcdCommand) -> CliResult {
    super::block_on(async move {
        match cmd {
            EtcdCommand::Members(a) => members(g, a).await,
            EtcdCommand::Put(a) => put(g, a).await,
            EtcdCommand::Get(a) => get(g, a).await,
        }
    })?
}

/// Whether another control plane may do better (this one is down or its etcd is).
fn try_next(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } | ClientError::Transport { .. } => true,
        ClientError::Api(a) => a.code == ErrorCode::Unavailable,
        _ => false,
    }
}

/// Runs `call` on `--node`, or on each control plane in turn until one
/// answers (the first error that is not "unavailable" is final). Returns the
/// cluster's name, the node that answered and what it said.
async fn on_control_plane<T, F, Fut>(
    g: &Global,
    via: &Via,
    call: F,
) -> Result<(ClusterName, NodeName, T), Failure>
where
    F: Fn(NodeClient) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let sel: Selected = super::select::client_config(
        g,
        via.client.cluster.as_ref(),
        via.client.client_config.as_deref(),
        "--cluster",
    )?;
    if let Some(node) = &via.node {
        let v = call(sel.client(node)?).await.map_err(client_failure)?;
        return Ok((sel.name, node.clone(), v));
    }
    let cps: Vec<NodeName> = sel
        .config
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .map(|n| n.name.clone())
        .collect();
    let mut last = None;
    for name in &cps {
        // A node without an endpoint (not started yet) is skipped like a down one.
        let client = match sel.client(name) {
            Ok(c) => c,
            Err(f) => {
                last = Some(format!("{name}: {}", f.report));
                continue;
            }
        };
        match call(client).await {
            Ok(v) => {
                super::progress::line(&format!(
                    "etcd: through {name} (the first control plane that answered)"
                ));
                return Ok((sel.name, name.clone(), v));
            }
            Err(e) if try_next(&e) => {
                super::progress::line(&format!("etcd: {name} did not answer: {e}"));
                last = Some(format!("{name}: {e}"));
            }
            Err(e) => return Err(client_failure(e)),
        }
    }
    Err(Failure::failed(match last {
        Some(l) => miette::miette!(
            code = "ironclad::etcd::no_control_plane",
            help = "`ironclad status` shows whether the control planes run; `ironclad start` boots them",
            "no control plane of {:?} answered (last: {l})",
            sel.name
        ),
        None => miette::miette!(
            code = "ironclad::etcd::no_control_plane",
            "cluster {:?} has no control planes",
            sel.name
        ),
    }))
}

/// The members as a table.
pub fn members_table(m: &EtcdMembers) -> String {
    let mut out = format!(
        "{:<16} {:<16} {:<9} {:<26} {}\n",
        "ID", "NAME", "STATUS", "PEER URLS", "CLIENT URLS"
    );
    for x in &m.members {
        let status = if x.name.is_empty() {
            "unstarted"
        } else if x.is_learner {
            "learner"
        } else {
            "voter"
        };
        out.push_str(&format!(
            "{:<16x} {:<16} {:<9} {:<26} {}\n",
            x.id,
            if x.name.is_empty() { "-" } else { &x.name },
            status,
            x.peer_urls.join(","),
            x.client_urls.join(",")
        ));
    }
    out
}

async fn members(g: &Global, a: MembersArgs) -> CliResult {
    let (_, _, m) = on_control_plane(g, &a.via, |c| async move { c.etcd_members().await }).await?;
    match a.output {
        Output::Json => outln!("{}", json(&m)?),
        Output::Text => out!("{}", members_table(&m)),
    }
    Ok(())
}

async fn put(g: &Global, a: PutArgs) -> CliResult {
    if a.key.is_empty() {
        return Err(Failure::msg(Exit::BadInput, "the key is empty"));
    }
    let (k, v) = (a.key.clone(), a.value.clone());
    let (cluster, node, _) = on_control_plane(g, &a.via, |c| {
        let (k, v) = (k.clone(), v.clone());
        async move { c.etcd_put(&k, &v).await }
    })
    .await?;
    if a.output == Output::Json {
        outln!(
            "{}",
            json(&PutDone {
                cluster,
                node,
                key: a.key,
                result: "written",
            })?
        );
    }
    Ok(())
}

/// What `etcd put -o json` prints (the value is not repeated).
#[derive(Debug, serde::Serialize)]
pub struct PutDone {
    pub cluster: ClusterName,
    /// The control plane whose etcd took the write.
    pub node: NodeName,
    pub key: String,
    /// `written`: etcd acknowledged the put.
    pub result: &'static str,
}

async fn get(g: &Global, a: GetArgs) -> CliResult {
    if a.key.is_empty() {
        return Err(Failure::msg(Exit::BadInput, "the key is empty"));
    }
    let k = a.key.clone();
    let (_, _, kv) = on_control_plane(g, &a.via, |c| {
        let k = k.clone();
        async move { c.etcd_get(&k).await }
    })
    .await?;
    match a.output {
        Output::Json => outln!("{}", json(&kv)?),
        Output::Text => match &kv.value {
            Some(v) => outln!("{v}"),
            None => {
                return Err(Failure::failed(miette::miette!(
                    code = "ironclad::etcd::no_key",
                    help = "`-o json` prints `\"value\": null` for a missing key and exits 0",
                    "no key {:?}",
                    a.key
                )));
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EtcdMember;

    #[test]
    fn members_table_shows_status() {
        let m = EtcdMembers {
            members: vec![
                EtcdMember {
                    id: 0xabc,
                    name: "cp-1".into(),
                    peer_urls: vec!["https://10.5.0.2:2380".into()],
                    client_urls: vec!["https://10.5.0.2:2379".into()],
                    is_learner: false,
                },
                EtcdMember {
                    id: 0xdef,
                    name: String::new(),
                    peer_urls: vec!["https://10.5.0.3:2380".into()],
                    client_urls: vec![],
                    is_learner: true,
                },
            ],
        };
        let t = members_table(&m);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("abc ") && lines[1].contains("voter"));
        assert!(lines[2].contains("unstarted") && lines[2].contains(" - "));
    }
}
