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
use super::raw::{self, Node as YNode, Pos, Value};
use super::{
    ByteSize, Cluster, ClusterName, Kubernetes, MAX_NODE_CPUS, MAX_NODES_PER_GROUP, MIN_NODE_DISK,
    MIN_NODE_MEMORY, MatrixSettings, NameError, Network, Node, NodeName, Role, Runtimes, SizeError,
};
use ipnet::Ipv4Net;
use miette::{NamedSource, SourceSpan};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The `kind` of a cluster file.
pub const KIND: &str = "Cluster";
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

/// A problem with a cluster file, rendered by miette with the offending span.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    #[diagnostic(help("check the path given with -f"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    #[diagnostic(help("a cluster file is YAML text in UTF-8"))]
    NotUtf8 { path: String, offset: usize },
    /// The text is not YAML.
    #[error("{file}:{line}:{column}: invalid YAML: {message}")]
    #[diagnostic(help(
        "fix the YAML syntax; strings with ':' or '#' need quotes, and indentation uses spaces"
    ))]
    Syntax {
        file: String,
        message: String,
        line: usize,
        column: usize,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("here")]
        span: SourceSpan,
    },
    /// One problem in an otherwise well-formed YAML document.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<Problem>),
    /// Several problems, each with its own span.
    #[error("{file}: {} problems in the cluster file", problems.len())]
    #[diagnostic(help("fix each problem listed below"))]
    Many {
        file: String,
        #[related]
        problems: Vec<Problem>,
    },
}

impl SpecError {
    /// The problems found in the document (empty for read and syntax errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Invalid(p) => std::slice::from_ref(p.as_ref()),
            SpecError::Many { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// What is wrong with one value of the cluster file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProblemKind {
    #[error("unknown field `{field}` in {section}")]
    UnknownField {
        field: String,
        section: &'static str,
        suggestion: Option<&'static str>,
        known: &'static [&'static str],
        /// Where the key belongs when it is known at another level.
        belongs_under: Option<&'static str>,
    },
    #[error("duplicate field `{field}`")]
    DuplicateField { field: String },
    #[error("required field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("unsupported apiVersion {found:?}")]
    WrongApiVersion { found: String },
    #[error("unsupported kind {found:?}")]
    WrongKind { found: String },
    #[error("bad size for `{field}`: {error}")]
    BadSize { field: String, error: SizeError },
    #[error("bad name: {0}")]
    BadName(NameError),
    #[error("generated node name {name:?} is not valid: {error}")]
    BadGeneratedName { name: String, error: NameError },
    #[error("{value:?} is not an IPv4 CIDR")]
    BadCidr { value: String },
    #[error("CIDR {value} has host bits set")]
    CidrHostBits { value: String, network: String },
    #[error("CIDR {cidr} has room for {capacity} nodes, but the cluster has {nodes}")]
    CidrTooSmall {
        cidr: String,
        capacity: u64,
        nodes: usize,
    },
    #[error("duplicate node name {name:?}")]
    DuplicateNodeName { name: String, first_line: usize },
    #[error("a cluster needs at least one control plane")]
    ZeroControlPlanes,
    #[error("{group} has {count} nodes; at most {max} are allowed")]
    TooManyNodes {
        group: &'static str,
        count: u64,
        max: u32,
    },
    #[error("`count: {count}` disagrees with the {listed} nodes listed under `nodes`")]
    CountMismatch { count: u32, listed: usize },
    #[error("memory {value} is below the minimum of {min}")]
    MemoryTooSmall { value: ByteSize, min: ByteSize },
    #[error("disk {value} is below the minimum of {min}")]
    DiskTooSmall { value: ByteSize, min: ByteSize },
    #[error("cpus must be between 1 and {max}, found {found}")]
    CpusOutOfRange { found: i128, max: u32 },
    #[error("`{field}` must not be empty")]
    Empty { field: String },
    #[error("no container runtime is enabled")]
    NoRuntime,
    #[error("the file is empty")]
    EmptyDocument,
}

impl ProblemKind {
    fn help(&self) -> Option<String> {
        Some(match self {
            ProblemKind::UnknownField {
                field,
                suggestion,
                known,
                belongs_under,
                ..
            } => match (suggestion, belongs_under) {
                (Some(s), _) => format!("did you mean `{s}`?"),
                (None, Some(parent)) => format!("`{field}` belongs under `{parent}`"),
                (None, None) => format!("known fields here: {}", known.join(", ")),
            },
            ProblemKind::DuplicateField { .. } => "each field may appear once".into(),
            ProblemKind::MissingField { field } => match *field {
                "apiVersion" => format!("add `apiVersion: {}`", crate::API_VERSION),
                "kind" => format!("add `kind: {KIND}`"),
                _ => return None,
            },
            ProblemKind::WrongType {
                expected, found, ..
            } => {
                if *found == "a string" && (expected.contains("integer") || *expected == "true or false") {
                    "write the value without quotes".into()
                } else if *expected == "true or false" {
                    "write true or false (YAML 1.2: yes/no/on/off are strings)".into()
                } else {
                    format!("write {expected} here")
                }
            }
            ProblemKind::WrongApiVersion { .. } => {
                format!("this version of ironclad reads `apiVersion: {}`", crate::API_VERSION)
            }
            ProblemKind::WrongKind { .. } => format!("write `kind: {KIND}`"),
            ProblemKind::BadSize { .. } => {
                "write a number and a unit, like 768MiB, 1GiB or 4G (binary units)".into()
            }
            ProblemKind::BadName(_) | ProblemKind::BadGeneratedName { .. } => {
                "names are DNS-1123 labels: lower-case letters, digits and '-', starting with a letter, at most 63 characters (cluster names: 32)".into()
            }
            ProblemKind::BadCidr { .. } => "write an IPv4 network like 10.5.0.0/24".into(),
            ProblemKind::CidrHostBits { network, .. } => format!("did you mean `{network}`?"),
            ProblemKind::CidrTooSmall { nodes, .. } => {
                let prefix = smallest_prefix_for(*nodes);
                format!(
                    "node addresses start at the network's .2 and the broadcast address is kept free: use a /{prefix} or larger network, or fewer nodes"
                )
            }
            ProblemKind::DuplicateNodeName { first_line, .. } => {
                format!("the name is already used on line {first_line}; node names must be unique")
            }
            ProblemKind::ZeroControlPlanes => {
                "set `controlPlanes.count` to 1 or more (3 for an etcd quorum that survives a node loss)".into()
            }
            ProblemKind::TooManyNodes { .. } => "use fewer nodes in this group".into(),
            ProblemKind::CountMismatch { .. } => {
                "drop `count` when listing `nodes`, or make them agree".into()
            }
            ProblemKind::MemoryTooSmall { min, .. } => {
                format!("give each node at least {min}: the kernel, etcd and containerd need it")
            }
            ProblemKind::DiskTooSmall { min, .. } => format!("give each node at least {min} of disk"),
            ProblemKind::CpusOutOfRange { max, .. } => format!("use 1 to {max} cpus"),
            ProblemKind::Empty { .. } => "give a value or remove the field to use the default".into(),
            ProblemKind::NoRuntime => "enable at least one of runc, crun or gvisor".into(),
            ProblemKind::EmptyDocument => format!(
                "a cluster file starts with `apiVersion: {}` and `kind: {KIND}`",
                crate::API_VERSION
            ),
        })
    }

    fn label(&self) -> &'static str {
        match self {
            ProblemKind::UnknownField { .. } => "unknown field",
            ProblemKind::DuplicateField { .. } => "repeated here",
            ProblemKind::MissingField { .. } => "in this document",
            ProblemKind::WrongType { .. } => "wrong type",
            ProblemKind::WrongApiVersion { .. } => "unsupported version",
            ProblemKind::WrongKind { .. } => "unsupported kind",
            ProblemKind::BadSize { .. } => "not a size",
            ProblemKind::BadName(_) => "invalid name",
            ProblemKind::BadGeneratedName { .. } => "node names are made from this",
            ProblemKind::BadCidr { .. } => "not a CIDR",
            ProblemKind::CidrHostBits { .. } => "host bits set",
            ProblemKind::CidrTooSmall { .. } => "too small",
            ProblemKind::DuplicateNodeName { .. } => "used again here",
            ProblemKind::ZeroControlPlanes => "no control planes",
            ProblemKind::TooManyNodes { .. } => "too many",
            ProblemKind::CountMismatch { .. } => "disagrees with the list",
            ProblemKind::MemoryTooSmall { .. } => "too little memory",
            ProblemKind::DiskTooSmall { .. } => "too small",
            ProblemKind::CpusOutOfRange { .. } => "out of range",
            ProblemKind::Empty { .. } => "empty",
            ProblemKind::NoRuntime => "all runtimes disabled",
            ProblemKind::EmptyDocument => "nothing here",
        }
    }
}

/// The prefix length of the smallest network that holds `nodes` addresses
/// under [`Network::node_address`] (3 addresses are not used for nodes).
fn smallest_prefix_for(nodes: usize) -> u8 {
    let needed = (nodes as u64).saturating_add(3);
    let mut prefix = 30u8;
    while prefix > 0 && (1u64 << (32 - u32::from(prefix))) < needed {
        prefix -= 1;
    }
    prefix
}

/// One problem with its place in the file.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{kind}")]
pub struct Problem {
    kind: ProblemKind,
    line: usize,
    column: usize,
    #[source_code]
    src: NamedSource<Arc<str>>,
    #[label("{label}")]
    span: SourceSpan,
    label: &'static str,
    #[help]
    help: Option<String>,
}

impl Problem {
    pub fn kind(&self) -> &ProblemKind {
        &self.kind
    }
    /// 1-based line of the offending value.
    pub fn line(&self) -> usize {
        self.line
    }
    /// 1-based column of the offending value.
    pub fn column(&self) -> usize {
        self.column
    }
}

/// Shape of a node: what a group gives its nodes unless a node says otherwise.
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

fn default_cidr() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(10, 5, 0, 0), 24).unwrap_or_default()
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
                self.wrong_type("a key", "a string", k);
                continue;
            };
            if let Some(known_key) = known.iter().find(|c| **c == key.as_str()) {
                if out.insert(*known_key, (k, v)).is_some() {
                    self.report(ProblemKind::DuplicateField { field: key.clone() }, k.pos);
                }
            } else {
                self.report(
                    ProblemKind::UnknownField {
                        field: key.clone(),
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
        if matches!(root.value, Value::Null) {
            self.report(ProblemKind::EmptyDocument, root.pos);
            return;
        }
        let Some(top) = self.fields(root, "the document", "the document", ROOT_KEYS) else {
            return;
        };
        match self.string(&top, "apiVersion") {
            Some((v, _)) if v == crate::API_VERSION => {}
            Some((v, pos)) => self.report(
                ProblemKind::WrongApiVersion {
                    found: v.to_string(),
                },
                pos,
            ),
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
            Some((v, pos)) => self.report(
                ProblemKind::WrongKind {
                    found: v.to_string(),
                },
                pos,
            ),
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
                            value: cidr.to_string(),
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
                    Err(_) => self.report(
                        ProblemKind::BadCidr {
                            value: cidr.to_string(),
                        },
                        pos,
                    ),
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

/// Resolves a draft into the cluster: names, addresses, cross-field rules.
fn assemble(draft: Draft, checker: &mut Checker) -> Cluster {
    let (cluster_name, name_pos) = draft.name;
    let (network, network_pos) = draft.network;
    let mut nodes: Vec<Node> = Vec::new();
    // Name → line of first use, for duplicate reports.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for group in &draft.groups {
        let resolved: Vec<(Option<(NodeName, Pos)>, Shape, Pos)> = match &group.nodes {
            Some(list) => list
                .iter()
                .map(|n| {
                    let shape = Shape {
                        cpus: n.cpus.unwrap_or(group.shape.cpus),
                        memory: n.memory.unwrap_or(group.shape.memory),
                        disk: n.disk.unwrap_or(group.shape.disk),
                    };
                    (n.name.clone(), shape, n.pos)
                })
                .collect(),
            None => {
                let count = group.count.map(|(c, _)| c).unwrap_or(1);
                (0..count).map(|_| (None, group.shape, group.pos)).collect()
            }
        };
        if group.role == Role::ControlPlane && resolved.is_empty() {
            let pos = group.count.map(|(_, p)| p).unwrap_or(group.pos);
            checker.report(ProblemKind::ZeroControlPlanes, pos);
        }
        for (i, (name, shape, pos)) in resolved.into_iter().enumerate() {
            let (name, pos) = match name {
                Some(n) => n,
                None => {
                    let generated = format!("{cluster_name}-{}-{}", group.name_infix(), i + 1);
                    match generated.parse::<NodeName>() {
                        Ok(n) => (n, pos),
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
            if let Some(first_line) = seen.get(name.as_str()) {
                checker.report(
                    ProblemKind::DuplicateNodeName {
                        name: name.to_string(),
                        first_line: *first_line,
                    },
                    pos,
                );
                continue;
            }
            seen.insert(name.to_string(), pos.line);
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

/// Parses and validates a cluster file's text. `file_name` is used in diagnostics.
pub fn parse_cluster(src: &str, file_name: &str) -> Result<Cluster, SpecError> {
    let shared: Arc<str> = Arc::from(src);
    let named = || NamedSource::new(file_name, shared.clone());
    let root = match raw::parse_tree(src) {
        Ok(root) => root,
        Err(e) => {
            let pos = e
                .location()
                .map(|l| raw::pos_of(&l, src))
                .unwrap_or_default();
            let message = e.without_snippet().to_string();
            return Err(SpecError::Syntax {
                file: file_name.to_string(),
                message,
                line: pos.line.max(1),
                column: pos.column.max(1),
                src: named(),
                span: span_of(pos, src),
            });
        }
    };
    let mut checker = Checker::default();
    let mut draft = Draft::defaults();
    checker.document(&root, &mut draft);
    let cluster = assemble(draft, &mut checker);
    let mut problems: Vec<Problem> = checker
        .problems
        .into_iter()
        .map(|(kind, pos)| Problem {
            help: kind.help(),
            label: kind.label(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            src: named(),
            span: span_of(pos, src),
            kind,
        })
        .collect();
    problems.sort_by_key(|p| (p.line, p.column));
    match problems.len() {
        0 => Ok(cluster),
        1 => Err(SpecError::Invalid(Box::new(problems.remove(0)))),
        _ => Err(SpecError::Many {
            file: file_name.to_string(),
            problems,
        }),
    }
}

/// A miette span for `pos`, kept inside `src`.
fn span_of(pos: Pos, src: &str) -> SourceSpan {
    let offset = pos.offset.min(src.len());
    let len = pos.len.min(src.len() - offset);
    SourceSpan::new(offset.into(), len)
}

/// Reads and parses a cluster file.
pub fn parse_cluster_file(path: &Path) -> Result<Cluster, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let src = String::from_utf8(bytes).map_err(|e| SpecError::NotUtf8 {
        path: path.display().to_string(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    parse_cluster(&src, &path.display().to_string())
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
