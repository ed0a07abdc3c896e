//! The etcd operations behind the node API: bootstrap of a new cluster,
//! joining as a learner, listing, adding, promoting and removing members,
//! putting and getting keys; and the checks of their input (member names,
//! peer URLs, keys, a join's initial cluster).
//!
//! Bootstrap and join are serialized and refused once this node has etcd
//! data or etcd is supervised. The member and key operations go through
//! [`super::gateway`] to the local etcd.

use super::error::{EtcdError, PeerUrlFault};
use super::gateway::{
    Empty, GwId, GwMemberAdd, GwMemberAddReply, GwMembers, GwPut, GwRange, GwRangeReply,
};
use super::service::{InitialCluster, Start};
use super::{Etcd, SERVICE};
use crate::api::{
    AddLearnerRequest, EtcdMember, EtcdMembers, InitialMember, JoinRequest, KvValue, NodeName,
    PutRequest,
};
use crate::supervisor::{ServiceState, SupervisorHandle};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How long bootstrap waits for the new cluster to answer `/health`.
const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(60);
/// The largest key accepted for put/get (etcd's own request limit is 1.5 MiB).
pub(super) const MAX_KEY_BYTES: usize = 4096;
/// How much of etcd's last output line a failed bootstrap reports.
const LAST_OUTPUT_CHARS: usize = 500;

impl Etcd {
    /// Starts a new single-member cluster and waits until it is healthy or
    /// has failed.
    pub(super) async fn bootstrap(&self, services: &SupervisorHandle) -> Result<(), EtcdError> {
        // Held until the answer: a second attempt waits for this one's end.
        let _guard = self.lock.lock().await;
        self.start_fresh(&Start::Bootstrap, services).await?;
        // Running (healthy) or failed: a new single-member cluster that fails
        // to start will not do better on its own, so answer at once.
        let st = services
            .wait_for(SERVICE, BOOTSTRAP_DEADLINE, |s| {
                matches!(s.state, ServiceState::Running | ServiceState::Failed { .. })
            })
            .await
            .map_err(EtcdError::NotHealthy)?;
        if let ServiceState::Failed { error } = st.state {
            let last_output = services
                .logs(SERVICE)
                .and_then(|l| l.last().cloned())
                .map(|l| l.chars().take(LAST_OUTPUT_CHARS).collect());
            return Err(EtcdError::FailedToStart { error, last_output });
        }
        Ok(())
    }

    /// Starts etcd as a learner of the cluster in `req` (added before through
    /// another member); answers once it is started, not synced.
    pub(super) async fn join(
        &self,
        req: JoinRequest,
        services: &SupervisorHandle,
    ) -> Result<(), EtcdError> {
        let initial_cluster =
            InitialCluster::new(req.initial_cluster, &self.name, &self.peer_url())?;
        let _guard = self.lock.lock().await;
        self.start_fresh(&Start::Join { initial_cluster }, services)
            .await
    }

    /// Writes the files for `start` and starts the service, when
    /// [`Etcd::ensure_fresh`] allows it. The caller holds `self.lock`, which
    /// serializes bootstrap and join.
    async fn start_fresh(
        &self,
        start: &Start,
        services: &SupervisorHandle,
    ) -> Result<(), EtcdError> {
        self.ensure_fresh(services, start.verb()).await?;
        self.write_files(start)?;
        services
            .start_service(SERVICE)
            .map_err(EtcdError::Supervisor)?;
        Ok(())
    }

    /// Refuses when etcd already has data or is supervised (waiting, starting,
    /// running). An etcd without data that failed (a bad earlier attempt, in
    /// its restart back-off) is stopped so that this attempt starts cleanly.
    async fn ensure_fresh(
        &self,
        services: &SupervisorHandle,
        op: &'static str,
    ) -> Result<(), EtcdError> {
        if self.has_data() {
            return Err(EtcdError::AlreadyHasData { op });
        }
        match services.status(SERVICE).map(|s| s.state) {
            None | Some(ServiceState::Stopped) => Ok(()),
            Some(ServiceState::Failed { .. }) => {
                services
                    .stop_service(SERVICE)
                    .await
                    .map_err(EtcdError::Supervisor)?;
                Ok(())
            }
            Some(st) => Err(EtcdError::AlreadySupervised {
                op,
                state: st.name(),
            }),
        }
    }

    /// The cluster's members, as this node's etcd sees them.
    pub async fn members(&self) -> Result<EtcdMembers, EtcdError> {
        let r: GwMembers = self
            .gateway
            .call("/v3/cluster/member/list", &Empty {})
            .await?;
        r.into_api()
    }

    pub(super) async fn add_learner(
        &self,
        req: AddLearnerRequest,
    ) -> Result<EtcdMember, EtcdError> {
        // Members are named after their nodes.
        check_member_name(&req.name)?;
        check_peer_url(&req.peer_url)?;
        let body = GwMemberAdd {
            peer_urls: vec![req.peer_url],
            is_learner: true,
        };
        let r: GwMemberAddReply = self.gateway.call("/v3/cluster/member/add", &body).await?;
        r.member.ok_or(EtcdError::NoMemberAdded)?.into_api()
    }

    pub(super) async fn promote(&self, id: u64) -> Result<EtcdMember, EtcdError> {
        let r: GwMembers = self
            .gateway
            .call("/v3/cluster/member/promote", &GwId { id: id.to_string() })
            .await?;
        r.into_api()?
            .members
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(EtcdError::NoSuchMember(id))
    }

    pub(super) async fn remove(&self, id: u64) -> Result<(), EtcdError> {
        let _: serde_json::Value = self
            .gateway
            .call("/v3/cluster/member/remove", &GwId { id: id.to_string() })
            .await?;
        Ok(())
    }

    pub(super) async fn put(&self, req: PutRequest) -> Result<(), EtcdError> {
        check_key(&req.key)?;
        let body = GwPut {
            key: B64.encode(req.key.as_bytes()),
            value: B64.encode(req.value.as_bytes()),
        };
        let _: serde_json::Value = self.gateway.call("/v3/kv/put", &body).await?;
        Ok(())
    }

    pub(super) async fn get(&self, key: String) -> Result<KvValue, EtcdError> {
        check_key(&key)?;
        let body = GwRange {
            key: B64.encode(key.as_bytes()),
        };
        let r: GwRangeReply = self.gateway.call("/v3/kv/range", &body).await?;
        let value = match r.kvs.into_iter().next() {
            None => None,
            Some(kv) => {
                let raw = B64
                    .decode(kv.value.as_bytes())
                    .map_err(EtcdError::BadValue)?;
                Some(String::from_utf8_lossy(&raw).into_owned())
            }
        };
        Ok(KvValue { key, value })
    }
}

/// A member name is a node name.
fn check_member_name(name: &str) -> Result<(), EtcdError> {
    match name.parse::<NodeName>() {
        Ok(_) => Ok(()),
        Err(_) => Err(EtcdError::InvalidMemberName(name.to_string())),
    }
}

/// Checks a peer URL: `https://<IPv4>:<port>`, nothing else.
pub fn check_peer_url(url: &str) -> Result<(), EtcdError> {
    let bad = |fault| EtcdError::InvalidPeerUrl {
        url: url.to_string(),
        fault,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad(PeerUrlFault::NotHttps))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad(PeerUrlFault::NoPort))?;
    host.parse::<Ipv4Addr>()
        .map_err(|_| bad(PeerUrlFault::NotIpv4))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(bad(PeerUrlFault::BadPort)),
    }
}

/// A key for put/get: not empty, at most [`MAX_KEY_BYTES`].
pub(super) fn check_key(key: &str) -> Result<(), EtcdError> {
    if key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(EtcdError::KeyTooLong);
    }
    Ok(())
}

/// A join's initial cluster: valid names and peer URLs, no duplicates, and
/// this member in it with its own peer URL ([`InitialCluster::new`]).
pub fn validate_initial_cluster(
    initial: &[InitialMember],
    me: &str,
    my_peer_url: &str,
) -> Result<(), EtcdError> {
    if initial.is_empty() {
        return Err(EtcdError::EmptyInitialCluster);
    }
    let mut names = std::collections::BTreeSet::new();
    let mut urls = std::collections::BTreeSet::new();
    for m in initial {
        check_member_name(&m.name)?;
        check_peer_url(&m.peer_url)?;
        if !names.insert(m.name.as_str()) {
            return Err(EtcdError::DuplicateMember(m.name.clone()));
        }
        if !urls.insert(m.peer_url.as_str()) {
            return Err(EtcdError::DuplicatePeerUrl(m.peer_url.clone()));
        }
    }
    match initial.iter().find(|m| m.name == me) {
        None => Err(EtcdError::NotInInitialCluster { me: me.to_string() }),
        Some(m) if m.peer_url != my_peer_url => Err(EtcdError::WrongOwnPeerUrl {
            me: me.to_string(),
            listed: m.peer_url.clone(),
            mine: my_peer_url.to_string(),
        }),
        Some(_) => Ok(()),
    }
}
