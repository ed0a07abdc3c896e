//! Host log files that a guest or QEMU fills: each node's serial console
//! (`logs/<node>.log`) and QEMU's stderr (`logs/<node>.qemu.log`). QEMU does
//! not write these files itself: it writes into pipes that the supervisor
//! copies into a [`CappedLog`] ([`pump`]), so a guest that prints without end
//! cannot fill the host's disk.
//!
//! Rotation: once a file holds the cap ([`DEFAULT_MAX`], 16 MiB, or
//! `IRONCLAD_LOG_MAX`, e.g. `64MiB`), it is renamed to `<file>.1` (replacing
//! the older generation) at the next line end, or [`LINE_SLACK`] bytes later
//! if no line ends by then, and a new file is started. A log therefore never
//! takes more than two files of at most cap + 4 KiB each.
//!
//! A new file starts with a line saying where the earlier part went and,
//! for the serial console, the last lines that matched the caller's "carry"
//! needles (machined's `ready` and last phase line), each prefixed with
//! `ironclad: carried over: `. The readiness check and `status` read only the
//! current file: the carried lines keep them right after a rotation.
//!
//! Does not own: which files exist (`paths`), who starts QEMU (`supervisor`),
//! reading the logs back (`lifecycle`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The default cap of one log file.
pub const DEFAULT_MAX: u64 = 16 << 20;
/// The environment variable that sets the cap (a size: `16MiB`, `512KiB`).
pub const MAX_ENV: &str = "IRONCLAD_LOG_MAX";
/// The smallest cap accepted. Caps this small are for tests (a boot prints
/// about 1 KiB); a cap below the header of a new file only means a rotation
/// after every line.
pub const MIN_MAX: u64 = 256;
/// How far past the cap a file may grow to end on a line end.
pub const LINE_SLACK: u64 = 4 << 10;
/// Lines longer than this are never carried over.
const CARRY_LINE_MAX: usize = 512;
/// The prefix of a carried line.
pub const CARRIED: &str = "ironclad: carried over: ";

/// The cap from [`MAX_ENV`], else [`DEFAULT_MAX`]. A value that is not a size
/// or is below [`MIN_MAX`] is an error naming the variable.
#[expect(
    clippy::disallowed_methods,
    reason = "IRONCLAD_LOG_MAX is read by the supervisor, which has no command line of its own"
)]
pub fn max_from_env() -> Result<u64, String> {
    match std::env::var(MAX_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_MAX),
        Err(e) => Err(format!("{MAX_ENV}: {e}")),
        Ok(v) if v.trim().is_empty() => Ok(DEFAULT_MAX),
        Ok(v) => parse_max(&v),
    }
}

fn parse_max(v: &str) -> Result<u64, String> {
    let size: crate::spec::ByteSize = v
        .parse()
        .map_err(|e| format!("{MAX_ENV}={v:?} is not a size: {e}"))?;
    if size.as_u64() < MIN_MAX {
        return Err(format!(
            "{MAX_ENV}={v:?} is below the minimum of {MIN_MAX} bytes"
        ));
    }
    Ok(size.as_u64())
}

/// A log file with a size cap and one rotated generation (see the module doc).
pub struct CappedLog {
    path: PathBuf,
    max: u64,
    file: File,
    /// Bytes in the current file.
    len: u64,
    /// Whether the last byte written ended a line (or nothing was written).
    at_line_start: bool,
    /// Needles whose last matching line is carried into a new file.
    carry: Vec<String>,
    /// The line being assembled (for the needles), and whether it overflowed.
    line: Vec<u8>,
    line_too_long: bool,
    /// Per needle: the last matching line and its sequence number.
    kept: Vec<Option<(u64, Vec<u8>)>>,
    seq: u64,
    rotations: u64,
}

fn open(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).mode(0o600);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    o.open(path)
}

impl CappedLog {
    /// Starts `path` empty (a new boot's serial log). `carry` are the needles
    /// whose last matching line is repeated at the top of each new file.
    pub fn create(path: &Path, max: u64, carry: &[&str]) -> io::Result<CappedLog> {
        let file = open(path, true)?;
        Ok(CappedLog::with(path, max, file, 0, carry))
    }

    /// Appends to `path` (QEMU's stderr across restarts); a file already over
    /// the cap is rotated before the first new byte.
    pub fn append(path: &Path, max: u64) -> io::Result<CappedLog> {
        let file = open(path, false)?;
        let len = file.metadata()?.len();
        Ok(CappedLog::with(path, max, file, len, &[]))
    }

    fn with(path: &Path, max: u64, file: File, len: u64, carry: &[&str]) -> CappedLog {
        CappedLog {
            path: path.to_path_buf(),
            max: max.max(MIN_MAX),
            file,
            len,
            at_line_start: true,
            carry: carry.iter().map(|s| s.to_string()).collect(),
            line: Vec::new(),
            line_too_long: false,
            kept: vec![None; carry.len()],
            seq: 0,
            rotations: 0,
        }
    }

    /// The path of the rotated generation: `<path>.1`.
    pub fn previous(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    /// How many times the file was rotated.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Writes `buf`, rotating as the cap requires.
    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if self.len >= self.max && (self.at_line_start || self.len >= self.max + LINE_SLACK) {
                self.rotate()?;
            }
            let n = if self.len < self.max {
                buf.len().min((self.max - self.len) as usize)
            } else {
                // Past the cap: up to the next line end, within the slack.
                let limit = buf.len().min((self.max + LINE_SLACK - self.len) as usize);
                buf[..limit]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(limit, |i| i + 1)
            };
            let (now, rest) = buf.split_at(n);
            self.file.write_all(now)?;
            self.len += n as u64;
            self.at_line_start = now.last() == Some(&b'\n');
            self.scan(now);
            buf = rest;
        }
        Ok(())
    }

    /// Follows complete lines for the carry needles.
    fn scan(&mut self, bytes: &[u8]) {
        if self.carry.is_empty() {
            return;
        }
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < CARRY_LINE_MAX {
                    self.line.push(b);
                } else {
                    self.line_too_long = true;
                }
                continue;
            }
            if !self.line_too_long {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let text = String::from_utf8_lossy(&self.line);
                for (i, needle) in self.carry.iter().enumerate() {
                    if text.contains(needle.as_str()) {
                        self.kept[i] = Some((self.seq, self.line.clone()));
                    }
                }
                self.seq += 1;
            }
            self.line.clear();
            self.line_too_long = false;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let old_len = self.len;
        let previous = CappedLog::previous(&self.path);
        match std::fs::rename(&self.path, &previous) {
            // Someone removed the file: start a new one all the same.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.file = open(&self.path, true)?;
        self.len = 0;
        self.rotations += 1;
        let name = previous
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut header = format!(
            "ironclad: log rotated after {old_len} bytes (cap {}); the earlier part is in {name}\n",
            self.max
        )
        .into_bytes();
        let mut carried: Vec<&(u64, Vec<u8>)> = self.kept.iter().flatten().collect();
        carried.sort_by_key(|(seq, _)| *seq);
        carried.dedup_by_key(|(seq, _)| *seq);
        for (_, line) in carried {
            header.extend_from_slice(CARRIED.as_bytes());
            header.extend_from_slice(line);
            header.push(b'\n');
        }
        self.file.write_all(&header)?;
        self.len = header.len() as u64;
        self.at_line_start = true;
        Ok(())
    }
}

/// What a [`pump`] shows every chunk it reads, before writing it.
pub type Tap = Box<dyn FnMut(&[u8]) + Send>;

/// Copies `src` into `log` until end of file (the writer, QEMU, is gone) on a
/// thread of its own, then sends on `done`. What cannot be written (a full
/// disk) is dropped, so QEMU never blocks on a full pipe; `warn` hears when
/// writing starts failing and when it works again. `tap`, if any, sees every
/// chunk read (it must not block: QEMU waits on a full pipe).
pub fn pump(
    mut src: File,
    mut log: CappedLog,
    name: String,
    warn: fn(&str),
    done: tokio::sync::oneshot::Sender<()>,
    mut tap: Option<Tap>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("log {name}"))
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let mut failed = false;
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn(&format!("{name}: reading QEMU's output failed: {e}"));
                        break;
                    }
                };
                if let Some(tap) = tap.as_mut() {
                    tap(&buf[..n]);
                }
                match log.write(&buf[..n]) {
                    Err(e) if !failed => {
                        warn(&format!(
                            "{name}: cannot write {} ({e}); dropping output until it works again",
                            log.path.display()
                        ));
                        failed = true;
                    }
                    Err(_) => {}
                    Ok(()) if failed => {
                        warn(&format!("{name}: writing {} again", log.path.display()));
                        failed = false;
                    }
                    Ok(()) => {}
                }
            }
            let _ = done.send(());
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn the_cap_comes_from_the_environment_format() {
        assert_eq!(parse_max("16MiB"), Ok(16 << 20));
        assert_eq!(parse_max("4KiB"), Ok(4096));
        assert_eq!(parse_max("300"), Ok(300));
        assert!(parse_max("12").unwrap_err().contains("minimum"));
        assert!(parse_max("lots").unwrap_err().contains(MAX_ENV));
    }

    #[test]
    fn a_guest_writing_far_past_the_cap_leaves_two_bounded_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        let max = 64 << 10;
        let mut log = CappedLog::create(&path, max, &["machined: ready", "machined: "]).unwrap();
        log.write(b"[ 0.1] kernel\nmachined: stage1 t=0.2\nmachined: ready t=5.0\n")
            .unwrap();
        // 10 MB of a flood, in odd-sized writes, lines of 100 bytes.
        let line = [b'x'; 99]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<_>>();
        let flood: Vec<u8> = line.iter().copied().cycle().take(100 * 100_000).collect();
        for chunk in flood.chunks(7_777) {
            log.write(chunk).unwrap();
        }
        log.write(b"machined: etcd healthy t=9.0\n").unwrap();
        assert!(log.rotations() > 100, "{}", log.rotations());
        let prev = CappedLog::previous(&path);
        assert!(size(&path) <= max + LINE_SLACK, "{}", size(&path));
        assert!(size(&prev) <= max + LINE_SLACK, "{}", size(&prev));
        assert!(size(&prev) >= max, "rotated at the cap, not before");
        // Only the two generations exist.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // Lines are not cut: every file ends on a line end and holds whole lines.
        for p in [&path, &prev] {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.ends_with('\n'));
            for l in text.lines() {
                assert!(
                    l.len() == 99 || l.starts_with("ironclad: ") || l.starts_with("machined: "),
                    "{l:?}"
                );
            }
        }
        // The new file says where the rest went and carries the ready line.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("ironclad: log rotated after "),
            "{text:.200}"
        );
        assert!(text.contains("the earlier part is in n.log.1"));
        assert!(
            text.contains("ironclad: carried over: machined: ready t=5.0\n"),
            "{text:.400}"
        );
        assert!(text.ends_with("machined: etcd healthy t=9.0\n"));
    }

    #[test]
    fn a_flood_without_line_ends_is_cut_at_the_slack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        let max = 8 << 10;
        let mut log = CappedLog::create(&path, max, &["machined: "]).unwrap();
        log.write(&vec![b'y'; 1 << 20]).unwrap();
        assert!(log.rotations() > 50);
        let prev = CappedLog::previous(&path);
        assert_eq!(size(&prev), max + LINE_SLACK);
        assert!(size(&path) <= max + LINE_SLACK);
        // No machined line was seen: nothing carried.
        assert!(!std::fs::read_to_string(&path).unwrap().contains(CARRIED));
    }

    #[test]
    fn the_last_phase_and_the_ready_line_are_carried_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        let mut log = CappedLog::create(&path, 1024, &["machined: ready", "machined: "]).unwrap();
        log.write(b"machined: ready t=5.0\r\nmachined: containerd answering t=6.0\n")
            .unwrap();
        log.write(&[b'z'; 2000]).unwrap();
        log.write(b"\n").unwrap();
        log.write(b"after\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let carried: Vec<&str> = text.lines().filter(|l| l.starts_with(CARRIED)).collect();
        assert_eq!(
            carried,
            [
                "ironclad: carried over: machined: ready t=5.0",
                "ironclad: carried over: machined: containerd answering t=6.0"
            ],
            "{text}"
        );
        assert!(text.ends_with("after\n"));
    }

    #[test]
    fn a_removed_log_file_is_started_again_at_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        let mut log = CappedLog::create(&path, 256, &[]).unwrap();
        log.write(&[b'a'; 200]).unwrap();
        std::fs::remove_file(&path).unwrap();
        log.write(&[b'b'; 100]).unwrap();
        log.write(b"\nafter\n").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("after\n"));
    }

    #[test]
    fn appending_to_a_full_log_rotates_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.log");
        std::fs::write(&path, vec![b'a'; 5000]).unwrap();
        let mut log = CappedLog::append(&path, 4096).unwrap();
        log.write(b"qemu: warning\n").unwrap();
        assert_eq!(size(&CappedLog::previous(&path)), 5000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("qemu: warning\n"), "{text}");
        // Below the cap: appended, not rotated.
        let small = dir.path().join("s.log");
        std::fs::write(&small, b"old\n").unwrap();
        let mut log = CappedLog::append(&small, 4096).unwrap();
        log.write(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&small).unwrap(), "old\nnew\n");
        assert_eq!(log.rotations(), 0);
    }

    #[test]
    fn the_pump_copies_a_pipe_until_its_writer_is_gone() {
        use std::os::fd::FromRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fresh descriptors that we own from here on.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, mut w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = CappedLog::create(&path, 16 << 10, &[]).unwrap();
        // The tap sees every byte, though the log keeps only the last ones.
        let tapped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = tapped.clone();
        let tap: Tap = Box::new(move |b| {
            count.fetch_add(b.len(), std::sync::atomic::Ordering::Relaxed);
        });
        pump(r, log, "p".into(), |m| panic!("{m}"), tx, Some(tap)).unwrap();
        let writer = std::thread::spawn(move || {
            for i in 0..20_000 {
                writeln!(w, "line {i:05} of a guest that does not stop").unwrap();
            }
        });
        writer.join().unwrap();
        rx.blocking_recv().unwrap();
        let line_len = "line 00000 of a guest that does not stop\n".len();
        assert_eq!(
            tapped.load(std::sync::atomic::Ordering::Relaxed),
            20_000 * line_len
        );
        let prev = CappedLog::previous(&path);
        assert!(size(&path) <= (16 << 10) + LINE_SLACK);
        assert!(size(&prev) <= (16 << 10) + LINE_SLACK);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("line 19999 of a guest that does not stop\n"));
    }
}
