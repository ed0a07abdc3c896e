//! etcd on a control plane: the supervised `etcd` service, bootstrap of a new
//! cluster, joining as a learner, and the member and key operations of the
//! node API (through etcd's own client port, with the node's etcd client
//! certificate).
//!
//! Interface used by the controller (fixed; the body is being written):
//! [`Etcd::new`] (None on workers), [`Etcd::service`] (the supervised spec;
//! `autostart` only once this node has etcd data), [`Etcd::execute`] for the
//! etcd actions of [`crate::api::Action`].

use super::supervisor::{ServiceSpec, SupervisorHandle};
use crate::api::{Action, ApiError, ErrorCode, Reply};
use crate::machine::MachineConfig;
use std::path::{Path, PathBuf};

/// The supervised service's name.
pub const SERVICE: &str = "etcd";

/// etcd of one control plane.
#[derive(Debug, Clone)]
pub struct Etcd {
    /// The node's root (`/` on a node, a temp dir in tests).
    root: PathBuf,
}

impl Etcd {
    /// The etcd of this node, or `None` on a worker (no etcd settings).
    pub fn new(config: &MachineConfig, root: &Path) -> Option<Self> {
        config.etcd.as_ref().map(|_| Etcd {
            root: root.to_path_buf(),
        })
    }

    /// The supervised service.
    pub fn service(&self) -> ServiceSpec {
        let mut spec = ServiceSpec::new(SERVICE, self.root.join("usr/bin/etcd"), &[]);
        spec.autostart = false;
        spec
    }

    /// Performs an etcd action (`Bootstrap`, `Etcd*`).
    pub async fn execute(
        &self,
        action: Action,
        _services: &SupervisorHandle,
    ) -> Result<Reply, ApiError> {
        Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("{action:?}: etcd is not available in this build"),
        ))
    }
}
