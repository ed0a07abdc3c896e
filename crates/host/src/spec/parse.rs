//! Parsing the cluster file: YAML to a positioned tree ([`super::raw`]), the tree
//! to a validated [`Cluster`]. Every problem becomes a [`Problem`] pointing at its
//! file, line and column; all problems found are reported together.
//!
//! The format (`apiVersion` and `kind` are required, everything else has a default):
//!
//! ```yaml
//! apiVersion: ironclad.dev/v1alpha1
//! kind: Cluster
//! metadata: {name: dev}                 # default "ironclad"
//! spec:
//!   image: trixie                       # recipe under images/ or a path
//!   network: {cidr: 10.5.0.0/24, egress: false}
//!   controlPlanes: {count: 1, cpus: 1, memory: 1GiB, disk: 4GiB}
//!   workers:                            # or an explicit list; unset fields take the group's
//!     nodes: [{name: w-a, memory: 2GiB}, {name: w-b}]
//!   runtimes: {runc: true, crun: true, gvisor: true, userNamespaces: true}
//!   kubernetes: {enabled: false}
//!   matrix: {checks: [all], destructive: false}
//! ```

use super::did_you_mean::suggest;
use super::error::Excerpt;
pub use super::error::{
    EXCERPT_LINE_BYTES, FirstUse, MAX_REPORTED_PROBLEMS, Problem, ProblemKind, SpecError,
    SyntaxError,
};
use super::raw::{self, Node as YNode, Pos, Value};
use super::{
    ByteSize, Cluster, ClusterName, Kubernetes, MAX_NODE_CPUS, MAX_NODES_PER_GROUP, MIN_NODE_DISK,
    MIN_NODE_MEMORY, MatrixSettings, Network, Node, NodeName, Role, Runtimes, SizeError,
};
use super::{clip, clip_to};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::path::Path;

/// The `kind` of a cluster file.
pub const KIND: &str = "Cluster";
/// The largest cluster file read: a real one is a few hundred bytes, and a
/// larger file is refused before it is parsed.
pub const MAX_CLUSTER_FILE_BYTES: u64 = 1 << 20;
/// The image recipe when the file does not name one.
pub const DEFAULT_IMAGE: &str = "trixie";
/// The cluster network when the file does not give one.
pub const DEFAULT_CIDR: &str = "10.5.0.0/24";

/// Default shape of a control plane: 1 vCPU, 1 GiB, 4 GiB disk.
const CP_DEFAULTS: Shape = Shape {
    cpus: 1,
    memory: ByteSize::gib(1),
    disk: ByteSize::gib(4),
};
/// Default shape of a worker: 1 vCPU, 768 MiB, 4 GiB disk.
const WORKER_DEFAULTS: Shape = Shape {
    cpus: 1,
    memory: ByteSize::mib(768),
    disk: ByteSize::gib(4),
};

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

#[derive(Debug, Clone, Copy)]
struct Shape {
    cpus: u32,
    memory: ByteSize,
    disk: ByteSize,
}

/// A node group as read from the file, before names and addresses are assigned.
struct GroupDraft {
    role: Role,
    /// Where the group is written (its key), for problems about the group as a whole.
    pos: Pos,
    count: Option<(u32, Pos)>,
    shape: Shape,
    nodes: Option<Vec<NodeDraft>>,
}

struct NodeDraft {
    pos: Pos,
    name: Option<(NodeName, Pos)>,
    cpus: Option<u32>,
    memory: Option<ByteSize>,
    disk: Option<ByteSize>,
}

impl GroupDraft {
    fn new(role: Role) -> Self {
        GroupDraft {
            role,
            pos: Pos::default(),
            count: None,
            shape: match role {
                Role::ControlPlane => CP_DEFAULTS,
                Role::Worker => WORKER_DEFAULTS,
            },
            nodes: None,
        }
    }
    fn key(&self) -> &'static str {
        match self.role {
            Role::ControlPlane => "controlPlanes",
            Role::Worker => "workers",
        }
    }
    fn name_infix(&self) -> &'static str {
        match self.role {
            Role::ControlPlane => "cp",
            Role::Worker => "worker",
        }
    }
}

/// Everything read from the file, with defaults for what it leaves out.
struct Draft {
    name: (ClusterName, Pos),
    image: String,
    network: (Network, Pos),
    groups: [GroupDraft; 2],
    runtimes: Runtimes,
    kubernetes: Kubernetes,
    matrix: MatrixSettings,
}

impl Draft {
    fn defaults() -> Self {
        Draft {
            name: (ClusterName::default(), Pos::default()),
            image: DEFAULT_IMAGE.to_string(),
            network: (
                Network {
                    cidr: default_cidr(),
                    egress: false,
                },
                Pos::default(),
            ),
            groups: [
                GroupDraft::new(Role::ControlPlane),
                GroupDraft::new(Role::Worker),
            ],
            runtimes: Runtimes::default(),
            kubernetes: Kubernetes::default(),
            matrix: MatrixSettings::default(),
        }
    }
}

/// [`DEFAULT_CIDR`] (a constant that parses: checked by the default-cluster test).
fn default_cidr() -> Ipv4Net {
    DEFAULT_CIDR.parse().unwrap_or_default()
}

/// Collects problems while walking the tree.
#[derive(Default)]
struct Checker {
    problems: Vec<(ProblemKind, Pos)>,
}

/// The entries of one mapping, by key, after unknown and repeated keys were reported.
struct Fields<'a> {
    entries: HashMap<&'a str, (&'a YNode, &'a YNode)>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a YNode> {
        self.entries.get(key).map(|(_, v)| *v)
    }
    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries.get(key).map(|(k, _)| k.pos)
    }
}

/// Keys that are known one level down, to say where a misplaced key belongs.
fn belongs_under(section: &str, key: &str) -> Option<&'static str> {
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
    fn report(&mut self, kind: ProblemKind, pos: Pos) {
        self.problems.push((kind, pos));
    }

    fn wrong_type(&mut self, field: &str, expected: &'static str, node: &YNode) {
        self.report(
            ProblemKind::WrongType {
                field: field.to_string(),
                expected,
                found: node.value.describe(),
            },
            node.pos,
        );
    }

    /// Reads a mapping, reporting unknown and repeated keys. A null (an empty
    /// section such as `spec:`) is an empty mapping.
    fn fields<'a>(
        &mut self,
        node: &'a YNode,
        field: &str,
        section: &'static str,
        known: &'static [&'static str],
    ) -> Option<Fields<'a>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Fields {
                    entries: HashMap::new(),
                });
            }
            _ => {
                self.wrong_type(field, "a mapping", node);
                return None;
            }
        };
        let mut out = HashMap::new();
        for (k, v) in entries {
            let Value::Str(key) = &k.value else {
                self.report(
                    ProblemKind::KeyNotString {
                        found: k.value.describe(),
                    },
                    k.pos,
                );
                continue;
            };
            if let Some(known_key) = known.iter().find(|c| **c == key.as_str()) {
                if out.insert(*known_key, (k, v)).is_some() {
                    self.report(ProblemKind::DuplicateField { field: clip(key) }, k.pos);
                }
            } else {
                self.report(
                    ProblemKind::UnknownField {
                        field: clip(key),
                        section,
                        suggestion: suggest(key, known),
                        known,
                        belongs_under: belongs_under(section, key),
                    },
                    k.pos,
                );
            }
        }
        Some(Fields { entries: out })
    }

    fn string<'a>(&mut self, fields: &Fields<'a>, key: &str) -> Option<(&'a str, Pos)> {
        let node = fields.get(key)?;
        match &node.value {
            Value::Str(s) if s.trim().is_empty() => {
                self.report(
                    ProblemKind::Empty {
                        field: key.to_string(),
                    },
                    node.pos,
                );
                None
            }
            Value::Str(s) => Some((s.as_str(), node.pos)),
            _ => {
                self.wrong_type(key, "a string", node);
                None
            }
        }
    }

    fn boolean(&mut self, fields: &Fields, key: &str) -> Option<bool> {
        let node = fields.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(key, "true or false", node);
                None
            }
        }
    }

    fn integer(&mut self, fields: &Fields, key: &str) -> Option<(i128, Pos)> {
        let node = fields.get(key)?;
        match node.value {
            Value::Int(i) => Some((i, node.pos)),
            _ => {
                self.wrong_type(key, "an integer", node);
                None
            }
        }
    }

    fn cpus(&mut self, fields: &Fields) -> Option<u32> {
        let (n, pos) = self.integer(fields, "cpus")?;
        match u32::try_from(n) {
            Ok(c) if (1..=MAX_NODE_CPUS).contains(&c) => Some(c),
            _ => {
                self.report(
                    ProblemKind::CpusOutOfRange {
                        found: n,
                        max: MAX_NODE_CPUS,
                    },
                    pos,
                );
                None
            }
        }
    }

    fn size(&mut self, fields: &Fields, key: &str) -> Option<(ByteSize, Pos)> {
        let node = fields.get(key)?;
        let parsed = match &node.value {
            Value::Str(s) => s.parse::<ByteSize>(),
            Value::Int(i) => u64::try_from(*i)
                .map(ByteSize::bytes)
                .map_err(|_| SizeError::Malformed(i.to_string())),
            _ => {
                self.wrong_type(key, "a size such as 1GiB", node);
                return None;
            }
        };
        match parsed {
            Ok(size) => Some((size, node.pos)),
            Err(error) => {
                self.report(
                    ProblemKind::BadSize {
                        field: key.to_string(),
                        error,
                    },
                    node.pos,
                );
                None
            }
        }
    }

    fn memory(&mut self, fields: &Fields) -> Option<ByteSize> {
        let (value, pos) = self.size(fields, "memory")?;
        if value < MIN_NODE_MEMORY {
            self.report(
                ProblemKind::MemoryTooSmall {
                    value,
                    min: MIN_NODE_MEMORY,
                },
                pos,
            );
            return None;
        }
        Some(value)
    }

    fn disk(&mut self, fields: &Fields) -> Option<ByteSize> {
        let (value, pos) = self.size(fields, "disk")?;
        if value < MIN_NODE_DISK {
            self.report(
                ProblemKind::DiskTooSmall {
                    value,
                    min: MIN_NODE_DISK,
                },
                pos,
            );
            return None;
        }
        Some(value)
    }

    fn document(&mut self, root: &YNode, draft: &mut Draft) {
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
        if let Some(meta) = top
            .get("metadata")
            .and_then(|m| self.fields(m, "metadata", "metadata", METADATA_KEYS))
        {
            if let Some((name, pos)) = self.string(&meta, "name") {
                match name.parse::<ClusterName>() {
                    Ok(n) => draft.name = (n, pos),
                    Err(e) => self.report(ProblemKind::BadName(e), pos),
                }
            }
        }
        if let Some(spec) = top
            .get("spec")
            .and_then(|s| self.fields(s, "spec", "spec", SPEC_KEYS))
        {
            self.spec(&spec, draft);
        }
    }

    fn spec(&mut self, spec: &Fields, draft: &mut Draft) {
        if let Some((image, _)) = self.string(spec, "image") {
            draft.image = image.to_string();
        }
        if let Some(net) = spec
            .get("network")
            .and_then(|n| self.fields(n, "network", "spec.network", NETWORK_KEYS))
        {
            if let Some(pos) = spec.key_pos("network") {
                draft.network.1 = pos;
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
                        draft.network = (
                            Network {
                                cidr: c,
                                ..draft.network.0.clone()
                            },
                            pos,
                        )
                    }
                    Err(_) => self.report(ProblemKind::BadCidr { value: clip(cidr) }, pos),
                }
            }
            if let Some(egress) = self.boolean(&net, "egress") {
                draft.network.0.egress = egress;
            }
        }
        for group in draft.groups.iter_mut() {
            let key = group.key();
            if let Some(pos) = spec.key_pos(key) {
                group.pos = pos;
            }
            let section = match group.role {
                Role::ControlPlane => "spec.controlPlanes",
                Role::Worker => "spec.workers",
            };
            if let Some(g) = spec
                .get(key)
                .and_then(|g| self.fields(g, key, section, GROUP_KEYS))
            {
                self.group(&g, group);
            }
        }
        if let Some(rt) = spec
            .get("runtimes")
            .and_then(|r| self.fields(r, "runtimes", "spec.runtimes", RUNTIME_KEYS))
        {
            let r = &mut draft.runtimes;
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
        if let Some(k) = spec
            .get("kubernetes")
            .and_then(|k| self.fields(k, "kubernetes", "spec.kubernetes", KUBERNETES_KEYS))
        {
            if let Some(enabled) = self.boolean(&k, "enabled") {
                draft.kubernetes.enabled = enabled;
            }
        }
        if let Some(m) = spec
            .get("matrix")
            .and_then(|m| self.fields(m, "matrix", "spec.matrix", MATRIX_KEYS))
        {
            if let Some(node) = m.get("checks") {
                self.checks(node, &mut draft.matrix);
            }
            if let Some(d) = self.boolean(&m, "destructive") {
                draft.matrix.destructive = d;
            }
        }
    }

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
        for item in items {
            match &item.value {
                Value::Str(s) if !s.trim().is_empty() => checks.push(s.trim().to_string()),
                Value::Str(_) => self.report(
                    ProblemKind::Empty {
                        field: "a check id".into(),
                    },
                    item.pos,
                ),
                _ => self.wrong_type("a check id", "a string", item),
            }
        }
        matrix.checks = checks;
    }

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
        let Some(list) = g.get("nodes") else {
            return;
        };
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
        if let Some((count, pos)) = group.count {
            if count as usize != items.len() {
                self.report(
                    ProblemKind::CountMismatch {
                        count,
                        listed: items.len(),
                    },
                    pos,
                );
            }
        }
        group.nodes = Some(nodes);
    }
}

/// A node of a group before its name is settled: the explicit name if any, its
/// shape and where it is written.
struct Planned {
    name: Option<(NodeName, Pos)>,
    shape: Shape,
    pos: Pos,
}

/// Resolves a draft into the cluster: names, addresses, cross-field rules.
fn assemble(draft: Draft, checker: &mut Checker) -> Cluster {
    let (cluster_name, name_pos) = draft.name;
    let (network, network_pos) = draft.network;
    let mut nodes: Vec<Node> = Vec::new();
    // Name → its first use, for duplicate reports.
    let mut seen: HashMap<String, FirstUse> = HashMap::new();
    for group in &draft.groups {
        let resolved: Vec<Planned> = match &group.nodes {
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
        };
        if group.role == Role::ControlPlane && resolved.is_empty() {
            let pos = group.count.map(|(_, p)| p).unwrap_or(group.pos);
            checker.report(ProblemKind::ZeroControlPlanes, pos);
        }
        for (i, Planned { name, shape, pos }) in resolved.into_iter().enumerate() {
            let (name, pos, first_use) = match name {
                Some((n, pos)) => (n, pos, FirstUse::Line(pos.line)),
                None => {
                    let generated = format!("{cluster_name}-{}-{}", group.name_infix(), i + 1);
                    match generated.parse::<NodeName>() {
                        Ok(n) => (n, pos, FirstUse::Generated(group.key())),
                        Err(error) => {
                            checker.report(
                                ProblemKind::BadGeneratedName {
                                    name: generated,
                                    error,
                                },
                                name_pos,
                            );
                            continue;
                        }
                    }
                }
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
                cpus: shape.cpus,
                memory: shape.memory,
                disk: shape.disk,
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

/// The built-in cluster `ironclad create` uses without a file: `ironclad`, one
/// control plane (1 cpu, 1 GiB) and one worker (1 cpu, 768 MiB), 4 GiB disks,
/// network 10.5.0.0/24 without egress, image `trixie`, all runtimes.
pub fn default_cluster() -> Cluster {
    let mut checker = Checker::default();
    let cluster = assemble(Draft::defaults(), &mut checker);
    debug_assert!(checker.problems.is_empty(), "{:?}", checker.problems);
    cluster
}

/// Parses and validates a cluster file's text. `file_name` is used in
/// diagnostics. Text over [`MAX_CLUSTER_FILE_BYTES`] is refused unparsed.
pub fn parse_cluster(src: &str, file_name: &str) -> Result<Cluster, SpecError> {
    if src.len() as u64 > MAX_CLUSTER_FILE_BYTES {
        return Err(SpecError::TooLarge {
            path: file_name.to_string(),
            size: src.len() as u64,
            max: MAX_CLUSTER_FILE_BYTES,
        });
    }
    let root = match raw::parse_tree(src) {
        Ok(root) => root,
        Err(e) => {
            let pos = e
                .location()
                .map(|l| raw::pos_of(&l, src))
                .unwrap_or_default();
            // The user-facing wording, without the developer hints and the
            // "at line N, column M" that the span already shows; cut, as it
            // may quote the input.
            let message = clip_to(
                &serde_saphyr::MessageFormatter::format_message(
                    &serde_saphyr::DefaultMessageFormatter,
                    e.without_snippet(),
                ),
                EXCERPT_LINE_BYTES,
            );
            let (excerpt, span) = Excerpt::around(file_name, src, pos);
            return Err(SpecError::Syntax(Box::new(SyntaxError {
                file: file_name.to_string(),
                line: pos.line.max(1),
                column: pos.column.max(1),
                src: excerpt,
                span,
                help: SyntaxError::help_for(&message),
                message,
            })));
        }
    };
    let mut checker = Checker::default();
    let mut draft = Draft::defaults();
    checker.document(&root, &mut draft);
    let cluster = assemble(draft, &mut checker);
    let mut found = checker.problems;
    found.sort_by_key(|(_, pos)| (pos.line.max(1), pos.column.max(1)));
    let total = found.len();
    // Only the reported problems get an excerpt of the file.
    let mut problems: Vec<Problem> = found
        .into_iter()
        .take(MAX_REPORTED_PROBLEMS)
        .map(|(kind, pos)| Problem::new(kind, pos, file_name, src))
        .collect();
    match total {
        0 => Ok(cluster),
        1 => Err(SpecError::Invalid(Box::new(problems.remove(0)))),
        _ => Err(SpecError::many(file_name.to_string(), problems, total)),
    }
}

/// Reads and parses a cluster file. A file over [`MAX_CLUSTER_FILE_BYTES`]
/// is refused by its size, before its contents are read (and a stream that
/// does not say its size, once that many bytes were read).
pub fn parse_cluster_file(path: &Path) -> Result<Cluster, SpecError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read_err = |source| SpecError::Read {
        path: shown.clone(),
        source,
    };
    let too_large = |size| SpecError::TooLarge {
        path: shown.clone(),
        size,
        max: MAX_CLUSTER_FILE_BYTES,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_CLUSTER_FILE_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CLUSTER_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CLUSTER_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    let src = String::from_utf8(bytes).map_err(|e| SpecError::NotUtf8 {
        path: shown.clone(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    parse_cluster(&src, &shown)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
