//! The machine config: one versioned YAML document per node, rendered on the
//! host from the cluster spec and the PKI, delivered to the VM through QEMU
//! fw_cfg (`opt/ironclad/machine-config`) and read by machined at boot. It holds
//! exactly what this node needs: a worker's config carries no etcd material and
//! no CA private key.
//!
//! This module owns the document's types, its (strict) parsing and the
//! rendering from a [`crate::spec::Cluster`] ([`render`]); it does not generate
//! or store the cluster's keys (see [`crate::pki`]) nor act on the config (see
//! [`crate::agent`]).
//!
//! Rendering issues this node's leaf certificates from the loaded secrets each
//! time: the node API server certificate (OS CA) for every node, and on control
//! planes the etcd server, peer and client certificates (etcd CA). Both carry
//! the SANs node name, cluster address, `127.0.0.1` and `localhost`. No CA key
//! ever goes into a machine config.
//!
//! MACs are fixed per node ([`node_macs`]): derived from the cluster name and the
//! node's index, locally administered and unicast, so a node keeps its MAC (and
//! with it its address) across restarts and re-renders.

use crate::pki::{PkiError, Secrets};
use crate::spec::{Cluster, ClusterName, Node, NodeName, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The fw_cfg name under which QEMU hands the machine config to the guest.
pub const FW_CFG_NAME: &str = "opt/ironclad/machine-config";
/// The document's `kind`.
pub const KIND: &str = "MachineConfig";
/// TCP port of the node API (apid) on every node.
pub const API_PORT: u16 = 50000;
/// The label of a node's state disk (ext4).
pub const STATE_DISK_LABEL: &str = "ironclad-state";

/// mke2fs's arguments for a node's new state disk at `dev`, the same on the
/// host (`create` formats the disk it makes) and in machined (a disk that
/// comes blank is formatted on first boot). A new disk reads as zeros and
/// holds nothing to discard, so neither the inode tables nor the journal
/// need a zeroing pass (lazy init, stated explicitly: mke2fs otherwise
/// infers it from the running kernel's ext4 module); the root directory is
/// root's even when an ordinary user formats it.
pub fn mke2fs_args(dev: &str) -> [&str; 9] {
    [
        "-t",
        "ext4",
        "-q",
        "-F",
        "-E",
        "nodiscard,lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
        "-L",
        STATE_DISK_LABEL,
        dev,
    ]
}
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
    pub name: ClusterName,
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
    pub name: NodeName,
    pub role: Role,
    pub address: Ipv4Addr,
}

/// This node's identity and network settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeInfo {
    pub name: NodeName,
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
    pub member_name: NodeName,
    /// Name of the control plane that bootstraps the cluster.
    pub bootstrap_node: NodeName,
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
    #[error("node {0:?} is not part of cluster {1:?}")]
    UnknownNode(String, String),
    #[error("node index {0} is too large for a MAC address")]
    IndexTooLarge(usize),
    #[error("cannot issue certificates for node {node:?}: {source}")]
    Pki {
        node: String,
        #[source]
        source: PkiError,
    },
}

/// The two fixed MACs of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMacs {
    /// NIC on the cluster switch.
    pub cluster: String,
    /// User-mode NIC (hostfwd to the node API).
    pub user: String,
}

/// First octet of cluster-NIC MACs: locally administered (bit 1), unicast (bit 0 clear).
const CLUSTER_NIC_OCTET: u8 = 0x02;
/// First octet of user-NIC MACs: also locally administered and unicast, but
/// different from [`CLUSTER_NIC_OCTET`], so a node's two NICs never share a MAC.
const USER_NIC_OCTET: u8 = 0x06;

/// The MACs of the node at `index` (its position in [`Cluster::nodes`]) of the
/// cluster named `cluster`: `<nic>:<3 bytes of SHA-256 of the cluster name>:<index, 2 bytes>`.
/// Distinct for every node and NIC within a cluster; deterministic.
pub fn node_macs(cluster: &str, index: usize) -> Result<NodeMacs, MachineConfigError> {
    let idx = u16::try_from(index).map_err(|_| MachineConfigError::IndexTooLarge(index))?;
    let digest = Sha256::digest(format!("ironclad-mac:{cluster}").as_bytes());
    let [i0, i1] = idx.to_be_bytes();
    let fmt = |first: u8| {
        format!(
            "{first:02x}:{:02x}:{:02x}:{:02x}:{i0:02x}:{i1:02x}",
            digest[0], digest[1], digest[2]
        )
    };
    Ok(NodeMacs {
        cluster: fmt(CLUSTER_NIC_OCTET),
        user: fmt(USER_NIC_OCTET),
    })
}

/// The runtime handler names for the cluster's runtime switches.
pub fn runtime_handlers(cluster: &Cluster) -> Vec<String> {
    let r = &cluster.runtimes;
    [(r.runc, "runc"), (r.crun, "crun"), (r.gvisor, "runsc")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// Renders the machine config of `node` (a member of `cluster`), issuing its
/// certificates from `secrets`.
pub fn render(
    cluster: &Cluster,
    node: &Node,
    secrets: &Secrets,
) -> Result<MachineConfig, MachineConfigError> {
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.name == node.name)
        .ok_or_else(|| {
            MachineConfigError::UnknownNode(node.name.to_string(), cluster.name.to_string())
        })?;
    let macs = node_macs(cluster.name.as_str(), index)?;
    let name = node.name.as_str();
    let pki_err = |source| MachineConfigError::Pki {
        node: name.to_string(),
        source,
    };
    let dns = [name, "localhost"];
    let ips = [node.address, Ipv4Addr::LOCALHOST];
    let api = secrets
        .os_ca
        .issue_server(name, &dns, &ips, false)
        .map_err(pki_err)?;
    let (etcd_pki, etcd) = match node.role {
        Role::Worker => (None, None),
        Role::ControlPlane => {
            let ca = &secrets.etcd_ca;
            let server = ca.issue_server(name, &dns, &ips, true).map_err(pki_err)?;
            let peer = ca.issue_server(name, &dns, &ips, true).map_err(pki_err)?;
            let client = ca
                .issue_client(&format!("machined-{name}"), None)
                .map_err(pki_err)?;
            let bootstrap = cluster
                .control_planes()
                .next()
                .map_or(&node.name, |n| &n.name);
            (
                Some(EtcdPki {
                    ca: ca.cert_pem().to_string(),
                    server_cert: server.cert_pem,
                    server_key: server.key_pem,
                    peer_cert: peer.cert_pem,
                    peer_key: peer.key_pem,
                    client_cert: client.cert_pem,
                    client_key: client.key_pem,
                }),
                Some(EtcdSettings {
                    member_name: node.name.clone(),
                    bootstrap_node: bootstrap.clone(),
                }),
            )
        }
    };
    Ok(MachineConfig {
        api_version: crate::API_VERSION.to_string(),
        kind: KIND.to_string(),
        cluster: ClusterInfo {
            name: cluster.name.clone(),
            cidr: cluster.network.cidr,
            egress: cluster.network.egress,
            members: cluster
                .nodes
                .iter()
                .map(|n| Member {
                    name: n.name.clone(),
                    role: n.role,
                    address: n.address,
                })
                .collect(),
        },
        node: NodeInfo {
            name: node.name.clone(),
            role: node.role,
            address: node.address,
            cluster_mac: macs.cluster,
            user_mac: macs.user,
        },
        pki: NodePki {
            os_ca: secrets.os_ca.cert_pem().to_string(),
            api_cert: api.cert_pem,
            api_key: api.key_pem,
            etcd: etcd_pki,
        },
        containerd: ContainerdSettings {
            runtimes: runtime_handlers(cluster),
            user_namespaces: cluster.runtimes.user_namespaces,
        },
        sysctls: BTreeMap::new(),
        etcd,
    })
}

#[cfg(test)]
mod tests;
