//! The machine config: one versioned YAML document per node, rendered on the
//! host from the cluster spec and the PKI, delivered to the VM through QEMU
//! fw_cfg (`opt/ironclad/machine-config`) and read by machined at boot. It holds
//! exactly what this node needs: a worker's config carries no etcd material and
//! no CA private key.
//!
//! This module owns the document's types, its (strict) parsing and the
//! rendering from a [`crate::spec::Cluster`]; it does not generate keys
//! (see [`crate::pki`]) nor act on the config (see [`crate::agent`]).

use crate::spec::Role;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The fw_cfg name under which QEMU hands the machine config to the guest.
pub const FW_CFG_NAME: &str = "opt/ironclad/machine-config";
/// The document's `kind`.
pub const KIND: &str = "MachineConfig";
/// TCP port of the node API (apid) on every node.
pub const API_PORT: u16 = 50000;
/// etcd client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd peer port.
pub const ETCD_PEER_PORT: u16 = 2380;
/// Address of the guest on QEMU's user-mode network (slirp's default plan).
pub const USER_NET_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// QEMU user-mode network gateway (the host side of slirp).
pub const USER_NET_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Prefix length of the user-mode network.
pub const USER_NET_PREFIX: u8 = 24;

/// One node's machine config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineConfig {
    pub api_version: String,
    pub kind: String,
    pub cluster: ClusterInfo,
    pub node: NodeInfo,
    pub pki: NodePki,
    pub containerd: ContainerdSettings,
    /// Extra kernel sysctls on top of the image's own hardening set.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// etcd settings; present only on control planes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSettings>,
}

/// What every node knows about its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInfo {
    pub name: String,
    /// The cluster network, e.g. `10.5.0.0/24`.
    pub cidr: ipnet::Ipv4Net,
    /// Whether the user-mode NIC may reach the outside (default route via slirp).
    pub egress: bool,
    /// Every node of the cluster (name, role, address), for peers and checks.
    pub members: Vec<Member>,
}

/// A peer entry in [`ClusterInfo::members`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub address: Ipv4Addr,
}

/// This node's identity and network settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    /// Address on the cluster network (prefix from [`ClusterInfo::cidr`]).
    pub address: Ipv4Addr,
    /// MAC of the NIC on the cluster switch (fixed per node, kept across restarts).
    pub cluster_mac: String,
    /// MAC of the user-mode NIC (host-to-node API through hostfwd).
    pub user_mac: String,
}

/// The certificates and keys this node needs, inline as PEM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePki {
    /// The OS CA certificate: client certs of the node API are verified against it.
    pub os_ca: String,
    /// The node API's server certificate and key (signed by the OS CA).
    pub api_cert: String,
    pub api_key: String,
    /// etcd material; control planes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdPki>,
}

/// etcd certificates of a control plane. The etcd CA's key is never here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdPki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub peer_cert: String,
    pub peer_key: String,
    /// Client certificate machined uses to talk to its local etcd.
    pub client_cert: String,
    pub client_key: String,
}

/// containerd settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerdSettings {
    /// Runtime handlers to register: any of `runc`, `crun`, `runsc`.
    pub runtimes: Vec<String>,
    pub user_namespaces: bool,
}

/// etcd settings of a control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdSettings {
    /// Name of the member (the node name).
    pub member_name: String,
    /// Name of the control plane that bootstraps the cluster.
    pub bootstrap_node: String,
}

impl MachineConfig {
    /// Strict parse of a machine config document (unknown fields are refused).
    pub fn from_yaml(text: &str) -> Result<Self, MachineConfigError> {
        let cfg: MachineConfig =
            serde_saphyr::from_str(text).map_err(|e| MachineConfigError::Parse(e.to_string()))?;
        if cfg.api_version != crate::API_VERSION {
            return Err(MachineConfigError::Version(cfg.api_version));
        }
        if cfg.kind != KIND {
            return Err(MachineConfigError::Kind(cfg.kind));
        }
        Ok(cfg)
    }

    /// Renders the document as YAML.
    pub fn to_yaml(&self) -> Result<String, MachineConfigError> {
        serde_saphyr::to_string(self).map_err(|e| MachineConfigError::Render(e.to_string()))
    }
}

/// Why a machine config could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MachineConfigError {
    #[error("machine config is not valid: {0}")]
    Parse(String),
    #[error("machine config has apiVersion {0:?}; this build reads {api}", api = crate::API_VERSION)]
    Version(String),
    #[error("document kind is {0:?}, expected {KIND:?}")]
    Kind(String),
    #[error("cannot render machine config: {0}")]
    Render(String),
}
