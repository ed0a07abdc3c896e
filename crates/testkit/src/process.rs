//! Child processes a test owns: [`Guard`] spawns one (QEMU above all) so that
//! it dies with the test, whatever way the test ends, and
//! [`processes_mentioning`] finds what a test left behind (a detached
//! supervisor and its QEMUs name the test's private state dir on their
//! command lines).

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use crate::wait;

/// The QEMU binary every test runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// A child process, killed and reaped when dropped: a test that fails (a
/// panic unwinds through the guard) leaves nothing running, and one that is
/// killed outright takes the child with it (`PR_SET_PDEATHSIG`).
#[derive(Debug)]
pub struct Guard {
    child: Child,
    what: String,
}

impl Guard {
    /// Spawns `cmd` (its stdio as the caller set it) under a guard.
    ///
    /// Panics naming the program when it cannot be started, with `hint` (for
    /// example which Debian package provides it).
    #[track_caller]
    pub fn spawn(mut cmd: Command, hint: &str) -> Guard {
        let what = cmd.get_program().to_string_lossy().into_owned();
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({hint}): {e}"));
        Guard { child, what }
    }

    /// QEMU with `args`: stdin and stdout closed, stderr into `stderr` (a
    /// file the test reads when QEMU misbehaves).
    #[track_caller]
    pub fn qemu(args: impl IntoIterator<Item = impl AsRef<OsStr>>, stderr: &Path) -> Guard {
        let log = std::fs::File::create(stderr)
            .unwrap_or_else(|e| panic!("create {}: {e}", stderr.display()));
        let mut cmd = Command::new(QEMU);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Guard::spawn(cmd, "Debian: qemu-system-x86")
    }

    /// The read end of the child's stderr when it was spawned with
    /// `Stdio::piped()` (once).
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.what))
    }

    /// Waits for the child to exit on its own; at the deadline the test
    /// fails with `context()` (a log tail, say).
    #[track_caller]
    pub fn wait_exit(&mut self, deadline: Instant, context: impl Fn() -> String) -> ExitStatus {
        loop {
            if let Some(st) = self.exited_by(deadline, &context) {
                return st;
            }
            std::thread::sleep(wait::POLL);
        }
    }

    /// The async form of [`Guard::wait_exit`], for a test whose runtime must
    /// keep serving (a switch the child talks to) while it waits.
    pub async fn wait_exit_async(
        &mut self,
        deadline: Instant,
        context: impl Fn() -> String,
    ) -> ExitStatus {
        loop {
            if let Some(st) = self.exited_by(deadline, &context) {
                return st;
            }
            tokio::time::sleep(wait::POLL).await;
        }
    }

    /// One poll of a wait for the exit: the status, `None` while there is
    /// time left, a test failure with `context()` after `deadline`.
    #[track_caller]
    fn exited_by(
        &mut self,
        deadline: Instant,
        context: &impl Fn() -> String,
    ) -> Option<ExitStatus> {
        let st = self.exited();
        assert!(
            st.is_some() || Instant::now() < deadline,
            "{} did not exit in time:\n{}",
            self.what,
            context()
        );
        st
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own, not yet reaped, child: the pid cannot
        // have been reused. No memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes (other than this one) whose command line contains `needle`:
/// pid and command line, arguments joined by spaces.
pub fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy();
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle.as_ref()) {
            found.push((pid, cmd));
        }
    }
    found
}

/// Kills every process [`processes_mentioning`] `needle`, saying so on
/// stderr; returns how many there were.
pub fn kill_mentioning(needle: &Path) -> usize {
    let found = processes_mentioning(needle);
    for (pid, cmd) in &found {
        eprintln!("killing leftover process {pid}: {cmd}");
        // SAFETY: kill(2) on a pid whose command line names the caller's
        // private directory; no memory is involved.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    found.len()
}

/// Where a failed test's logs are kept for a CI reader:
/// `<target>/e2e-logs/<name>`, `tmpdir` being the test's
/// `CARGO_TARGET_TMPDIR`.
pub fn kept_logs_dir(tmpdir: &Path, name: &str) -> PathBuf {
    tmpdir
        .parent()
        .unwrap_or(Path::new("."))
        .join("e2e-logs")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_dropped_guard_kills_and_reaps_its_child() {
        // A child that runs until killed and names a unique path on its
        // command line (`sleep 300 PATH` exits at once: a path is no
        // interval, and the test raced its exit).
        let dir = std::env::temp_dir().join(format!("testkit-guard-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let mut cmd = Command::new("tail");
        cmd.arg("-f").arg(&dir);
        let guard = Guard::spawn(cmd, "coreutils");
        let pid = guard.pid();
        assert_eq!(processes_mentioning(&dir).len(), 1);
        drop(guard);
        // Reaped: the pid is gone, not a zombie.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(processes_mentioning(&dir).is_empty());
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn wait_exit_returns_the_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let mut g = Guard::spawn(cmd, "dash");
        let st = g.wait_exit(wait::deadline(Duration::from_secs(10)), String::new);
        assert_eq!(st.code(), Some(7));
    }
}
