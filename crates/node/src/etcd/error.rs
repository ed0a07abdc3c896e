//! [`EtcdError`]: every way the node's etcd layer fails, and its one mapping
//! to the node API's typed error (`From<EtcdError> for ApiError`: a stable
//! code per variant, the variant's text as the message).
//!
//! It owns no I/O: the variants are raised by [`super::service`] (files,
//! supervised service), [`super::gateway`] (etcd's answers) and
//! [`super::ops`] (input checks, bootstrap and join).

use super::ops::MAX_KEY_BYTES;
use crate::api::{ApiError, ErrorCode};
use crate::supervisor::SupervisorError;

/// A failure of the node's etcd layer. The `Display` text is the message API
/// clients see; none names a secret.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    // ---- this node's etcd settings ----
    /// The machine config cannot drive etcd (no certificates, bad TLS).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// etcd's config file could not be rendered.
    #[error("etcd config: {0}")]
    Render(#[source] serde_json::Error),
    /// A directory or file of etcd could not be written.
    #[error("cannot write etcd {what}: {source}")]
    Write {
        what: &'static str,
        source: std::io::Error,
    },

    // ---- lifecycle: bootstrap and join ----
    /// This node already has etcd data: it was bootstrapped or has joined.
    #[error("cannot {op}: etcd on this node already has data (bootstrapped or joined before)")]
    AlreadyHasData { op: &'static str },
    /// etcd is already supervised (waiting, starting, running).
    #[error("cannot {op}: etcd is already {state}")]
    AlreadySupervised {
        op: &'static str,
        state: &'static str,
    },
    /// The supervisor refused to start or stop the service.
    #[error(transparent)]
    Supervisor(SupervisorError),
    /// A new cluster did not reach running or failed in time.
    #[error("etcd did not become healthy: {0}")]
    NotHealthy(#[source] SupervisorError),
    /// A new cluster's etcd failed to start.
    #[error("etcd failed to start: {error}{}", last_output_suffix(.last_output))]
    FailedToStart {
        error: String,
        /// etcd's last output line (at most 500 characters).
        last_output: Option<String>,
    },
    /// The controller passed an action that is not etcd's (a bug).
    #[error("{0} is not an etcd action")]
    NotAnEtcdAction(String),

    // ---- bad input ----
    /// A member name that is no node name.
    #[error("invalid member name {0:?}")]
    InvalidMemberName(String),
    #[error("peer URL {url:?} {fault}; expected https://<IPv4>:<port>")]
    InvalidPeerUrl { url: String, fault: PeerUrlFault },
    #[error("the key is empty")]
    EmptyKey,
    #[error("the key is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong,
    #[error("the initial cluster is empty")]
    EmptyInitialCluster,
    #[error("member {0:?} is listed twice")]
    DuplicateMember(String),
    #[error("peer URL {0:?} is listed twice")]
    DuplicatePeerUrl(String),
    #[error("the initial cluster does not list this member ({me:?})")]
    NotInInitialCluster { me: String },
    #[error("the initial cluster lists {me:?} with {listed:?}, but its peer URL is {mine:?}")]
    WrongOwnPeerUrl {
        me: String,
        listed: String,
        mine: String,
    },

    // ---- etcd's gateway ----
    /// The local etcd did not answer (not running, not listening yet).
    #[error("etcd on this node is not answering: {0}")]
    NotAnswering(String),
    /// The answer's body broke off.
    #[error("etcd answer broke off: {0}")]
    BrokeOff(String),
    /// etcd answered with an error: the HTTP status, the gRPC status code
    /// when the body had one, and etcd's message.
    #[error("etcd: {message}")]
    Gateway {
        status: u16,
        grpc_code: Option<i64>,
        message: String,
    },
    /// A success answer that is not what the request promises.
    #[error("unexpected answer from etcd ({path}): {source}")]
    UnexpectedAnswer {
        path: &'static str,
        source: serde_json::Error,
    },
    #[error("etcd added no member (empty answer)")]
    NoMemberAdded,
    #[error("etcd reported a member id that is not a number: {0:?}")]
    BadMemberId(String),
    #[error("etcd value is not base64: {0}")]
    BadValue(#[source] base64::DecodeError),
    /// A promoted member that the answer does not list.
    #[error("no member {0:x}")]
    NoSuchMember(u64),

    // ---- `/health` (the supervisor's probe) ----
    /// `/health` could not be reached: the error and its sources.
    #[error("{0}")]
    HealthUnreachable(String),
    #[error("health answer (status {status}): {detail}")]
    HealthAnswer { status: u16, detail: String },
    #[error("etcd reports unhealthy (status {status}){}", reason_suffix(.reason))]
    Unhealthy { status: u16, reason: Option<String> },
}

/// Why the machine config cannot drive etcd. Cloneable: the gateway keeps it
/// in place of the HTTPS client it could not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("the machine config has no etcd certificates")]
    NoCertificates,
    #[error("etcd client TLS: {0}")]
    ClientTls(String),
    #[error("etcd client: {0}")]
    Client(String),
}

/// What is wrong with a peer URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerUrlFault {
    #[error("is not https")]
    NotHttps,
    #[error("has no port")]
    NoPort,
    #[error("does not name an IPv4 address")]
    NotIpv4,
    #[error("has no valid port")]
    BadPort,
}

fn last_output_suffix(last: &Option<String>) -> String {
    last.as_ref()
        .map(|l| format!("; its last output: {l}"))
        .unwrap_or_default()
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

impl EtcdError {
    /// The node API's code for this error. Callers retry on `Unavailable`
    /// (e.g. a learner that is not in sync yet), not on the others.
    pub fn code(&self) -> ErrorCode {
        use EtcdError as E;
        match self {
            E::Setup(_)
            | E::Render(_)
            | E::Write { .. }
            | E::Supervisor(_)
            | E::NotAnEtcdAction(_)
            | E::UnexpectedAnswer { .. }
            | E::NoMemberAdded
            | E::BadMemberId(_)
            | E::BadValue(_) => ErrorCode::Internal,
            E::AlreadyHasData { .. } | E::AlreadySupervised { .. } => ErrorCode::Conflict,
            E::NotHealthy(_)
            | E::FailedToStart { .. }
            | E::NotAnswering(_)
            | E::BrokeOff(_)
            | E::HealthUnreachable(_)
            | E::HealthAnswer { .. }
            | E::Unhealthy { .. } => ErrorCode::Unavailable,
            E::InvalidMemberName(_)
            | E::InvalidPeerUrl { .. }
            | E::EmptyKey
            | E::KeyTooLong
            | E::EmptyInitialCluster
            | E::DuplicateMember(_)
            | E::DuplicatePeerUrl(_)
            | E::NotInInitialCluster { .. }
            | E::WrongOwnPeerUrl { .. } => ErrorCode::BadRequest,
            E::NoSuchMember(_) => ErrorCode::NotFound,
            E::Gateway {
                status,
                grpc_code,
                message,
            } => gateway_code(*status, *grpc_code, message),
        }
    }
}

/// The code of an error answer of etcd's gateway: first what etcd's message
/// says (the gRPC codes of some errors are too coarse), then the gRPC status
/// code, then the HTTP status.
fn gateway_code(http_status: u16, grpc_code: Option<i64>, message: &str) -> ErrorCode {
    let lower = message.to_ascii_lowercase();
    if lower.contains("in sync with leader")
        || lower.contains("not enough started members")
        || lower.contains("unhealthy cluster")
        || lower.contains("leader changed")
        || lower.contains("no leader")
        || lower.contains("timed out")
    {
        return ErrorCode::Unavailable;
    }
    if lower.contains("member not found") {
        return ErrorCode::NotFound;
    }
    match grpc_code {
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
}

impl From<EtcdError> for ApiError {
    fn from(e: EtcdError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}
