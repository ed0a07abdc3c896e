//! The host-side node API client: reqwest over rustls with the cluster's admin
//! client certificate, trusting only the cluster's OS CA.
//!
//! The rustls config is built here with the ring provider (root store: the OS
//! CA only; client auth: the given certificate and key) and handed to reqwest
//! as is. Nodes are reached on `https://127.0.0.1:<port>` (QEMU's hostfwd),
//! but a loopback port proves nothing about who listens on it, so a
//! [`NodeClient`] is always made for one named node and verifies that the
//! certificate which answers names that node ([`NodeVerifier`]: the OS CA
//! chain as usual, the server name replaced by the node's name whatever
//! address was dialled). Another node's certificate, or any other program on
//! the port, is refused with [`ClientError::WrongNode`] before a request is
//! sent.
//!
//! Answers are read with a bound: [`MAX_ANSWER_BYTES`] for a JSON answer,
//! [`MAX_LOG_LINE_BYTES`] for one line of a followed log; more is
//! [`ClientError::TooLarge`], not an unbounded buffer. API errors come back as
//! the same [`ErrorCode`] the server sent; transport and TLS failures are
//! distinct variants. This module holds no CLI logic and never prints key
//! material.
//!
//! Submodules by concern: `tls` (the rustls config, [`NodeVerifier`], and
//! finding a refused name in a failed connection), `transport` (sending a
//! request, mapping failures to [`ClientError`], reading a bounded answer),
//! `calls` (one method per API endpoint) and `diagnostic` (each failure's
//! stable code and help line).

mod calls;
mod diagnostic;
mod tls;
mod transport;

pub use calls::ServerDate;
pub use diagnostic::ConnectFailure;
pub use tls::{NodeVerifier, node_tls_config, wrong_name_in};

use crate::api::{self, ApiError, ErrorCode};
use ironclad_contract::tls::TlsError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A failed connection said plainly: a request that timed out reached the
/// node (or its port forward) and got no answer, which "cannot connect"
/// would misstate.
fn connect_text(url: &str, source: &reqwest::Error) -> String {
    if source.is_timeout() {
        format!("no answer from {url} in time (the request timed out)")
    } else {
        format!("cannot connect to {url}: {source}")
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with a typed API error.
    #[error("node refused: {0}")]
    Api(#[from] ApiError),
    /// No connection, the TLS handshake failed, or no answer in time.
    #[error("{}", connect_text(url, source))]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke during the request or response.
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Something answered on the node's endpoint, but its certificate (signed
    /// by the cluster's OS CA) is not this node's: another node's key, or a
    /// stale endpoint now held by another node.
    #[error(
        "{endpoint} did not answer as node {node:?}: its certificate is for {}; refusing to talk to it (another node or program holds this port: is the cluster's client.yaml stale, or is someone impersonating the node?)",
        shown_names(presented)
    )]
    WrongNode {
        node: String,
        endpoint: SocketAddr,
        /// The names the certificate carries (as rustls reports them).
        presented: Vec<String>,
    },
    /// The answer is larger than the client reads.
    #[error("answer from {url} is larger than {limit} bytes; refused")]
    TooLarge { url: String, limit: usize },
    /// The node's answer was not what the API promises.
    #[error("unexpected answer from {url} (status {status}): {reason}")]
    Protocol {
        url: String,
        status: u16,
        reason: String,
    },
    /// The TLS material or the client config is not usable.
    #[error("client setup: {0}")]
    Setup(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::clientconfig::ClientConfigError),
    /// The node rebooted while a request to it was in flight (its health
    /// answered with another boot id): the request's work is lost and no
    /// answer will come.
    #[error("node {node} rebooted during {what} (its boot id changed); that work is lost")]
    Rebooted { node: String, what: String },
}

impl ClientError {
    /// The API error code, when the node answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

/// The largest JSON answer read from a node (a matrix report is the biggest
/// the API sends, well below this).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// The longest line of a followed log stream.
pub const MAX_LOG_LINE_BYTES: usize = 1024 * 1024;

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> Self {
        ClientError::Setup(e.to_string())
    }
}

/// The names a refused certificate carried, as [`ClientError::WrongNode`]'s
/// message shows them.
fn shown_names(presented: &[String]) -> String {
    if presented.is_empty() {
        "other names".to_string()
    } else {
        presented.join(", ")
    }
}

/// A client for one node's API.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
    /// The node this client talks to (the name its certificate must carry).
    node: String,
    endpoint: SocketAddr,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("node", &self.node)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How long one node may take to run its matrix checks.
pub const MATRIX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often a node is asked for its boot id while a long request to it
/// runs ([`NodeClient::unless_rebooted`]).
pub const BOOT_WATCH: Duration = Duration::from_secs(10);

/// Keeps the re-export path stable for callers that name the API module.
pub use api::Role;

#[cfg(test)]
mod tests;
