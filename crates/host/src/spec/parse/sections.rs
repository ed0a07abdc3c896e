//! The sections of a cluster file, key by key: the document's header
//! (`apiVersion`, `kind`, `metadata`), `spec` and each of its sections, and
//! the node groups with their `nodes` lists. Each read writes into the
//! [`Draft`]; each bad value is a problem and the walk goes on.

use super::KIND;
use super::draft::{Draft, GroupDraft, NodeDraft};
use super::reader::{Checker, Fields};
use crate::spec::did_you_mean::suggest;
use crate::spec::error::ProblemKind;
use crate::spec::raw::{Node as YNode, Pos, Value};
use crate::spec::{
    ALL_CHECKS, ClusterName, MAX_NODES_PER_GROUP, MatrixSettings, Network, Role, Runtimes, clip,
};
use ipnet::Ipv4Net;

const ROOT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_KEYS: &[&str] = &["name"];
const SPEC_KEYS: &[&str] = &[
    "image",
    "network",
    "controlPlanes",
    "workers",
    "runtimes",
    "kubernetes",
    "matrix",
];
const NETWORK_KEYS: &[&str] = &["cidr", "egress"];
const GROUP_KEYS: &[&str] = &["count", "cpus", "memory", "disk", "nodes"];
const NODE_KEYS: &[&str] = &["name", "cpus", "memory", "disk"];
const RUNTIME_KEYS: &[&str] = &["runc", "crun", "gvisor", "userNamespaces"];
const KUBERNETES_KEYS: &[&str] = &["enabled"];
const MATRIX_KEYS: &[&str] = &["checks", "destructive"];

/// Keys that are known one level down, to say where a misplaced key belongs.
pub(super) fn belongs_under(section: &str, key: &str) -> Option<&'static str> {
    match section {
        "the document" if METADATA_KEYS.contains(&key) => Some("metadata"),
        "the document" if SPEC_KEYS.contains(&key) => Some("spec"),
        "spec" if NETWORK_KEYS.contains(&key) => Some("spec.network"),
        "spec" if RUNTIME_KEYS.contains(&key) => Some("spec.runtimes"),
        "spec" if GROUP_KEYS.contains(&key) => Some("spec.controlPlanes or spec.workers"),
        _ => None,
    }
}

impl Checker {
    /// The whole document: its header, then `metadata` and `spec`.
    pub(super) fn document(&mut self, root: &YNode, draft: &mut Draft) {
        match root.value {
            Value::Null => {
                self.report(ProblemKind::EmptyDocument, root.pos);
                return;
            }
            Value::Map(_) => {}
            ref other => {
                self.report(
                    ProblemKind::NotAMapping {
                        found: other.describe(),
                    },
                    root.pos,
                );
                return;
            }
        }
        let Some(top) = self.fields(root, "the document", "the document", ROOT_KEYS) else {
            return;
        };
        match self.string(&top, "apiVersion") {
            Some((v, _)) if v == crate::API_VERSION => {}
            Some((v, pos)) => self.report(ProblemKind::WrongApiVersion { found: clip(v) }, pos),
            None if top.get("apiVersion").is_none() => self.report(
                ProblemKind::MissingField {
                    field: "apiVersion",
                },
                root.pos,
            ),
            None => {}
        }
        match self.string(&top, "kind") {
            Some((v, _)) if v == KIND => {}
            Some((v, pos)) => self.report(ProblemKind::WrongKind { found: clip(v) }, pos),
            None if top.get("kind").is_none() => {
                self.report(ProblemKind::MissingField { field: "kind" }, root.pos)
            }
            None => {}
        }
        if let Some(meta) = self.section(&top, "metadata", "metadata", METADATA_KEYS)
            && let Some((name, pos)) = self.string(&meta, "name")
        {
            match name.parse::<ClusterName>() {
                Ok(n) => draft.name = (n, pos),
                Err(e) => self.report(ProblemKind::BadName(e), pos),
            }
        }
        if let Some(spec) = self.section(&top, "spec", "spec", SPEC_KEYS) {
            self.spec(&spec, draft);
        }
    }

    /// `spec`: each section in turn (what the file leaves out keeps its
    /// default).
    fn spec(&mut self, spec: &Fields, draft: &mut Draft) {
        if let Some((image, _)) = self.string(spec, "image") {
            draft.image = image.to_string();
        }
        self.network(spec, &mut draft.network);
        for group in draft.groups.iter_mut() {
            self.group_section(spec, group);
        }
        self.runtimes(spec, &mut draft.runtimes);
        if let Some(k) = self.section(spec, "kubernetes", "spec.kubernetes", KUBERNETES_KEYS)
            && let Some(enabled) = self.boolean(&k, "enabled")
        {
            // The image has no Kubernetes binaries: a cluster that asks
            // for Kubernetes would silently come up without it.
            if enabled {
                let pos = k.get("enabled").map(|n| n.pos).unwrap_or_default();
                self.report(ProblemKind::KubernetesUnsupported, pos);
            }
            draft.kubernetes.enabled = enabled;
        }
        self.matrix(spec, &mut draft.matrix);
    }

    /// `spec.network`: the CIDR (a network address, no host bits) and egress.
    fn network(&mut self, spec: &Fields, network: &mut (Network, Pos)) {
        let Some(net) = self.section(spec, "network", "spec.network", NETWORK_KEYS) else {
            return;
        };
        if let Some(pos) = spec.key_pos("network") {
            network.1 = pos;
        }
        if let Some((cidr, pos)) = self.string(&net, "cidr") {
            match cidr.trim().parse::<Ipv4Net>() {
                Ok(c) if c.trunc() != c => self.report(
                    ProblemKind::CidrHostBits {
                        value: clip(cidr),
                        network: c.trunc().to_string(),
                    },
                    pos,
                ),
                Ok(c) => {
                    *network = (
                        Network {
                            cidr: c,
                            ..network.0.clone()
                        },
                        pos,
                    )
                }
                Err(_) => self.report(ProblemKind::BadCidr { value: clip(cidr) }, pos),
            }
        }
        if let Some(egress) = self.boolean(&net, "egress") {
            network.0.egress = egress;
        }
    }

    /// `spec.controlPlanes` or `spec.workers`, as `group`'s role says.
    fn group_section(&mut self, spec: &Fields, group: &mut GroupDraft) {
        let key = group.key();
        if let Some(pos) = spec.key_pos(key) {
            group.pos = pos;
        }
        let section = match group.role {
            Role::ControlPlane => "spec.controlPlanes",
            Role::Worker => "spec.workers",
        };
        if let Some(g) = self.section(spec, key, section, GROUP_KEYS) {
            self.group(&g, group);
        }
    }

    /// `spec.runtimes`: the switches, at least one runtime left on.
    fn runtimes(&mut self, spec: &Fields, r: &mut Runtimes) {
        let Some(rt) = self.section(spec, "runtimes", "spec.runtimes", RUNTIME_KEYS) else {
            return;
        };
        for (key, slot) in [
            ("runc", &mut r.runc),
            ("crun", &mut r.crun),
            ("gvisor", &mut r.gvisor),
            ("userNamespaces", &mut r.user_namespaces),
        ] {
            if let Some(b) = self.boolean(&rt, key) {
                *slot = b;
            }
        }
        if !(r.runc || r.crun || r.gvisor) {
            let pos = spec.key_pos("runtimes").unwrap_or_default();
            self.report(ProblemKind::NoRuntime, pos);
        }
    }

    /// `spec.matrix`: the check ids and whether destructive checks run.
    fn matrix(&mut self, spec: &Fields, matrix: &mut MatrixSettings) {
        let Some(m) = self.section(spec, "matrix", "spec.matrix", MATRIX_KEYS) else {
            return;
        };
        if let Some(d) = self.boolean(&m, "destructive") {
            matrix.destructive = d;
        }
        if let Some(node) = m.get("checks") {
            self.checks(node, matrix);
        }
    }

    /// `spec.matrix.checks`: a non-empty list of check ids of the catalog
    /// (any case; kept in the catalog's spelling), or `[all]`. A destructive
    /// check needs `destructive: true` (read first).
    fn checks(&mut self, node: &YNode, matrix: &mut MatrixSettings) {
        let Value::Seq(items) = &node.value else {
            self.wrong_type("checks", "a list of check ids", node);
            return;
        };
        if items.is_empty() {
            self.report(
                ProblemKind::Empty {
                    field: "checks".into(),
                },
                node.pos,
            );
            return;
        }
        let mut checks = Vec::new();
        let mut all_at = None;
        for item in items {
            match &item.value {
                Value::Str(s) if s.trim() == ALL_CHECKS => all_at = Some(item.pos),
                Value::Str(s) if !s.trim().is_empty() => {
                    let id = s.trim();
                    match crate::matrix::find(id) {
                        Some(c) if c.destructive && !matrix.destructive => self.report(
                            ProblemKind::DestructiveCheck {
                                id: c.id.as_str().to_string(),
                            },
                            item.pos,
                        ),
                        Some(c) => checks.push(c.id.as_str().to_string()),
                        None => {
                            let known: Vec<&str> = crate::matrix::CATALOG
                                .iter()
                                .map(|c| c.id.as_str())
                                .chain([ALL_CHECKS])
                                .collect();
                            self.report(
                                ProblemKind::UnknownCheck {
                                    id: clip(id),
                                    suggestion: suggest(id, &known).map(str::to_string),
                                },
                                item.pos,
                            )
                        }
                    }
                }
                Value::Str(_) => self.report(
                    ProblemKind::Empty {
                        field: "a check id".into(),
                    },
                    item.pos,
                ),
                _ => self.wrong_type("a check id", "a string", item),
            }
        }
        if let Some(pos) = all_at {
            if items.len() > 1 {
                self.report(ProblemKind::AllWithOthers, pos);
            }
            matrix.checks = vec![ALL_CHECKS.to_string()];
            return;
        }
        matrix.checks = checks;
    }

    /// A group's count and shape, then its `nodes` list.
    fn group(&mut self, g: &Fields, group: &mut GroupDraft) {
        if let Some(node) = g.get("count") {
            match node.value {
                Value::Int(n) if n < 0 => self.wrong_type("count", "a non-negative integer", node),
                Value::Int(n) => match u32::try_from(n) {
                    Ok(c) if c <= MAX_NODES_PER_GROUP => group.count = Some((c, node.pos)),
                    _ => self.report(
                        ProblemKind::TooManyNodes {
                            group: group.key(),
                            count: u64::try_from(n).unwrap_or(u64::MAX),
                            max: MAX_NODES_PER_GROUP,
                        },
                        node.pos,
                    ),
                },
                _ => self.wrong_type("count", "an integer", node),
            }
        }
        if let Some(c) = self.cpus(g) {
            group.shape.cpus = c;
        }
        if let Some(m) = self.memory(g) {
            group.shape.memory = m;
        }
        if let Some(d) = self.disk(g) {
            group.shape.disk = d;
        }
        if let Some(list) = g.get("nodes") {
            self.nodes(list, group);
        }
    }

    /// A group's explicit `nodes` list: each node's name and shape; the
    /// group's `count`, when also given, must match its length.
    fn nodes(&mut self, list: &YNode, group: &mut GroupDraft) {
        let items = match &list.value {
            Value::Seq(items) => items,
            _ => {
                self.wrong_type("nodes", "a list of nodes", list);
                return;
            }
        };
        if items.len() > MAX_NODES_PER_GROUP as usize {
            self.report(
                ProblemKind::TooManyNodes {
                    group: group.key(),
                    count: items.len() as u64,
                    max: MAX_NODES_PER_GROUP,
                },
                list.pos,
            );
            return;
        }
        let mut nodes = Vec::new();
        for item in items {
            let Some(f) = self.fields(item, "a node", "a node", NODE_KEYS) else {
                continue;
            };
            let name = self
                .string(&f, "name")
                .and_then(|(n, pos)| match n.parse() {
                    Ok(name) => Some((name, pos)),
                    Err(e) => {
                        self.report(ProblemKind::BadName(e), pos);
                        None
                    }
                });
            nodes.push(NodeDraft {
                pos: item.pos,
                name,
                cpus: self.cpus(&f),
                memory: self.memory(&f),
                disk: self.disk(&f),
            });
        }
        if let Some((count, pos)) = group.count
            && count as usize != items.len()
        {
            self.report(
                ProblemKind::CountMismatch {
                    count,
                    listed: items.len(),
                },
                pos,
            );
        }
        group.nodes = Some(nodes);
    }
}
