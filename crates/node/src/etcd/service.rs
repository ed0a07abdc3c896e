//! etcd as a supervised service: its options ([`EtcdOptions`]), how it
//! starts ([`Start`]: bootstrap, join or existing data), its config file
//! (rendered from a [`Start`]), the certificates written beside it, and the
//! [`ServiceSpec`] with its `/health` probe (on etcd's metrics listener).
//!
//! It does not decide when to bootstrap or join ([`super::ops`]) nor talk to
//! etcd beyond the probe ([`super::gateway`]).

use super::error::{EtcdError, SetupError};
use super::{Etcd, SERVICE};
use crate::api::InitialMember;
use crate::machine::ETCD_CLIENT_PORT;
use crate::supervisor::{Health, Probe, ServiceSpec};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the supervisor probes `/health` while etcd starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a starting etcd may stay unhealthy before the supervisor restarts
/// it. Long on purpose: a restarted member waits for its peers (quorum), a
/// learner for its snapshot; restarting it would not help either.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);
/// etcd's CPU priority ([`ServiceSpec::nice`]): above containerd and the
/// background module loading, which start at the same time on a control
/// plane.
pub const NICE: i32 = -10;

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

/// How this node's etcd starts: what its config file says about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new cluster of this one member (the node API's bootstrap).
    Bootstrap,
    /// Joins a running cluster as the learner that was added for this node.
    Join {
        /// The members, this one included, as checked by
        /// [`InitialCluster::new`].
        initial_cluster: InitialCluster,
    },
    /// The data directory exists (a later boot): etcd resumes as the member
    /// it was and ignores the initial-cluster settings.
    Existing,
}

impl Start {
    /// etcd's `initial-cluster-state`, derived: only a bootstrap makes a new
    /// cluster.
    pub fn cluster_state(&self) -> ClusterState {
        match self {
            Start::Bootstrap => ClusterState::New,
            Start::Join { .. } | Start::Existing => ClusterState::Existing,
        }
    }

    /// What the node API calls starting this way (in its refusals).
    pub(super) fn verb(&self) -> &'static str {
        match self {
            Start::Bootstrap => "bootstrap",
            Start::Join { .. } => "join",
            Start::Existing => "start",
        }
    }

    /// etcd's `initial-cluster`: the join's members; else only this member
    /// (with data on disk etcd ignores it).
    fn initial_cluster(&self, me: InitialMember) -> Vec<InitialMember> {
        match self {
            Start::Join { initial_cluster } => initial_cluster.members().to_vec(),
            Start::Bootstrap | Start::Existing => vec![me],
        }
    }
}

/// A join's initial cluster, valid for this member: names are node names,
/// peer URLs are `https://<IPv4>:<port>`, none twice, and this member listed
/// with its own peer URL. Only [`InitialCluster::new`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster(Vec<InitialMember>);

impl InitialCluster {
    /// Checks `members` for the member `me` with peer URL `my_peer_url`.
    pub fn new(
        members: Vec<InitialMember>,
        me: &str,
        my_peer_url: &str,
    ) -> Result<Self, EtcdError> {
        super::ops::validate_initial_cluster(&members, me, my_peer_url)?;
        Ok(InitialCluster(members))
    }

    pub fn members(&self) -> &[InitialMember] {
        &self.0
    }
}

/// etcd's `initial-cluster-state` ([`Start::cluster_state`]).
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
            match self.write_files(&Start::Existing) {
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
                    crate::console::phase(crate::console::Phase::EtcdHealthy);
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

    /// A probe that passes once etcd's `/health` says `true` (asked on its
    /// metrics listener, [`Etcd::health_url`]).
    pub fn probe(&self) -> Probe {
        let gateway = self.gateway.clone();
        Arc::new(move || {
            let gateway = gateway.clone();
            Box::pin(async move { gateway.health().await.map_err(|e| e.to_string()) })
        })
    }

    /// Renders etcd's config file for `start` (JSON, which etcd's YAML reader
    /// accepts).
    pub fn render_config(&self, start: &Start) -> Result<String, EtcdError> {
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
        let me = InitialMember {
            name: self.name.clone(),
            peer_url: self.peer_url(),
        };
        let initial_cluster = start
            .initial_cluster(me)
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let tls = |cert: &str, key: &str| Tls {
            cert_file: file(cert),
            key_file: file(key),
            trusted_ca_file: file("ca.crt"),
            client_cert_auth: true,
        };
        let cfg = EtcdConfigFile {
            name: self.name.clone(),
            data_dir: self.data_dir().to_string_lossy().into_owned(),
            listen_peer_urls: self.peer_url(),
            initial_advertise_peer_urls: self.peer_url(),
            listen_client_urls: client_urls.join(","),
            advertise_client_urls: format!("https://{ip}:{ETCD_CLIENT_PORT}"),
            listen_metrics_urls: self.health_url(),
            initial_cluster,
            initial_cluster_state: start.cluster_state().as_str(),
            initial_cluster_token: self.token.clone(),
            heartbeat_interval: self.timing.heartbeat_ms,
            election_timeout: self.timing.election_ms,
            client_transport_security: tls("server.crt", "server.key"),
            peer_transport_security: tls("peer.crt", "peer.key"),
            logger: "zap",
            log_outputs: vec!["stderr"],
            log_level: "info",
            enable_v2: false,
            enable_grpc_gateway: true,
            strict_reconfig_check: true,
            snapshot_count: 10000,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            auto_compaction_mode: "periodic",
            auto_compaction_retention: "1h",
        };
        serde_json::to_string_pretty(&cfg).map_err(EtcdError::Render)
    }

    /// Writes the certificates and the config file for `start`.
    pub(super) fn write_files(&self, start: &Start) -> Result<(), EtcdError> {
        let pki = self.pki.as_ref().ok_or(SetupError::NoCertificates)?;
        let io = |what: &'static str| move |source| EtcdError::Write { what, source };
        let run = self.run_dir();
        crate::fsutil::create_private_dir(&run).map_err(io("runtime directory"))?;
        crate::fsutil::create_private_dir(&self.data_dir()).map_err(io("data directory"))?;
        let files = [
            ("ca.crt", &pki.ca),
            ("server.crt", &pki.server_cert),
            ("server.key", &pki.server_key),
            ("peer.crt", &pki.peer_cert),
            ("peer.key", &pki.peer_key),
        ];
        for (name, pem) in files {
            crate::fsutil::write_secret(&run.join(name), pem.as_bytes()).map_err(io(name))?;
        }
        let cfg = self.render_config(start)?;
        crate::fsutil::write_secret(&self.config_file(), cfg.as_bytes()).map_err(io("config"))
    }
}

/// etcd's raft timing: the heartbeat interval (one raft tick) and the
/// election timeout, in milliseconds.
///
/// A cluster with several control planes keeps etcd's defaults (100 ms,
/// 1000 ms): under TCG a starved member must not look dead to its peers, and
/// a leader that hears from no quorum within an election timeout steps down.
///
/// A cluster with one control plane has one etcd member for its whole life:
/// no peer waits for its heartbeats and no quorum can be lost. There the
/// timeout only sets how long the new member waits before it elects itself:
/// etcd fast-forwards all but one tick of the election timeout, and raft
/// then campaigns after a random 1 to (election / heartbeat) ticks, 0.1 to
/// 1.0 s with the defaults (0.55 s on average; 0.43 s in the run we
/// looked at). With 50 ms and 250 ms, the smallest timeout etcd accepts for
/// that heartbeat (5 ticks), it waits 0.05 to 0.25 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u32,
    pub election_ms: u32,
}

impl RaftTiming {
    /// etcd's defaults.
    pub const SHARED: RaftTiming = RaftTiming {
        heartbeat_ms: 100,
        election_ms: 1000,
    };
    /// The only member of a cluster with one control plane.
    pub const ALONE: RaftTiming = RaftTiming {
        heartbeat_ms: 50,
        election_ms: 250,
    };

    /// The timing for a cluster of `control_planes` control planes (a machine
    /// config that lists none gets the defaults).
    pub fn for_control_planes(control_planes: usize) -> RaftTiming {
        if control_planes == 1 {
            Self::ALONE
        } else {
            Self::SHARED
        }
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
    /// Plain HTTP, `/health` and `/metrics` only: the health probe's.
    listen_metrics_urls: String,
    initial_cluster: String,
    initial_cluster_state: &'static str,
    initial_cluster_token: String,
    heartbeat_interval: u32,
    election_timeout: u32,
    client_transport_security: Tls,
    peer_transport_security: Tls,
    logger: &'static str,
    log_outputs: Vec<&'static str>,
    log_level: &'static str,
    enable_v2: bool,
    enable_grpc_gateway: bool,
    strict_reconfig_check: bool,
    snapshot_count: u64,
    quota_backend_bytes: u64,
    auto_compaction_mode: &'static str,
    auto_compaction_retention: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Tls {
    cert_file: String,
    key_file: String,
    trusted_ca_file: String,
    client_cert_auth: bool,
}
