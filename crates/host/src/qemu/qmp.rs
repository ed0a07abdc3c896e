//! A small QMP client over the `qapi` crate: connect, query the run state,
//! pause and resume, human-monitor lines (snapshots), power down, quit, and a
//! graceful shutdown with a deadline.
//!
//! `qapi` has two traps (see FINDINGS.md): its event stream must be polled all
//! the time or `execute()` never completes, and an event its bundled schema does
//! not know ends that stream. So [`Qmp::connect`] spawns one pump task that
//! polls the events for the life of the connection and records what matters
//! (a `SHUTDOWN` event, the end of the stream) in a `watch` channel; every
//! command is bounded by a timeout and fails fast with [`QmpError::Disconnected`]
//! once the pump has ended. A third trap found here: without out-of-band
//! support qapi keys every command by the same id and keeps an abandoned one
//! (timed out, or its write failed) registered, so the next command panics
//! inside qapi; after such a failure this layer sends nothing more and answers
//! [`QmpError::Broken`] (the caller kills QEMU). The public API does not expose `qapi` types, so the
//! layer can be swapped for a hand-written JSON client without touching callers.
//!
//! This module does not own the QEMU process: callers wait for it to exit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a single command may take by default before it is reported as
/// timed out (see [`Qmp::set_command_timeout`]).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

type Writer = QmpStreamTokio<WriteHalf<UnixStream>>;

/// What the event pump has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PumpState {
    shutdown_seen: bool,
    closed: bool,
    /// Why the stream ended, when it was not a clean end of file (an event the
    /// bundled schema does not know, or an I/O error): QEMU may still be running.
    broken: Option<String>,
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    service: QapiService<Writer>,
    state: watch::Receiver<PumpState>,
    pump: tokio::task::JoinHandle<()>,
    poisoned: AtomicBool,
    command_timeout: Duration,
    path: PathBuf,
}

/// The VM's run state as QEMU reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunStatus {
    /// Whether the vCPUs are running.
    pub running: bool,
    /// QEMU's run state name (`running`, `paused`, `prelaunch`, `shutdown`, ...).
    pub status: String,
}

/// How [`Qmp::shutdown_gracefully`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The guest shut down (or QEMU went away) before the deadline.
    Graceful,
    /// The deadline passed; QEMU was told to quit.
    Forced,
}

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP socket {path} did not accept a session before the deadline")]
    ConnectTimeout { path: PathBuf },
    #[error("QMP capabilities negotiation on {path} failed: {source}")]
    Negotiate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP command {command} failed: {message}")]
    Command {
        command: &'static str,
        message: String,
    },
    #[error("QMP command {command} got no answer within {timeout:?}")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
    #[error("QMP connection {path} is closed")]
    Disconnected { path: PathBuf },
    #[error("QMP connection {path} broke ({reason}); QEMU may still be running")]
    Broken { path: PathBuf, reason: String },
}

impl Qmp {
    /// Connects to QEMU's QMP socket, retrying until `deadline` while the socket
    /// does not exist yet or refuses (QEMU still starting), then negotiates
    /// capabilities and starts the event pump. Must run inside a tokio runtime.
    pub async fn connect(path: &Path, deadline: Instant) -> Result<Qmp, QmpError> {
        let timeout = || QmpError::ConnectTimeout {
            path: path.to_path_buf(),
        };
        let negotiation = loop {
            let opened = tokio::time::timeout_at(deadline, QmpStreamTokio::open_uds(path))
                .await
                .map_err(|_| timeout())?;
            match opened {
                Ok(n) => break n,
                Err(e) => {
                    let retry = matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    );
                    if !retry {
                        return Err(QmpError::Connect {
                            path: path.to_path_buf(),
                            source: e,
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(timeout());
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        let stream = tokio::time::timeout_at(deadline, negotiation.negotiate())
            .await
            .map_err(|_| timeout())?
            .map_err(|source| QmpError::Negotiate {
                path: path.to_path_buf(),
                source,
            })?;
        let (service, mut events) = stream.into_parts();
        let (tx, rx) = watch::channel(PumpState::default());
        let pump = tokio::spawn(async move {
            // Poll continuously: responses to commands are dispatched from here.
            let mut broken = None;
            while let Some(item) = events.next().await {
                match item {
                    Ok(qmp::Event::SHUTDOWN { .. }) => {
                        tx.send_modify(|s| s.shutdown_seen = true);
                    }
                    Ok(_) => {}
                    // QEMU exiting can reset the socket instead of closing it:
                    // that is an end, not a breakage.
                    Err(e) if is_hang_up(&e) => break,
                    // An unknown event or a broken stream: the session is over.
                    Err(e) => {
                        broken = Some(e.to_string());
                        break;
                    }
                }
            }
            tx.send_modify(|s| {
                s.closed = true;
                s.broken = broken;
            });
            // Dropping `events` here fails every pending command at once.
        });
        Ok(Qmp {
            service,
            state: rx,
            pump,
            poisoned: AtomicBool::new(false),
            command_timeout: COMMAND_TIMEOUT,
            path: path.to_path_buf(),
        })
    }

    fn disconnected(&self) -> QmpError {
        let state = self.state.borrow().clone();
        if !state.closed && self.poisoned.load(Ordering::Relaxed) {
            return QmpError::Broken {
                path: self.path.clone(),
                reason: "an earlier command timed out or could not be sent".into(),
            };
        }
        match state.broken {
            Some(reason) if !state.shutdown_seen => QmpError::Broken {
                path: self.path.clone(),
                reason,
            },
            _ => QmpError::Disconnected {
                path: self.path.clone(),
            },
        }
    }

    /// Sets how long each command may take (default [`COMMAND_TIMEOUT`]). A
    /// command that times out leaves the session unusable (see `poison`).
    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.command_timeout = timeout;
    }

    /// Whether the session has ended (QEMU exited or the stream broke).
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    async fn run<C>(&self, name: &'static str, cmd: C) -> Result<C::Ok, QmpError>
    where
        C: qapi::Command,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        self.run_for(name, cmd, self.command_timeout).await
    }

    /// [`Self::run`] allowed `timeout` instead of the session's command timeout.
    async fn run_for<C>(
        &self,
        name: &'static str,
        cmd: C,
        timeout: Duration,
    ) -> Result<C::Ok, QmpError>
    where
        C: qapi::Command,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        if self.is_closed() || self.poisoned.load(Ordering::Relaxed) {
            return Err(self.disconnected());
        }
        match tokio::time::timeout(timeout, self.service.execute(cmd)).await {
            Err(_) => {
                self.poison();
                Err(QmpError::Timeout {
                    command: name,
                    timeout,
                })
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(qapi::ExecuteError::Qapi(e))) => Err(QmpError::Command {
                command: name,
                message: e.desc,
            }),
            // The answer arrived but did not match the schema: the session is fine.
            Ok(Err(qapi::ExecuteError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(QmpError::Command {
                    command: name,
                    message: e.to_string(),
                })
            }
            Ok(Err(qapi::ExecuteError::Io(e))) => {
                self.poison();
                if self.is_closed() {
                    // The pump knows why the session ended.
                    Err(self.disconnected())
                } else if is_hang_up(&e) {
                    // QEMU went away (its event pump has not noticed yet).
                    Err(QmpError::Disconnected {
                        path: self.path.clone(),
                    })
                } else {
                    Err(QmpError::Broken {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// Marks the session unusable. qapi (without out-of-band support) keys every
    /// command by the same id and leaves it registered when a command is
    /// abandoned (timeout) or its write fails; the next command would then hit a
    /// panic inside qapi. So after either, no command is sent again.
    fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
    }

    /// `query-status`.
    pub async fn status(&self) -> Result<RunStatus, QmpError> {
        let info = self.run("query-status", qmp::query_status {}).await?;
        Ok(RunStatus {
            running: info.running,
            status: qapi::Enum::name(&info.status).to_string(),
        })
    }

    /// `cont`: starts the vCPUs of a VM started with `-S`.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.run("cont", qmp::cont {}).await.map(drop)
    }

    /// `stop`: pauses the vCPUs (the guest's clock stops with them).
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.run("stop", qmp::stop {}).await.map(drop)
    }

    /// `human-monitor-command`: one line of the human monitor (for what QMP
    /// of QEMU 7.2 has only as a job: `savevm`, `loadvm`, `delvm`), allowed
    /// `timeout` (the command blocks QEMU's main loop until it is done). The
    /// monitor reports a failure as text beginning with `Error:`, which is
    /// returned as [`QmpError::Command`]; other text is returned as is.
    pub async fn human(&self, command: &str, timeout: Duration) -> Result<String, QmpError> {
        let cmd = qmp::human_monitor_command {
            command_line: command.to_string(),
            cpu_index: None,
        };
        let answer = self.run_for("human-monitor-command", cmd, timeout).await?;
        let text = answer.trim().to_string();
        if let Some(rest) = text.strip_prefix("Error:") {
            return Err(QmpError::Command {
                command: "human-monitor-command",
                message: format!("{command}: {}", rest.trim()),
            });
        }
        Ok(text)
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub async fn powerdown(&self) -> Result<(), QmpError> {
        self.run("system_powerdown", qmp::system_powerdown {})
            .await
            .map(drop)
    }

    /// `system_reset`: the guest resets at once, as after a crash with
    /// `panic=-1` (nothing in it shuts down; QEMU keeps running).
    pub async fn reset(&self) -> Result<(), QmpError> {
        self.run("system_reset", qmp::system_reset {})
            .await
            .map(drop)
    }

    /// `quit`: QEMU exits at once. A connection that closes before the answer
    /// arrives counts as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.run("quit", qmp::quit {}).await {
            Ok(_) | Err(QmpError::Disconnected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Asks the guest to power off and waits until `deadline` for the
    /// `SHUTDOWN` event or the end of the session (QEMU exited); after the
    /// deadline, or when the power button cannot be pressed, sends `quit`.
    pub async fn shutdown_gracefully(
        &self,
        deadline: Instant,
    ) -> Result<ShutdownOutcome, QmpError> {
        match self.powerdown().await {
            Ok(()) => {}
            Err(QmpError::Disconnected { .. }) => return Ok(ShutdownOutcome::Graceful),
            // QEMU refused the power button: fall back to quit at once.
            Err(QmpError::Command { .. }) => {
                self.quit().await?;
                return Ok(ShutdownOutcome::Forced);
            }
            // The session is unusable; the caller must kill the process.
            Err(e) => return Err(e),
        }
        let mut state = self.state.clone();
        let ended =
            tokio::time::timeout_at(deadline, state.wait_for(|s| s.shutdown_seen || s.closed))
                .await
                .is_ok();
        if !ended {
            self.quit().await?;
            return Ok(ShutdownOutcome::Forced);
        }
        let seen = self.state.borrow().clone();
        match seen.broken {
            Some(reason) if !seen.shutdown_seen => Err(QmpError::Broken {
                path: self.path.clone(),
                reason,
            }),
            _ => Ok(ShutdownOutcome::Graceful),
        }
    }

    /// Waits until QEMU reports a `SHUTDOWN` event, or `deadline`. True if it did.
    pub async fn wait_shutdown_event(&self, deadline: Instant) -> bool {
        let mut state = self.state.clone();
        tokio::time::timeout_at(deadline, state.wait_for(|s| s.shutdown_seen || s.closed))
            .await
            .is_ok()
            && self.state.borrow().shutdown_seen
    }

    /// Waits until the session ends (QEMU exited), or `deadline`. True if it ended.
    pub async fn wait_closed(&self, deadline: Instant) -> bool {
        let mut state = self.state.clone();
        tokio::time::timeout_at(deadline, state.wait_for(|s| s.closed))
            .await
            .is_ok()
    }
}

/// Errors that mean the peer went away (QEMU exited), as opposed to a stream
/// that could not be understood.
fn is_hang_up(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

#[cfg(test)]
mod tests {
    //! A scripted QMP peer for what a real QEMU cannot be made to do on demand:
    //! send an event that qapi's bundled schema does not know.

    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    type PeerLines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

    /// Accepts one client, greets it as QEMU 7.2 does and accepts its
    /// `qmp_capabilities`: the session is then ready for commands.
    async fn greet(listener: UnixListener) -> (PeerLines, tokio::net::unix::OwnedWriteHalf) {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(
            br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}
"#,
        )
        .await
        .unwrap();
        lines.next_line().await.unwrap();
        w.write_all(b"{\"return\": {}}\n").await.unwrap();
        (lines, w)
    }

    /// A peer that greets, accepts capabilities, then never answers.
    async fn silent_peer(path: &Path) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut lines, _w) = greet(listener).await;
            while let Ok(Some(_)) = lines.next_line().await {}
        })
    }

    /// After a timeout qapi still holds the abandoned command; a second command
    /// would panic inside qapi. It must get an error instead.
    #[tokio::test]
    async fn a_timed_out_session_refuses_further_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = silent_peer(&path).await;
        let mut qmp = Qmp::connect(&path, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        qmp.set_command_timeout(Duration::from_millis(200));
        let err = qmp.status().await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err}");
        let err = qmp.status().await.unwrap_err();
        assert!(matches!(err, QmpError::Broken { .. }), "{err}");
        // quit must not report success on a live but unusable session.
        assert!(qmp.quit().await.is_err());
        let err = qmp
            .shutdown_gracefully(Instant::now() + Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Broken { .. }), "{err}");
        drop(qmp);
        server.abort();
    }

    #[tokio::test]
    async fn an_unknown_event_breaks_the_session_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut lines, mut w) = greet(listener).await;
            // query-status: answered by an event from the future, then silence.
            lines.next_line().await.unwrap();
            w.write_all(
                b"{\"event\": \"NOT_A_REAL_EVENT\", \"data\": {}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n",
            )
            .await
            .unwrap();
            // Keep the connection open until the client gives up.
            let _ = lines.next_line().await;
        });
        let qmp = Qmp::connect(&path, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        let start = Instant::now();
        let err = qmp.status().await.unwrap_err();
        assert!(matches!(err, QmpError::Broken { .. }), "{err}");
        assert!(start.elapsed() < COMMAND_TIMEOUT);
        assert!(qmp.is_closed());
        drop(qmp);
        server.abort();
    }
}
