//! The switch's control protocol on `<dir>/switch-ctl.sock`: one JSON request per
//! line, one JSON response per line, on a connection that stays open for as
//! many requests as the client likes.
//!
//! Requests (`op` selects the operation; unknown fields are refused):
//! ```text
//! {"op":"partition","node":"w-1"}          cut a node off from every other port
//! {"op":"heal","node":"w-1"}               undo every fault aimed at that node
//! {"op":"heal","all":true}                 undo every fault
//! {"op":"drop","percent":30}               drop 30% of all frames
//! {"op":"drop","percent":100,"node":"w-1"} drop every frame to or from w-1
//! {"op":"delay","ms":200,"node":"w-1"}     delay frames to or from w-1
//! {"op":"status"}                          ports, learned MACs, counters, faults
//! ```
//! Responses: `{"result":"ok"}`, `{"result":"status","status":{...}}` or
//! `{"result":"error","code":"unknown_node","message":"..."}` with a stable
//! [`ErrorCode`]. A bad line gets an error response and the connection (and the
//! switch) keeps serving.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::MacAddr;

/// The longest request line accepted.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// The longest delay that can be injected.
pub const MAX_DELAY_MS: u64 = 60_000;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Cut a node off: frames to and from it are dropped.
    Partition { node: String },
    /// Undo faults: those aimed at `node`, or all of them with `all: true`.
    Heal {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    /// Drop `percent` of the frames, of every port or to and from `node`.
    Drop {
        percent: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Delay frames by `ms`, of every port or to and from `node`.
    Delay {
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Restart the drop decisions from `seed`: from here on the same frames
    /// in the same order meet the same decisions as on a switch whose
    /// decisions started from that seed (a bug report's `seed`).
    Seed { seed: u64 },
    /// Report ports, MACs, counters and faults.
    Status {},
}

/// A control response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Status { status: Status },
    Error { code: ErrorCode, message: String },
}

/// Stable error codes of the control protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a JSON request of this protocol.
    BadRequest,
    /// The request names a node the switch has no port for.
    UnknownNode,
    /// A value is out of range (percent above 100, delay too long, heal target).
    BadValue,
    /// The request line is longer than [`MAX_REQUEST_LINE`].
    LineTooLong,
}

/// Per-port counters. Their JSON is camelCase like everything else ironclad
/// prints (`net status`, `status`, a bundle's `switch.json`); the snake_case
/// aliases read what a switch of an earlier ironclad (still running after an
/// upgrade) or an earlier bundle says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Frames and bytes received from the VM.
    #[serde(alias = "rx_frames")]
    pub rx_frames: u64,
    #[serde(alias = "rx_bytes")]
    pub rx_bytes: u64,
    /// Frames and bytes written to the VM.
    #[serde(alias = "tx_frames")]
    pub tx_frames: u64,
    #[serde(alias = "tx_bytes")]
    pub tx_bytes: u64,
    /// Frames not delivered to this port because of a partition.
    #[serde(alias = "dropped_partition")]
    pub dropped_partition: u64,
    /// Frames not delivered to this port by an injected drop.
    #[serde(alias = "dropped_fault")]
    pub dropped_fault: u64,
    /// Frames not delivered because the port's queue was full.
    #[serde(alias = "dropped_overflow")]
    pub dropped_overflow: u64,
    /// Frames received that were too short to be Ethernet.
    pub runts: u64,
    /// How many times a VM connected to this port.
    pub connects: u64,
}

/// One port in a status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    pub node: String,
    pub connected: bool,
    pub counters: Counters,
}

/// A learned MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub mac: MacAddr,
    pub node: String,
}

/// The faults in force (camelCase, snake_case read too: see [`Counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Nodes cut off.
    pub partitioned: Vec<String>,
    /// Drop percentage for every frame (0 = none).
    #[serde(alias = "drop_percent")]
    pub drop_percent: u8,
    /// Drop percentages per node (frames to or from it).
    #[serde(alias = "drop_percent_by_node")]
    pub drop_percent_by_node: BTreeMap<String, u8>,
    /// Delay for every frame, in ms.
    #[serde(alias = "delay_ms")]
    pub delay_ms: u64,
    /// Delays per node (frames to or from it), in ms.
    #[serde(alias = "delay_ms_by_node")]
    pub delay_ms_by_node: BTreeMap<String, u64>,
}

/// The faults in force on one node's frames: what the switch applies to a
/// frame to or from it when the other end has no larger fault of its own (a
/// frame between two nodes gets the larger share and the longer delay of the
/// two, and is dropped when either is partitioned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFaults {
    /// Cut off from every other port.
    pub partitioned: bool,
    /// Share of its frames dropped (0 = none).
    pub loss_percent: u8,
    /// Delay of its frames, in ms (0 = none).
    pub delay_ms: u64,
}

impl NodeFaults {
    /// Whether any fault is in force.
    pub fn any(&self) -> bool {
        *self != NodeFaults::default()
    }
}

/// `partitioned`, `loss 30%`, `delay 200 ms`, joined by `, `; `-` for none.
impl std::fmt::Display for NodeFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.partitioned {
            parts.push("partitioned".to_string());
        }
        if self.loss_percent > 0 {
            parts.push(format!("loss {}%", self.loss_percent));
        }
        if self.delay_ms > 0 {
            parts.push(format!("delay {} ms", self.delay_ms));
        }
        // `pad`, so that a width given by the caller (a table column) holds.
        if parts.is_empty() {
            f.pad("-")
        } else {
            f.pad(&parts.join(", "))
        }
    }
}

impl Faults {
    /// The faults in force on `node`'s frames: its own, combined with those
    /// set for every port by the larger value (as the switch decides).
    pub fn of_node(&self, node: &str) -> NodeFaults {
        NodeFaults {
            partitioned: self.partitioned.iter().any(|n| n == node),
            loss_percent: self
                .drop_percent
                .max(self.drop_percent_by_node.get(node).copied().unwrap_or(0)),
            delay_ms: self
                .delay_ms
                .max(self.delay_ms_by_node.get(node).copied().unwrap_or(0)),
        }
    }
}

/// The switch's state as reported by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub ports: Vec<PortStatus>,
    pub macs: Vec<MacEntry>,
    pub faults: Faults,
    /// The seed of the drop decisions: give it back in the switch config to
    /// replay the same drops for the same traffic.
    pub seed: u64,
}

/// Errors of the control client.
#[derive(Debug, thiserror::Error)]
pub enum ControlClientError {
    #[error("cannot reach the switch control socket {path}: {source}")]
    Connect {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("control socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the switch closed the control connection")]
    Closed,
    #[error("the switch did not answer within {} s", .0.as_secs())]
    Timeout(std::time::Duration),
    #[error("the switch sent a response this client does not understand: {0}")]
    BadResponse(String),
}

/// A connection to the control socket, for the CLI, the supervisor and tests.
pub struct ControlClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl ControlClient {
    pub async fn connect(path: &Path) -> Result<Self, ControlClientError> {
        let stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ControlClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                })?;
        let (r, w) = stream.into_split();
        Ok(ControlClient {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Sends one raw line (without the newline) and reads the response line.
    pub async fn raw(&mut self, line: &str) -> Result<Response, ControlClientError> {
        let mut out = line.as_bytes().to_vec();
        out.push(b'\n');
        self.writer.write_all(&out).await?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp).await? == 0 {
            return Err(ControlClientError::Closed);
        }
        serde_json::from_str(&resp).map_err(|e| ControlClientError::BadResponse(e.to_string()))
    }

    /// Sends a request and reads its response.
    pub async fn request(&mut self, req: &Request) -> Result<Response, ControlClientError> {
        let line = serde_json::to_string(req)
            .map_err(|e| ControlClientError::BadResponse(e.to_string()))?;
        self.raw(&line).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r: Request = serde_json::from_str(r#"{"op":"drop","percent":30}"#).unwrap();
        assert_eq!(
            r,
            Request::Drop {
                percent: 30,
                node: None
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"heal","all":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Heal {
                node: None,
                all: true
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Partition { node: "w-1".into() }).unwrap(),
            r#"{"op":"partition","node":"w-1"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"drop","percent":300}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }

    #[test]
    fn node_faults_combine_own_and_every_port() {
        let f = Faults {
            partitioned: vec!["a".into()],
            drop_percent: 10,
            drop_percent_by_node: [("b".to_string(), 30)].into(),
            delay_ms: 50,
            delay_ms_by_node: [("a".to_string(), 20)].into(),
        };
        let a = f.of_node("a");
        assert_eq!(
            a,
            NodeFaults {
                partitioned: true,
                loss_percent: 10,
                delay_ms: 50
            }
        );
        assert_eq!(a.to_string(), "partitioned, loss 10%, delay 50 ms");
        assert_eq!(f.of_node("b").loss_percent, 30);
        let none = Faults::default().of_node("a");
        assert!(!none.any());
        assert_eq!(none.to_string(), "-");
        assert_eq!(
            format!("[{a:<36}]"),
            "[partitioned, loss 10%, delay 50 ms  ]"
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"partitioned":true,"lossPercent":10,"delayMs":50}"#
        );
    }

    #[test]
    fn status_json_is_camel_case_and_reads_the_old_snake_case() {
        let c = Counters {
            dropped_fault: 3,
            ..Counters::default()
        };
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["droppedFault"], 3);
        assert!(json.get("dropped_fault").is_none(), "{json}");
        let f: Faults = serde_json::from_str(
            r#"{"partitioned":[],"drop_percent":5,"drop_percent_by_node":{"a":7},"delay_ms":9,"delay_ms_by_node":{}}"#,
        )
        .unwrap();
        assert_eq!((f.drop_percent, f.delay_ms), (5, 9));
        assert_eq!(f.drop_percent_by_node["a"], 7);
        let old: Counters = serde_json::from_str(
            r#"{"rx_frames":1,"rx_bytes":2,"tx_frames":3,"tx_bytes":4,"dropped_partition":5,"dropped_fault":6,"dropped_overflow":7,"runts":8,"connects":9}"#,
        )
        .unwrap();
        assert_eq!(
            (old.rx_frames, old.dropped_overflow, old.connects),
            (1, 7, 9)
        );
        let back: Faults = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn response_wire_format() {
        let e = Response::Error {
            code: ErrorCode::UnknownNode,
            message: "no port".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"result":"error","code":"unknown_node","message":"no port"}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::Ok).unwrap(),
            r#"{"result":"ok"}"#
        );
    }
}
