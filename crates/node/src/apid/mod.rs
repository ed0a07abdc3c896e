//! apid: the node API server inside machined. HTTPS (rustls, ring) on
//! [`crate::machine::API_PORT`] with client certificates required and verified
//! against the cluster's OS CA; the peer's role comes from its verified
//! certificate's Organization (`os:admin`, `os:reader`).
//!
//! Handlers only decode a request into a typed [`Action`] and hand it to a
//! [`Controller`]; the controller does the work and returns a typed [`Reply`] or
//! [`ApiError`], mapped to status and code by [`ErrorCode::status`]. This module
//! owns TLS, routing, role checks and request limits; it does not supervise
//! services or talk to etcd (that is the controller's job). It never logs
//! request bodies or key material.
//!
//! Connections are bounded and timed ([`gate`]): at most
//! [`Limits::max_handshakes`] in the TLS handshake (a new one pushes out
//! the oldest silent one), at most [`Limits::max_connections`]
//! authenticated, [`Limits::handshake_timeout`] to finish the handshake,
//! [`Limits::idle_timeout`] to send each request's headers. The accept loop
//! backs off when the process is out of descriptors instead of spinning.
//! On a node it listens on the node's own addresses only ([`node_addrs`]).

pub mod gate;
// The in-memory controller of the API tests (here and in the root package's).
// Nothing in machined uses it, so the linker leaves it out of the binary (its
// messages are not in `target/release/machined`).
pub mod memory;
#[cfg(test)]
mod tests;

use crate::api::{
    Action, AddLearnerRequest, ApiError, ApplyConfigRequest, ErrorCode, JoinRequest, KvQuery,
    LogLine, LogsQuery, MAX_BODY_BYTES, MAX_MATRIX_CHECKS, MAX_TAIL, MatrixRunRequest, PutRequest,
    Reply, Role, ServiceName, ServiceOp, allows,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::stream::{BoxStream, StreamExt};
pub use gate::{Gate, GateStats, Limits};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The first pause of the accept loop when accept(2) fails for want of
/// resources (descriptors, memory); doubled on each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest such pause.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The accept queue's length (the kernel caps it at `net.core.somaxconn`,
/// 4096 by default): long enough that a burst of connections does not make
/// the kernel drop a real client's SYN (which costs it a one-second
/// retransmission) while the accept loop catches up.
const LISTEN_BACKLOG: u32 = 4096;
/// How long an (admin's) request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Does the work behind the API. Implemented by machined's real controller
/// (services, etcd) and by [`memory::MemoryController`] (tests).
pub trait Controller: Send + Sync + 'static {
    /// Performs one action (the role was already checked).
    fn execute(&self, action: Action) -> impl Future<Output = Result<Reply, ApiError>> + Send;

    /// The last `tail` lines of `service`, then every new line as it comes.
    fn follow_logs(
        &self,
        service: String,
        tail: Option<usize>,
    ) -> impl Future<Output = Result<BoxStream<'static, LogLine>, ApiError>> + Send;
}

/// Why apid could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApidError {
    #[error("invalid {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS configuration refused: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where apid listens on a node: the node's own addresses only, port 50000:
/// the user-mode NIC's (where QEMU's hostfwd delivers the host's
/// connections) and the cluster address (the other nodes). Not the pods'
/// bridge, not loopback.
pub fn node_addrs(cfg: &crate::machine::MachineConfig) -> Vec<SocketAddr> {
    let port = crate::machine::API_PORT;
    let mut addrs = vec![SocketAddr::from((crate::machine::USER_NET_GUEST, port))];
    let cluster = SocketAddr::from((cfg.node.address, port));
    if !addrs.contains(&cluster) {
        addrs.push(cluster);
    }
    addrs
}

/// The rustls server config: `cert_pem`/`key_pem` as server identity, client
/// certificates required and verified against `ca_pem` (the contract's one
/// TLS builder, [`ironclad_contract::tls::server_config`]).
pub fn server_tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, ApidError> {
    use ironclad_contract::tls::TlsError;
    ironclad_contract::tls::server_config(ca_pem, cert_pem, key_pem).map_err(|e| match e {
        TlsError::Pem { what, reason } => ApidError::Pem { what, reason },
        TlsError::Config(c) => ApidError::Tls(c),
    })
}

/// A bound, not yet serving apid.
pub struct Apid {
    listeners: Vec<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    gate: Arc<Gate>,
}

impl Apid {
    /// Binds every address of `addrs` with the node's API certificate from
    /// its machine config.
    pub async fn bind(
        addrs: &[SocketAddr],
        pki: &crate::machine::NodePki,
    ) -> Result<Apid, ApidError> {
        let config = server_tls_config(&pki.os_ca, &pki.api_cert, &pki.api_key)?;
        Self::bind_all_with(addrs, config).await
    }

    /// Binds `addr` with a ready TLS config.
    pub async fn bind_with(
        addr: SocketAddr,
        config: rustls::ServerConfig,
    ) -> Result<Apid, ApidError> {
        Self::bind_all_with(&[addr], config).await
    }

    /// Binds every address of `addrs` (at least one) with a ready TLS config.
    pub async fn bind_all_with(
        addrs: &[SocketAddr],
        config: rustls::ServerConfig,
    ) -> Result<Apid, ApidError> {
        let mut listeners = Vec::new();
        for &addr in addrs {
            let bind = || {
                let socket = match addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                socket.listen(LISTEN_BACKLOG)
            };
            listeners.push(bind().map_err(|source| ApidError::Bind { addr, source })?);
        }
        if listeners.is_empty() {
            return Err(ApidError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address to listen on",
            )));
        }
        Ok(Apid {
            listeners,
            tls: Arc::new(config),
            gate: Gate::new(Limits::default()),
        })
    }

    /// Replaces the connection limits and timeouts (tests).
    pub fn with_limits(mut self, limits: Limits) -> Apid {
        self.gate = Gate::new(limits);
        self
    }

    /// The first listening address.
    pub fn local_addr(&self) -> Result<SocketAddr, ApidError> {
        Ok(self.listeners[0].local_addr()?)
    }

    /// Every listening address.
    pub fn local_addrs(&self) -> Result<Vec<SocketAddr>, ApidError> {
        self.listeners.iter().map(|l| Ok(l.local_addr()?)).collect()
    }

    /// The admission state (its counters show what the connections do).
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Serves forever. Each connection runs in its own task, admitted by
    /// the [`Gate`]: a failed, timed-out or evicted handshake or a broken
    /// connection only ends that task.
    pub async fn serve<C: Controller>(self, controller: Arc<C>) -> Result<(), ApidError> {
        let shared = Arc::new(Shared {
            app: router(controller),
            tls: self.tls,
            gate: self.gate,
        });
        let loops = self
            .listeners
            .into_iter()
            .map(|l| accept_loop(l, shared.clone()));
        futures::future::join_all(loops).await;
        Ok(())
    }
}

/// What every connection task of one apid shares.
struct Shared {
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    gate: Arc<Gate>,
}

/// Whether accept(2) failed for want of resources (as opposed to an error
/// of the one connection it was taking, which Linux reports on accept and
/// which only asks to accept again).
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether accept(2) reported an error of the connection it took (see
/// accept(2), "Error handling"): accept the next one at once.
fn connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::EINTR
        )
    )
}

/// Accepts connections on `listener` forever; never spins: when the process
/// is out of descriptors it drops one handshake (freeing a descriptor for
/// the connection waiting) and pauses, longer each time in a row.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let _ = tcp.set_nodelay(true);
                let (socket, evicted) = shared.gate.admit(tcp);
                tokio::spawn(connection(socket, evicted, shared.clone()));
            }
            Err(e) if connection_error(&e) => {}
            Err(e) => {
                if out_of_resources(&e) {
                    shared.gate.evict_one_handshake();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// One connection: the TLS handshake (bounded in time, evictable), then
/// HTTP/1.1 with the peer's role, until the client goes, idles too long or
/// is evicted.
async fn connection(
    socket: gate::Watched<tokio::net::TcpStream>,
    mut evicted: gate::Evicted,
    shared: Arc<Shared>,
) {
    let limits = shared.gate.limits();
    let ticket = socket.ticket();
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), socket)
                .await?;
        ticket.hello();
        start.into_stream(shared.tls.clone()).await
    };
    let tls = tokio::select! {
        biased;
        () = evicted.wait() => return,
        r = tokio::time::timeout(limits.handshake_timeout, handshake) => match r {
            Ok(Ok(tls)) => tls,
            _ => return,
        },
    };
    let role = peer_role(tls.get_ref().1.peer_certificates());
    if !ticket.serve(role == Some(Role::Admin)) {
        return;
    }
    let app = shared.app.clone().layer(axum::Extension(Peer { role }));
    // Each request marks the connection busy until its response body is
    // gone (a followed log stream stays busy), so that only idle
    // connections are closed to make room.
    let service = tower::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let busy = ticket.busy();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &busy;
                    frame
                }))
            }))
        }
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
    tokio::select! {
        biased;
        () = evicted.wait() => {}
        _ = conn => {}
    }
}

/// The authenticated peer of a connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// `None` when the (verified) certificate names no known role.
    role: Option<Role>,
}

/// The role in the first Organization of the leaf certificate that names one.
fn peer_role(certs: Option<&[CertificateDer<'_>]>) -> Option<Role> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    cert.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .find_map(Role::from_organization)
}

fn router<C: Controller>(c: Arc<C>) -> Router {
    use crate::api::paths as p;
    Router::new()
        .route(
            p::VERSION,
            get(|s: St<C>, p: PeerExt| simple(s, p, Action::Version)),
        )
        .route(
            p::HEALTH,
            get(|s: St<C>, p: PeerExt| simple(s, p, Action::Health)),
        )
        .route(
            p::SERVICES,
            get(|s: St<C>, p: PeerExt| simple(s, p, Action::ListServices)),
        )
        .route(
            p::BOOTSTRAP,
            post(|s: St<C>, p: PeerExt| simple(s, p, Action::Bootstrap)),
        )
        .route(
            p::ETCD_MEMBERS,
            get(|s: St<C>, p: PeerExt| simple(s, p, Action::EtcdMembers)).post(add_learner::<C>),
        )
        .route(
            p::REBOOT,
            post(|s: St<C>, p: PeerExt| simple(s, p, Action::Reboot)),
        )
        .route(
            p::SHUTDOWN,
            post(|s: St<C>, p: PeerExt| simple(s, p, Action::Shutdown)),
        )
        .route(
            p::SERVICE_START,
            post(|s: St<C>, p: PeerExt, n: Path<String>| service_op(s, p, n, ServiceOp::Start)),
        )
        .route(
            p::SERVICE_STOP,
            post(|s: St<C>, p: PeerExt, n: Path<String>| service_op(s, p, n, ServiceOp::Stop)),
        )
        .route(
            p::SERVICE_RESTART,
            post(|s: St<C>, p: PeerExt, n: Path<String>| service_op(s, p, n, ServiceOp::Restart)),
        )
        .route(p::SERVICE_LOGS, get(logs::<C>))
        .route(p::DMESG, get(dmesg::<C>))
        .route(p::ETCD_MEMBER, axum::routing::delete(member_remove::<C>))
        .route(p::ETCD_PROMOTE, post(member_promote::<C>))
        .route(p::ETCD_JOIN, post(join::<C>))
        .route(p::ETCD_KV, get(kv_get::<C>).put(kv_put::<C>))
        .route(p::APPLY_CONFIG, post(apply_config::<C>))
        .route(p::MATRIX_RUN, post(matrix_run::<C>))
        .fallback(|| async { error(ApiError::new(ErrorCode::NotFound, "no such endpoint")) })
        .method_not_allowed_fallback(|| async {
            error(ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            ))
        })
        .with_state(c)
}

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.body())).into_response()
}

fn check(peer: Option<axum::Extension<Peer>>, required: Role) -> Result<(), ApiError> {
    let Some(axum::Extension(peer)) = peer else {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "no client identity",
        ));
    };
    let Some(role) = peer.role else {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "client certificate names no role",
        ));
    };
    if allows(role, required) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("role {role} may not do this (needs {required})"),
        ))
    }
}

/// Checks the role, runs the action, encodes the reply.
async fn run<C: Controller>(
    c: &C,
    peer: Option<axum::Extension<Peer>>,
    action: Result<Action, ApiError>,
) -> Response {
    let action = match action {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    if let Err(e) = check(peer, action.required_role()) {
        return error(e);
    }
    match c.execute(action).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(e) => error(e),
    }
}

/// Reads and strictly decodes a JSON body, admins only (checked first, so a
/// reader never gets its body parsed).
async fn admin_body<T: DeserializeOwned>(
    peer: Option<axum::Extension<Peer>>,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    check(peer, Role::Admin)?;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > MAX_BODY_BYTES as u64
    {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "request body not received within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })?;
    let bytes: Bytes = read.map_err(|e| {
        let limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if limit {
            too_large()
        } else {
            ApiError::new(ErrorCode::BadRequest, "cannot read request body")
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

type St<C> = State<Arc<C>>;
type PeerExt = Option<axum::Extension<Peer>>;

/// A route whose action takes nothing from the request (the router names it).
async fn simple<C: Controller>(State(c): St<C>, peer: PeerExt, action: Action) -> Response {
    run(&*c, peer, Ok(action)).await
}

/// A service name from the path, by [`ServiceName`]'s rule.
fn name_arg(name: String) -> Result<ServiceName, ApiError> {
    name.parse()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid service name: {e}")))
}

fn tail_arg(q: &LogsQuery) -> Result<Option<usize>, ApiError> {
    match q.tail {
        Some(t) if t > MAX_TAIL => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("tail may be at most {MAX_TAIL}"),
        )),
        t => Ok(t),
    }
}

fn query_err(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!("invalid query: {}", e.body_text()),
    )
}

/// Start, stop or restart of the service the path names.
async fn service_op<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    Path(name): Path<String>,
    op: ServiceOp,
) -> Response {
    let action = name_arg(name).map(|name| Action::Service { name, op });
    run(&*c, peer, action).await
}

async fn logs<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    Path(name): Path<String>,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let parsed = q
        .map_err(query_err)
        .and_then(|Query(q)| Ok((name_arg(name)?, tail_arg(&q)?, q.follow)));
    let (service, tail, follow) = match parsed {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    if !follow {
        return run(&*c, peer, Ok(Action::Logs { service, tail })).await;
    }
    if let Err(e) = check(peer, Role::Reader) {
        return error(e);
    }
    match c.follow_logs(service.to_string(), tail).await {
        Ok(stream) => {
            let body = stream.map(|line| {
                let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
                bytes.push(b'\n');
                Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
            });
            (
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(body),
            )
                .into_response()
        }
        Err(e) => error(e),
    }
}

async fn dmesg<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let action = q.map_err(query_err).and_then(|Query(q)| {
        if q.follow {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "dmesg cannot be followed",
            ));
        }
        Ok(Action::Dmesg {
            tail: tail_arg(&q)?,
        })
    });
    run(&*c, peer, action).await
}

fn id_arg(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "member id must be a decimal number"))
}

async fn member_remove<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    Path(id): Path<String>,
) -> Response {
    let action = id_arg(&id).map(|id| Action::EtcdRemove { id });
    run(&*c, peer, action).await
}

async fn member_promote<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    Path(id): Path<String>,
) -> Response {
    let action = id_arg(&id).map(|id| Action::EtcdPromote { id });
    run(&*c, peer, action).await
}

async fn kv_get<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    q: Result<Query<KvQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let action = q
        .map_err(query_err)
        .map(|Query(q)| Action::EtcdGet { key: q.key });
    run(&*c, peer, action).await
}

async fn add_learner<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = admin_body::<AddLearnerRequest>(peer, &headers, body)
        .await
        .map(Action::EtcdAddLearner);
    run(&*c, peer, action).await
}

async fn join<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = admin_body::<JoinRequest>(peer, &headers, body)
        .await
        .map(Action::EtcdJoin);
    run(&*c, peer, action).await
}

async fn kv_put<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = admin_body::<PutRequest>(peer, &headers, body)
        .await
        .map(Action::EtcdPut);
    run(&*c, peer, action).await
}

async fn apply_config<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = admin_body::<ApplyConfigRequest>(peer, &headers, body)
        .await
        .and_then(|req| {
            crate::machine::MachineConfig::from_yaml(&req.config)
                // The parser's message may quote the document (keys): keep it out.
                .map_err(|_| ApiError::new(ErrorCode::BadRequest, "invalid machine config"))
        })
        .map(|cfg| Action::ApplyConfig(Box::new(cfg)));
    run(&*c, peer, action).await
}

/// Validates a matrix request at the edge: known ids, destructive ones only
/// when allowed, a bounded list.
fn matrix_request(req: MatrixRunRequest) -> Result<MatrixRunRequest, ApiError> {
    if req.checks.len() > MAX_MATRIX_CHECKS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_MATRIX_CHECKS} check ids"),
        ));
    }
    ironclad_contract::matrix::select(&req.checks, req.destructive)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    Ok(req)
}

async fn matrix_run<C: Controller>(
    State(c): St<C>,
    peer: PeerExt,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = admin_body::<MatrixRunRequest>(peer, &headers, body)
        .await
        .and_then(matrix_request)
        .map(Action::MatrixRun);
    run(&*c, peer, action).await
}
