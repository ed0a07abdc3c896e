//! The client config (`client.yaml`, `kind: ClientConfig`): what the host CLI
//! needs to talk to a cluster's node APIs. It holds the cluster name, the OS CA
//! certificate (the only CA the client trusts), the paths of the client
//! certificate and key (relative to the file itself, so the directory can be
//! moved as a whole) and the nodes with their roles, addresses and, once
//! `ironclad create` has started them, their API endpoints on 127.0.0.1.
//!
//! An endpoint belongs to the node entry it is written in: the entry's `name`
//! is the identity the host client demands of whatever answers there (the
//! node's API certificate names it; see [`crate::client::NodeVerifier`]). A
//! port alone proves nothing, since any local process (or another node's
//! QEMU) may hold it. Files written before node identity was checked have the
//! same shape and are read as they are; clusters made then have API
//! certificates that already carry their node name.
//!
//! This module owns the document and its strict parsing; it does not open
//! connections (see [`crate::client`]) and holds no key material itself.

use crate::spec::{ClusterName, NodeName, Role};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The document's `kind`.
pub const KIND: &str = "ClientConfig";
/// The conventional file name inside a generated config directory.
pub const FILE_NAME: &str = "client.yaml";

/// A client config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    pub api_version: String,
    pub kind: String,
    /// The cluster's name (a file naming a bad one is refused).
    pub cluster: ClusterName,
    /// The OS CA certificate (PEM): node API servers are verified against it.
    pub os_ca: String,
    /// Client certificate, relative to the directory of this file (or absolute).
    pub cert: PathBuf,
    /// Client key, relative to the directory of this file (or absolute).
    pub key: PathBuf,
    /// The cluster's nodes.
    pub nodes: Vec<ClientNode>,
}

/// One node as the client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientNode {
    /// The node's name (a file naming a bad one is refused).
    pub name: NodeName,
    pub role: Role,
    /// Address on the cluster network.
    pub address: Ipv4Addr,
    /// Where the host reaches the node API (hostfwd on 127.0.0.1); filled in
    /// by `ironclad create`. Whatever answers there must prove to be `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
}

/// Why a client config could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("client config is not valid: {0}")]
    Parse(String),
    #[error("client config has apiVersion {0:?}; this build reads {api}", api = crate::API_VERSION)]
    Version(String),
    #[error("document kind is {0:?}, expected {KIND:?}")]
    Kind(String),
    #[error("cannot render client config: {0}")]
    Render(String),
}

impl ClientConfig {
    /// Strict parse (unknown fields refused, version and kind checked).
    pub fn from_yaml(text: &str) -> Result<Self, ClientConfigError> {
        let cfg: ClientConfig =
            serde_saphyr::from_str(text).map_err(|e| ClientConfigError::Parse(e.to_string()))?;
        if cfg.api_version != crate::API_VERSION {
            return Err(ClientConfigError::Version(cfg.api_version));
        }
        if cfg.kind != KIND {
            return Err(ClientConfigError::Kind(cfg.kind));
        }
        Ok(cfg)
    }

    /// Renders the document as YAML.
    pub fn to_yaml(&self) -> Result<String, ClientConfigError> {
        serde_saphyr::to_string(self).map_err(|e| ClientConfigError::Render(e.to_string()))
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ClientConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Writes the document to `path` atomically (mode 0644: it holds no secret).
    pub fn save(&self, path: &Path) -> Result<(), ClientConfigError> {
        let text = self.to_yaml()?;
        crate::fsutil::write_public(path, text.as_bytes()).map_err(|source| {
            ClientConfigError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The client certificate's path for a config stored at `config_path`.
    pub fn cert_path(&self, config_path: &Path) -> PathBuf {
        resolve(config_path, &self.cert)
    }

    /// The client key's path for a config stored at `config_path`.
    pub fn key_path(&self, config_path: &Path) -> PathBuf {
        resolve(config_path, &self.key)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&ClientNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

fn resolve(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClientConfig {
        ClientConfig {
            api_version: crate::API_VERSION.to_string(),
            kind: KIND.to_string(),
            cluster: "dev".parse().unwrap(),
            os_ca: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
            cert: PathBuf::from("admin.crt"),
            key: PathBuf::from("admin.key"),
            nodes: vec![
                ClientNode {
                    name: "dev-cp-1".parse().unwrap(),
                    role: Role::ControlPlane,
                    address: Ipv4Addr::new(10, 5, 0, 2),
                    endpoint: Some("127.0.0.1:50001".parse().unwrap()),
                },
                ClientNode {
                    name: "dev-worker-1".parse().unwrap(),
                    role: Role::Worker,
                    address: Ipv4Addr::new(10, 5, 0, 3),
                    endpoint: None,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let cfg = sample();
        cfg.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("kind: ClientConfig"), "{text}");
        assert!(text.contains("role: control-plane"), "{text}");
        assert!(!text.contains("endpoint: null"), "{text}");
        let back = ClientConfig::load(&path).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.cert_path(&path), dir.path().join("admin.crt"));
        let mut abs = back.clone();
        abs.key = PathBuf::from("/etc/k.key");
        assert_eq!(abs.key_path(&path), PathBuf::from("/etc/k.key"));
        assert_eq!(
            back.node("dev-cp-1").unwrap().endpoint.unwrap().port(),
            50001
        );
    }

    #[test]
    fn a_file_written_before_identity_checks_still_reads() {
        // The shape `gen config` and `create` wrote before the host checked
        // node names: each endpoint sits in its node's entry, so the name the
        // client demands is the entry's.
        let old = format!(
            "apiVersion: {}\nkind: ClientConfig\ncluster: dev\nosCa: |\n  -----BEGIN CERTIFICATE-----\n  AAAA\n  -----END CERTIFICATE-----\ncert: admin.crt\nkey: admin.key\nnodes:\n- name: dev-cp-1\n  role: control-plane\n  address: 10.5.0.2\n  endpoint: 127.0.0.1:50001\n",
            crate::API_VERSION
        );
        let cfg = ClientConfig::from_yaml(&old).unwrap();
        let n = cfg.node("dev-cp-1").unwrap();
        assert_eq!(n.endpoint, Some("127.0.0.1:50001".parse().unwrap()));
        assert!(cfg.node("127.0.0.1").is_none());
    }

    #[test]
    fn strict() {
        let text = sample().to_yaml().unwrap();
        assert!(matches!(
            ClientConfig::from_yaml(&text.replace("cluster: dev", "cluster: dev\nextra: 1")),
            Err(ClientConfigError::Parse(_))
        ));
        assert!(matches!(
            ClientConfig::from_yaml(&text.replace("kind: ClientConfig", "kind: Cluster")),
            Err(ClientConfigError::Kind(_))
        ));
        assert!(matches!(
            ClientConfig::from_yaml(&text.replace(crate::API_VERSION, "v0")),
            Err(ClientConfigError::Version(_))
        ));
        // Names that could become paths are refused like any bad value.
        for (from, to) in [
            ("cluster: dev", "cluster: ../../x"),
            ("name: dev-cp-1", "name: /etc/x"),
            ("name: dev-cp-1", "name: ''"),
        ] {
            assert!(text.contains(from), "{text}");
            assert!(matches!(
                ClientConfig::from_yaml(&text.replace(from, to)),
                Err(ClientConfigError::Parse(_))
            ));
        }
    }
}
