//! Talking to a node: building the HTTPS client, sending a request with its
//! failure mapped to a [`ClientError`] (a certificate that does not name the
//! node is [`ClientError::WrongNode`]), an error status read as the node's
//! typed API error, and every answer read with a bound.

use super::tls::{node_tls_config, wrong_name_in};
use super::{ClientError, MAX_ANSWER_BYTES, NodeClient};
use crate::api::ErrorBody;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl NodeClient {
    /// A client for the API of node `node` at `endpoint` (normally
    /// `127.0.0.1:<port>`) with a ready rustls config, which must verify the
    /// server as `node` ([`node_tls_config`], or [`NodeVerifier`] for a
    /// config of one's own); `node` names the node in errors.
    pub fn with_tls(
        node: &str,
        endpoint: SocketAddr,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            // Node APIs are on loopback: never through a proxy from the environment.
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(NodeClient {
            http,
            base: format!("https://{endpoint}"),
            node: node.to_string(),
            endpoint,
        })
    }

    /// A client for node `node` at `endpoint`, trusting `ca_pem`, accepting
    /// only a certificate that names `node`, and authenticating with
    /// `cert_pem`/`key_pem`.
    pub fn new(
        node: &str,
        endpoint: SocketAddr,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, ClientError> {
        Self::with_tls(
            node,
            endpoint,
            node_tls_config(node, ca_pem, cert_pem, key_pem)?,
        )
    }

    /// A client for `node` from the client config file at `path` (its OS CA,
    /// its certificate and key files, the node's endpoint).
    pub fn from_client_config(path: &Path, node: &str) -> Result<Self, ClientError> {
        let cfg = crate::clientconfig::ClientConfig::load(path)?;
        let n = cfg
            .node(node)
            .ok_or_else(|| ClientError::Setup(format!("no node {node:?} in {}", path.display())))?;
        let endpoint = n.endpoint.ok_or_else(|| {
            ClientError::Setup(format!(
                "node {node:?} has no API endpoint yet (is the cluster running?)"
            ))
        })?;
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|source| ClientError::Read { path: p, source })
        };
        let cert = read(cfg.cert_path(path))?;
        let key = read(cfg.key_path(path))?;
        Self::new(&n.name, endpoint, &cfg.os_ca, &cert, &key)
    }

    /// The base URL (`https://127.0.0.1:<port>`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The node this client talks to.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| {
            if let Some(presented) = wrong_name_in(&source) {
                ClientError::WrongNode {
                    node: self.node.clone(),
                    endpoint: self.endpoint,
                    presented,
                }
            } else if source.is_connect() || source.is_timeout() {
                ClientError::Connect {
                    url: url.to_string(),
                    source,
                }
            } else {
                ClientError::Transport {
                    url: url.to_string(),
                    source,
                }
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = read_body(resp, url, MAX_ANSWER_BYTES).await?;
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Api(e.into())),
            Err(e) => Err(ClientError::Protocol {
                url: url.to_string(),
                status,
                reason: format!("no error body: {e}"),
            }),
        }
    }

    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: Option<&[(&str, String)]>,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = self.send(req, &url).await?;
        decode(resp, url).await
    }

    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    pub(super) async fn post_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Setup(e.to_string()))?;
        self.call(method, path, None, Some(bytes)).await
    }

    pub(super) async fn post_empty<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, None, None).await
    }

    /// Sends raw bytes as a JSON body (for debugging and the API's own tests).
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(reqwest::Method::POST, path, None, Some(body))
            .await
    }
}

/// An answer's whole body, at most `limit` bytes (a longer one is
/// [`ClientError::TooLarge`], found from its length header or while reading);
/// a failure to read it is a transport error.
pub(super) async fn read_body(
    mut resp: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::TooLarge {
        url: url.to_string(),
        limit,
    };
    let announced = resp.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_string(),
                source,
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
}

/// Reads a successful answer's body as `T` (`send` already turned error
/// statuses into typed errors).
pub(super) async fn decode<T: DeserializeOwned>(
    resp: reqwest::Response,
    url: String,
) -> Result<T, ClientError> {
    let status = resp.status().as_u16();
    let bytes = read_body(resp, &url, MAX_ANSWER_BYTES).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
        url,
        status,
        reason: e.to_string(),
    })
}
