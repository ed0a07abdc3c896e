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
//! planes the etcd server, peer and client certificates (etcd CA). The API
//! certificate names only this node (DNS SAN: the node name; IP SAN: its
//! cluster address): the host dials every node on `127.0.0.1`, so a loopback
//! SAN would let one node's certificate stand for any other, and the host
//! client checks the node name instead ([`crate::client::NodeVerifier`]). The
//! etcd server and peer certificates also carry `127.0.0.1` and `localhost`:
//! machined reaches its own etcd on `https://127.0.0.1:2379`. No CA key ever
//! goes into a machine config.
//!
//! The types that hold private keys ([`NodePki`], [`EtcdPki`], and so
//! [`MachineConfig`]) print `[redacted]` for every key in their `Debug`, and a
//! document that does not parse is reported by position and field path only
//! ([`MachineConfigError::Parse`]): a parser's message can quote the text it
//! refused, and in this document that text can be a private key.
//!
//! MACs are fixed per node ([`node_macs`]): derived from the cluster name and the
//! node's index, locally administered and unicast, so a node keeps its MAC (and
//! with it its address) across restarts and re-renders.

use crate::pki::{PkiError, Secrets};
use crate::spec::{Cluster, ClusterName, Node, NodeName, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
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

/// The certificates and keys this node needs, inline as PEM. `Debug` shows
/// the certificates and redacts the key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
/// `Debug` shows the certificates and redacts the keys.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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

/// What `Debug` prints in place of a private key.
const REDACTED: &str = "[redacted]";

impl fmt::Debug for NodePki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePki")
            .field("os_ca", &self.os_ca)
            .field("api_cert", &self.api_cert)
            .field("api_key", &REDACTED)
            .field("etcd", &self.etcd)
            .finish()
    }
}

impl fmt::Debug for EtcdPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdPki")
            .field("ca", &self.ca)
            .field("server_cert", &self.server_cert)
            .field("server_key", &REDACTED)
            .field("peer_cert", &self.peer_cert)
            .field("peer_key", &REDACTED)
            .field("client_cert", &self.client_cert)
            .field("client_key", &REDACTED)
            .finish()
    }
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
    /// An error quotes nothing of the document (see [`ParseError`]).
    pub fn from_yaml(text: &str) -> Result<Self, MachineConfigError> {
        let mut path = None;
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, MachineConfig>(de).map_err(|e| {
                path = Some(e.path().clone());
                e.into_inner()
            })
        });
        let cfg =
            parsed.map_err(|e| MachineConfigError::Parse(ParseError::new(&e, path.as_ref())))?;
        if cfg.api_version != crate::API_VERSION {
            return Err(MachineConfigError::Version(shown_value(
                &cfg.api_version,
                looks_like_api_version,
            )));
        }
        if cfg.kind != KIND {
            return Err(MachineConfigError::Kind(shown_value(&cfg.kind, |k| {
                !k.is_empty() && k.len() <= 32 && k.bytes().all(|b| b.is_ascii_alphabetic())
            })));
        }
        Ok(cfg)
    }

    /// Renders the document as YAML.
    pub fn to_yaml(&self) -> Result<String, MachineConfigError> {
        serde_saphyr::to_string(self).map_err(|e| MachineConfigError::Render(e.to_string()))
    }
}

/// Why a machine config document did not parse, told without quoting it: the
/// document holds private keys, and what a parser refused (a value, an
/// unknown key) may be a piece of one. Only the position, the field path
/// (names the schema knows; anything else shows as `?`) and the kind of
/// problem are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line and column, when the parser knows them.
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The field path, e.g. `pki.etcd.serverKey` or `cluster.members[1].address`.
    pub path: Option<String>,
    /// What is wrong, in words that come from this program, never the document.
    pub problem: String,
}

impl ParseError {
    fn new(e: &serde_saphyr::Error, path: Option<&serde_path_to_error::Path>) -> Self {
        let at = e.location();
        ParseError {
            line: at.map(|l| l.line()).filter(|l| *l > 0),
            column: at.map(|l| l.column()).filter(|c| *c > 0),
            path: path.map(shown_path).filter(|p| !p.is_empty()),
            problem: problem_of(e.without_snippet()),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)?;
        if let Some(p) = &self.path {
            write!(f, " at {p}")?;
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

/// Every map key the machine config schema has (camelCase, as written).
/// A key outside this list is shown as `?` in a [`ParseError`] path.
const SCHEMA_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "cluster",
    "name",
    "cidr",
    "egress",
    "members",
    "role",
    "address",
    "node",
    "clusterMac",
    "userMac",
    "pki",
    "osCa",
    "apiCert",
    "apiKey",
    "etcd",
    "ca",
    "serverCert",
    "serverKey",
    "peerCert",
    "peerKey",
    "clientCert",
    "clientKey",
    "containerd",
    "runtimes",
    "userNamespaces",
    "sysctls",
    "memberName",
    "bootstrapNode",
];

/// The path with every segment the schema does not know shown as `?`
/// (empty when no segment is known: nothing worth showing).
fn shown_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let known = path.iter().any(|seg| match seg {
        Segment::Map { key } => SCHEMA_KEYS.contains(&key.as_str()),
        _ => false,
    });
    if !known {
        return String::new();
    }
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(if SCHEMA_KEYS.contains(&key.as_str()) {
                    key
                } else {
                    "?"
                });
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// The kind of problem, from the error's variant and the fixed words that
/// start serde's messages; the rest of a message (which may quote the
/// document) is dropped.
fn problem_of(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    // `expected`, `field` and `ty` come from the schema (serde's derive and
    // visitors); `unexpected`, `msg` and unknown names come from the document.
    match e {
        E::SerdeInvalidType { expected, .. } => format!("wrong type of value, expected {expected}"),
        E::SerdeInvalidValue { expected, .. } => format!("invalid value, expected {expected}"),
        E::SerdeInvalidLength { len, expected, .. } => {
            format!("wrong number of items ({len}), expected {expected}")
        }
        E::SerdeUnknownVariant { expected, .. } => {
            format!("unknown value, expected one of {}", expected.join(", "))
        }
        E::SerdeUnknownField { .. } => "unknown field".to_string(),
        E::SerdeMissingField { field, .. } => format!("missing field `{field}`"),
        E::DuplicateMappingKey { .. } => "duplicate key".to_string(),
        E::InvalidScalar { ty, .. } => format!("not a valid {ty}"),
        E::InvalidBooleanStrict { .. } => "not a boolean".to_string(),
        E::NullIntoString { .. } => "empty where text is expected".to_string(),
        E::IndentationError { .. } => "bad indentation".to_string(),
        E::Eof { .. } => "the document ends too early".to_string(),
        E::MultipleDocuments { .. } => "more than one YAML document".to_string(),
        E::Unexpected { expected, .. } => format!("expected {expected}"),
        E::Message { .. } => "invalid value".to_string(),
        _ => "not valid YAML for a machine config".to_string(),
    }
}

/// `value` when `ok` says it looks like what was expected (so it cannot be a
/// piece of a key), otherwise a placeholder.
fn shown_value(value: &str, ok: impl Fn(&str) -> bool) -> String {
    if ok(value) {
        format!("{value:?}")
    } else {
        "an unexpected value".to_string()
    }
}

fn looks_like_api_version(v: &str) -> bool {
    v.len() <= 64
        && v.split_once('/').is_some_and(|(group, version)| {
            !group.is_empty()
                && group
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
                && version.starts_with('v')
                && version
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Why a machine config could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MachineConfigError {
    #[error("machine config is not valid: {0}")]
    Parse(ParseError),
    #[error("machine config has apiVersion {0}; this build reads {api}", api = crate::API_VERSION)]
    Version(String),
    #[error("document kind is {0}, expected {KIND:?}")]
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
    // The node API: this node's name and cluster address only, never a
    // loopback name every node would share.
    let api = secrets
        .os_ca
        .issue_node_api(name, node.address)
        .map_err(pki_err)?;
    // etcd: machined reaches its own etcd on 127.0.0.1 (see agent::etcd).
    let etcd_dns = [name, "localhost"];
    let etcd_ips = [node.address, Ipv4Addr::LOCALHOST];
    let (etcd_pki, etcd) = match node.role {
        Role::Worker => (None, None),
        Role::ControlPlane => {
            let ca = &secrets.etcd_ca;
            let server = ca
                .issue_server(name, &etcd_dns, &etcd_ips, true)
                .map_err(pki_err)?;
            let peer = ca
                .issue_server(name, &etcd_dns, &etcd_ips, true)
                .map_err(pki_err)?;
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
