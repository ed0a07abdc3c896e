//! [`ClientError`] as a diagnostic: a stable code per kind of failure
//! (`ironclad::api::*` for what the node answered, its wire code included;
//! `ironclad::api::connection_refused`, `::tls`, ... for what happened
//! before an answer) and a help line saying what to try. The failed
//! connection is told apart by what its error chain holds ([`ConnectFailure`]).

use super::ClientError;
use super::tls::rustls_error_in;
use crate::api::ErrorCode;
use std::fmt::Display;

/// Why a connection to a node failed, read from reqwest's error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Nothing listens on the port: the node (or its QEMU) is not running.
    Refused,
    /// The TLS handshake failed: a certificate from another CA on either side.
    Tls,
    /// No answer in time.
    Timeout,
    /// Anything else.
    Other,
}

impl ConnectFailure {
    /// What `err`'s chain says.
    pub fn of(err: &reqwest::Error) -> ConnectFailure {
        if rustls_error_in(err).is_some() {
            return ConnectFailure::Tls;
        }
        if err.is_timeout() {
            return ConnectFailure::Timeout;
        }
        if io_kind_in(err) == Some(std::io::ErrorKind::ConnectionRefused) {
            return ConnectFailure::Refused;
        }
        ConnectFailure::Other
    }
}

/// The kind of the first `io::Error` in `err`'s chain (opened with
/// `get_ref()` too, as reqwest nests them).
fn io_kind_in(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        if io.kind() != std::io::ErrorKind::Other {
            return Some(io.kind());
        }
        if let Some(inner) = io.get_ref() {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(k) = io_kind_in(inner) {
                return Some(k);
            }
        }
    }
    io_kind_in(err.source()?)
}

/// Said with every failure to reach a node's API at all.
const NOT_RUNNING: &str = "is the cluster running? `ironclad status` shows its nodes, `ironclad start` boots a stopped one";

impl miette::Diagnostic for ClientError {
    fn code<'a>(&'a self) -> Option<Box<dyn Display + 'a>> {
        let code = match self {
            ClientError::Api(e) => {
                return Some(Box::new(format!("ironclad::api::{}", e.code.as_str())));
            }
            ClientError::Connect { source, .. } => match ConnectFailure::of(source) {
                ConnectFailure::Refused => "ironclad::api::connection_refused",
                ConnectFailure::Tls => "ironclad::api::tls",
                ConnectFailure::Timeout => "ironclad::api::timeout",
                ConnectFailure::Other => "ironclad::api::unreachable",
            },
            ClientError::Transport { .. } => "ironclad::api::transport",
            ClientError::Rebooted { .. } => "ironclad::api::rebooted",
            ClientError::WrongNode { .. } => "ironclad::api::wrong_node",
            ClientError::TooLarge { .. } | ClientError::Protocol { .. } => {
                "ironclad::api::protocol"
            }
            ClientError::Setup(_) | ClientError::Read { .. } | ClientError::Config(_) => {
                "ironclad::client::config"
            }
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn Display + 'a>> {
        let help: String = match self {
            ClientError::Api(e) => match e.code {
                ErrorCode::Unauthenticated => "the node did not accept the client certificate: use this cluster's client.yaml (a cluster created again has new CAs)".into(),
                ErrorCode::Forbidden => "this needs an admin client certificate; a reader may only read (`ironclad gen client-cert --role admin`)".into(),
                ErrorCode::NotFound => "check the name: `ironclad node services` lists the services, `ironclad etcd members` the members".into(),
                ErrorCode::BadRequest => "the node refused the request's content (the message says what); fix the argument".into(),
                ErrorCode::Conflict => "the node is not in a state that allows this now (`ironclad status` shows its state)".into(),
                ErrorCode::Unavailable => "a service behind the API is not up (yet): wait and try again, or look at `ironclad node logs SERVICE`".into(),
                ErrorCode::Internal => "the node failed: `ironclad node logs` and `ironclad console NODE` say why; a bug report wants `ironclad version`".into(),
                ErrorCode::MethodNotAllowed | ErrorCode::PayloadTooLarge => "ironclad and the node image disagree on the API: are they of one version (`ironclad version`)?".into(),
            },
            ClientError::Connect { source, .. } => match ConnectFailure::of(source) {
                ConnectFailure::Refused => format!("nothing listens on the node's API port: {NOT_RUNNING}"),
                ConnectFailure::Tls => "the TLS handshake failed: the node's certificate or this client's is from another cluster's CA; use this cluster's client.yaml (`ironclad status` names the cluster's state dir)".into(),
                ConnectFailure::Timeout => format!("the node did not answer in time: it may still be booting (under TCG that takes tens of seconds); {NOT_RUNNING}"),
                ConnectFailure::Other => NOT_RUNNING.into(),
            },
            ClientError::Transport { .. } => "the connection broke: the node may be rebooting or stopping; `ironclad status` shows it".into(),
            ClientError::Rebooted { node, .. } => format!("`ironclad console {node}` shows why (a kernel oops or panic is printed there); run it again once `ironclad status` shows the node ready"),
            ClientError::WrongNode { .. } => "the endpoints in client.yaml are stale, or another program holds the port: `ironclad status` shows the nodes' API ports".into(),
            ClientError::TooLarge { .. } | ClientError::Protocol { .. } => "ironclad and the node image disagree on the API: are they of one version (`ironclad version`)?".into(),
            ClientError::Setup(_) | ClientError::Read { .. } | ClientError::Config(_) => "the client config or its certificate files are not usable: `ironclad gen config` writes them again".into(),
        };
        Some(Box::new(help))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miette::Diagnostic;

    #[test]
    fn api_refusals_carry_the_wire_code() {
        let e = ClientError::Api(crate::api::ApiError::new(
            ErrorCode::Forbidden,
            "readers read",
        ));
        // `ClientError::code` (inherent) is the wire code; the diagnostic's
        // is named with the trait.
        assert_eq!(
            Diagnostic::code(&e).unwrap().to_string(),
            "ironclad::api::forbidden"
        );
        assert!(e.help().unwrap().to_string().contains("--role admin"));
    }

    /// A real refused connection: a port that was bound and is closed again.
    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // reqwest is built without a default TLS provider here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(ConnectFailure::of(&err), ConnectFailure::Refused);
        let e = ClientError::Connect {
            url: "u".into(),
            source: err,
        };
        assert_eq!(
            Diagnostic::code(&e).unwrap().to_string(),
            "ironclad::api::connection_refused"
        );
        assert!(e.help().unwrap().to_string().contains("ironclad start"));
    }

    /// A node that accepts the connection and never answers: the message says
    /// it timed out, not that it could not connect (a matrix run that hung on
    /// a node read "cannot connect" after 15 minutes of a live connection).
    #[tokio::test]
    async fn a_silent_node_is_a_timeout_said_as_such() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://127.0.0.1:{port}/v1/matrix/run");
        let err = reqwest::Client::new()
            .post(&url)
            .timeout(std::time::Duration::from_millis(300))
            .send()
            .await
            .unwrap_err();
        assert_eq!(ConnectFailure::of(&err), ConnectFailure::Timeout);
        let e = ClientError::Connect { url, source: err };
        assert_eq!(
            Diagnostic::code(&e).unwrap().to_string(),
            "ironclad::api::timeout"
        );
        let text = e.to_string();
        assert!(
            text.starts_with("no answer from http://127.0.0.1:"),
            "{text}"
        );
        assert!(text.contains("timed out"), "{text}");
        held.abort();
    }
}
