//! Rendering a node's machine config (the document itself, its parsing and
//! the constants around it are the contract's: [`ironclad_contract::machine`],
//! re-exported here) from the cluster spec and the PKI.
//!
//! Rendering issues this node's leaf certificates from the loaded secrets each
//! time: the node API server certificate (OS CA) for every node, and on control
//! planes the etcd server, peer and client certificates (etcd CA). The API
//! certificate names only this node (DNS SAN: the node name; IP SAN: its
//! cluster address): the host dials every node on `127.0.0.1`, so a loopback
//! SAN would let one node's certificate stand for any other, and the host
//! client checks the node name instead ([`crate::client::NodeVerifier`]). The
//! etcd server and peer certificates also carry `127.0.0.1` and `localhost`:
//! machined reaches its own etcd on `https://127.0.0.1:2379`. No CA key ever
//! goes into a machine config.
//!
//! MACs are fixed per node ([`node_macs`]): derived from the cluster name and the
//! node's index, locally administered and unicast, so a node keeps its MAC (and
//! with it its address) across restarts and re-renders.

pub use ironclad_contract::machine::*;

use crate::pki::{PkiError, Secrets};
use crate::spec::{Cluster, Node, Role};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Why a node's machine config could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
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
pub fn node_macs(cluster: &str, index: usize) -> Result<NodeMacs, RenderError> {
    let idx = u16::try_from(index).map_err(|_| RenderError::IndexTooLarge(index))?;
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
) -> Result<MachineConfig, RenderError> {
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.name == node.name)
        .ok_or_else(|| RenderError::UnknownNode(node.name.to_string(), cluster.name.to_string()))?;
    let macs = node_macs(cluster.name.as_str(), index)?;
    let name = node.name.as_str();
    // The node API: this node's name and cluster address only, never a
    // loopback name every node would share.
    let api = secrets
        .os_ca
        .issue_node_api(name, node.address)
        .map_err(pki_error(name))?;
    let (etcd_pki, etcd) = match node.role {
        Role::Worker => (None, None),
        Role::ControlPlane => {
            let (pki, settings) = control_plane_etcd(cluster, node, secrets)?;
            (Some(pki), Some(settings))
        }
    };
    Ok(MachineConfig {
        api_version: ironclad_contract::API_VERSION.to_string(),
        kind: KIND.to_string(),
        cluster: cluster_info(cluster),
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

/// A PKI failure while rendering the node called `node`.
fn pki_error(node: &str) -> impl Fn(PkiError) -> RenderError + '_ {
    move |source| RenderError::Pki {
        node: node.to_string(),
        source,
    }
}

/// A control plane's etcd certificates (server, peer, client; etcd CA) and
/// settings (its member name, the node that bootstraps the cluster: the
/// first control plane).
fn control_plane_etcd(
    cluster: &Cluster,
    node: &Node,
    secrets: &Secrets,
) -> Result<(EtcdPki, EtcdSettings), RenderError> {
    let name = node.name.as_str();
    // machined reaches its own etcd on 127.0.0.1 (see ironclad_node::etcd).
    let etcd_dns = [name, "localhost"];
    let etcd_ips = [node.address, Ipv4Addr::LOCALHOST];
    let ca = &secrets.etcd_ca;
    let server = ca
        .issue_server(name, &etcd_dns, &etcd_ips, true)
        .map_err(pki_error(name))?;
    let peer = ca
        .issue_server(name, &etcd_dns, &etcd_ips, true)
        .map_err(pki_error(name))?;
    let client = ca
        .issue_client(&format!("machined-{name}"), None)
        .map_err(pki_error(name))?;
    let bootstrap = cluster
        .control_planes()
        .next()
        .map_or(&node.name, |n| &n.name);
    let pki = EtcdPki {
        ca: ca.cert_pem().to_string(),
        server_cert: server.cert_pem,
        server_key: server.key_pem,
        peer_cert: peer.cert_pem,
        peer_key: peer.key_pem,
        client_cert: client.cert_pem,
        client_key: client.key_pem,
    };
    let settings = EtcdSettings {
        member_name: node.name.clone(),
        bootstrap_node: bootstrap.clone(),
    };
    Ok((pki, settings))
}

/// The cluster as every node's config shows it: name, network, members.
fn cluster_info(cluster: &Cluster) -> ClusterInfo {
    ClusterInfo {
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
    }
}

#[cfg(test)]
mod tests;
