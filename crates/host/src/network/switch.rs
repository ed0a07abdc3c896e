//! The switch itself: listeners, per-connection tasks, the forwarding table and
//! the fault state (set and healed by the control requests, in `faults`).
//!
//! One listening unix socket per node (`<dir>/sw-<node>.sock`); the node's QEMU
//! connects to it as a client. Each connection has a reader task (frames in,
//! forwarding decisions under one short lock) and a writer task (a bounded
//! queue of frames out, each with the instant it may be delivered, which is how
//! delays keep per-port order). A new connection on a port replaces the old
//! one, so a restarted node simply reconnects. Frames are never buffered
//! without bound: a full queue drops the frame and counts it, like a real
//! switch under congestion.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::MacAddr;
use super::control::{
    Counters, ErrorCode, Faults, MAX_REQUEST_LINE, MacEntry, PortStatus, Request, Response, Status,
};
use super::frame::{MIN_FRAME, read_frame, write_frame};
use crate::spec::NodeName;

/// Frames waiting for one port before new ones are dropped.
const PORT_QUEUE: usize = 1024;
/// The most MAC addresses learned; beyond it new sources are not learned (their
/// replies are flooded), so a guest spraying source addresses cannot grow the
/// table without bound.
pub const MAX_MACS: usize = 4096;

/// What the switch serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Where the sockets go (the cluster's state dir; created if missing).
    pub dir: PathBuf,
    /// One port per node.
    pub nodes: Vec<NodeName>,
    /// Seed of the drop decisions; `None` picks one (reported by `status`).
    pub seed: Option<u64>,
}

/// The socket a node's QEMU connects to.
pub fn port_socket(dir: &Path, node: &NodeName) -> PathBuf {
    dir.join(format!("sw-{node}.sock"))
}

/// The control socket.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("switch-ctl.sock")
}

/// Switch failures (only at start-up: once serving, errors stay per connection).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("cannot create the switch directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("node {0} is listed twice")]
    DuplicateNode(String),
}

/// A frame on its way out of a port.
struct Outgoing {
    at: Instant,
    frame: Arc<[u8]>,
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
    tasks: [AbortHandle; 2],
}

#[derive(Default)]
struct Port {
    conn: Option<Conn>,
    counters: Counters,
}

/// The switch's mutable state: ports, MAC table, faults and the drop RNG.
struct State {
    ports: BTreeMap<String, Port>,
    macs: HashMap<MacAddr, String>,
    faults: Faults,
    rng: StdRng,
    seed: u64,
    next_conn: u64,
}

/// The forwarding decision for one frame towards one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Deliver(Duration),
    DropPartition,
    DropFault,
}

impl State {
    fn new(nodes: &[NodeName], seed: u64) -> Self {
        State {
            ports: nodes
                .iter()
                .map(|n| (n.to_string(), Port::default()))
                .collect(),
            macs: HashMap::new(),
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            next_conn: 0,
        }
    }

    /// The ports a frame from `from` goes to, after learning its source MAC.
    /// `None` for a runt.
    fn targets(&mut self, from: &str, frame: &[u8]) -> Option<Vec<String>> {
        let (Some(dst), Some(src)) = (MacAddr::dst_of(frame), MacAddr::src_of(frame)) else {
            return None;
        };
        if frame.len() < MIN_FRAME {
            return None;
        }
        if !src.is_multicast() && (self.macs.len() < MAX_MACS || self.macs.contains_key(&src)) {
            self.macs.insert(src, from.to_string());
        }
        if !dst.is_multicast()
            && let Some(port) = self.macs.get(&dst)
        {
            return Some(if port == from {
                Vec::new()
            } else {
                vec![port.clone()]
            });
        }
        Some(
            self.ports
                .iter()
                .filter(|(name, p)| name.as_str() != from && p.conn.is_some())
                .map(|(name, _)| name.clone())
                .collect(),
        )
    }

    /// Applies the faults to one frame from `from` to `to`. Draws from the RNG
    /// only for drop shares strictly between 0 and 100, so a seed replays the
    /// same decisions for the same traffic.
    fn decide(&mut self, from: &str, to: &str) -> Decision {
        let f = &self.faults;
        if f.partitioned.iter().any(|n| n == from || n == to) {
            return Decision::DropPartition;
        }
        let by_node = |m: &BTreeMap<String, u8>, n: &str| m.get(n).copied().unwrap_or(0);
        let pct = f
            .drop_percent
            .max(by_node(&f.drop_percent_by_node, from))
            .max(by_node(&f.drop_percent_by_node, to));
        let delay_of = |n: &str| f.delay_ms_by_node.get(n).copied().unwrap_or(0);
        let delay = f.delay_ms.max(delay_of(from)).max(delay_of(to));
        let dropped = match pct {
            0 => false,
            100.. => true,
            p => self.rng.random_range(0..100u8) < p,
        };
        if dropped {
            Decision::DropFault
        } else {
            Decision::Deliver(Duration::from_millis(delay))
        }
    }

    /// Handles one frame received on `from`'s connection `conn`.
    fn forward(&mut self, from: &str, conn: u64, frame: Vec<u8>) {
        let Some(port) = self.ports.get_mut(from) else {
            return;
        };
        if port.conn.as_ref().map(|c| c.id) != Some(conn) {
            return; // a replaced connection's last frames
        }
        port.counters.rx_frames += 1;
        port.counters.rx_bytes += frame.len() as u64;
        let Some(targets) = self.targets(from, &frame) else {
            if let Some(p) = self.ports.get_mut(from) {
                p.counters.runts += 1;
            }
            return;
        };
        let frame: Arc<[u8]> = frame.into();
        let now = Instant::now();
        for to in targets {
            let decision = self.decide(from, &to);
            let Some(port) = self.ports.get_mut(&to) else {
                continue;
            };
            let Some(c) = &port.conn else {
                continue;
            };
            match decision {
                Decision::DropPartition => port.counters.dropped_partition += 1,
                Decision::DropFault => port.counters.dropped_fault += 1,
                Decision::Deliver(delay) => {
                    let out = Outgoing {
                        at: now + delay,
                        frame: frame.clone(),
                    };
                    if c.tx.try_send(out).is_err() {
                        port.counters.dropped_overflow += 1;
                    }
                }
            }
        }
    }

    fn status(&self) -> Status {
        let mut macs: Vec<MacEntry> = self
            .macs
            .iter()
            .map(|(mac, node)| MacEntry {
                mac: *mac,
                node: node.clone(),
            })
            .collect();
        macs.sort_by_key(|e| e.mac);
        Status {
            ports: self
                .ports
                .iter()
                .map(|(node, p)| PortStatus {
                    node: node.clone(),
                    connected: p.conn.is_some(),
                    counters: p.counters,
                })
                .collect(),
            macs,
            faults: self.faults.clone(),
            seed: self.seed,
        }
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the table half-updated in
        // a way that matters more than stopping the switch; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bound switch, ready to [`serve`](Switch::serve).
pub struct Switch {
    shared: Arc<Shared>,
    ports: Vec<(String, UnixListener)>,
    control: UnixListener,
    paths: Vec<PathBuf>,
}

/// Removes a stale socket file left by an earlier switch; refuses anything else.
fn clear_stale(path: &Path) -> Result<(), SwitchError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| SwitchError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => Err(SwitchError::NotASocket {
            path: path.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

fn bind(path: &Path) -> Result<UnixListener, SwitchError> {
    clear_stale(path)?;
    UnixListener::bind(path).map_err(|source| SwitchError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

impl Switch {
    /// Binds every port socket and the control socket. When this returns, QEMU
    /// can connect. Must be called inside a tokio runtime.
    pub async fn bind(config: &SwitchConfig) -> Result<Switch, SwitchError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| SwitchError::Dir {
            path: config.dir.clone(),
            source,
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for n in &config.nodes {
            if !seen.insert(n.as_str()) {
                return Err(SwitchError::DuplicateNode(n.to_string()));
            }
        }
        let mut ports = Vec::new();
        let mut paths = Vec::new();
        for node in &config.nodes {
            let path = port_socket(&config.dir, node);
            ports.push((node.to_string(), bind(&path)?));
            paths.push(path);
        }
        let ctl = control_socket(&config.dir);
        let control = bind(&ctl)?;
        paths.push(ctl);
        let seed = config.seed.unwrap_or_else(rand::random);
        Ok(Switch {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(&config.nodes, seed)),
            }),
            ports,
            control,
            paths,
        })
    }

    /// Binds and serves until `shutdown` completes. The API the cluster
    /// supervisor embeds.
    pub async fn run(
        config: &SwitchConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SwitchError> {
        Switch::bind(config).await?.serve(shutdown).await;
        Ok(())
    }

    /// Serves until `shutdown` completes, then closes every connection and
    /// removes the socket files.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        for (node, listener) in self.ports {
            tasks.spawn(accept_port(self.shared.clone(), node, listener));
        }
        tasks.spawn(accept_control(self.shared.clone(), self.control));
        shutdown.await;
        tasks.shutdown().await;
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Accepts connections on `listener` until the task is aborted, handing each
/// to `on_conn` with the set its tasks are reaped from. An accept error
/// (EMFILE and the like) backs off instead of spinning.
async fn accept_loop(
    listener: UnixListener,
    mut on_conn: impl FnMut(UnixStream, &mut JoinSet<()>),
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                on_conn(stream, &mut conns);
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Accepts VM connections on one port; a new one replaces the old one.
async fn accept_port(shared: Arc<Shared>, node: String, listener: UnixListener) {
    accept_loop(listener, |stream, conns| {
        attach(&shared, &node, stream, conns)
    })
    .await
}

fn attach(shared: &Arc<Shared>, node: &str, stream: UnixStream, conns: &mut JoinSet<()>) {
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(PORT_QUEUE);
    let mut st = shared.lock();
    st.next_conn += 1;
    let id = st.next_conn;
    let reader = {
        let shared = shared.clone();
        let node = node.to_string();
        conns.spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut r).await {
                shared.lock().forward(&node, id, frame);
            }
            let mut st = shared.lock();
            let st = &mut *st;
            if let Some(port) = st.ports.get_mut(&node)
                && port.conn.as_ref().map(|c| c.id) == Some(id)
            {
                port.conn = None;
                st.macs.retain(|_, n| *n != node);
            }
        })
    };
    let writer = {
        let shared = shared.clone();
        let node = node.to_string();
        conns.spawn(async move {
            while let Some(out) = rx.recv().await {
                tokio::time::sleep_until(out.at).await;
                if write_frame(&mut w, &out.frame).await.is_err() {
                    break;
                }
                if let Some(p) = shared.lock().ports.get_mut(&node) {
                    p.counters.tx_frames += 1;
                    p.counters.tx_bytes += out.frame.len() as u64;
                }
            }
        })
    };
    if let Some(port) = st.ports.get_mut(node) {
        port.counters.connects += 1;
        if let Some(old) = port.conn.replace(Conn {
            id,
            tx,
            tasks: [reader, writer],
        }) {
            for t in old.tasks {
                t.abort();
            }
        }
    }
}

/// Serves the control socket.
async fn accept_control(shared: Arc<Shared>, listener: UnixListener) {
    accept_loop(listener, |stream, conns| {
        conns.spawn(control_conn(shared.clone(), stream));
    })
    .await
}

/// Answers one request line.
fn handle_line(shared: &Shared, line: &[u8]) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Ok(req) => shared.lock().apply(req),
        Err(e) => Response::Error {
            code: ErrorCode::BadRequest,
            message: format!("not a control request: {e}"),
        },
    }
}

async fn control_conn(shared: Arc<Shared>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        let limit = MAX_REQUEST_LINE as u64 + 1;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let too_long = line.last() != Some(&b'\n') && line.len() > MAX_REQUEST_LINE;
        let resp = if too_long {
            Response::Error {
                code: ErrorCode::LineTooLong,
                message: format!("request lines are limited to {MAX_REQUEST_LINE} bytes"),
            }
        } else {
            let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
            if trimmed.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            handle_line(&shared, trimmed)
        };
        let Ok(mut out) = serde_json::to_vec(&resp) else {
            return;
        };
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || too_long {
            // After an over-long line the stream cannot be resynchronised.
            return;
        }
    }
}

mod faults;
#[cfg(test)]
mod tests;
