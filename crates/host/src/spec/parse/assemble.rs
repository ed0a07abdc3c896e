//! From the draft to the cluster: every group's nodes planned (an explicit
//! list, or `count` nodes of the group's shape), names settled (explicit, or
//! `<cluster>-<cp|worker>-<n>`), duplicates refused, addresses assigned in
//! order, and the rules that span sections (a control plane at least, the
//! network large enough).

use super::draft::{Draft, GroupDraft, Shape};
use super::reader::Checker;
use crate::spec::error::{FirstUse, ProblemKind};
use crate::spec::raw::Pos;
use crate::spec::{Cluster, ClusterName, Node, NodeName, Role};
use std::collections::HashMap;

/// A node of a group before its name is settled: the explicit name if any, its
/// shape and where it is written.
struct Planned {
    name: Option<(NodeName, Pos)>,
    shape: Shape,
    pos: Pos,
}

/// Resolves a draft into the cluster: names, addresses, cross-field rules.
pub(super) fn assemble(draft: Draft, checker: &mut Checker) -> Cluster {
    let (cluster_name, name_pos) = draft.name;
    let (network, network_pos) = draft.network;
    let mut nodes: Vec<Node> = Vec::new();
    // Name → its first use, for duplicate reports.
    let mut seen: HashMap<String, FirstUse> = HashMap::new();
    for group in &draft.groups {
        let planned = plan(group);
        if group.role == Role::ControlPlane && planned.is_empty() {
            let pos = group.count.map(|(_, p)| p).unwrap_or(group.pos);
            checker.report(ProblemKind::ZeroControlPlanes, pos);
        }
        for (i, node) in planned.into_iter().enumerate() {
            let Some((name, pos, first_use)) = settle_name(
                node.name,
                node.pos,
                group,
                i,
                &cluster_name,
                name_pos,
                checker,
            ) else {
                continue;
            };
            if let Some(first) = seen.get(name.as_str()) {
                checker.report(
                    ProblemKind::DuplicateNodeName {
                        name: name.to_string(),
                        first: *first,
                    },
                    pos,
                );
                continue;
            }
            seen.insert(name.to_string(), first_use);
            let address = network
                .node_address(nodes.len())
                .unwrap_or(network.cidr.network());
            nodes.push(Node {
                name,
                role: group.role,
                cpus: node.shape.cpus,
                memory: node.shape.memory,
                disk: node.shape.disk,
                address,
            });
        }
    }
    if nodes.len() as u64 > network.capacity() {
        checker.report(
            ProblemKind::CidrTooSmall {
                cidr: network.cidr.to_string(),
                capacity: network.capacity(),
                nodes: nodes.len(),
            },
            network_pos,
        );
    }
    Cluster {
        name: cluster_name,
        image: draft.image,
        network,
        nodes,
        runtimes: draft.runtimes,
        kubernetes: draft.kubernetes,
        matrix: draft.matrix,
    }
}

/// A group's nodes: its explicit list (what a node leaves unset taken from
/// the group), or `count` (default 1) nodes of the group's shape.
fn plan(group: &GroupDraft) -> Vec<Planned> {
    match &group.nodes {
        Some(list) => list
            .iter()
            .map(|n| {
                let shape = Shape {
                    cpus: n.cpus.unwrap_or(group.shape.cpus),
                    memory: n.memory.unwrap_or(group.shape.memory),
                    disk: n.disk.unwrap_or(group.shape.disk),
                };
                Planned {
                    name: n.name.clone(),
                    shape,
                    pos: n.pos,
                }
            })
            .collect(),
        None => {
            let count = group.count.map(|(c, _)| c).unwrap_or(1);
            (0..count)
                .map(|_| Planned {
                    name: None,
                    shape: group.shape,
                    pos: group.pos,
                })
                .collect()
        }
    }
}

/// The name of the `index`-th node of `group`: the explicit one, or the
/// generated `<cluster>-<cp|worker>-<index + 1>` (a problem at the cluster
/// name's position when that is not a valid node name). With it, where it
/// is written and how a duplicate report names its first use.
fn settle_name(
    explicit: Option<(NodeName, Pos)>,
    pos: Pos,
    group: &GroupDraft,
    index: usize,
    cluster_name: &ClusterName,
    name_pos: Pos,
    checker: &mut Checker,
) -> Option<(NodeName, Pos, FirstUse)> {
    if let Some((n, pos)) = explicit {
        return Some((n, pos, FirstUse::Line(pos.line)));
    }
    let generated = format!("{cluster_name}-{}-{}", group.name_infix(), index + 1);
    match generated.parse::<NodeName>() {
        Ok(n) => Some((n, pos, FirstUse::Generated(group.key()))),
        Err(error) => {
            checker.report(
                ProblemKind::BadGeneratedName {
                    name: generated,
                    error,
                },
                name_pos,
            );
            None
        }
    }
}
