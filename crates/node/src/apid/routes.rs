//! The routes of the node API: each handler checks the peer's role,
//! decodes its request (path, query, a bounded JSON body read within
//! [`BODY_TIMEOUT`]) into a typed [`Action`] and hands it to the
//! [`Controller`]; replies and errors become responses here.

use super::{Controller, Peer};
use crate::api::{
    Action, AddLearnerRequest, ApiError, ApplyConfigRequest, ErrorCode, JoinRequest, KvQuery,
    LogsQuery, MAX_BODY_BYTES, MAX_MATRIX_CHECKS, MAX_TAIL, MatrixRunRequest, PutRequest, Role,
    ServiceName, ServiceOp, allows,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::stream::StreamExt;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// How long an (admin's) request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn router<C: Controller>(c: Arc<C>) -> Router {
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
