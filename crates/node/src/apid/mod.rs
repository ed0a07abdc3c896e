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
//!
//! | module | owns |
//! |---|---|
//! | this module | [`Controller`], TLS, [`Apid`] (bind, accept loop, connections), the peer's role |
//! | `routes` | the router and its handlers: role checks, request decoding, bounded bodies |
//! | [`gate`] | the connection limits and timeouts |
//! | [`memory`] | the in-memory controller of the API tests |

pub mod gate;
// The in-memory controller of the API tests (here and in the root package's).
// Nothing in machined uses it, so the linker leaves it out of the binary (its
// messages are not in `target/release/machined`).
pub mod memory;
mod routes;
#[cfg(test)]
mod tests;

use crate::api::{Action, ApiError, LogLine, Reply, Role};
use axum::Router;
use axum::body::Body;
use futures::stream::BoxStream;
pub use gate::{Gate, GateStats, Limits};
use rustls::pki_types::CertificateDer;
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
            app: routes::router(controller),
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
