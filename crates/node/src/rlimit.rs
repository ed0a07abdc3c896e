//! Open-file limits on a node. The kernel starts PID 1 with 1,024 (hard
//! 4,096): far too few for machined, whose apid, supervisor, log pumps and
//! etcd client all hold descriptors, so a connection flood could leave it
//! unable to start a service. [`raise_nofile`] lifts PID 1's hard limit to
//! [`NOFILE_MAX`] (within `fs.nr_open`) and its soft limit to that hard
//! limit. The services PID 1 starts get [`CHILD_NOFILE_SOFT`] as their soft
//! limit and the high hard limit ([`child_limit`], applied between fork and
//! exec by [`lower_for_child`]), as systemd does: programs that use
//! select(2) keep working, and etcd and containerd (Go) raise their own
//! soft limit to the hard one at start.

use std::io;
use std::path::Path;

/// The hard limit PID 1 asks for (the kernel's default `fs.nr_open`).
pub const NOFILE_MAX: u64 = 1 << 20;
/// The soft limit of the services PID 1 starts.
pub const CHILD_NOFILE_SOFT: u64 = 1024;

/// A (soft, hard) pair of limits.
pub type Limit = (u64, u64);

/// PID 1's new limit from its current one and `fs.nr_open` (when
/// readable): the hard limit up to [`NOFILE_MAX`] (never above `nr_open`,
/// never below what it was), the soft limit up to the hard one.
pub fn pid1_limit(current: Limit, nr_open: Option<u64>) -> Limit {
    let ceiling = nr_open.map_or(NOFILE_MAX, |n| n.min(NOFILE_MAX));
    let hard = current.1.max(ceiling);
    (hard, hard)
}

/// A child's limit under a parent holding `parent`: soft at most
/// [`CHILD_NOFILE_SOFT`] (never above the hard limit), hard unchanged.
pub fn child_limit(parent: Limit) -> Limit {
    (parent.0.min(CHILD_NOFILE_SOFT).min(parent.1), parent.1)
}

fn get() -> io::Result<Limit> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((l.rlim_cur, l.rlim_max))
}

fn set((soft, hard): Limit) -> io::Result<()> {
    let l = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit with a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's open-file limit ([`pid1_limit`], with
/// `<root>/proc/sys/fs/nr_open`); returns the limit now in force. Without
/// the privilege to raise the hard limit, the soft one still goes up to
/// the hard one.
pub fn raise_nofile(root: &Path) -> io::Result<Limit> {
    let nr_open = std::fs::read_to_string(root.join("proc/sys/fs/nr_open"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let current = get()?;
    let want = pid1_limit(current, nr_open);
    if set(want).is_err() {
        set((current.1, current.1))?;
    }
    get()
}

/// Sets the calling process's limit to [`child_limit`] of its own. Meant
/// for between fork and exec (`pre_exec`): it makes two system calls and
/// allocates nothing.
pub fn lower_for_child() -> io::Result<()> {
    set(child_limit(get()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid1_goes_up_to_nr_open_and_never_down() {
        // The kernel's start for PID 1.
        assert_eq!(pid1_limit((1024, 4096), Some(1 << 20)), (1 << 20, 1 << 20));
        // A lower nr_open caps it; an unreadable one means the default.
        assert_eq!(pid1_limit((1024, 4096), Some(65536)), (65536, 65536));
        assert_eq!(pid1_limit((1024, 4096), None), (NOFILE_MAX, NOFILE_MAX));
        // Already higher: kept.
        assert_eq!(
            pid1_limit((1024, 1 << 24), Some(1 << 30)),
            (1 << 24, 1 << 24)
        );
    }

    #[test]
    fn children_get_the_usual_soft_limit_and_the_high_hard_one() {
        assert_eq!(child_limit((1 << 20, 1 << 20)), (1024, 1 << 20));
        assert_eq!(child_limit((256, 512)), (256, 512));
        assert_eq!(child_limit((4096, 800)), (800, 800));
    }

    /// The real calls, in a child process so this test's own limits stay.
    #[test]
    fn a_child_started_with_lower_for_child_has_the_soft_limit() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "ulimit -Sn; ulimit -Hn"]);
        // SAFETY: lower_for_child makes only getrlimit/setrlimit calls.
        unsafe {
            cmd.pre_exec(lower_for_child);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (soft, hard) = get().unwrap();
        let want = child_limit((soft, hard));
        let shown: Vec<&str> = text.lines().collect();
        assert_eq!(shown[0], want.0.to_string(), "{text}");
        let hard_shown = if want.1 == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            want.1.to_string()
        };
        assert_eq!(shown[1], hard_shown, "{text}");
    }
}
