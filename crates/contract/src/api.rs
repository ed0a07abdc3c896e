//! The node API contract shared by apid (server, in machined) and the host
//! client: paths, request and response types, roles and typed error codes.
//!
//! Every path is versioned (`/v1/...`). Requests are parsed strictly (unknown
//! fields refused). Errors travel as `{"error": {"code": "...", "message": "..."}}`
//! with a stable [`ErrorCode`] whose HTTP status is fixed by an exhaustive match.
//! Each endpoint is a typed [`Action`]; [`Action::required_role`] says who may
//! call it. This module holds no I/O: the server is machined's `apid`, the
//! client the host's `client`.

use serde::{Deserialize, Serialize};

pub use crate::names::{NodeName, ServiceName};
pub use crate::role::ClientRole as Role;

/// The largest request body apid accepts (1 MiB); larger is `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The largest `tail` a logs or dmesg request may ask for.
pub const MAX_TAIL: usize = 100_000;

/// Versioned request paths.
pub mod paths {
    pub const VERSION: &str = "/v1/version";
    pub const HEALTH: &str = "/v1/health";
    pub const SERVICES: &str = "/v1/services";
    /// `POST /v1/services/{name}/start`
    pub const SERVICE_START: &str = "/v1/services/{name}/start";
    pub const SERVICE_STOP: &str = "/v1/services/{name}/stop";
    pub const SERVICE_RESTART: &str = "/v1/services/{name}/restart";
    /// `GET /v1/services/{name}/logs?tail=N&follow=true`
    pub const SERVICE_LOGS: &str = "/v1/services/{name}/logs";
    pub const DMESG: &str = "/v1/dmesg";
    pub const BOOTSTRAP: &str = "/v1/bootstrap";
    /// `GET` lists, `POST` adds a learner.
    pub const ETCD_MEMBERS: &str = "/v1/etcd/members";
    /// `DELETE` removes the member.
    pub const ETCD_MEMBER: &str = "/v1/etcd/members/{id}";
    pub const ETCD_PROMOTE: &str = "/v1/etcd/members/{id}/promote";
    pub const ETCD_JOIN: &str = "/v1/etcd/join";
    /// `GET ?key=K` reads, `PUT` (JSON body) writes.
    pub const ETCD_KV: &str = "/v1/etcd/kv";
    pub const APPLY_CONFIG: &str = "/v1/apply-config";
    pub const REBOOT: &str = "/v1/reboot";
    pub const SHUTDOWN: &str = "/v1/shutdown";
    /// `POST` runs the node's matrix checks (admin; takes minutes).
    pub const MATRIX_RUN: &str = "/v1/matrix/run";

    /// `template` with its `{name}`/`{id}` placeholder replaced.
    pub fn fill(template: &str, value: &str) -> String {
        template.replace("{name}", value).replace("{id}", value)
    }
}

/// Stable error codes. The wire form is snake_case (`forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The wire name (`forbidden`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed API error: what the controller returns and what the client decodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The JSON body sent for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

/// The error body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl From<ErrorBody> for ApiError {
    fn from(b: ErrorBody) -> Self {
        ApiError::new(b.error.code, b.error.message)
    }
}

// ---- responses ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The machined build version.
    pub version: String,
    /// The API version (`v1`).
    pub api: String,
    /// The node's name.
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    /// Whether this node's etcd has been bootstrapped or joined.
    pub etcd_bootstrapped: bool,
    /// The node's clock when it answered, in milliseconds since the Unix
    /// epoch: what CONF-05 compares with the host's (the `Date` header has
    /// whole seconds only). Absent from nodes older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_unix_ms: Option<u64>,
    /// This boot's id (the kernel's random `boot_id`, a UUID): another id
    /// from the same node means it rebooted in between, which a client
    /// waiting on a long request cannot otherwise tell (a guest that resets
    /// leaves the connection open in QEMU's user-mode network). Absent from
    /// nodes older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl Health {
    /// This machine's clock now, as [`Health::time_unix_ms`] has it.
    pub fn now_unix_ms() -> Option<u64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64)
    }
}

/// A supervised service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Waiting,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The resident memory of the service's process (its VmRSS, KiB; not
    /// its children's) while it runs. Absent when it does not run, and from
    /// a node older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
}

/// One log line (also one line of a follow stream, NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMember {
    /// Member id (etcd's 64-bit id, as a decimal number).
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMembers {
    pub members: Vec<EtcdMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvValue {
    pub key: String,
    /// `None` when the key does not exist.
    pub value: Option<String>,
}

/// The empty success body of actions that return nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: bool,
}

// ---- requests ----

/// `GET .../logs` and `GET /v1/dmesg` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    #[serde(default)]
    pub follow: bool,
}

/// `GET /v1/etcd/kv?key=K`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvQuery {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerRequest {
    pub name: String,
    pub peer_url: String,
}

/// One member of an initial cluster (`name=peer_url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    pub name: String,
    pub peer_url: String,
}

/// Tells a control plane to start etcd joining an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub initial_cluster: Vec<InitialMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
}

/// A new machine config (the YAML document).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfigRequest {
    pub config: String,
}

impl std::fmt::Debug for ApplyConfigRequest {
    // The document holds private keys: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyConfigRequest").finish_non_exhaustive()
    }
}

/// `POST /v1/matrix/run`: which checks (every non-destructive one when
/// empty) and whether destructive ones may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixRunRequest {
    #[serde(default)]
    pub checks: Vec<String>,
    #[serde(default)]
    pub destructive: bool,
    /// A port on the host's 127.0.0.1 where the host listens during the
    /// run: NET-02 tries it through 10.0.2.2 (QEMU's user-net gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// The most check ids one request may name.
pub const MAX_MATRIX_CHECKS: usize = 256;

/// Which service start/stop/restart acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOp {
    Start,
    Stop,
    Restart,
}

/// Every operation of the node API, decoded and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Version,
    Health,
    ListServices,
    Service {
        name: ServiceName,
        op: ServiceOp,
    },
    Logs {
        service: ServiceName,
        tail: Option<usize>,
    },
    Dmesg {
        tail: Option<usize>,
    },
    Bootstrap,
    EtcdMembers,
    EtcdAddLearner(AddLearnerRequest),
    EtcdPromote {
        id: u64,
    },
    EtcdRemove {
        id: u64,
    },
    EtcdJoin(JoinRequest),
    EtcdPut(PutRequest),
    EtcdGet {
        key: String,
    },
    ApplyConfig(Box<crate::machine::MachineConfig>),
    Reboot,
    Shutdown,
    MatrixRun(MatrixRunRequest),
}

impl Action {
    /// The least role allowed to perform this action.
    pub fn required_role(&self) -> Role {
        match self {
            Action::Version
            | Action::Health
            | Action::ListServices
            | Action::Logs { .. }
            | Action::Dmesg { .. }
            | Action::EtcdMembers => Role::Reader,
            // A key may hold anything (a Kubernetes secret some day): reading
            // one is as sensitive as writing it.
            Action::EtcdGet { .. }
            | Action::Service { .. }
            | Action::Bootstrap
            | Action::EtcdAddLearner(_)
            | Action::EtcdPromote { .. }
            | Action::EtcdRemove { .. }
            | Action::EtcdJoin(_)
            | Action::EtcdPut(_)
            | Action::ApplyConfig(_)
            | Action::Reboot
            | Action::Shutdown
            | Action::MatrixRun(_) => Role::Admin,
        }
    }
}

/// Whether `role` may do what `required` allows.
pub fn allows(role: Role, required: Role) -> bool {
    match (role, required) {
        (Role::Admin, _) => true,
        (Role::Reader, Role::Reader) => true,
        (Role::Reader, Role::Admin) => false,
    }
}

/// A controller's typed result; serialized as the inner value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Version(VersionInfo),
    Health(Health),
    Services(ServiceList),
    Service(ServiceStatus),
    Logs(LogLines),
    Members(EtcdMembers),
    Member(EtcdMember),
    Kv(KvValue),
    Accepted(Accepted),
    Matrix(crate::matrix::NodeMatrixReport),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_stable() {
        let all = [
            (ErrorCode::BadRequest, 400, "bad_request"),
            (ErrorCode::Unauthenticated, 401, "unauthenticated"),
            (ErrorCode::Forbidden, 403, "forbidden"),
            (ErrorCode::NotFound, 404, "not_found"),
            (ErrorCode::MethodNotAllowed, 405, "method_not_allowed"),
            (ErrorCode::Conflict, 409, "conflict"),
            (ErrorCode::PayloadTooLarge, 413, "payload_too_large"),
            (ErrorCode::Unavailable, 503, "unavailable"),
            (ErrorCode::Internal, 500, "internal"),
        ];
        for (code, status, name) in all {
            assert_eq!(code.status(), status);
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            assert_eq!(code.as_str(), name);
        }
        let body = ApiError::new(ErrorCode::Forbidden, "no").body();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"forbidden","message":"no"}}"#
        );
    }

    #[test]
    fn requests_are_strict() {
        assert!(serde_json::from_str::<PutRequest>(r#"{"key":"a","value":"b"}"#).is_ok());
        assert!(serde_json::from_str::<PutRequest>(r#"{"key":"a","value":"b","x":1}"#).is_err());
        assert!(serde_json::from_str::<JoinRequest>(r#"{"initial_cluster":[],"y":0}"#).is_err());
        let m: MatrixRunRequest = serde_json::from_str(r#"{"checks":["RT-01"]}"#).unwrap();
        assert_eq!(m.checks, ["RT-01"]);
        assert!(!m.destructive);
        assert_eq!(m.host_port, None);
        let m: MatrixRunRequest =
            serde_json::from_str(r#"{"checks":["NET-02"],"host_port":40001}"#).unwrap();
        assert_eq!(m.host_port, Some(40001));
        assert!(serde_json::from_str::<MatrixRunRequest>(r#"{"checks":[],"x":1}"#).is_err());
    }

    #[test]
    fn roles() {
        assert_eq!(Action::Version.required_role(), Role::Reader);
        assert_eq!(Action::Reboot.required_role(), Role::Admin);
        assert_eq!(
            Action::MatrixRun(MatrixRunRequest::default()).required_role(),
            Role::Admin
        );
        assert!(allows(Role::Admin, Role::Admin));
        assert!(allows(Role::Reader, Role::Reader));
        assert!(!allows(Role::Reader, Role::Admin));
        assert_eq!(Role::from_organization("os:reader"), Some(Role::Reader));
        // Readers read the node's state, not etcd's keys.
        assert_eq!(Action::EtcdMembers.required_role(), Role::Reader);
        assert_eq!(
            Action::EtcdGet { key: "k".into() }.required_role(),
            Role::Admin
        );
    }
}
