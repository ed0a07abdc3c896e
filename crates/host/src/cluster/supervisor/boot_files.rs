//! After every boot of a node, QEMU's resident copies of the kernel and the
//! initramfs go back to the host ([`crate::qemu::boot_files`]): about
//! 58 MiB per node.
//!
//! The trigger is stage 1's phase line on the node's serial console: stage 1
//! runs from the unpacked initramfs under the running kernel, so QEMU loaded
//! both files before it. A reboot in place loads them again and prints the
//! line again. The guest writes its console, so a guest that prints the line
//! over and over gets at most one look per [`MIN_INTERVAL`], and a file is
//! rewritten only when QEMU holds more than a page of it ([`worth_rewriting`]):
//! a line without a boot behind it costs no disk writes. A line within the
//! interval is looked at on the first console output after it.

use ironclad_contract::console::{Phase, parse_phase_line};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The shortest time between two releases for one QEMU.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// How much of a console line is kept to recognise it (phase lines are
/// short; the rest of a long line is dropped).
const LINE_KEEP: usize = 160;

/// Watches one QEMU's console for stage 1's line.
#[derive(Debug, Default)]
pub struct Stage1Watch {
    line: Vec<u8>,
    last: Option<Instant>,
    /// A stage 1 line came within [`MIN_INTERVAL`] of the last release: the
    /// release waits for the first console bytes after the interval.
    pending: bool,
}

impl Stage1Watch {
    /// Feeds console bytes seen at `now`; true when a release is due: a
    /// stage 1 line has been seen since the last release, which was at least
    /// [`MIN_INTERVAL`] ago.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> bool {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < LINE_KEEP {
                    self.line.push(b);
                }
                continue;
            }
            let stage1 = std::str::from_utf8(&self.line)
                .ok()
                .and_then(parse_phase_line)
                .is_some_and(|p| p.phase == Phase::Stage1.to_string());
            self.line.clear();
            self.pending |= stage1;
        }
        let due = self.pending
            && self
                .last
                .is_none_or(|t| now.duration_since(t) >= MIN_INTERVAL);
        if due {
            self.last = Some(now);
            self.pending = false;
        }
        due
    }
}

/// The serial console's tap for the QEMU of `node` (pid `pid`), which maps
/// `files`: on a due stage 1 line it releases their pages on a thread of its
/// own (the console copy must not wait for the disk) and logs what went
/// back.
pub(super) fn tap(node: String, pid: u32, files: Vec<PathBuf>) -> crate::cluster::caplog::Tap {
    let mut watch = Stage1Watch::default();
    Box::new(move |bytes| {
        if !watch.feed(bytes, Instant::now()) {
            return;
        }
        let (name, files) = (node.clone(), files.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("boot files {node}"))
            .spawn(move || release(&name, pid, &files));
        if let Err(e) = spawned {
            log!("{node}: cannot start handing back QEMU's kernel and initramfs pages: {e}");
        }
    })
}

/// Whether a file with `resident` bytes in QEMU is worth rewriting: more
/// than its last, partial block (which the rewrite leaves), so that console
/// lines without a boot behind them (a guest printing stage 1's line) cost
/// no disk writes at all.
pub fn worth_rewriting(resident: Option<u64>) -> bool {
    resident.is_some_and(|b| b > 4096)
}

fn release(node: &str, pid: u32, files: &[PathBuf]) {
    use crate::qemu::boot_files::{release_cached_pages, resident_bytes_of};
    let resident_of = |f: &PathBuf| resident_bytes_of(pid, f).ok().flatten();
    let before: Vec<Option<u64>> = files.iter().map(resident_of).collect();
    if !before.iter().any(|b| worth_rewriting(*b)) {
        return;
    }
    let mut failed = Vec::new();
    for (f, b) in files.iter().zip(&before) {
        if !worth_rewriting(*b) {
            continue;
        }
        if let Err(e) = release_cached_pages(f) {
            failed.push(format!("{}: {e}", f.display()));
        }
    }
    let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
    let total = |v: &[Option<u64>]| mib(v.iter().flatten().sum());
    let after: Vec<Option<u64>> = files.iter().map(resident_of).collect();
    if failed.is_empty() {
        log!(
            "{node}: QEMU's copies of the kernel and initramfs handed back ({} MiB resident before, {} after)",
            total(&before),
            total(&after)
        );
    } else {
        log!(
            "{node}: QEMU's copies of the kernel and initramfs not all handed back ({} MiB resident before, {} after): cannot rewrite with direct I/O: {}",
            total(&before),
            total(&after),
            failed.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGE1: &[u8] = b"machined: stage1 t=2.168\n";

    #[test]
    fn a_stage1_line_is_due_once_per_interval_even_split_across_reads() {
        let t0 = Instant::now();
        let mut w = Stage1Watch::default();
        assert!(!w.feed(b"[    0.000000] Linux version 6.12\nmachined: sta", t0));
        assert!(w.feed(b"ge1 t=2.168\r\nmachined: stage1 modules t=2.5\n", t0));
        assert!(!w.feed(b"machined: ready t=3.2\n", t0));
        // A guest that prints it again at once, or keeps printing it.
        assert!(!w.feed(STAGE1, t0 + Duration::from_secs(1)));
        assert!(!w.feed(&STAGE1.repeat(1000), t0 + MIN_INTERVAL / 2));
        // Its release waits for the next console bytes after the interval.
        assert!(w.feed(b"machined: ready t=3.2\n", t0 + MIN_INTERVAL));
        assert!(!w.feed(b"machined: etcd healthy t=5\n", t0 + 3 * MIN_INTERVAL));
        // The next boot's line, after the interval.
        assert!(w.feed(STAGE1, t0 + 4 * MIN_INTERVAL));
    }

    #[test]
    fn only_files_with_more_than_a_page_resident_are_rewritten() {
        assert!(!worth_rewriting(None), "not mapped, or QEMU gone");
        assert!(!worth_rewriting(Some(0)));
        assert!(!worth_rewriting(Some(4096)), "the tail the rewrite leaves");
        assert!(worth_rewriting(Some(8192)));
        assert!(worth_rewriting(Some(49 << 20)));
    }

    #[test]
    fn other_lines_and_long_lines_are_not_stage1() {
        let t0 = Instant::now();
        let mut w = Stage1Watch::default();
        for line in [
            &b"machined: stage1 modules t=2.5\n"[..],
            b"machined: stage1\n",
            b"machined: fact stage1 t=1\n",
            b"\xff\xfe machined: stage2 t=3\n",
        ] {
            assert!(!w.feed(line, t0), "{:?}", String::from_utf8_lossy(line));
        }
        // A line past what is kept is cut, and the cut line is not stage 1.
        let mut long = vec![b'x'; 4096];
        long.extend_from_slice(STAGE1);
        assert!(!w.feed(&long, t0));
        assert!(w.line.is_empty());
        // The kernel may share the line: the phase is found in it.
        assert!(w.feed(b"[ 2.1] rcu: x machined: stage1 t=2.168\n", t0));
    }
}
