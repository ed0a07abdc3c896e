//! etcd on a control plane: the supervised `etcd` service, bootstrap of a new
//! cluster, joining as a learner, and the member and key operations of the
//! node API (through etcd's own client port, with the node's etcd client
//! certificate).
//!
//! Interface used by the controller (fixed): [`Etcd::new`] (None on workers),
//! [`Etcd::service`] (the supervised spec; `autostart` only once this node has
//! etcd data), [`Etcd::execute`] for the etcd actions of [`crate::api::Action`].
//!
//! | part | owns |
//! |---|---|
//! | this file | the [`Etcd`] of a node, its paths and URLs, [`Etcd::execute`] |
//! | [`service`] | [`EtcdOptions`], [`Start`] (bootstrap, join, existing data), the config file, the certificates beside it, the [`ServiceSpec`](crate::supervisor::ServiceSpec) and its probe |
//! | [`gateway`] | the HTTPS client of etcd's JSON gateway, the `/health` probe, their wire types |
//! | [`ops`] | bootstrap, join, members, learner, promote, remove, put/get; input checks |
//! | [`error`] | [`EtcdError`] and its one mapping to the API's [`ApiError`] |
//!
//! Files (see `docs/etcd.md`):
//!
//! - `<root>/var/lib/etcd` (state disk, 0700): etcd's data directory. Its
//!   `member/` subdirectory is what "this node has etcd data" means: bootstrap
//!   and join are refused once it exists, and the service autostarts.
//! - `<root>/run/ironclad/etcd/` (tmpfs, 0700): the CA, server and peer
//!   certificates and keys (0600) copied from the machine config, and
//!   `etcd.yaml`, etcd's `--config-file`. Both are rewritten from the machine
//!   config on every boot (by [`Etcd::service`]) and by bootstrap/join, so no
//!   key rests on the state disk and a re-applied config's certificates win.
//!   With a data directory present etcd ignores the initial-cluster settings,
//!   so the rewritten config of a later boot ([`Start::Existing`]) only needs
//!   this member.
//!
//! Errors inside are [`EtcdError`]s; they become the API's typed errors only
//! at [`Etcd::execute`]. Nothing secret is logged or returned.

mod error;
mod gateway;
mod ops;
mod service;
#[cfg(test)]
mod tests;

pub use error::{EtcdError, PeerUrlFault, SetupError};
pub use ops::{check_peer_url, validate_initial_cluster};
pub use service::{ClusterState, EtcdOptions, InitialCluster, NICE, RaftTiming, Start};

use crate::api::{Accepted, Action, ApiError, Reply};
use crate::machine::{ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT, EtcdPki, MachineConfig};
use crate::supervisor::SupervisorHandle;
use gateway::Gateway;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The supervised service's name.
pub const SERVICE: &str = ironclad_contract::services::ETCD;

/// etcd of one control plane.
#[derive(Clone)]
pub struct Etcd {
    /// The node's root (`/` on a node, a temp dir in tests).
    root: PathBuf,
    options: EtcdOptions,
    /// Member name (the node name).
    name: String,
    /// This node's address on the cluster network.
    address: Ipv4Addr,
    /// `initial-cluster-token`: keeps members of another cluster out.
    token: String,
    /// etcd's raft timing, from the cluster's shape ([`service::RaftTiming`]).
    timing: service::RaftTiming,
    pki: Option<EtcdPki>,
    /// The client of the local etcd (at [`Etcd::local_url`]).
    gateway: Gateway,
    /// Serializes bootstrap and join.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Etcd {
    // The PKI holds private keys: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("root", &self.root)
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// The etcd of this node, or `None` on a worker (no etcd settings).
    pub fn new(config: &MachineConfig, root: &Path) -> Option<Self> {
        Self::with_options(config, root, EtcdOptions::default())
    }

    /// [`Etcd::new`] with explicit options (tests: the host's etcd binary,
    /// no shared loopback listener).
    pub fn with_options(config: &MachineConfig, root: &Path, options: EtcdOptions) -> Option<Self> {
        let settings = config.etcd.as_ref()?;
        let pki = config.pki.etcd.clone();
        let address = config.node.address;
        let gateway = Gateway::new(
            pki.as_ref(),
            local_url(&options, address),
            health_url(&options, address),
        );
        Some(Etcd {
            root: root.to_path_buf(),
            options,
            name: settings.member_name.to_string(),
            address,
            token: format!("ironclad-{}", config.cluster.name),
            timing: service::RaftTiming::for_control_planes(
                config
                    .cluster
                    .members
                    .iter()
                    .filter(|m| m.role == ironclad_contract::role::Role::ControlPlane)
                    .count(),
            ),
            pki,
            gateway,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// etcd's data directory (on the state disk).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("var/lib/etcd")
    }

    /// Where certificates and the config file go (tmpfs).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run/ironclad/etcd")
    }

    /// etcd's config file.
    pub fn config_file(&self) -> PathBuf {
        self.run_dir().join("etcd.yaml")
    }

    /// Whether this node has etcd data (it was bootstrapped or has joined).
    pub fn has_data(&self) -> bool {
        self.data_dir().join("member").is_dir()
    }

    /// This member's peer URL.
    pub fn peer_url(&self) -> String {
        format!("https://{}:{ETCD_PEER_PORT}", self.address)
    }

    /// The URL machined uses to reach the local etcd.
    pub fn local_url(&self) -> String {
        local_url(&self.options, self.address)
    }

    /// The URL of etcd's metrics listener, where the health probe asks.
    pub fn health_url(&self) -> String {
        health_url(&self.options, self.address)
    }

    /// Performs an etcd action (`Bootstrap`, `Etcd*`). The one place where
    /// [`EtcdError`] becomes the API's [`ApiError`].
    pub async fn execute(
        &self,
        action: Action,
        services: &SupervisorHandle,
    ) -> Result<Reply, ApiError> {
        self.perform(action, services).await.map_err(ApiError::from)
    }

    async fn perform(
        &self,
        action: Action,
        services: &SupervisorHandle,
    ) -> Result<Reply, EtcdError> {
        let accepted = || Reply::Accepted(Accepted { accepted: true });
        match action {
            Action::Bootstrap => self.bootstrap(services).await.map(|()| accepted()),
            Action::EtcdJoin(req) => self.join(req, services).await.map(|()| accepted()),
            Action::EtcdMembers => self.members().await.map(Reply::Members),
            Action::EtcdAddLearner(req) => self.add_learner(req).await.map(Reply::Member),
            Action::EtcdPromote { id } => self.promote(id).await.map(Reply::Member),
            Action::EtcdRemove { id } => self.remove(id).await.map(|()| accepted()),
            Action::EtcdPut(req) => self.put(req).await.map(|()| accepted()),
            Action::EtcdGet { key } => self.get(key).await.map(Reply::Kv),
            other => Err(EtcdError::NotAnEtcdAction(format!("{other:?}"))),
        }
    }
}

/// Where machined reaches the local etcd: 127.0.0.1 on a node, the node's
/// own address in tests with several members on one host.
fn local_ip(options: &EtcdOptions, address: Ipv4Addr) -> Ipv4Addr {
    if options.loopback_client {
        Ipv4Addr::LOCALHOST
    } else {
        address
    }
}

/// `https://<local ip>:2379`: etcd's client listener.
fn local_url(options: &EtcdOptions, address: Ipv4Addr) -> String {
    format!("https://{}:{ETCD_CLIENT_PORT}", local_ip(options, address))
}

/// `http://<local ip>:2381`: etcd's metrics listener, where the health
/// probe asks (plain HTTP; loopback only on a node).
fn health_url(options: &EtcdOptions, address: Ipv4Addr) -> String {
    format!("http://{}:{ETCD_METRICS_PORT}", local_ip(options, address))
}

/// Maps an error answer of etcd's gateway (HTTP status, body with the gRPC
/// status code and message) to the API's typed error, as the node API sends
/// it. Callers retry on `Unavailable` (e.g. a learner that is not in sync
/// yet), not on the others.
pub fn map_etcd_error(http_status: u16, body: &[u8]) -> ApiError {
    gateway::gateway_error(http_status, body).into()
}
