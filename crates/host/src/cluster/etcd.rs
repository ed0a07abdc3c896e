//! Host-side etcd orchestration: brings a cluster's control planes to one
//! etcd cluster in which every control plane is a healthy voting member.
//!
//! [`converge`] is idempotent and is what `ironclad create` (and start after a
//! stop) calls once the control planes' APIs answer:
//!
//! 1. bootstrap the first control plane (a `conflict` means it was done
//!    before: its data is on its disk and etcd only needs to run);
//! 2. for every other control plane, in order: if it is not a member yet, add
//!    it as a learner (peer URL `https://<address>:2380`) through a voting
//!    member and tell it to join; wait until it has started; promote it,
//!    retrying while etcd says it is not in sync yet;
//! 3. make sure etcd runs on every member (a node restarted with its disk);
//! 4. wait until every control plane is a voting member and each answers a
//!    linearizable read.
//!
//! Everything goes through the node API ([`NodeClient`]); every wait polls
//! with a deadline. This module does not start VMs or pick endpoints.

use crate::api::{ErrorCode, EtcdMember, EtcdMembers, InitialMember};
use crate::client::{ClientError, NodeClient};
use crate::machine::ETCD_PEER_PORT;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One control plane as converge sees it.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub name: String,
    /// Address on the cluster network (the peer URL's host).
    pub address: Ipv4Addr,
    /// Client for its node API.
    pub client: NodeClient,
}

impl ControlPlane {
    /// `https://<address>:2380`.
    pub fn peer_url(&self) -> String {
        format!("https://{}:{ETCD_PEER_PORT}", self.address)
    }
}

/// Deadlines of [`converge`], and what it may know of the nodes' boot.
#[derive(Debug, Clone)]
pub struct ConvergeOptions {
    /// Everything must be done within this time.
    pub deadline: Duration,
    /// Time between two polls.
    pub poll: Duration,
    /// Whether a control plane's node API listens yet, when the caller can
    /// tell (`create` reads it on the node's console). Without it, or while
    /// it says no, [`Run::answering`] does not try the API.
    pub listening: Option<ListeningHint>,
}

impl Default for ConvergeOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            listening: None,
        }
    }
}

/// Tells, by node name, whether that node's API listens (see
/// [`ConvergeOptions::listening`]).
///
/// A node API tried before the guest's network is up costs a whole try: QEMU's
/// user-mode network accepts the host's connection at once and then retries
/// its handshake with the guest only seconds later, so the try waits for its
/// bound ([`SHORT_TRY`]) even when the API has started listening meanwhile.
/// Tried only once its console says it listens, the first try answers, and
/// etcd is bootstrapped a few hundred milliseconds sooner after `ready`.
#[derive(Clone)]
pub struct ListeningHint(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl ListeningHint {
    /// A hint that asks `f` with the node's name.
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Whether `node`'s API listens, as far as the hint knows.
    pub fn listens(&self, node: &str) -> bool {
        (self.0)(node)
    }
}

impl std::fmt::Debug for ListeningHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListeningHint(..)")
    }
}

/// A step of [`converge`], reported through its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// etcd started as a new cluster on this node.
    Bootstrapped,
    /// The node had been bootstrapped before.
    AlreadyBootstrapped,
    /// Not bootstrapped: the named control plane already runs etcd.
    ClusterExists(String),
    /// The node's etcd was stopped and has been started (it has data).
    Started,
    /// Added as a learner with this id.
    LearnerAdded(u64),
    /// Told to start etcd and join.
    Joining,
    /// Its etcd runs as a learner.
    LearnerStarted,
    /// Promoted to a voting member.
    Promoted,
    /// A voting member answering reads.
    Healthy,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Bootstrapped => f.write_str("etcd bootstrapped"),
            Step::AlreadyBootstrapped => f.write_str("etcd was bootstrapped before"),
            Step::ClusterExists(other) => {
                write!(f, "not bootstrapped: {other} already runs etcd")
            }
            Step::Started => f.write_str("etcd started with its data"),
            Step::LearnerAdded(id) => write!(f, "added as learner {id:x}"),
            Step::Joining => f.write_str("joining"),
            Step::LearnerStarted => f.write_str("learner started"),
            Step::Promoted => f.write_str("promoted to voting member"),
            Step::Healthy => f.write_str("etcd healthy"),
        }
    }
}

/// Why [`converge`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error("no control planes")]
    NoControlPlanes,
    #[error("{0}")]
    Setup(String),
    #[error("{node}: {source}")]
    Node {
        node: String,
        #[source]
        source: ClientError,
    },
    #[error("{node}: timed out {what}{}", last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    Timeout {
        node: String,
        what: String,
        last: Option<String>,
    },
}

/// Whether an error may go away by itself (node booting, etcd catching up).
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Api(a) => a.code == ErrorCode::Unavailable,
        ClientError::Connect { .. } | ClientError::Transport { .. } => true,
        _ => false,
    }
}

/// The bound of a try in [`Run::answering`] while nodes boot.
const SHORT_TRY: Duration = Duration::from_secs(1);
/// How long [`Run::answering`] uses [`SHORT_TRY`].
const SHORT_TRIES_FOR: Duration = Duration::from_secs(90);
/// The bound after that.
const LONG_TRY: Duration = Duration::from_secs(8);
/// Time between two tries of [`Run::answering`] once the node's console
/// says its API listens.
const ANSWER_POLL: Duration = Duration::from_millis(50);

struct Run<'a> {
    opts: ConvergeOptions,
    end: Instant,
    progress: &'a mut (dyn FnMut(&str, &Step) + Send),
}

impl Run<'_> {
    fn report(&mut self, node: &str, step: Step) {
        (self.progress)(node, &step);
    }

    /// Calls `f` until it succeeds, fails for good, or the deadline passes.
    async fn retry<T, F, Fut>(&self, node: &str, what: &str, mut f: F) -> Result<T, ConvergeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) => {
                    if Instant::now() + self.opts.poll >= self.end {
                        return Err(ConvergeError::Timeout {
                            node: node.to_string(),
                            what: what.to_string(),
                            last: Some(e.to_string()),
                        });
                    }
                    tokio::time::sleep(self.opts.poll).await;
                }
                Err(source) => {
                    return Err(ConvergeError::Node {
                        node: node.to_string(),
                        source,
                    });
                }
            }
        }
    }

    /// Polls `check` until it returns `Some`, or the deadline passes.
    async fn until<T, F, Fut>(&self, node: &str, what: &str, check: F) -> Result<T, ConvergeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, String>>,
    {
        self.until_every(self.opts.poll, node, what, check).await
    }

    /// [`Run::until`], polling every `poll`.
    async fn until_every<T, F, Fut>(
        &self,
        poll: Duration,
        node: &str,
        what: &str,
        mut check: F,
    ) -> Result<T, ConvergeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, String>>,
    {
        let mut last = None;
        loop {
            match check().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
            if Instant::now() + poll >= self.end {
                return Err(ConvergeError::Timeout {
                    node: node.to_string(),
                    what: what.to_string(),
                    last,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Waits until `cp`'s node API answers (`health`, or a typed error).
    /// With a [`ListeningHint`], nothing is tried before the hint says the API
    /// listens, and then a try follows a refused one after [`ANSWER_POLL`].
    /// Each try is bounded:
    /// QEMU's user-mode network accepts the host's connection at once, and
    /// while the guest's network is not up yet its handshake with the guest
    /// is retried only seconds later, so a try made during boot would hold
    /// the first call (bootstrap) for seconds after the API listens. A try
    /// gets [`SHORT_TRY`] (a node API answers in tens of milliseconds, even
    /// under TCG) for the first [`SHORT_TRIES_FOR`], then [`LONG_TRY`], for
    /// a host so loaded that its nodes answer slowly.
    async fn answering(&self, cp: &ControlPlane) -> Result<(), ConvergeError> {
        let poll = match &self.opts.listening {
            Some(hint) => {
                let poll = ANSWER_POLL.min(self.opts.poll);
                self.until_every(poll, &cp.name, "waiting for the node API to listen", || {
                    std::future::ready(Ok::<_, String>(hint.listens(&cp.name).then_some(())))
                })
                .await?;
                // It listens: a refused try is the guest's own answer, at once.
                poll
            }
            None => self.opts.poll,
        };
        let started = Instant::now();
        loop {
            let limit = if started.elapsed() < SHORT_TRIES_FOR {
                SHORT_TRY
            } else {
                LONG_TRY
            };
            match cp.client.health_within(limit).await {
                // Any answer of the API, even an error, is what is waited for.
                Ok(_) | Err(ClientError::Api(_)) => return Ok(()),
                Err(e) if retryable(&e) => {
                    if Instant::now() + poll >= self.end {
                        return Err(ConvergeError::Timeout {
                            node: cp.name.clone(),
                            what: "waiting for the node API".into(),
                            last: Some(e.to_string()),
                        });
                    }
                    tokio::time::sleep(poll).await;
                }
                Err(source) => {
                    return Err(ConvergeError::Node {
                        node: cp.name.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// The state of `cp`'s etcd service (`stopped` on a node without etcd data
    /// that was neither bootstrapped nor joined since it booted).
    async fn etcd_state(
        &self,
        cp: &ControlPlane,
    ) -> Result<crate::api::ServiceState, ConvergeError> {
        let list = self
            .retry(&cp.name, "listing services", || cp.client.services())
            .await?;
        list.services
            .into_iter()
            .find(|s| s.name == ironclad_contract::services::ETCD)
            .map(|s| s.state)
            .ok_or_else(|| ConvergeError::Node {
                node: cp.name.clone(),
                source: ClientError::Api(crate::api::ApiError::new(
                    ErrorCode::NotFound,
                    "this control plane has no etcd service",
                )),
            })
    }

    /// Starts etcd on `cp` if its supervisor has it stopped.
    async fn ensure_running(&mut self, cp: &ControlPlane) -> Result<(), ConvergeError> {
        let stopped = self.etcd_state(cp).await? == crate::api::ServiceState::Stopped;
        if stopped {
            self.retry(&cp.name, "starting etcd", || {
                cp.client.service_start(ironclad_contract::services::ETCD)
            })
            .await?;
            self.report(&cp.name, Step::Started);
        }
        Ok(())
    }

    /// The member list through the first control plane that is a started
    /// voting member, and that control plane's index.
    async fn voter(&self, cps: &[ControlPlane]) -> Result<(usize, EtcdMembers), ConvergeError> {
        self.until(
            &cps[0].name,
            "finding a voting member that answers",
            || async {
                let mut last = None;
                for (i, cp) in cps.iter().enumerate() {
                    match cp.client.etcd_members().await {
                        Ok(m) => {
                            let me = member_by_peer(&m, &cp.peer_url());
                            if me.is_some_and(|me| !me.is_learner && !me.name.is_empty()) {
                                return Ok(Some((i, m)));
                            }
                        }
                        Err(e) => last = Some(format!("{}: {e}", cp.name)),
                    }
                }
                match last {
                    Some(e) => Err(e),
                    None => Ok(None),
                }
            },
        )
        .await
    }
}

/// The member whose peer URLs include `peer_url`.
pub fn member_by_peer<'a>(members: &'a EtcdMembers, peer_url: &str) -> Option<&'a EtcdMember> {
    members
        .members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
}

/// Adds `name` at `peer_url` as a learner through `via`; its member id.
/// Idempotent: when etcd refuses the add because a member with this peer URL
/// exists, that member is the one asked for (an earlier try was added but its
/// answer was lost, e.g. a timeout under load, and the retry asked again).
/// Any other refusal is returned as it came.
pub async fn add_learner(via: &NodeClient, name: &str, peer_url: &str) -> Result<u64, ClientError> {
    match via.etcd_add_learner(name, peer_url).await {
        Ok(m) => Ok(m.id),
        Err(ClientError::Api(e)) if e.code == ErrorCode::Conflict => {
            let members = via.etcd_members().await?;
            match member_by_peer(&members, peer_url) {
                Some(m) if m.name.is_empty() || m.name == name => Ok(m.id),
                _ => Err(ClientError::Api(e)),
            }
        }
        Err(e) => Err(e),
    }
}

/// Brings every control plane of `cps` (the first bootstraps) into one etcd
/// cluster as healthy voting members; returns the final member list.
/// `progress` is called with a node name and each step done. Every step
/// reads the member list first and resumes from where the cluster is, so a
/// converge that failed half-way can be run again.
pub async fn converge(
    cps: &[ControlPlane],
    opts: ConvergeOptions,
    progress: &mut (dyn FnMut(&str, &Step) + Send),
) -> Result<EtcdMembers, ConvergeError> {
    if cps.is_empty() {
        return Err(ConvergeError::NoControlPlanes);
    }
    let mut run = Run {
        end: Instant::now() + opts.deadline,
        opts,
        progress,
    };
    run.bootstrap(cps).await?;
    // 2. Every control plane that is not a started member yet, one at a time
    //    (etcd admits one learner at a time); the bootstrapped first one is
    //    a started voter and only checked.
    for cp in cps {
        run.join(cps, cp).await?;
    }
    run.all_voting(cps).await
}

impl Run<'_> {
    /// Step 1: etcd bootstrapped once, on the first control plane.
    async fn bootstrap(&mut self, cps: &[ControlPlane]) -> Result<(), ConvergeError> {
        let first = &cps[0];
        // 1. The first control plane bootstraps, unless another control plane
        //    already has etcd (its service is supervised: it had data at boot or
        //    was started): then a cluster exists, and bootstrapping the first
        //    (e.g. with a new disk) would split it; it joins like the others.
        for cp in cps {
            self.answering(cp).await?;
        }
        let mut existing = None;
        for cp in &cps[1..] {
            if self.etcd_state(cp).await? != crate::api::ServiceState::Stopped {
                existing = Some(cp.name.clone());
                break;
            }
        }
        match existing {
            Some(other) => self.report(&first.name, Step::ClusterExists(other)),
            None => match self
                .retry(&first.name, "bootstrapping etcd", || {
                    first.client.bootstrap()
                })
                .await
            {
                Ok(_) => self.report(&first.name, Step::Bootstrapped),
                Err(ConvergeError::Node {
                    source: ClientError::Api(e),
                    ..
                }) if e.code == ErrorCode::Conflict => {
                    self.report(&first.name, Step::AlreadyBootstrapped);
                    self.ensure_running(first).await?;
                }
                Err(e) => return Err(e),
            },
        }
        Ok(())
    }

    /// Step 2 for `cp`: a started member (added as a learner, joined,
    /// promoted), through a voting member of `cps`.
    async fn join(&mut self, cps: &[ControlPlane], cp: &ControlPlane) -> Result<(), ConvergeError> {
        let (vi, members) = self.voter(cps).await?;
        let via = &cps[vi];
        let peer = cp.peer_url();
        let id = match member_by_peer(&members, &peer) {
            Some(m) if !m.name.is_empty() => {
                // Started before: it has data; make sure it runs.
                self.ensure_running(cp).await?;
                m.id
            }
            existing => {
                let mut members = members.clone();
                if existing.is_none() {
                    let added = self
                        .retry(&via.name, "adding a learner", || {
                            add_learner(&via.client, &cp.name, &peer)
                        })
                        .await?;
                    self.report(&cp.name, Step::LearnerAdded(added));
                    members = self
                        .retry(&via.name, "listing members", || via.client.etcd_members())
                        .await?;
                }
                let initial = initial_cluster(&members, cps);
                match self
                    .retry(&cp.name, "joining", || cp.client.etcd_join(initial.clone()))
                    .await
                {
                    Ok(_) => self.report(&cp.name, Step::Joining),
                    // It has data already (joined before, its etcd stopped).
                    Err(ConvergeError::Node {
                        source: ClientError::Api(e),
                        ..
                    }) if e.code == ErrorCode::Conflict => self.ensure_running(cp).await?,
                    Err(e) => return Err(e),
                }
                member_by_peer(&members, &peer)
                    .map(|m| m.id)
                    .ok_or_else(|| ConvergeError::Timeout {
                        node: cp.name.clone(),
                        what: "finding the added member".into(),
                        last: None,
                    })?
            }
        };
        // Wait until it has started (etcd then knows its name).
        let started = self
            .until(&cp.name, "waiting for its etcd to start", || async {
                let m = via.client.etcd_members().await.map_err(|e| e.to_string())?;
                Ok(m.members
                    .into_iter()
                    .find(|m| m.id == id && !m.name.is_empty()))
            })
            .await?;
        if started.is_learner {
            self.report(&cp.name, Step::LearnerStarted);
            let promoted = self
                .retry(
                    &cp.name,
                    "promoting (etcd waits until the learner is in sync)",
                    || via.client.etcd_promote(id),
                )
                .await;
            match promoted {
                Ok(_) => self.report(&cp.name, Step::Promoted),
                // Promoted meanwhile (an earlier run): etcd says it is no learner.
                Err(ConvergeError::Node {
                    source: ClientError::Api(e),
                    ..
                }) if e.code == ErrorCode::Conflict && e.message.contains("learner") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Steps 3 and 4: every control plane a voting member, running and
    /// answering reads; the final member list.
    async fn all_voting(&mut self, cps: &[ControlPlane]) -> Result<EtcdMembers, ConvergeError> {
        // 3 and 4. Every control plane a voting member, running and answering.
        for cp in cps {
            self.ensure_running(cp).await?;
        }
        let (vi, _) = self.voter(cps).await?;
        let members = self
            .until(
                &cps[vi].name,
                "waiting for every control plane to vote",
                || async {
                    let m = cps[vi]
                        .client
                        .etcd_members()
                        .await
                        .map_err(|e| e.to_string())?;
                    let all = cps.iter().all(|cp| {
                        member_by_peer(&m, &cp.peer_url())
                            .is_some_and(|x| !x.is_learner && !x.name.is_empty())
                    });
                    Ok(all.then_some(m))
                },
            )
            .await?;
        for cp in cps {
            self.until(&cp.name, "waiting for etcd to answer reads", || async {
                cp.client
                    .etcd_get(HEALTH_KEY)
                    .await
                    .map(|_| Some(()))
                    .map_err(|e| e.to_string())
            })
            .await?;
            self.report(&cp.name, Step::Healthy);
        }
        Ok(members)
    }
}

/// The control planes of the cluster whose client config is `client_yaml`,
/// in cluster order (the first is the bootstrap node), each with a client.
pub fn control_planes(client_yaml: &Path) -> Result<Vec<ControlPlane>, ConvergeError> {
    let cfg = crate::clientconfig::ClientConfig::load(client_yaml)
        .map_err(|e| ConvergeError::Setup(e.to_string()))?;
    cfg.nodes
        .iter()
        .filter(|n| n.role == crate::spec::Role::ControlPlane)
        .map(|n| {
            let client =
                NodeClient::from_client_config(client_yaml, &n.name).map_err(|source| {
                    ConvergeError::Node {
                        node: n.name.to_string(),
                        source,
                    }
                })?;
            Ok(ControlPlane {
                name: n.name.to_string(),
                address: n.address,
                client,
            })
        })
        .collect()
}

/// [`converge`] for synchronous callers (`ironclad create`/`start`): every
/// control plane of `client_yaml`, on the host's runtime ([`crate::runtime`]).
/// Must not be called from async code.
pub fn converge_blocking(
    client_yaml: &Path,
    opts: ConvergeOptions,
    progress: &mut (dyn FnMut(&str, &Step) + Send),
) -> Result<EtcdMembers, ConvergeError> {
    let cps = control_planes(client_yaml)?;
    crate::runtime::block_on(converge(&cps, opts, progress))
        .map_err(|e| ConvergeError::Setup(format!("async runtime: {e}")))?
}

/// The key read to check that a member serves linearizable reads.
pub const HEALTH_KEY: &str = "/ironclad/health";

/// The initial cluster for a joiner: every member of `members` by name and
/// first peer URL; members that have not started yet (no name) get the name
/// of the control plane with that peer URL.
pub fn initial_cluster(members: &EtcdMembers, cps: &[ControlPlane]) -> Vec<InitialMember> {
    members
        .members
        .iter()
        .filter_map(|m| {
            let url = m.peer_urls.first()?;
            let name = if m.name.is_empty() {
                cps.iter()
                    .find(|c| &c.peer_url() == url)
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| format!("member-{:x}", m.id))
            } else {
                m.name.clone()
            };
            Some(InitialMember {
                name,
                peer_url: url.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(name: &str, ip: [u8; 4]) -> ControlPlane {
        ControlPlane {
            address: Ipv4Addr::from(ip),
            ..cp_at(name, "127.0.0.1:1".parse().unwrap())
        }
    }

    /// A control plane whose API is at `addr`.
    fn cp_at(name: &str, addr: std::net::SocketAddr) -> ControlPlane {
        let secrets = crate::pki::Secrets::generate("t").unwrap();
        let cert =
            crate::pki::issue_client_cert(&secrets.os_ca, crate::api::Role::Admin, "t").unwrap();
        ControlPlane {
            name: name.into(),
            address: Ipv4Addr::new(10, 5, 0, 2),
            client: NodeClient::new(
                name,
                addr,
                secrets.os_ca.cert_pem(),
                &cert.cert_pem,
                &cert.key_pem,
            )
            .unwrap(),
        }
    }

    #[test]
    fn the_node_api_is_not_tried_before_the_hint_says_it_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let cps = [cp_at("cp-1", listener.local_addr().unwrap())];
        let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = asked.clone();
        let opts = ConvergeOptions {
            deadline: Duration::from_millis(400),
            poll: Duration::from_millis(50),
            listening: Some(ListeningHint::new(move |n| {
                log.lock().unwrap().push(n.to_string());
                false
            })),
        };
        let err = crate::runtime::block_on(converge(&cps, opts, &mut |_, _| {}))
            .unwrap()
            .unwrap_err();
        match &err {
            ConvergeError::Timeout { node, what, last } => {
                assert_eq!(node, "cp-1");
                assert_eq!(what, "waiting for the node API to listen");
                assert!(last.is_none(), "{last:?}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(asked.lock().unwrap().iter().all(|n| n == "cp-1"));
        assert!(asked.lock().unwrap().len() >= 2, "the hint is asked again");
        assert!(
            listener.accept().is_err(),
            "nothing connected to the API while the hint said no"
        );

        // Once it says yes, the API is tried.
        let opts = ConvergeOptions {
            deadline: Duration::from_millis(400),
            poll: Duration::from_millis(50),
            listening: Some(ListeningHint::new(|_| true)),
        };
        let err = crate::runtime::block_on(converge(&cps, opts, &mut |_, _| {}))
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, ConvergeError::Timeout { what, .. } if what == "waiting for the node API"),
            "{err:?}"
        );
        assert!(listener.accept().is_ok(), "the API was tried");
    }

    #[test]
    fn initial_cluster_names_unstarted_members() {
        let cps = [cp("cp-1", [10, 5, 0, 2]), cp("cp-2", [10, 5, 0, 3])];
        let members = EtcdMembers {
            members: vec![
                EtcdMember {
                    id: 1,
                    name: "cp-1".into(),
                    peer_urls: vec!["https://10.5.0.2:2380".into()],
                    client_urls: vec![],
                    is_learner: false,
                },
                EtcdMember {
                    id: 2,
                    name: String::new(),
                    peer_urls: vec!["https://10.5.0.3:2380".into()],
                    client_urls: vec![],
                    is_learner: true,
                },
            ],
        };
        let ic = initial_cluster(&members, &cps);
        assert_eq!(ic.len(), 2);
        assert_eq!(ic[1].name, "cp-2");
        assert_eq!(ic[1].peer_url, "https://10.5.0.3:2380");
        assert_eq!(
            member_by_peer(&members, "https://10.5.0.3:2380")
                .unwrap()
                .id,
            2
        );
        assert!(member_by_peer(&members, "https://10.5.0.4:2380").is_none());
    }
}
