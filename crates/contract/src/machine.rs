//! The machine config: one versioned YAML document per node, rendered on the
//! host (`ironclad_host::machine::render`), delivered to the VM through QEMU
//! fw_cfg (`opt/ironclad/machine-config`, as JSON: see
//! [`MachineConfig::from_document`]) and read by machined at boot. It
//! holds exactly what this node needs: a worker's config carries no etcd
//! material and no CA private key.
//!
//! This module owns the document's types, the constants both sides use with
//! it (ports, fw_cfg name, the state disk's label and mke2fs arguments, the
//! user-mode network plan) and its strict parsing. It does not render the
//! document or issue certificates (the host's `machine` module does) nor act
//! on it (machined does).
//!
//! The types that hold private keys ([`NodePki`], [`EtcdPki`], and so
//! [`MachineConfig`]) print `[redacted]` for every key in their `Debug`, and a
//! document that does not parse is reported by position and field path only
//! ([`MachineConfigError::Parse`]): a parser's message can quote the text it
//! refused, and in this document that text can be a private key.

use crate::names::{ClusterName, NodeName};
use crate::role::Role;
use serde::{Deserialize, Serialize};
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
/// etcd's metrics listener: plain HTTP, `/health` and `/metrics` only,
/// bound to 127.0.0.1 on a node (kubeadm's convention for etcd's liveness
/// probe). machined's health probe asks it.
pub const ETCD_METRICS_PORT: u16 = 2381;
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
        cfg.checked()
    }

    /// [`MachineConfig::from_yaml`] for a document in JSON (which is also
    /// YAML), with the same guarantees: unknown fields refused, an error
    /// quotes nothing of the document.
    pub fn from_json(text: &str) -> Result<Self, MachineConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let cfg = serde_path_to_error::deserialize::<_, MachineConfig>(&mut de).map_err(|e| {
            MachineConfigError::Parse(ParseError::from_json(e.inner(), Some(e.path())))
        })?;
        de.end()
            .map_err(|e| MachineConfigError::Parse(ParseError::from_json(&e, None)))?;
        cfg.checked()
    }

    /// The document a node reads from fw_cfg: JSON when it starts with `{`
    /// (what `ironclad` hands its nodes), YAML otherwise (a document written
    /// by hand or by an older `ironclad`). Under TCG the YAML parser's code
    /// runs for the first time at this point of the boot, and that took
    /// 43–92 ms of it for a 5.8 KB config; the JSON parser took 4.5–6 ms.
    pub fn from_document(text: &str) -> Result<Self, MachineConfigError> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            Self::from_yaml(text)
        }
    }

    /// The document as JSON ([`MachineConfig::from_document`]).
    pub fn to_json(&self) -> Result<String, MachineConfigError> {
        serde_json::to_string(self).map_err(|e| MachineConfigError::Render(e.to_string()))
    }

    /// `self` when its apiVersion and kind are this build's.
    fn checked(self) -> Result<Self, MachineConfigError> {
        if self.api_version != crate::API_VERSION {
            return Err(MachineConfigError::Version(shown_value(
                &self.api_version,
                looks_like_api_version,
            )));
        }
        if self.kind != KIND {
            return Err(MachineConfigError::Kind(shown_value(&self.kind, |k| {
                !k.is_empty() && k.len() <= 32 && k.bytes().all(|b| b.is_ascii_alphabetic())
            })));
        }
        Ok(self)
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
    /// From a JSON parser's error: its position and the schema's path, and
    /// what kind of problem it is; never its message, which can quote the
    /// document (`invalid type: string "..."`, `unknown field `...``).
    fn from_json(e: &serde_json::Error, path: Option<&serde_path_to_error::Path>) -> Self {
        use serde_json::error::Category;
        let problem = match e.classify() {
            Category::Syntax => "not valid JSON",
            Category::Eof => "the document ends too early",
            Category::Data => "a wrong, unknown or missing value",
            Category::Io => "the document could not be read",
        };
        ParseError {
            line: Some(e.line() as u64).filter(|l| *l > 0),
            column: Some(e.column() as u64).filter(|c| *c > 0),
            path: path.map(shown_path).filter(|p| !p.is_empty()),
            problem: problem.to_string(),
        }
    }

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
pub const SCHEMA_KEYS: &[&str] = &[
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
    #[error("cannot write machine config: {0}")]
    Render(String),
}
