//! The supervisor's control socket (`run/supervisor.sock`): one JSON request
//! per line, one JSON response per line. The CLI uses it to start and stop
//! nodes and to shut the whole cluster down. Only the owner can connect (the
//! state dir is 0700).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Is the supervisor there?
    Ping {},
    /// Boot a node from its disk (no-op if it runs).
    StartNode { node: String },
    /// Power a node off: ACPI power button, `quit` after `timeout_ms`.
    /// `graceful: false` kills QEMU at once.
    StopNode {
        node: String,
        graceful: bool,
        timeout_ms: u64,
    },
    /// Stop every node (as `StopNode`), then exit. Answered once all are down.
    Shutdown { graceful: bool, timeout_ms: u64 },
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok {},
    Error { message: String },
}

/// Failures talking to the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the cluster supervisor is not reachable at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster supervisor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the cluster supervisor closed the connection")]
    Closed,
    #[error("talking to the cluster supervisor: {0}")]
    Io(#[from] std::io::Error),
    #[error("the cluster supervisor refused: {0}")]
    Refused(String),
}

/// Sends one request and waits up to `timeout` for the answer.
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<(), ControlError> {
    let fut = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        line.push('\n');
        w.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        if BufReader::new(r).read_line(&mut answer).await? == 0 {
            return Err(ControlError::Closed);
        }
        match serde_json::from_str::<Response>(&answer).map_err(std::io::Error::other)? {
            Response::Ok {} => Ok(()),
            Response::Error { message } => Err(ControlError::Refused(message)),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ControlError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Request::StopNode {
            node: "a".into(),
            graceful: true,
            timeout_ms: 5,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"stop-node","node":"a","graceful":true,"timeout_ms":5}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"ping","x":1}"#).is_err());
        let e = serde_json::to_string(&Response::Error {
            message: "m".into(),
        })
        .unwrap();
        assert_eq!(e, r#"{"result":"error","message":"m"}"#);
    }
}
