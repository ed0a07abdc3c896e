//! etcd on a control plane: the supervised `etcd` service, bootstrap of a new
//! cluster, joining as a learner, and the member and key operations of the
//! node API (through etcd's own client port, with the node's etcd client
//! certificate).
//!
//! Interface used by the controller (fixed): [`Etcd::new`] (None on workers),
//! [`Etcd::service`] (the supervised spec; `autostart` only once this node has
//! etcd data), [`Etcd::execute`] for the etcd actions of [`crate::api::Action`].
//!
//! Files (see `docs/etcd.md`):
//!
//! - `<root>/var/lib/etcd` (state disk, 0700): etcd's data directory. Its
//!   `member/` subdirectory is what "this node has etcd data" means: bootstrap
//!   and join are refused once it exists, and the service autostarts.
//! - `<root>/run/ironclad/etcd/` (tmpfs, 0700): the CA, server and peer
//!   certificates and keys (0600) copied from the machine config, and
//!   `etcd.yaml`, etcd's `--config-file`. Both are rewritten from the machine
//!   config on every boot (by [`Etcd::service`]) and by bootstrap/join, so no
//!   key rests on the state disk and a re-applied config's certificates win.
//!   With a data directory present etcd ignores the initial-cluster settings,
//!   so the rewritten config of a later boot only needs this member.
//!
//! etcd is reached on its client port through the JSON gateway (`/v3/...`),
//! trusting only the etcd CA and presenting the node's etcd client
//! certificate. etcd's errors become typed [`ApiError`]s (see
//! [`map_etcd_error`]). Nothing secret is logged or returned.

use super::supervisor::{Health, Probe, ServiceSpec, ServiceState, SupervisorHandle};
use crate::api::{
    Accepted, Action, AddLearnerRequest, ApiError, ErrorCode, EtcdMember, EtcdMembers,
    InitialMember, JoinRequest, KvValue, NodeName, PutRequest, Reply,
};
use crate::machine::{ETCD_CLIENT_PORT, ETCD_PEER_PORT, EtcdPki, MachineConfig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The supervised service's name.
pub const SERVICE: &str = ironclad_contract::services::ETCD;

/// How long bootstrap waits for the new cluster to answer `/health`.
const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(60);
/// How often the supervisor probes `/health` while etcd starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// etcd's CPU priority ([`ServiceSpec::nice`]): above containerd and the
/// background module loading, which start at the same time on a control
/// plane.
pub const NICE: i32 = -10;
/// How long a starting etcd may stay unhealthy before the supervisor restarts
/// it. Long on purpose: a restarted member waits for its peers (quorum), a
/// learner for its snapshot; restarting it would not help either.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout of one request to the local etcd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key or value accepted for put/get (etcd's own request limit is 1.5 MiB).
const MAX_KEY_BYTES: usize = 4096;

/// Knobs that differ between a node and the loopback tests.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// The etcd binary; `None` means `<root>/usr/bin/etcd`.
    pub program: Option<PathBuf>,
    /// Also listen on `https://127.0.0.1:2379` and reach the local etcd there
    /// (on a node). Tests with several members on one host turn it off and
    /// reach each etcd on its own address.
    pub loopback_client: bool,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            program: None,
            loopback_client: true,
        }
    }
}

/// etcd of one control plane.
#[derive(Clone)]
pub struct Etcd {
    /// The node's root (`/` on a node, a temp dir in tests).
    root: PathBuf,
    options: EtcdOptions,
    /// Member name (the node name).
    name: String,
    /// This node's address on the cluster network.
    address: Ipv4Addr,
    /// `initial-cluster-token`: keeps members of another cluster out.
    token: String,
    pki: Option<EtcdPki>,
    /// HTTPS client for the local etcd, or why it could not be built.
    http: Result<reqwest::Client, String>,
    /// Serializes bootstrap and join.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Etcd {
    // The PKI holds private keys: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("root", &self.root)
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Whether etcd starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl ClusterState {
    fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

impl Etcd {
    /// The etcd of this node, or `None` on a worker (no etcd settings).
    pub fn new(config: &MachineConfig, root: &Path) -> Option<Self> {
        Self::with_options(config, root, EtcdOptions::default())
    }

    /// [`Etcd::new`] with explicit options (tests: the host's etcd binary,
    /// no shared loopback listener).
    pub fn with_options(config: &MachineConfig, root: &Path, options: EtcdOptions) -> Option<Self> {
        let settings = config.etcd.as_ref()?;
        let pki = config.pki.etcd.clone();
        let http = match &pki {
            None => Err("the machine config has no etcd certificates".to_string()),
            Some(p) => etcd_http_client(p),
        };
        Some(Etcd {
            root: root.to_path_buf(),
            options,
            name: settings.member_name.to_string(),
            address: config.node.address,
            token: format!("ironclad-{}", config.cluster.name),
            pki,
            http,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// etcd's data directory (on the state disk).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("var/lib/etcd")
    }

    /// Where certificates and the config file go (tmpfs).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run/ironclad/etcd")
    }

    /// etcd's config file.
    pub fn config_file(&self) -> PathBuf {
        self.run_dir().join("etcd.yaml")
    }

    /// Whether this node has etcd data (it was bootstrapped or has joined).
    pub fn has_data(&self) -> bool {
        self.data_dir().join("member").is_dir()
    }

    /// This member's peer URL.
    pub fn peer_url(&self) -> String {
        format!("https://{}:{ETCD_PEER_PORT}", self.address)
    }

    /// The URL machined uses to reach the local etcd.
    pub fn local_url(&self) -> String {
        let ip = if self.options.loopback_client {
            Ipv4Addr::LOCALHOST
        } else {
            self.address
        };
        format!("https://{ip}:{ETCD_CLIENT_PORT}")
    }

    fn program(&self) -> PathBuf {
        self.options
            .program
            .clone()
            .unwrap_or_else(|| self.root.join("usr/bin/etcd"))
    }

    /// The supervised service. On a node that already has etcd data, the
    /// certificates and config are (re)written here and the service
    /// autostarts; otherwise it waits for bootstrap or join.
    pub fn service(&self) -> ServiceSpec {
        let config = self.config_file();
        let mut spec = ServiceSpec::new(
            SERVICE,
            self.program(),
            &["--config-file", &config.to_string_lossy()],
        );
        spec.autostart = false;
        if self.has_data() {
            let me = [InitialMember {
                name: self.name.clone(),
                peer_url: self.peer_url(),
            }];
            match self.write_files(ClusterState::Existing, &me) {
                Ok(()) => spec.autostart = true,
                // The service then stays stopped; the message names no secret.
                Err(e) => eprintln!("etcd: cannot prepare its files: {e}"),
            }
        }
        // The first pass of each start is a boot phase the host can time.
        let inner = self.probe();
        let announced: Probe = Arc::new(move || {
            let inner = inner.clone();
            Box::pin(async move {
                let res = inner().await;
                if res.is_ok() {
                    super::console::phase(super::console::Phase::EtcdHealthy);
                }
                res
            })
        });
        spec.health = Health::Probe {
            probe: announced,
            interval: PROBE_INTERVAL,
            timeout: PROBE_TIMEOUT,
        };
        spec.stop_timeout = Duration::from_secs(15);
        spec.nice = NICE;
        spec
    }

    /// A probe that passes once etcd's `/health` says `true`.
    pub fn probe(&self) -> Probe {
        let http = self.http.clone();
        let url = format!("{}/health", self.local_url());
        Arc::new(move || {
            let http = http.clone();
            let url = url.clone();
            Box::pin(async move {
                let http = http?;
                check_health(&http, &url).await
            })
        })
    }

    /// Renders etcd's config file (JSON, which etcd's YAML reader accepts).
    pub fn render_config(
        &self,
        state: ClusterState,
        initial: &[InitialMember],
    ) -> Result<String, ApiError> {
        let run = self.run_dir();
        let file = |n: &str| run.join(n).to_string_lossy().into_owned();
        let ip = self.address;
        let mut client_urls = vec![format!("https://{ip}:{ETCD_CLIENT_PORT}")];
        if self.options.loopback_client && ip != Ipv4Addr::LOCALHOST {
            client_urls.push(format!(
                "https://{}:{ETCD_CLIENT_PORT}",
                Ipv4Addr::LOCALHOST
            ));
        }
        let initial_cluster = initial
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let cfg = EtcdConfigFile {
            name: self.name.clone(),
            data_dir: self.data_dir().to_string_lossy().into_owned(),
            listen_peer_urls: self.peer_url(),
            initial_advertise_peer_urls: self.peer_url(),
            listen_client_urls: client_urls.join(","),
            advertise_client_urls: format!("https://{ip}:{ETCD_CLIENT_PORT}"),
            initial_cluster,
            initial_cluster_state: state.as_str().to_string(),
            initial_cluster_token: self.token.clone(),
            heartbeat_interval: 100,
            election_timeout: 1000,
            client_transport_security: Tls {
                cert_file: file("server.crt"),
                key_file: file("server.key"),
                trusted_ca_file: file("ca.crt"),
                client_cert_auth: true,
            },
            peer_transport_security: Tls {
                cert_file: file("peer.crt"),
                key_file: file("peer.key"),
                trusted_ca_file: file("ca.crt"),
                client_cert_auth: true,
            },
            logger: "zap".into(),
            log_outputs: vec!["stderr".into()],
            log_level: "info".into(),
            enable_v2: false,
            enable_grpc_gateway: true,
            strict_reconfig_check: true,
            snapshot_count: 10000,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            auto_compaction_mode: "periodic".into(),
            auto_compaction_retention: "1h".into(),
        };
        serde_json::to_string_pretty(&cfg)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("etcd config: {e}")))
    }

    /// Writes the certificates and the config file for `state`.
    fn write_files(&self, state: ClusterState, initial: &[InitialMember]) -> Result<(), ApiError> {
        let pki = self.pki.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                "the machine config has no etcd certificates",
            )
        })?;
        let io = |what: &str, e: std::io::Error| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot write etcd {what}: {e}"),
            )
        };
        let run = self.run_dir();
        crate::fsutil::create_private_dir(&run).map_err(|e| io("runtime directory", e))?;
        crate::fsutil::create_private_dir(&self.data_dir()).map_err(|e| io("data directory", e))?;
        let files = [
            ("ca.crt", &pki.ca),
            ("server.crt", &pki.server_cert),
            ("server.key", &pki.server_key),
            ("peer.crt", &pki.peer_cert),
            ("peer.key", &pki.peer_key),
        ];
        for (name, pem) in files {
            crate::fsutil::write_secret(&run.join(name), pem.as_bytes())
                .map_err(|e| io(name, e))?;
        }
        let cfg = self.render_config(state, initial)?;
        crate::fsutil::write_secret(&self.config_file(), cfg.as_bytes())
            .map_err(|e| io("config", e))
    }

    /// Refuses when etcd already has data or is supervised (waiting, starting,
    /// running). An etcd without data that failed (a bad earlier attempt, in
    /// its restart back-off) is stopped so that this attempt starts cleanly.
    async fn ensure_fresh(&self, services: &SupervisorHandle, what: &str) -> Result<(), ApiError> {
        if self.has_data() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "cannot {what}: etcd on this node already has data (bootstrapped or joined before)"
                ),
            ));
        }
        match services.status(SERVICE).map(|s| s.state) {
            None | Some(ServiceState::Stopped) => Ok(()),
            Some(ServiceState::Failed { .. }) => {
                services
                    .stop_service(SERVICE)
                    .await
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
                Ok(())
            }
            Some(st) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("cannot {what}: etcd is already {}", st.name()),
            )),
        }
    }

    /// Performs an etcd action (`Bootstrap`, `Etcd*`).
    pub async fn execute(
        &self,
        action: Action,
        services: &SupervisorHandle,
    ) -> Result<Reply, ApiError> {
        match action {
            Action::Bootstrap => self.bootstrap(services).await,
            Action::EtcdJoin(req) => self.join(req, services).await,
            Action::EtcdMembers => Ok(Reply::Members(self.members().await?)),
            Action::EtcdAddLearner(req) => self.add_learner(req).await.map(Reply::Member),
            Action::EtcdPromote { id } => self.promote(id).await.map(Reply::Member),
            Action::EtcdRemove { id } => {
                self.remove(id).await?;
                Ok(accepted())
            }
            Action::EtcdPut(req) => {
                self.put(req).await?;
                Ok(accepted())
            }
            Action::EtcdGet { key } => self.get(&key).await.map(Reply::Kv),
            other => Err(ApiError::new(
                ErrorCode::Internal,
                format!("{other:?} is not an etcd action"),
            )),
        }
    }

    async fn bootstrap(&self, services: &SupervisorHandle) -> Result<Reply, ApiError> {
        let _guard = self.lock.lock().await;
        self.ensure_fresh(services, "bootstrap").await?;
        let me = [InitialMember {
            name: self.name.clone(),
            peer_url: self.peer_url(),
        }];
        self.write_files(ClusterState::New, &me)?;
        services
            .start_service(SERVICE)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        // Running (healthy) or failed: a new single-member cluster that fails
        // to start will not do better on its own, so answer at once.
        let st = services
            .wait_for(SERVICE, BOOTSTRAP_DEADLINE, |s| {
                matches!(s.state, ServiceState::Running | ServiceState::Failed { .. })
            })
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("etcd did not become healthy: {e}"),
                )
            })?;
        if let ServiceState::Failed { error } = st.state {
            let last_line = services
                .logs(SERVICE)
                .and_then(|l| l.last().cloned())
                .map(|l| {
                    format!(
                        "; its last output: {}",
                        l.chars().take(500).collect::<String>()
                    )
                })
                .unwrap_or_default();
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("etcd failed to start: {error}{last_line}"),
            ));
        }
        Ok(accepted())
    }

    async fn join(&self, req: JoinRequest, services: &SupervisorHandle) -> Result<Reply, ApiError> {
        validate_initial_cluster(&req.initial_cluster, &self.name, &self.peer_url())?;
        let _guard = self.lock.lock().await;
        self.ensure_fresh(services, "join").await?;
        self.write_files(ClusterState::Existing, &req.initial_cluster)?;
        services
            .start_service(SERVICE)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        Ok(accepted())
    }

    /// POSTs `body` to the local etcd's gateway at `path` (`/v3/...`).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.clone()))?;
        let url = format!("{}{path}", self.local_url());
        let resp = http.post(&url).json(body).send().await.map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("etcd on this node is not answering: {}", error_chain(&e)),
            )
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("etcd answer broke off: {}", error_chain(&e)),
            )
        })?;
        if !(200..300).contains(&status) {
            return Err(map_etcd_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("unexpected answer from etcd ({path}): {e}"),
            )
        })
    }

    /// The cluster's members, as this node's etcd sees them.
    pub async fn members(&self) -> Result<EtcdMembers, ApiError> {
        let r: GwMembers = self.call("/v3/cluster/member/list", &Empty {}).await?;
        r.into_api()
    }

    async fn add_learner(&self, req: AddLearnerRequest) -> Result<EtcdMember, ApiError> {
        // Members are named after their nodes.
        if req.name.parse::<NodeName>().is_err() {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("invalid member name {:?}", req.name),
            ));
        }
        check_peer_url(&req.peer_url)?;
        let body = GwMemberAdd {
            peer_urls: vec![req.peer_url.clone()],
            is_learner: true,
        };
        let r: GwMemberAddReply = self.call("/v3/cluster/member/add", &body).await?;
        let m = r.member.ok_or_else(|| {
            ApiError::new(ErrorCode::Internal, "etcd added no member (empty answer)")
        })?;
        m.into_api()
    }

    async fn promote(&self, id: u64) -> Result<EtcdMember, ApiError> {
        let r: GwMembers = self
            .call("/v3/cluster/member/promote", &GwId { id: id.to_string() })
            .await?;
        let members = r.into_api()?;
        members
            .members
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no member {id:x}")))
    }

    async fn remove(&self, id: u64) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .call("/v3/cluster/member/remove", &GwId { id: id.to_string() })
            .await?;
        Ok(())
    }

    async fn put(&self, req: PutRequest) -> Result<(), ApiError> {
        check_key(&req.key)?;
        let body = GwPut {
            key: B64.encode(req.key.as_bytes()),
            value: B64.encode(req.value.as_bytes()),
        };
        let _: serde_json::Value = self.call("/v3/kv/put", &body).await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<KvValue, ApiError> {
        check_key(key)?;
        let body = GwRange {
            key: B64.encode(key.as_bytes()),
        };
        let r: GwRangeReply = self.call("/v3/kv/range", &body).await?;
        let value = match r.kvs.into_iter().next() {
            None => None,
            Some(kv) => {
                let raw = B64.decode(kv.value.as_bytes()).map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("etcd value is not base64: {e}"),
                    )
                })?;
                Some(String::from_utf8_lossy(&raw).into_owned())
            }
        };
        Ok(KvValue {
            key: key.to_string(),
            value,
        })
    }
}

fn accepted() -> Reply {
    Reply::Accepted(Accepted { accepted: true })
}

/// The reqwest client for the local etcd: only the etcd CA trusted, the
/// node's etcd client certificate presented.
fn etcd_http_client(pki: &EtcdPki) -> Result<reqwest::Client, String> {
    let tls = ironclad_contract::tls::client_config(&pki.ca, &pki.client_cert, &pki.client_key)
        .map_err(|e| format!("etcd client TLS: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(Duration::from_secs(3))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("etcd client: {e}"))
}

/// `GET url` (etcd's `/health`) is `{"health":"true", ...}`.
async fn check_health(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    let body: GwHealth = resp
        .json()
        .await
        .map_err(|e| format!("health answer (status {status}): {e}"))?;
    if body.health == "true" {
        Ok(())
    } else {
        Err(format!(
            "etcd reports unhealthy (status {status}){}",
            body.reason
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ))
    }
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

/// Maps an error answer of etcd's gateway (gRPC status code and message) to a
/// typed API error. Callers retry on `Unavailable` (e.g. a learner that is not
/// in sync yet), not on the others.
pub fn map_etcd_error(http_status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<GwError> = serde_json::from_slice(body).ok();
    let (code, message) = match parsed {
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
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("in sync with leader")
        || lower.contains("not enough started members")
        || lower.contains("unhealthy cluster")
        || lower.contains("leader changed")
        || lower.contains("no leader")
        || lower.contains("timed out")
    {
        ErrorCode::Unavailable
    } else if lower.contains("member not found") {
        ErrorCode::NotFound
    } else {
        // gRPC status codes.
        match code {
            Some(3) | Some(11) => ErrorCode::BadRequest,
            Some(5) => ErrorCode::NotFound,
            Some(6) | Some(9) => ErrorCode::Conflict,
            Some(4) | Some(10) | Some(14) => ErrorCode::Unavailable,
            Some(7) | Some(16) => ErrorCode::Forbidden,
            _ => match http_status {
                400 => ErrorCode::BadRequest,
                404 => ErrorCode::NotFound,
                409 | 412 => ErrorCode::Conflict,
                503 | 504 => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            },
        }
    };
    ApiError::new(kind, format!("etcd: {message}"))
}

/// Checks a peer URL: `https://<IPv4>:<port>`, nothing else.
pub fn check_peer_url(url: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("peer URL {url:?} {why}; expected https://<IPv4>:<port>"),
        )
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("is not https"))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    host.parse::<Ipv4Addr>()
        .map_err(|_| bad("does not name an IPv4 address"))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(bad("has no valid port")),
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("the key is longer than {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A join's initial cluster: valid names and peer URLs, no duplicates, and
/// this member in it with its own peer URL.
pub fn validate_initial_cluster(
    initial: &[InitialMember],
    me: &str,
    my_peer_url: &str,
) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
    if initial.is_empty() {
        return Err(bad("the initial cluster is empty".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut urls = std::collections::BTreeSet::new();
    for m in initial {
        if m.name.parse::<NodeName>().is_err() {
            return Err(bad(format!("invalid member name {:?}", m.name)));
        }
        check_peer_url(&m.peer_url)?;
        if !names.insert(m.name.as_str()) {
            return Err(bad(format!("member {:?} is listed twice", m.name)));
        }
        if !urls.insert(m.peer_url.as_str()) {
            return Err(bad(format!("peer URL {:?} is listed twice", m.peer_url)));
        }
    }
    match initial.iter().find(|m| m.name == me) {
        None => Err(bad(format!(
            "the initial cluster does not list this member ({me:?})"
        ))),
        Some(m) if m.peer_url != my_peer_url => Err(bad(format!(
            "the initial cluster lists {me:?} with {:?}, but its peer URL is {my_peer_url:?}",
            m.peer_url
        ))),
        Some(_) => Ok(()),
    }
}

// ---- etcd's config file ----

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct EtcdConfigFile {
    name: String,
    data_dir: String,
    listen_peer_urls: String,
    initial_advertise_peer_urls: String,
    listen_client_urls: String,
    advertise_client_urls: String,
    initial_cluster: String,
    initial_cluster_state: String,
    initial_cluster_token: String,
    heartbeat_interval: u32,
    election_timeout: u32,
    client_transport_security: Tls,
    peer_transport_security: Tls,
    logger: String,
    log_outputs: Vec<String>,
    log_level: String,
    enable_v2: bool,
    enable_grpc_gateway: bool,
    strict_reconfig_check: bool,
    snapshot_count: u64,
    quota_backend_bytes: u64,
    auto_compaction_mode: String,
    auto_compaction_retention: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Tls {
    cert_file: String,
    key_file: String,
    trusted_ca_file: String,
    client_cert_auth: bool,
}

// ---- etcd's JSON gateway (proto field names; uint64 as strings) ----

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct GwId {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Serialize)]
struct GwMemberAdd {
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    #[serde(rename = "isLearner")]
    is_learner: bool,
}

#[derive(Serialize)]
struct GwPut {
    key: String,
    value: String,
}

#[derive(Serialize)]
struct GwRange {
    key: String,
}

#[derive(Deserialize)]
struct GwMember {
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
    fn into_api(self) -> Result<EtcdMember, ApiError> {
        let id = self.id.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::Internal,
                format!(
                    "etcd reported a member id that is not a number: {:?}",
                    self.id
                ),
            )
        })?;
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
struct GwMembers {
    #[serde(default)]
    members: Vec<GwMember>,
}

impl GwMembers {
    fn into_api(self) -> Result<EtcdMembers, ApiError> {
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
struct GwMemberAddReply {
    member: Option<GwMember>,
}

#[derive(Deserialize)]
struct GwKv {
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct GwRangeReply {
    #[serde(default)]
    kvs: Vec<GwKv>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_errors_map_to_typed_codes() {
        let e = map_etcd_error(
            500,
            br#"{"error":"etcdserver: can only promote a learner member which is in sync with leader","code":9,"message":"etcdserver: can only promote a learner member which is in sync with leader"}"#,
        );
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("in sync"));
        let e = map_etcd_error(
            404,
            br#"{"error":"etcdserver: member not found","code":5,"message":"etcdserver: member not found"}"#,
        );
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = map_etcd_error(
            400,
            br#"{"code":9,"message":"etcdserver: Peer URLs already exists"}"#,
        );
        assert_eq!(e.code, ErrorCode::Conflict);
        let e = map_etcd_error(
            400,
            br#"{"code":3,"message":"etcdserver: key is not provided"}"#,
        );
        assert_eq!(e.code, ErrorCode::BadRequest);
        // Garbage never panics.
        let e = map_etcd_error(502, b"\xff\xfe not json");
        assert_eq!(e.code, ErrorCode::Internal);
        let e = map_etcd_error(503, b"");
        assert_eq!(e.code, ErrorCode::Unavailable);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(0u8.., 0..300), s in ".{0,80}") {
            let _ = map_etcd_error(500, &body);
            let _ = check_peer_url(&s);
            let _ = check_key(&s);
            let m = [InitialMember { name: s.clone(), peer_url: s.clone() }];
            let _ = validate_initial_cluster(&m, &s, &s);
        }
    }

    #[test]
    fn peer_urls_are_checked() {
        assert!(check_peer_url("https://10.5.0.2:2380").is_ok());
        for bad in [
            "http://10.5.0.2:2380",
            "https://10.5.0.2",
            "https://node:2380",
            "https://10.5.0.2:0",
            "https://10.5.0.2:2380/x",
            "",
        ] {
            assert_eq!(
                check_peer_url(bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn initial_cluster_must_list_this_member() {
        let m = |n: &str, u: &str| InitialMember {
            name: n.into(),
            peer_url: u.into(),
        };
        let me = "https://10.5.0.3:2380";
        let ok = [m("cp-1", "https://10.5.0.2:2380"), m("cp-2", me)];
        assert!(validate_initial_cluster(&ok, "cp-2", me).is_ok());
        for bad in [
            vec![],
            vec![m("cp-1", "https://10.5.0.2:2380")],
            vec![m("cp-2", "https://10.5.0.9:2380")],
            vec![m("cp-2", me), m("cp-2", me)],
            vec![m("cp,2", me)],
            vec![m("cp-2", me), m("cp-1", me)],
        ] {
            assert_eq!(
                validate_initial_cluster(&bad, "cp-2", me).unwrap_err().code,
                ErrorCode::BadRequest
            );
        }
    }
}
