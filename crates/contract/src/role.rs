//! Roles: a node's in the cluster ([`Role`], from the cluster file into the
//! machine config) and an API client's ([`ClientRole`], carried in its
//! certificate's Organization and checked by the node API).

use std::fmt;
use std::str::FromStr;

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs etcd (and the Kubernetes control plane when the image has it).
    ControlPlane,
    /// Runs workloads only; never holds etcd or CA keys.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role an API client certificate can carry (in its Organization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientRole {
    /// May read and change everything.
    Admin,
    /// May read, never change.
    Reader,
}

impl ClientRole {
    /// The certificate Organization for this role.
    pub fn organization(self) -> &'static str {
        match self {
            ClientRole::Admin => "os:admin",
            ClientRole::Reader => "os:reader",
        }
    }

    /// The role named by a certificate Organization, if any.
    pub fn from_organization(org: &str) -> Option<ClientRole> {
        match org {
            "os:admin" => Some(ClientRole::Admin),
            "os:reader" => Some(ClientRole::Reader),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Admin => "admin",
            ClientRole::Reader => "reader",
        }
    }
}

impl fmt::Display for ClientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "admin" | "os:admin" => Ok(ClientRole::Admin),
            "reader" | "os:reader" => Ok(ClientRole::Reader),
            _ => Err(UnknownRole(crate::names::clip(s))),
        }
    }
}

/// A client role that is neither admin nor reader (the value as given, cut).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown client role {0:?}: use admin or reader")]
pub struct UnknownRole(pub String);
