//! Network faults of a running cluster (`ironclad net ...`): partition a
//! node, drop a share of its frames, delay them, heal, restart the drop
//! decisions from a seed, and the network's status (per node: link, faults
//! in force, counters).
//!
//! Owns: the checks before a fault is sent (the cluster exists, the node is
//! one of its nodes, the cluster runs) and the per-node view of the switch's
//! answer. Every request goes through the cluster's engine
//! ([`Engine::fault`]); the switch that applies them and its protocol are
//! [`crate::network`]'s.
//!
//! Faults live in the running switch, inside the cluster's supervisor: they
//! stay in force while it runs (also across `stop --node`/`start --node` of a
//! node, whose port keeps its faults) and are gone once the whole cluster is
//! stopped, so `ironclad start` always comes up on a healed network.

use super::{existing, load};
use crate::cluster::engine::{self, Engine};
use crate::cluster::paths::ClusterPaths;
use crate::network::control::{Counters, Faults};
use crate::network::{ErrorCode, NodeFaults, Request, Response, Status};
use crate::spec::{ClusterName, NodeName};
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::network::control::MAX_DELAY_MS;

/// A change to the cluster network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAction {
    /// Cut the node off from every other node.
    Partition(NodeName),
    /// Drop `percent` of the frames to and from the node (0 removes it).
    Loss { node: NodeName, percent: u8 },
    /// Delay the frames to and from the node by `ms` (0 removes it).
    Delay { node: NodeName, ms: u64 },
    /// Undo the faults aimed at one node, or every fault (`None`).
    Heal(Option<NodeName>),
    /// Restart the switch's drop decisions from this seed.
    Seed(u64),
}

impl NetAction {
    fn node(&self) -> Option<&NodeName> {
        match self {
            NetAction::Partition(n)
            | NetAction::Loss { node: n, .. }
            | NetAction::Delay { node: n, .. }
            | NetAction::Heal(Some(n)) => Some(n),
            NetAction::Heal(None) | NetAction::Seed(_) => None,
        }
    }

    /// The switch's request for this change.
    pub fn request(&self) -> Request {
        match self {
            NetAction::Partition(n) => Request::Partition {
                node: n.to_string(),
            },
            NetAction::Loss { node, percent } => Request::Drop {
                percent: *percent,
                node: Some(node.to_string()),
            },
            NetAction::Delay { node, ms } => Request::Delay {
                ms: *ms,
                node: Some(node.to_string()),
            },
            NetAction::Heal(Some(n)) => Request::Heal {
                node: Some(n.to_string()),
                all: false,
            },
            NetAction::Heal(None) => Request::Heal {
                node: None,
                all: true,
            },
            NetAction::Seed(seed) => Request::Seed { seed: *seed },
        }
    }
}

/// Why a network command failed. The command line gives each its exit
/// status (`cli::net_cmd`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The cluster is missing or unreadable (see [`super::LifecycleError`];
    /// boxed: it is large and this is the rare path).
    #[error(transparent)]
    Lifecycle(Box<super::LifecycleError>),
    #[error(
        "cluster {cluster} is not running, so its network has no faults to set or show (a stopped cluster starts healed); start it with `ironclad start {cluster}`"
    )]
    NotRunning { cluster: ClusterName },
    #[error("cluster {cluster} has no node named {node:?}; its nodes: {}", nodes.join(", "))]
    UnknownNode {
        cluster: ClusterName,
        node: String,
        nodes: Vec<String>,
    },
    /// The switch refused the request.
    #[error("the cluster switch refused the request ({}): {message}", code_name(*code))]
    Refused { code: ErrorCode, message: String },
    #[error("the cluster switch answered {0}, not what was asked for")]
    Unexpected(String),
}

impl From<super::LifecycleError> for NetError {
    fn from(e: super::LifecycleError) -> Self {
        NetError::Lifecycle(Box::new(e))
    }
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{code:?}"))
}

type Result<T, E = NetError> = std::result::Result<T, E>;

/// One node's port in [`NetStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeNet {
    pub name: String,
    /// Whether the node's NIC is connected to its port (its VM runs).
    pub connected: bool,
    /// The faults in force on its frames.
    pub faults: NodeFaults,
    pub counters: Counters,
}

/// `ironclad net status`: the cluster network as its switch reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetStatus {
    pub cluster: ClusterName,
    pub nodes: Vec<NodeNet>,
    /// The switch's fault state as set (for every port and per node).
    pub faults: Faults,
    /// The seed of the switch's drop decisions (the same seed and traffic
    /// drop the same frames).
    pub seed: u64,
}

impl NetStatus {
    fn from_switch(cluster: &ClusterName, s: Status) -> NetStatus {
        let nodes = s
            .ports
            .into_iter()
            .map(|p| NodeNet {
                faults: s.faults.of_node(&p.node),
                name: p.node,
                connected: p.connected,
                counters: p.counters,
            })
            .collect();
        NetStatus {
            cluster: cluster.clone(),
            nodes,
            faults: s.faults,
            seed: s.seed,
        }
    }
}

/// The running cluster `name` (after `node`, if given, was checked against
/// its nodes).
fn running(root: &Path, name: &ClusterName, node: Option<&NodeName>) -> Result<ClusterPaths> {
    let paths = existing(root, name)?;
    if let Some(node) = node {
        let state = load(&paths)?;
        if state.node(node.as_str()).is_none() {
            return Err(NetError::UnknownNode {
                cluster: name.clone(),
                node: node.to_string(),
                nodes: state.nodes.iter().map(|n| n.name.to_string()).collect(),
            });
        }
    }
    if engine::selected().running(&paths).is_none() {
        return Err(NetError::NotRunning {
            cluster: name.clone(),
        });
    }
    Ok(paths)
}

/// Sends `req` through the engine; a refusal becomes [`NetError::Refused`].
fn ask(engine: &dyn Engine, paths: &ClusterPaths, req: &Request) -> Result<Response> {
    match engine.fault(paths, req)? {
        Response::Error { code, message } => Err(NetError::Refused { code, message }),
        r => Ok(r),
    }
}

fn switch_status(engine: &dyn Engine, paths: &ClusterPaths) -> Result<Status> {
    match ask(engine, paths, &Request::Status {})? {
        Response::Status { status } => Ok(status),
        other => Err(NetError::Unexpected(format!("{other:?}"))),
    }
}

/// `ironclad net status NAME`.
pub fn net_status(root: &Path, name: &ClusterName) -> Result<NetStatus> {
    let paths = running(root, name, None)?;
    let s = switch_status(engine::selected(), &paths)?;
    Ok(NetStatus::from_switch(name, s))
}

/// `ironclad net partition|loss|delay|heal|seed NAME`: applies `action` and
/// returns the network's status after it.
pub fn net_apply(root: &Path, name: &ClusterName, action: &NetAction) -> Result<NetStatus> {
    let paths = running(root, name, action.node())?;
    let engine = engine::selected();
    match ask(engine, &paths, &action.request())? {
        Response::Ok => {}
        other => return Err(NetError::Unexpected(format!("{other:?}"))),
    }
    let s = switch_status(engine, &paths)?;
    Ok(NetStatus::from_switch(name, s))
}

/// The faults in force per node of a running cluster (for `status`).
pub fn faults_in_force(
    engine: &dyn Engine,
    paths: &ClusterPaths,
) -> Result<BTreeMap<String, NodeFaults>> {
    let s = switch_status(engine, paths)?;
    Ok(s.ports
        .iter()
        .map(|p| (p.node.clone(), s.faults.of_node(&p.node)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_become_switch_requests() {
        let n: NodeName = "dev-worker-1".parse().unwrap();
        let wire = |a: NetAction| serde_json::to_string(&a.request()).unwrap();
        assert_eq!(
            wire(NetAction::Partition(n.clone())),
            r#"{"op":"partition","node":"dev-worker-1"}"#
        );
        assert_eq!(
            wire(NetAction::Loss {
                node: n.clone(),
                percent: 30
            }),
            r#"{"op":"drop","percent":30,"node":"dev-worker-1"}"#
        );
        assert_eq!(
            wire(NetAction::Delay {
                node: n.clone(),
                ms: 200
            }),
            r#"{"op":"delay","ms":200,"node":"dev-worker-1"}"#
        );
        assert_eq!(
            wire(NetAction::Heal(Some(n))),
            r#"{"op":"heal","node":"dev-worker-1"}"#
        );
        assert_eq!(wire(NetAction::Heal(None)), r#"{"op":"heal","all":true}"#);
    }

    #[test]
    fn refusals_name_the_stable_code() {
        let e = NetError::Refused {
            code: ErrorCode::BadValue,
            message: "delay 70000 ms is above 60000 ms".into(),
        };
        assert!(e.to_string().contains("(bad_value)"), "{e}");
    }
}
