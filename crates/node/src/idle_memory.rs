//! Handing the boot's memory back to the host once the node has booted.
//!
//! A guest page the kernel frees goes back to QEMU through the balloon's free
//! page reporting; a page that stays in the page cache stays resident in
//! QEMU. After boot the page cache holds three kinds of pages:
//!
//! - what boot read and nothing maps any more (the prefetched binaries'
//!   unused parts, the image archives): `vm.drop_caches=1` frees them;
//! - pages of the running binaries (etcd, containerd) that are mapped but
//!   cold: boot's prefetch put the whole files in the cache, so every page
//!   fault mapped its neighbours too (fault-around). `drop_caches` leaves
//!   mapped pages alone; on an idle dev control plane they were 70 MiB of
//!   which the services touched about 25 MiB again in the next ten seconds.
//!   Proactive reclaim through the root cgroup's `memory.reclaim` frees them
//!   all; what the services really use comes back at its next fault;
//! - and, after that, the rest of each squashfs block those faults read back
//!   (1 MiB blocks; the fault needed one page of it): a second
//!   `drop_caches`, once the services have faulted their working set back
//!   in, frees them.
//!
//! It waits until the node is quiet ([`wait_until_quiet`]): reclaiming the
//! pages of an etcd that is still joining its cluster made a 3+2 create
//! 10 s slower, since every page it needed came back through a squashfs
//! read under emulation. Nothing here is needed for correctness: a failure
//! is reported on the console and the node goes on.
//!
//! A workload fills the page cache again: after the matrix a dev node's QEMU
//! held about 600 MiB (runsc, the shims, the pods' files). So after the
//! boot's hand-back machined keeps looking ([`keep_handing_back`]): once the
//! file cache has grown by [`REGROWTH`] and the node has then been quiet
//! for [`LATER_QUIET_SAMPLES`] seconds, it hands the cache back again.

use crate::console;
use crate::sysctl;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long the services get to fault their working set back in after the
/// reclaim, before the second `drop_caches`.
pub const SETTLE: Duration = Duration::from_secs(5);

/// How often the CPU counters are sampled while waiting for quiet.
pub const SAMPLE: Duration = Duration::from_secs(1);
/// How many samples in a row must be quiet.
pub const QUIET_SAMPLES: u32 = 3;
/// The share of CPU time a quiet sample spends idle, in percent. Idle
/// control planes of a 3-member cluster under TCG (etcd's heartbeats) pass
/// it: in a 3+2 create each node handed back 8 to 11 s after its image
/// import (5 s of that the settling), except the one still busy joining.
pub const QUIET_IDLE_PERCENT: u64 = 75;

/// How often the page cache is read after the boot's hand-back.
pub const WATCH: Duration = Duration::from_secs(10);
/// How much the file cache must have grown over its lowest reading since the
/// last hand-back before the next one is worth its cost (the services fault
/// their working set back in through the squashfs). An idle control plane's
/// etcd adds a few MiB an hour; the matrix adds hundreds.
pub const REGROWTH: u64 = 32 << 20;
/// Quiet samples in a row before a later hand-back: ten seconds, so that a
/// pause between two pods of a workload is not taken for its end.
pub const LATER_QUIET_SAMPLES: u32 = 10;

/// The root cgroup's proactive-reclaim file, under the root.
const RECLAIM: &str = "sys/fs/cgroup/memory.reclaim";

/// The bytes of file-backed page cache `/proc/meminfo` shows (active and
/// inactive file pages), or `None` when neither line is there.
pub fn file_cache_bytes(meminfo: &str) -> Option<u64> {
    let mut total = None;
    for line in meminfo.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if key != "Active(file)" && key != "Inactive(file)" {
            continue;
        }
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        total = Some(total.unwrap_or(0) + kib * 1024);
    }
    total
}

/// The idle and the total CPU time (in ticks, all CPUs) of the `cpu` line
/// of `/proc/stat`: idle counts `idle` and `iowait`; the total is the first
/// eight fields (`guest` time is already in `user`).
pub fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    Some((fields[3] + fields[4], fields.iter().sum()))
}

/// Whether the CPUs were quiet between two [`cpu_times`] readings: at least
/// [`QUIET_IDLE_PERCENT`] of the time idle. No time passed counts as busy.
pub fn quiet_between(before: (u64, u64), after: (u64, u64)) -> bool {
    let idle = after.0.saturating_sub(before.0);
    let total = after.1.saturating_sub(before.1);
    total > 0 && idle * 100 >= total * QUIET_IDLE_PERCENT
}

/// Waits until `needed` samples in a row of `/proc/stat` under `root`,
/// [`SAMPLE`] apart, are quiet. A node that stays busy keeps waiting; one
/// whose `/proc/stat` cannot be read does not wait.
pub async fn wait_until_quiet(root: &Path, needed: u32) {
    let stat = root.join("proc/stat");
    let read = || {
        std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| cpu_times(&s))
    };
    quiet_wait(read, SAMPLE, needed).await;
}

/// [`wait_until_quiet`] over the readings `read` gives, `sample` apart;
/// returns how many samples it took after the first reading.
async fn quiet_wait(
    mut read: impl FnMut() -> Option<(u64, u64)>,
    sample: Duration,
    needed: u32,
) -> u32 {
    let mut samples = 0;
    let Some(mut last) = read() else {
        return samples;
    };
    let mut quiet = 0;
    while quiet < needed {
        tokio::time::sleep(sample).await;
        samples += 1;
        let Some(now) = read() else {
            return samples;
        };
        quiet = if quiet_between(last, now) {
            quiet + 1
        } else {
            0
        };
        last = now;
    }
    samples
}

/// Asks the kernel to reclaim as much as the page cache under `root` holds
/// now (`memory.reclaim` of the root cgroup; without swap only clean file
/// pages can go); returns the bytes asked (0: the cache was empty, nothing
/// asked). The kernel answers EAGAIN when it reclaimed less than asked (the
/// pages in use at that moment stay): that is no error here.
pub fn reclaim_file_cache(root: &Path) -> Result<u64, String> {
    let bytes = read_file_cache(root)?;
    if bytes == 0 {
        return Ok(0);
    }
    match std::fs::write(root.join(RECLAIM), bytes.to_string()) {
        Ok(()) => Ok(bytes),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(bytes),
        Err(e) => Err(format!("/{RECLAIM}: {e}")),
    }
}

/// [`file_cache_bytes`] of `/proc/meminfo` under `root`.
pub fn read_file_cache(root: &Path) -> Result<u64, String> {
    let meminfo = std::fs::read_to_string(root.join("proc/meminfo"))
        .map_err(|e| format!("/proc/meminfo: {e}"))?;
    file_cache_bytes(&meminfo).ok_or_else(|| "/proc/meminfo has no file page counts".to_string())
}

/// Whether the page cache has grown enough since the last hand-back for
/// another: it keeps the lowest reading since then, and says yes once a
/// reading is [`REGROWTH`] above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regrowth {
    low: u64,
}

impl Regrowth {
    /// Starts from the cache size right after a hand-back.
    pub fn after_hand_back(bytes: u64) -> Self {
        Self { low: bytes }
    }

    /// Takes a reading; `true` when it is [`REGROWTH`] over the lowest.
    pub fn grown(&mut self, bytes: u64) -> bool {
        self.low = self.low.min(bytes);
        bytes - self.low >= REGROWTH
    }
}

/// Syncs and drops the clean, unmapped page cache.
pub fn drop_clean_cache(root: &Path) {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let set = BTreeMap::from([("vm.drop_caches".to_string(), "1".to_string())]);
    for (k, e) in sysctl::apply(root, &set) {
        console::say(&format!("machined: sysctl {k}: {e}"));
    }
}

/// The boot's hand-back (see the module's doc): waits until the node is
/// quiet, then drops, reclaims, waits [`SETTLE`] and drops again (on a
/// blocking thread); then the phase `boot caches dropped`.
pub async fn hand_back_when_quiet(root: &'static Path) {
    wait_until_quiet(root, QUIET_SAMPLES).await;
    let _ = tokio::task::spawn_blocking(move || hand_back(root)).await;
}

/// The boot's hand-back, then the later ones for as long as the node runs:
/// every [`WATCH`] the file cache is read; once it has grown by
/// [`REGROWTH`] ([`Regrowth`]), machined waits for [`LATER_QUIET_SAMPLES`]
/// quiet samples and hands it back again, with one console line
/// (`machined: page cache handed back: N MiB before, M MiB after`). It
/// stops when `/proc/meminfo` cannot be read.
pub async fn keep_handing_back(root: &'static Path) {
    hand_back_when_quiet(root).await;
    let Ok(mut bytes) = read_file_cache(root) else {
        return;
    };
    let mut regrowth = Regrowth::after_hand_back(bytes);
    loop {
        tokio::time::sleep(WATCH).await;
        match read_file_cache(root) {
            Ok(b) => bytes = b,
            Err(_) => return,
        }
        if !regrowth.grown(bytes) {
            continue;
        }
        wait_until_quiet(root, LATER_QUIET_SAMPLES).await;
        let before = read_file_cache(root).unwrap_or(bytes);
        let after = tokio::task::spawn_blocking(move || {
            return_page_cache(root);
            read_file_cache(root)
        })
        .await;
        let Ok(Ok(after)) = after else {
            return;
        };
        console::say(&format!(
            "machined: page cache handed back: {} MiB before, {} MiB after",
            before >> 20,
            after >> 20
        ));
        regrowth = Regrowth::after_hand_back(after);
    }
}

/// [`hand_back_when_quiet`] without the wait, on the calling thread.
pub fn hand_back(root: &Path) {
    return_page_cache(root);
    console::phase(console::Phase::BootCachesDropped);
}

/// The four steps: drop, reclaim, wait [`SETTLE`], drop.
pub fn return_page_cache(root: &Path) {
    drop_clean_cache(root);
    if let Err(e) = reclaim_file_cache(root) {
        console::say(&format!("machined: page cache reclaim: {e}"));
    }
    std::thread::sleep(SETTLE);
    drop_clean_cache(root);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        1004300 kB\n\
MemFree:          857464 kB\n\
Active(anon):      20000 kB\n\
Active(file):      50064 kB\n\
Inactive(file):     9756 kB\n\
Mapped:            69972 kB\n";

    const STAT: &str = "cpu  100 5 50 800 45 0 0 0 0 0\n\
cpu0 100 5 50 800 45 0 0 0 0 0\n\
intr 1234\n";

    #[test]
    fn idle_time_counts_iowait_and_the_total_leaves_guest_time_out() {
        assert_eq!(cpu_times(STAT), Some((845, 1000)));
        assert_eq!(cpu_times("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(cpu_times("cpu  1 2 x 4 5\n"), None);
        assert_eq!(cpu_times("cpu  1 2 3\n"), None);
    }

    #[test]
    fn a_sample_is_quiet_when_three_quarters_of_it_were_idle() {
        assert!(quiet_between((800, 1000), (875, 1100)));
        assert!(!quiet_between((800, 1000), (874, 1100)));
        // No time passed, or counters that went backwards: not quiet.
        assert!(!quiet_between((800, 1000), (800, 1000)));
        assert!(!quiet_between((800, 1000), (0, 0)));
    }

    /// Readings that advance by one second of CPU time each, quiet or busy.
    fn readings(quiet: &[bool]) -> impl FnMut() -> Option<(u64, u64)> {
        let mut at = (0u64, 0u64);
        let mut steps = quiet.iter().copied();
        let mut first = true;
        move || {
            if !std::mem::take(&mut first) {
                let q = steps.next()?;
                at = (at.0 + if q { 90 } else { 10 }, at.1 + 100);
            }
            Some(at)
        }
    }

    #[tokio::test]
    async fn the_wait_ends_after_three_quiet_samples_in_a_row() {
        let ms = Duration::from_millis(1);
        let q = [true, true, false, true, true, true, false];
        assert_eq!(quiet_wait(readings(&q), ms, QUIET_SAMPLES).await, 6);
        // Busy all along: it waits as long as there are readings.
        assert_eq!(
            quiet_wait(readings(&[false; 9]), ms, QUIET_SAMPLES).await,
            10
        );
    }

    #[tokio::test]
    async fn a_later_wait_needs_ten_quiet_samples() {
        let ms = Duration::from_millis(1);
        let mut q = vec![true; 9];
        q.push(false);
        q.extend([true; 10]);
        assert_eq!(quiet_wait(readings(&q), ms, LATER_QUIET_SAMPLES).await, 20);
    }

    #[test]
    fn the_cache_is_handed_back_again_once_it_regrew_from_its_lowest() {
        const MIB: u64 = 1 << 20;
        let mut r = Regrowth::after_hand_back(40 * MIB);
        // A few MiB of etcd's writes: not worth it.
        assert!(!r.grown(50 * MIB));
        // The cache shrank (the kernel reclaimed, a file was deleted): the
        // growth counts from there.
        assert!(!r.grown(20 * MIB));
        assert!(!r.grown(51 * MIB));
        assert!(r.grown(52 * MIB));
        assert!(r.grown(400 * MIB));
        // After the next hand-back, from its result.
        let mut r = Regrowth::after_hand_back(60 * MIB);
        assert!(!r.grown(91 * MIB));
        assert!(r.grown(92 * MIB));
    }

    #[tokio::test]
    async fn without_proc_stat_there_is_no_wait() {
        let d = tempfile::tempdir().unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            wait_until_quiet(d.path(), QUIET_SAMPLES),
        )
        .await
        .unwrap();
    }

    #[test]
    fn the_file_cache_is_the_active_and_inactive_file_pages() {
        assert_eq!(file_cache_bytes(MEMINFO), Some((50064 + 9756) * 1024));
        assert_eq!(file_cache_bytes("MemTotal: 1 kB\n"), None);
        assert_eq!(file_cache_bytes("Active(file): lots kB\n"), None);
    }

    /// A root with `proc/meminfo` and the cgroup directory.
    fn root_with(meminfo: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::create_dir_all(d.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(d.path().join("proc/meminfo"), meminfo).unwrap();
        d
    }

    #[test]
    fn the_reclaim_asks_for_what_the_page_cache_holds() {
        let d = root_with(MEMINFO);
        let want = (50064 + 9756) * 1024;
        assert_eq!(reclaim_file_cache(d.path()), Ok(want));
        let asked = std::fs::read_to_string(d.path().join(RECLAIM)).unwrap();
        assert_eq!(asked, want.to_string());
    }

    #[test]
    fn an_empty_cache_is_not_reclaimed_and_a_missing_cgroup_is_named() {
        let d = root_with("Active(file): 0 kB\nInactive(file): 0 kB\n");
        assert_eq!(reclaim_file_cache(d.path()), Ok(0));
        assert!(!d.path().join(RECLAIM).exists());
        let d = root_with(MEMINFO);
        std::fs::remove_dir_all(d.path().join("sys")).unwrap();
        let e = reclaim_file_cache(d.path()).unwrap_err();
        assert!(e.contains("memory.reclaim"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = reclaim_file_cache(d.path()).unwrap_err();
        assert!(e.contains("/proc/meminfo"), "{e}");
    }
}
