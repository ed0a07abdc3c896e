//! One benchmark VM run: QEMU started in its own process group (killed with
//! it when this process dies: `PR_SET_PDEATHSIG`), its serial log followed
//! until every wanted line has appeared (or, for a VM that powers itself
//! off, until QEMU exits), QEMU's resident memory read when asked, and QEMU
//! stopped in every case: done, timeout, interrupt, error or panic.
//!
//! Lines are matched by [`Want`]s; machined's `machined: <phase> t=<uptime>`
//! lines are read with the contract's parser
//! ([`ironclad_contract::console::parse_phase_line`]), every one of them kept
//! for the boot timeline.

use ironclad_contract::console::parse_phase_line;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a wanted line is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// A line containing this text directly followed by a guest uptime
    /// (`bench: init t=1.74`).
    Uptime(&'static str),
    /// machined's phase line with exactly this phase (`machined: ready t=4.4`).
    Phase(&'static str),
    /// A line containing any of these texts (no uptime).
    Any(&'static [&'static str]),
}

/// A line a run waits for, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub name: &'static str,
    pub matcher: Matcher,
}

impl Want {
    pub const fn new(name: &'static str, matcher: Matcher) -> Want {
        Want { name, matcher }
    }

    /// `Some(uptime)` when `line` is this want's line (the uptime when the
    /// line has one).
    pub fn matches(&self, line: &str) -> Option<Option<f64>> {
        match self.matcher {
            Matcher::Uptime(text) => {
                let rest = &line[line.find(text)? + text.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(rest.len());
                Some(Some(rest[..end].parse::<f64>().ok()?))
            }
            Matcher::Phase(phase) => parse_phase_line(line)
                .filter(|p| p.phase == phase)
                .map(|p| Some(p.uptime)),
            Matcher::Any(texts) => texts.iter().any(|t| line.contains(t)).then_some(None),
        }
    }
}

/// One run to make.
#[derive(Debug, Clone)]
pub struct VmRun {
    /// QEMU's argv after the program name.
    pub args: Vec<OsString>,
    /// The serial log QEMU writes (named by `args`); QEMU's own output goes
    /// beside it, `<log>.stderr`.
    pub log: PathBuf,
    pub wants: Vec<Want>,
    /// Wait for QEMU to exit as well (a guest that powers off).
    pub until_exit: bool,
    pub timeout: Duration,
    /// Read QEMU's VmRSS this long after the last wanted line.
    pub rss_delay: Option<Duration>,
    /// Files QEMU maps for the boot (kernel, initramfs) whose resident
    /// pages go back to the host before VmRSS is read, as the supervisor of
    /// a cluster hands them back after each boot
    /// (`ironclad_host::qemu::boot_files`).
    pub hand_back: Vec<PathBuf>,
}

/// What a run saw. Times in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmResult {
    /// Wall time from QEMU's start to each wanted line.
    pub wall: BTreeMap<&'static str, f64>,
    /// The guest uptime in each wanted line that has one.
    pub guest: BTreeMap<&'static str, f64>,
    /// Every machined phase line, in order.
    pub phases: Vec<(String, f64)>,
    pub rss_kib: Option<u64>,
    /// Wall time at which QEMU was seen to exit by itself.
    pub exit_wall: Option<f64>,
}

/// Why a run produced no result.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot start QEMU: {0}")]
    Spawn(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("QEMU exited ({status}) before: {missing}")]
    Exited { status: String, missing: String },
    #[error("timeout after {secs}s waiting for: {missing}")]
    Timeout { secs: u64, missing: String },
    #[error("interrupted")]
    Interrupted,
}

/// Folds serial log lines into a [`VmResult`].
#[derive(Debug, Default)]
pub struct Follower {
    wants: Vec<Want>,
    partial: Vec<u8>,
    pub result: VmResult,
}

impl Follower {
    pub fn new(wants: Vec<Want>) -> Follower {
        Follower {
            wants,
            ..Default::default()
        }
    }

    /// Feeds bytes read from the log at wall time `now`; complete lines are
    /// matched, a trailing partial line is kept for the next call.
    pub fn feed(&mut self, bytes: &[u8], now: f64) {
        self.partial.extend_from_slice(bytes);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw[..raw.len() - 1]).replace('\r', "");
            self.line(&line, now);
        }
    }

    fn line(&mut self, line: &str, now: f64) {
        if let Some(p) = parse_phase_line(line) {
            self.result.phases.push((p.phase.to_string(), p.uptime));
        }
        for w in &self.wants {
            if self.result.wall.contains_key(w.name) {
                continue;
            }
            if let Some(uptime) = w.matches(line) {
                self.result.wall.insert(w.name, round3(now));
                if let Some(u) = uptime {
                    self.result.guest.insert(w.name, u);
                }
            }
        }
    }

    /// The wants not seen yet, comma-separated.
    pub fn missing(&self) -> String {
        self.wants
            .iter()
            .filter(|w| !self.result.wall.contains_key(w.name))
            .map(|w| w.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn have_all(&self) -> bool {
        self.wants
            .iter()
            .all(|w| self.result.wall.contains_key(w.name))
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

/// A QEMU child, its process group stopped on drop.
pub struct Guard(Child);

impl Guard {
    /// Starts `program args` in a new process group, stdout and stderr into
    /// `stderr_file`, killed (SIGKILL) if this process dies first.
    pub fn spawn(program: &str, args: &[OsString], stderr_file: &Path) -> std::io::Result<Guard> {
        let err = std::fs::File::create(stderr_file)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(err.try_clone()?)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent; it runs in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map(Guard)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The exit status once the child has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }

    /// SIGTERM to the process group, SIGKILL after 5 s, then reaped.
    pub fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        signal_group(self.0.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(self.0.id(), libc::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on the process group this guard created (its leader is
    // our unreaped child, so the id cannot have been reused).
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// VmRSS of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Runs one VM (see the module doc). On an error the tail of QEMU's stderr
/// and of the serial log are printed on stderr.
pub fn run(qemu: &str, run: &VmRun) -> Result<VmResult, VmError> {
    let _ = std::fs::remove_file(&run.log);
    let stderr_file = sidecar(&run.log);
    let t0 = Instant::now();
    let mut qemu = Guard::spawn(qemu, &run.args, &stderr_file).map_err(VmError::Spawn)?;
    let mut follower = Follower::new(run.wants.clone());
    let mut pos = 0u64;
    let outcome = loop {
        let now = t0.elapsed().as_secs_f64();
        if let Ok(mut f) = std::fs::File::open(&run.log) {
            f.seek(SeekFrom::Start(pos))?;
            let mut chunk = Vec::new();
            f.read_to_end(&mut chunk)?;
            pos += chunk.len() as u64;
            follower.feed(&chunk, now);
        }
        if ironclad_host::interrupt::requested() {
            break Err(VmError::Interrupted);
        }
        if let Some(status) = qemu.try_wait()? {
            follower.result.exit_wall = Some(round3(now));
            if follower.have_all() {
                break Ok(());
            }
            break Err(VmError::Exited {
                status: status.to_string(),
                missing: follower.missing(),
            });
        }
        if follower.have_all() && !run.until_exit {
            break Ok(());
        }
        if now > run.timeout.as_secs_f64() {
            let mut missing = follower.missing();
            if run.until_exit {
                missing.push_str(" (and QEMU exit)");
            }
            break Err(VmError::Timeout {
                secs: run.timeout.as_secs(),
                missing,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if outcome.is_ok()
        && let Some(delay) = run.rss_delay
        && qemu.try_wait()?.is_none()
    {
        for f in &run.hand_back {
            if let Err(e) = ironclad_host::qemu::boot_files::release_cached_pages(f) {
                eprintln!("bench: {} stays resident in QEMU: {e}", f.display());
            }
        }
        sleep_unless_interrupted(delay);
        follower.result.rss_kib = rss_kib(qemu.id());
    }
    qemu.stop();
    match outcome {
        Ok(()) => Ok(follower.result),
        Err(e) => {
            if !matches!(e, VmError::Interrupted) {
                let qerr = tail(&stderr_file, 2000);
                if !qerr.is_empty() {
                    eprintln!("bench: QEMU's stderr:\n{qerr}");
                }
                eprintln!("bench: {e}; last serial output:\n{}", tail(&run.log, 3000));
            }
            Err(e)
        }
    }
}

/// `<log>.stderr`.
pub fn sidecar(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".stderr");
    PathBuf::from(s)
}

/// The last `bytes` of a file, lossily decoded and trimmed.
pub fn tail(path: &Path, bytes: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(bytes);
    String::from_utf8_lossy(&data[start..]).trim().to_string()
}

/// Sleeps `d`, waking early on Ctrl-C or SIGTERM.
pub fn sleep_unless_interrupted(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !ironclad_host::interrupt::requested() {
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::boot::NODE_WANTS;

    #[test]
    fn wants_match_their_lines_only() {
        let init = Want::new("init", Matcher::Uptime("bench: init t="));
        assert_eq!(init.matches("bench: init t=1.74"), Some(Some(1.74)));
        assert_eq!(
            init.matches("[ 1.0] x bench: init t=2.5\r"),
            Some(Some(2.5))
        );
        assert_eq!(init.matches("bench: init t="), None);
        assert_eq!(init.matches("bench: probe t=1.0"), None);
        let ready = NODE_WANTS[1];
        assert_eq!(ready.matches("machined: ready t=4.401"), Some(Some(4.401)));
        assert_eq!(ready.matches("machined: ready-ish t=4.4"), None);
        assert_eq!(ready.matches("machined: ready t=x"), None);
        assert_eq!(
            NODE_WANTS[3].matches("machined: image import failed: x"),
            Some(None)
        );
    }

    #[test]
    fn follower_collects_phases_and_first_matches() {
        let mut f = Follower::new(NODE_WANTS.to_vec());
        f.feed(
            b"SeaBIOS\r\nmachined: stage1 t=3.177\r\nmachined: stage",
            1.0,
        );
        assert_eq!(f.result.guest.get("stage1"), Some(&3.177));
        assert_eq!(f.result.wall.get("stage1"), Some(&1.0));
        assert!(!f.have_all());
        f.feed(
            b"2 t=3.555\nmachined: fact state-disk formatted=false boot=1\nmachined: ready t=4.401\n",
            2.5,
        );
        f.feed(b"machined: ready t=9.0\n", 3.0);
        assert_eq!(
            f.result.guest.get("ready"),
            Some(&4.401),
            "the first one counts"
        );
        assert_eq!(f.missing(), "containerd, settled");
        f.feed(
            b"machined: containerd answering t=7.267\nmachined: images imported (1) t=10.604\n",
            4.0,
        );
        assert!(f.have_all());
        assert_eq!(f.result.wall.get("settled"), Some(&4.0));
        assert!(!f.result.guest.contains_key("settled"));
        let phases: Vec<&str> = f.result.phases.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            phases,
            [
                "stage1",
                "stage2",
                "ready",
                "ready",
                "containerd answering",
                "images imported (1)"
            ]
        );
    }

    #[test]
    fn vm_rss() {
        let status = "Name:\tqemu\nVmPeak:\t 900 kB\nVmRSS:\t  549876 kB\n";
        assert_eq!(parse_vm_rss(status), Some(549_876));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).is_some());
    }
}
