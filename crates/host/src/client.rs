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

use crate::api::{
    self, Accepted, AddLearnerRequest, ApiError, ApplyConfigRequest, ErrorBody, ErrorCode,
    EtcdMember, EtcdMembers, Health, InitialMember, JoinRequest, KvValue, LogLine, LogLines,
    LogsQuery, PutRequest, ServiceList, ServiceStatus, VersionInfo, paths,
};
use futures::stream::{BoxStream, StreamExt};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with a typed API error.
    #[error("node refused: {0}")]
    Api(#[from] ApiError),
    /// No connection, or the TLS handshake failed.
    #[error("cannot connect to {url}: {source}")]
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

use ironclad_contract::tls::{self, TlsError};

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> Self {
        ClientError::Setup(e.to_string())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    tls::provider()
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, ClientError> {
    Ok(tls::roots(ca_pem)?)
}

fn identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    Ok(tls::identity("client", cert_pem, key_pem)?)
}

/// The rustls client config for the API of the node called `node`: trust
/// `ca_pem` only, authenticate with `cert_pem` + `key_pem`, and accept only a
/// certificate that names `node` ([`NodeVerifier`]).
pub fn node_tls_config(
    node: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig, ClientError> {
    let verifier = NodeVerifier::new(node, ca_pem)?;
    let (certs, key) = identity(cert_pem, key_pem)?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(certs, key)
        .map_err(|e| ClientError::Setup(e.to_string()))
}

/// Verifies a node API's certificate as the node's, not as the address the
/// host dialled: the chain must lead to the OS CA (webpki, as usual) and the
/// certificate must carry the node's name as a DNS SAN. The dialled address
/// (`127.0.0.1`, a hostfwd port any local process could hold) is ignored.
#[derive(Debug)]
pub struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    node: ServerName<'static>,
}

impl NodeVerifier {
    /// A verifier for `node` trusting only the CAs of `ca_pem`.
    pub fn new(node: &str, ca_pem: &str) -> Result<Self, ClientError> {
        let node = ServerName::try_from(node.to_string())
            .ok()
            .filter(|n| matches!(n, ServerName::DnsName(_)))
            .ok_or_else(|| {
                ClientError::Setup(format!(
                    "node name {node:?} is not a DNS name a certificate can be checked against"
                ))
            })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
                .build()
                .map_err(|e| ClientError::Setup(format!("certificate verifier: {e}")))?;
        Ok(NodeVerifier { inner, node })
    }
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.node, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The names a refused certificate carried, when the error chain of a failed
/// connection says that the server's certificate does not name the node.
pub fn wrong_name_in(err: &(dyn std::error::Error + 'static)) -> Option<Vec<String>> {
    match rustls_error_in(err)? {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => Some(Vec::new()),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => Some(presented.iter().map(|p| plain_name(p)).collect()),
        _ => None,
    }
}

/// A name as rustls reports it (`DnsName("dev-cp-1")`, `IpAddress(10.5.0.2)`)
/// without the wrapping.
fn plain_name(reported: &str) -> String {
    reported
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .or_else(|| {
            reported
                .strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
        })
        .unwrap_or(reported)
        .to_string()
}

/// The first rustls error in `err`'s chain. An `io::Error`'s `source()` skips
/// the error it wraps (and reqwest's connector nests one in another), so
/// each is opened with `get_ref()` too.
fn rustls_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = err.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(t) = rustls_error_in(inner) {
            return Some(t);
        }
    }
    rustls_error_in(err.source()?)
}

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

    async fn send(
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

    async fn call<T: DeserializeOwned>(
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

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    async fn post_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Setup(e.to_string()))?;
        self.call(method, path, None, Some(bytes)).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
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

    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        self.get(paths::VERSION).await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get(paths::HEALTH).await
    }

    /// [`NodeClient::health`] that gives up after `timeout`. Early in a boot
    /// a connection can stall in QEMU's user-mode network (its TCP
    /// handshake with a guest that is not listening yet is retried after
    /// seconds); a new connection gets through as soon as the guest listens.
    pub async fn health_within(&self, timeout: Duration) -> Result<Health, ClientError> {
        let url = format!("{}{}", self.base, paths::HEALTH);
        let resp = self
            .send(self.http.get(&url).timeout(timeout), &url)
            .await?;
        decode(resp, url).await
    }

    pub async fn services(&self) -> Result<ServiceList, ClientError> {
        self.get(paths::SERVICES).await
    }

    pub async fn service_start(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.post_empty(&paths::fill(paths::SERVICE_START, name))
            .await
    }

    pub async fn service_stop(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.post_empty(&paths::fill(paths::SERVICE_STOP, name))
            .await
    }

    pub async fn service_restart(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.post_empty(&paths::fill(paths::SERVICE_RESTART, name))
            .await
    }

    fn tail_query(tail: Option<usize>, follow: bool) -> Vec<(&'static str, String)> {
        let q = LogsQuery { tail, follow };
        let mut out = Vec::new();
        if let Some(t) = q.tail {
            out.push(("tail", t.to_string()));
        }
        if q.follow {
            out.push(("follow", "true".to_string()));
        }
        out
    }

    /// The last `tail` lines (all kept lines when `None`) of `service`.
    pub async fn logs(&self, service: &str, tail: Option<usize>) -> Result<LogLines, ClientError> {
        let q = Self::tail_query(tail, false);
        let path = paths::fill(paths::SERVICE_LOGS, service);
        self.call(reqwest::Method::GET, &path, Some(&q), None).await
    }

    /// The last `tail` lines of `service`, then each new line as the node
    /// writes it (the stream ends when the connection does).
    pub async fn follow_logs(
        &self,
        service: &str,
        tail: Option<usize>,
    ) -> Result<BoxStream<'static, Result<LogLine, ClientError>>, ClientError> {
        let q = Self::tail_query(tail, true);
        let url = format!("{}{}", self.base, paths::fill(paths::SERVICE_LOGS, service));
        let resp = self.send(self.http.get(&url).query(&q), &url).await?;
        let chunks = resp.bytes_stream();
        let state = (chunks, Vec::<u8>::new(), url, false);
        let lines = futures::stream::unfold(state, |(mut chunks, mut buf, url, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let item = serde_json::from_slice::<LogLine>(&line).map_err(|e| {
                        ClientError::Protocol {
                            url: url.clone(),
                            status: 200,
                            reason: format!("bad log line: {e}"),
                        }
                    });
                    return Some((item, (chunks, buf, url, false)));
                }
                if buf.len() > MAX_LOG_LINE_BYTES {
                    let err = ClientError::TooLarge {
                        url: url.clone(),
                        limit: MAX_LOG_LINE_BYTES,
                    };
                    return Some((Err(err), (chunks, Vec::new(), url, true)));
                }
                match chunks.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(source)) => {
                        let err = ClientError::Transport {
                            url: url.clone(),
                            source,
                        };
                        return Some((Err(err), (chunks, buf, url, true)));
                    }
                    None => return None,
                }
            }
        });
        Ok(lines.boxed())
    }

    pub async fn dmesg(&self, tail: Option<usize>) -> Result<LogLines, ClientError> {
        let q = Self::tail_query(tail, false);
        self.call(reqwest::Method::GET, paths::DMESG, Some(&q), None)
            .await
    }

    /// Starts etcd as a new cluster on this node (`conflict` if done before).
    pub async fn bootstrap(&self) -> Result<Accepted, ClientError> {
        self.post_empty(paths::BOOTSTRAP).await
    }

    pub async fn etcd_members(&self) -> Result<EtcdMembers, ClientError> {
        self.get(paths::ETCD_MEMBERS).await
    }

    pub async fn etcd_add_learner(
        &self,
        name: &str,
        peer_url: &str,
    ) -> Result<EtcdMember, ClientError> {
        let req = AddLearnerRequest {
            name: name.to_string(),
            peer_url: peer_url.to_string(),
        };
        self.post_json(reqwest::Method::POST, paths::ETCD_MEMBERS, &req)
            .await
    }

    pub async fn etcd_promote(&self, id: u64) -> Result<EtcdMember, ClientError> {
        self.post_empty(&paths::fill(paths::ETCD_PROMOTE, &id.to_string()))
            .await
    }

    pub async fn etcd_remove(&self, id: u64) -> Result<Accepted, ClientError> {
        let path = paths::fill(paths::ETCD_MEMBER, &id.to_string());
        self.call(reqwest::Method::DELETE, &path, None, None).await
    }

    /// Tells this control plane to start etcd joining `initial_cluster`.
    pub async fn etcd_join(
        &self,
        initial_cluster: Vec<InitialMember>,
    ) -> Result<Accepted, ClientError> {
        let req = JoinRequest { initial_cluster };
        self.post_json(reqwest::Method::POST, paths::ETCD_JOIN, &req)
            .await
    }

    pub async fn etcd_put(&self, key: &str, value: &str) -> Result<Accepted, ClientError> {
        let req = PutRequest {
            key: key.to_string(),
            value: value.to_string(),
        };
        self.post_json(reqwest::Method::PUT, paths::ETCD_KV, &req)
            .await
    }

    pub async fn etcd_get(&self, key: &str) -> Result<KvValue, ClientError> {
        let q = [("key", key.to_string())];
        self.call(reqwest::Method::GET, paths::ETCD_KV, Some(&q), None)
            .await
    }

    /// Sends a new machine config (YAML) to the node.
    pub async fn apply_config(&self, config_yaml: &str) -> Result<Accepted, ClientError> {
        let req = ApplyConfigRequest {
            config: config_yaml.to_string(),
        };
        self.post_json(reqwest::Method::POST, paths::APPLY_CONFIG, &req)
            .await
    }

    pub async fn reboot(&self) -> Result<Accepted, ClientError> {
        self.post_empty(paths::REBOOT).await
    }

    pub async fn shutdown(&self) -> Result<Accepted, ClientError> {
        self.post_empty(paths::SHUTDOWN).await
    }

    /// Runs the node's matrix checks. It takes minutes under TCG: the request
    /// may take up to [`MATRIX_TIMEOUT`] (the client has no overall timeout
    /// otherwise; this bounds a node that never answers).
    pub async fn matrix_run(
        &self,
        req: &api::MatrixRunRequest,
    ) -> Result<crate::matrix::NodeMatrixReport, ClientError> {
        let url = format!("{}{}", self.base, paths::MATRIX_RUN);
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Setup(e.to_string()))?;
        let r = self
            .http
            .post(&url)
            .timeout(MATRIX_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = self.send(r, &url).await?;
        decode(resp, url).await
    }
}

/// An answer's whole body, at most `limit` bytes (a longer one is
/// [`ClientError::TooLarge`], found from its length header or while reading);
/// a failure to read it is a transport error.
async fn read_body(
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
async fn decode<T: DeserializeOwned>(
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

/// A node's clock as its API shows it: the HTTP `Date` header of a health
/// request, with the host's clock just before sending and just after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDate {
    pub sent: std::time::SystemTime,
    pub received: std::time::SystemTime,
    /// The raw header (`Sun, 06 Nov 1994 08:49:37 GMT`), when sent.
    pub date: Option<String>,
}

impl NodeClient {
    /// The node's `Date` header on `GET /v1/health` (clock-skew checks).
    pub async fn server_date(&self) -> Result<ServerDate, ClientError> {
        let url = format!("{}{}", self.base, paths::HEALTH);
        let sent = std::time::SystemTime::now();
        let resp = self.send(self.http.get(&url), &url).await?;
        let received = std::time::SystemTime::now();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(ServerDate {
            sent,
            received,
            date,
        })
    }
}

/// How long one node may take to run its matrix checks.
pub const MATRIX_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Keeps the re-export path stable for callers that name the API module.
pub use api::Role;

#[cfg(test)]
mod tests;
