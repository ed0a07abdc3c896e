//! Child processes and zombie reaping, in one place. Every child machined
//! starts after boot goes through [`Reaper::spawn`]; the reaper task wakes on
//! SIGCHLD (and on a slow tick, in case signals coalesce) and calls `waitpid`
//! until nothing is left, dispatching each exit status to whoever spawned it.
//!
//! As PID 1 ([`ReapMode::All`]) it reaps every child, including orphans
//! re-parented to init, with `waitpid(-1)`. Anywhere else ([`ReapMode::Own`],
//! e.g. tests) it waits only for the pids it spawned, so it never steals the
//! exit status of a process someone else is waiting for. tokio's own process
//! handling is not used, so the two cannot race.
//!
//! The pid table lock is held from before the fork until the pid is registered:
//! a child that exits at once is reaped only after its waiter is in place.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Which children the reaper waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// PID 1: every child (`waitpid(-1)`).
    All,
    /// Only children spawned through this reaper.
    Own,
}

/// A spawned child: its pid, its output pipes and a future for its exit status.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<std::process::ChildStdout>,
    pub stderr: Option<std::process::ChildStderr>,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Shared handle to the pid table.
#[derive(Debug, Clone)]
pub struct Reaper {
    mode: ReapMode,
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Reaper {
    pub fn new(mode: ReapMode) -> Self {
        Self {
            mode,
            waiters: Arc::default(),
        }
    }

    /// Spawns `cmd` with stdout and stderr piped (stdin from /dev/null) and
    /// registers it for reaping.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut table = self
            .waiters
            .lock()
            .map_err(|_| io::Error::other("reaper table poisoned"))?;
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (tx, rx) = oneshot::channel();
        table.insert(pid, tx);
        drop(table);
        // The std Child handle is dropped without waiting: the reaper owns the pid.
        Ok(Spawned {
            pid,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            exit: rx,
        })
    }

    /// Runs `cmd` to completion, returning its status and combined output.
    pub async fn output(&self, cmd: &mut Command) -> io::Result<(ExitStatus, String)> {
        use tokio::io::AsyncReadExt;
        let sp = self.spawn(cmd)?;
        let mut text = Vec::new();
        if let Some(o) = sp.stdout {
            let mut o = tokio::process::ChildStdout::from_std(o)?;
            o.read_to_end(&mut text).await?;
        }
        if let Some(e) = sp.stderr {
            let mut e = tokio::process::ChildStderr::from_std(e)?;
            e.read_to_end(&mut text).await?;
        }
        let status = sp
            .exit
            .await
            .map_err(|_| io::Error::other("reaper stopped"))?;
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }

    /// Reaps every exited child now; returns how many were reaped.
    pub fn reap_now(&self) -> usize {
        let mut n = 0;
        match self.mode {
            ReapMode::All => loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                n += 1;
                self.dispatch(pid, status);
            },
            ReapMode::Own => {
                let pids: Vec<i32> = match self.waiters.lock() {
                    Ok(t) => t.keys().copied().collect(),
                    Err(_) => return 0,
                };
                for pid in pids {
                    let mut status = 0;
                    // SAFETY: waitpid with a valid status pointer.
                    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                    if r == pid {
                        n += 1;
                        self.dispatch(pid, status);
                    }
                }
            }
        }
        n
    }

    fn dispatch(&self, pid: i32, status: i32) {
        let tx = self.waiters.lock().ok().and_then(|mut t| t.remove(&pid));
        if let Some(tx) = tx {
            let _ = tx.send(ExitStatus::from_raw(status));
        }
        // Orphans re-parented to PID 1 have no waiter: reaping them is all we do.
    }

    /// The reaper loop: reap on every SIGCHLD and on a slow tick. Runs forever.
    pub async fn run(self) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigchld = signal(SignalKind::child())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = tick.tick() => {}
            }
            self.reap_now();
        }
    }
}

/// Sends `sig` to `pid` (errors ignored: the process may be gone already).
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a positive pid.
        unsafe { libc::kill(pid, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_status_is_dispatched_even_for_instant_exits() {
        let r = Reaper::new(ReapMode::Own);
        tokio::spawn(r.clone().run());
        for _ in 0..5 {
            let sp = r.spawn(&mut Command::new("/bin/false")).unwrap();
            let st = tokio::time::timeout(Duration::from_secs(10), sp.exit)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(st.code(), Some(1));
        }
        let (st, out) = r
            .output(Command::new("/bin/echo").arg("hello"))
            .await
            .unwrap();
        assert!(st.success());
        assert_eq!(out, "hello\n");
    }

    #[tokio::test]
    async fn own_mode_leaves_other_children_alone() {
        let r = Reaper::new(ReapMode::Own);
        let mut other = Command::new("/bin/true").spawn().unwrap();
        // Wait until it is a zombie without reaping it (WNOWAIT).
        // SAFETY: waitid with a valid siginfo pointer.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                other.id(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(r.reap_now(), 0);
        // Its owner still gets the status.
        assert!(other.wait().unwrap().success());
    }
}
