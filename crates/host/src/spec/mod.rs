//! The cluster file (`clusters/*.yaml`, `kind: Cluster`): its validated model, the
//! newtypes that cannot hold a bad value (names, sizes, CIDRs), and the defaults
//! that make `ironclad create` with no file give a 1+1 cluster.
//!
//! Parsing YAML and turning every problem into a diagnostic with a source span
//! lives in [`parse`]; this module owns only the model. It does not know about
//! PKI, machine configs or QEMU: those read a [`Cluster`].

mod did_you_mean;
mod error;
pub mod parse;
mod raw;
mod types;

pub use parse::{
    FirstUse, MAX_CLUSTER_FILE_BYTES, MAX_REPORTED_PROBLEMS, Problem, ProblemKind, SpecError,
    SyntaxError, TypeHint, default_cluster, parse_cluster, parse_cluster_file,
};
pub use types::{
    ByteSize, ClusterName, DEFAULT_CLUSTER_NAME, MAX_QUOTED_CHARS, NAME_RULE, NameError, NodeName,
    ServiceName, SizeError, clip, clip_to,
};

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The smallest memory a node may have: below it the kernel, etcd and containerd
/// do not fit.
pub const MIN_NODE_MEMORY: ByteSize = ByteSize::mib(256);
/// The smallest state disk: ext4 plus etcd's data and container images.
pub const MIN_NODE_DISK: ByteSize = ByteSize::mib(256);
/// The most vCPUs a node may ask for.
pub const MAX_NODE_CPUS: u32 = 64;
/// The most nodes in one group (control planes or workers): a cluster of QEMU
/// VMs on one host has no use for more, and the bound keeps a typo such as
/// `count: 1000000` from allocating.
pub const MAX_NODES_PER_GROUP: u32 = 64;

pub use ironclad_contract::role::Role;

/// A validated cluster: every default applied, every cross-field rule checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cluster {
    pub name: ClusterName,
    /// Image recipe: a name under `images/` (e.g. `trixie`) or a path to a recipe file.
    pub image: String,
    pub network: Network,
    /// Control planes first, then workers, in the order of the file.
    pub nodes: Vec<Node>,
    pub runtimes: Runtimes,
    pub kubernetes: Kubernetes,
    pub matrix: MatrixSettings,
}

impl Cluster {
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }
    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Worker)
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }
}

/// The cluster network: one L2 segment on the user-space switch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Network {
    pub cidr: Ipv4Net,
    /// Whether nodes may reach the outside through QEMU's user-mode NIC.
    /// Off by default (`restrict=on`).
    pub egress: bool,
}

impl Network {
    /// The gateway-less address plan: node `i` (0-based, control planes first)
    /// gets the `i + 2`-th host address of the CIDR (`.1` is left free, as a
    /// conventional gateway slot).
    pub fn node_address(&self, index: usize) -> Option<Ipv4Addr> {
        let base = u32::from(self.cidr.network());
        let offset = u32::try_from(index).ok()?.checked_add(2)?;
        let addr = base.checked_add(offset)?;
        let addr = Ipv4Addr::from(addr);
        (addr < self.cidr.broadcast()).then_some(addr)
    }

    /// How many node addresses the CIDR offers under [`Network::node_address`].
    pub fn capacity(&self) -> u64 {
        let hosts = 1u64 << (32 - u32::from(self.cidr.prefix_len()));
        hosts.saturating_sub(3)
    }
}

/// One node, fully resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    pub name: NodeName,
    pub role: Role,
    pub cpus: u32,
    pub memory: ByteSize,
    pub disk: ByteSize,
    /// Static address on the cluster network.
    pub address: Ipv4Addr,
}

/// Which container runtimes the nodes register with containerd.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Runtimes {
    pub runc: bool,
    pub crun: bool,
    /// gVisor, as runtime handler `runsc`.
    pub gvisor: bool,
    /// Whether user-namespaced pods are allowed.
    pub user_namespaces: bool,
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes {
            runc: true,
            crun: true,
            gvisor: true,
            user_namespaces: true,
        }
    }
}

/// Kubernetes settings. `enabled: true` is refused for now: the node image
/// carries no Kubernetes binaries (see docs/cluster-file.md).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Kubernetes {
    pub enabled: bool,
}

/// The word that stands for every check in `spec.matrix.checks`.
pub const ALL_CHECKS: &str = "all";

/// Which matrix checks `ironclad matrix` and `ironclad create --matrix` run
/// when the command line does not say (see `crate::matrix::settings`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MatrixSettings {
    /// Check ids of the catalog, in its spelling (`RT-01`), or the one word
    /// [`ALL_CHECKS`].
    pub checks: Vec<String>,
    /// Whether the destructive checks are allowed (and, with `all`, run).
    pub destructive: bool,
}

impl MatrixSettings {
    /// The ids the settings name, or `None` for every check.
    pub fn ids(&self) -> Option<&[String]> {
        match self.checks.as_slice() {
            [one] if one == ALL_CHECKS => None,
            ids => Some(ids),
        }
    }
}

impl Default for MatrixSettings {
    fn default() -> Self {
        MatrixSettings {
            checks: vec![ALL_CHECKS.to_string()],
            destructive: false,
        }
    }
}
