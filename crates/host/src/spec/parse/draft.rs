//! What a cluster file says before names and addresses are settled: the
//! [`Draft`] starts as the defaults and each section read overwrites its
//! part; node groups keep their count, shape and explicit node list.

use super::{DEFAULT_CIDR, DEFAULT_IMAGE};
use crate::spec::raw::Pos;
use crate::spec::{
    ByteSize, ClusterName, Kubernetes, MatrixSettings, Network, NodeName, Role, Runtimes,
};
use ipnet::Ipv4Net;

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

/// A node's size: vCPUs, memory, state disk.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) cpus: u32,
    pub(super) memory: ByteSize,
    pub(super) disk: ByteSize,
}

/// A node group as read from the file, before names and addresses are assigned.
pub(super) struct GroupDraft {
    pub(super) role: Role,
    /// Where the group is written (its key), for problems about the group as a whole.
    pub(super) pos: Pos,
    pub(super) count: Option<(u32, Pos)>,
    pub(super) shape: Shape,
    pub(super) nodes: Option<Vec<NodeDraft>>,
}

/// One entry of a group's `nodes` list; what it leaves unset comes from the group.
pub(super) struct NodeDraft {
    pub(super) pos: Pos,
    pub(super) name: Option<(NodeName, Pos)>,
    pub(super) cpus: Option<u32>,
    pub(super) memory: Option<ByteSize>,
    pub(super) disk: Option<ByteSize>,
}

impl GroupDraft {
    pub(super) fn new(role: Role) -> Self {
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
    pub(super) fn key(&self) -> &'static str {
        match self.role {
            Role::ControlPlane => "controlPlanes",
            Role::Worker => "workers",
        }
    }
    pub(super) fn name_infix(&self) -> &'static str {
        match self.role {
            Role::ControlPlane => "cp",
            Role::Worker => "worker",
        }
    }
}

/// Everything read from the file, with defaults for what it leaves out.
pub(super) struct Draft {
    pub(super) name: (ClusterName, Pos),
    pub(super) image: String,
    pub(super) network: (Network, Pos),
    pub(super) groups: [GroupDraft; 2],
    pub(super) runtimes: Runtimes,
    pub(super) kubernetes: Kubernetes,
    pub(super) matrix: MatrixSettings,
}

impl Draft {
    pub(super) fn defaults() -> Self {
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
