//! The HTTPS client of the local etcd's JSON gateway (`/v3/...`): only the
//! etcd CA trusted, the node's etcd client certificate presented. It owns
//! the gateway's wire types (`Gw*`, proto field names, uint64 as strings)
//! and turns etcd's error answers into [`EtcdError::Gateway`]. What the
//! calls mean is [`super::ops`]' business.
//!
//! The health probe asks `/health` on etcd's metrics listener instead: plain
//! HTTP on 127.0.0.1 (kubeadm probes etcd's liveness the same way). Its
//! answer is the client port's (leader known, no alarm, a linearizable read
//! passes), without a TLS handshake: under TCG the first handshake with a
//! fresh etcd took 0.5–0.7 s, which the node's `etcd healthy` would count
//! and which no later client pays again.

use super::error::{EtcdError, SetupError};
use crate::api::{EtcdMember, EtcdMembers};
use crate::machine::EtcdPki;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Timeout of one request to the local etcd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one `/health` probe.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The client of one etcd's gateway, or why it could not be built (then
/// every call fails with that), and its health probe's.
#[derive(Clone)]
pub(super) struct Gateway {
    http: Result<reqwest::Client, SetupError>,
    /// `https://<ip>:<client port>`.
    base: String,
    /// The plain-HTTP client of the health probe.
    probe: Result<reqwest::Client, SetupError>,
    /// `http://<ip>:<metrics port>`.
    health_base: String,
}

impl Gateway {
    /// A client of the etcd at `base`, with the node's etcd PKI, whose
    /// metrics listener is at `health_base`.
    pub(super) fn new(pki: Option<&EtcdPki>, base: String, health_base: String) -> Self {
        let http = match pki {
            None => Err(SetupError::NoCertificates),
            Some(p) => http_client(p),
        };
        Gateway {
            http,
            base,
            probe: probe_client(),
            health_base,
        }
    }

    fn http(&self) -> Result<&reqwest::Client, EtcdError> {
        self.http.as_ref().map_err(|e| EtcdError::Setup(e.clone()))
    }

    /// POSTs `body` to the gateway at `path` (`/v3/...`) and decodes the
    /// success answer.
    pub(super) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &'static str,
        body: &impl Serialize,
    ) -> Result<T, EtcdError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http()?
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| EtcdError::NotAnswering(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| EtcdError::BrokeOff(error_chain(&e)))?;
        if !(200..300).contains(&status) {
            return Err(gateway_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|source| EtcdError::UnexpectedAnswer { path, source })
    }

    /// Passes once etcd's `/health` (on its metrics listener) says `true`.
    /// Without the node's etcd certificates it fails as every call does:
    /// etcd cannot serve its clients then, whatever its metrics say.
    pub(super) async fn health(&self) -> Result<(), EtcdError> {
        self.http()?;
        let url = format!("{}/health", self.health_base);
        let resp = self
            .probe
            .as_ref()
            .map_err(|e| EtcdError::Setup(e.clone()))?
            .get(&url)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .map_err(|e| EtcdError::HealthUnreachable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body: GwHealth = resp.json().await.map_err(|e| EtcdError::HealthAnswer {
            status,
            detail: e.to_string(),
        })?;
        if body.health == "true" {
            Ok(())
        } else {
            Err(EtcdError::Unhealthy {
                status,
                reason: body.reason,
            })
        }
    }
}

/// The reqwest client for the local etcd: only the etcd CA trusted, the
/// node's etcd client certificate presented.
fn http_client(pki: &EtcdPki) -> Result<reqwest::Client, SetupError> {
    let tls = ironclad_contract::tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key)
        .map_err(|e| SetupError::ClientTls(e.to_string()))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(Duration::from_secs(3))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))
}

/// The client of the health probe: plain HTTP to a loopback listener, no
/// proxy whatever the environment says. reqwest wants a TLS config even so
/// (without one it would look for a process-wide crypto provider): one that
/// trusts nobody.
fn probe_client() -> Result<reqwest::Client, SetupError> {
    let no_tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SetupError::Client(e.to_string()))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(no_tls)
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(HEALTH_TIMEOUT)
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// An error answer of etcd's gateway (HTTP status, body with the gRPC status
/// code and message when it is JSON) as [`EtcdError::Gateway`]; its API code
/// is [`EtcdError::code`]'s choice.
pub fn gateway_error(http_status: u16, body: &[u8]) -> EtcdError {
    let parsed: Option<GwError> = serde_json::from_slice(body).ok();
    let (grpc_code, message) = match parsed {
        Some(e) => (
            e.code,
            e.message
                .filter(|m| !m.is_empty())
                .or(e.error)
                .unwrap_or_default(),
        ),
        None => (
            None,
            String::from_utf8_lossy(body).chars().take(300).collect(),
        ),
    };
    let message = if message.is_empty() {
        format!("etcd answered with HTTP status {http_status}")
    } else {
        message
    };
    EtcdError::Gateway {
        status: http_status,
        grpc_code,
        message,
    }
}

// ---- etcd's JSON gateway (proto field names; uint64 as strings) ----

#[derive(Serialize)]
pub(super) struct Empty {}

#[derive(Serialize)]
pub(super) struct GwId {
    #[serde(rename = "ID")]
    pub(super) id: String,
}

#[derive(Serialize)]
pub(super) struct GwMemberAdd {
    #[serde(rename = "peerURLs")]
    pub(super) peer_urls: Vec<String>,
    #[serde(rename = "isLearner")]
    pub(super) is_learner: bool,
}

#[derive(Serialize)]
pub(super) struct GwPut {
    pub(super) key: String,
    pub(super) value: String,
}

#[derive(Serialize)]
pub(super) struct GwRange {
    pub(super) key: String,
}

#[derive(Deserialize)]
pub(super) struct GwMember {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

impl GwMember {
    pub(super) fn into_api(self) -> Result<EtcdMember, EtcdError> {
        let id = self
            .id
            .parse::<u64>()
            .map_err(|_| EtcdError::BadMemberId(self.id.clone()))?;
        Ok(EtcdMember {
            id,
            name: self.name,
            peer_urls: self.peer_urls,
            client_urls: self.client_urls,
            is_learner: self.is_learner,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct GwMembers {
    #[serde(default)]
    members: Vec<GwMember>,
}

impl GwMembers {
    pub(super) fn into_api(self) -> Result<EtcdMembers, EtcdError> {
        Ok(EtcdMembers {
            members: self
                .members
                .into_iter()
                .map(GwMember::into_api)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct GwMemberAddReply {
    pub(super) member: Option<GwMember>,
}

#[derive(Deserialize)]
pub(super) struct GwKv {
    #[serde(default)]
    pub(super) value: String,
}

#[derive(Deserialize)]
pub(super) struct GwRangeReply {
    #[serde(default)]
    pub(super) kvs: Vec<GwKv>,
}

#[derive(Deserialize)]
struct GwHealth {
    #[serde(default)]
    health: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct GwError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}
