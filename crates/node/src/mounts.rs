//! The stage-2 mount table and its idempotent application: what is already
//! mounted is read from `/proc/self/mountinfo` and skipped, so running the table
//! twice (or after stage 1 moved `/dev`, `/proc`, `/sys` in) mounts nothing twice.

use super::sys::{Mount, Sys, flags};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One mount of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    /// Absolute path inside the node (joined to the root by the caller).
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: u64,
    pub data: &'static str,
    /// A failure is logged, not fatal (e.g. securityfs, bpf).
    pub optional: bool,
}

const fn m(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: u64,
    data: &'static str,
    optional: bool,
) -> MountSpec {
    MountSpec {
        source,
        target,
        fstype,
        flags,
        data,
        optional,
    }
}

const NSE: u64 = flags::NOSUID | flags::NODEV | flags::NOEXEC;

/// The base mount table of stage 2, in mount order.
pub const BASE_TABLE: &[MountSpec] = &[
    m("proc", "/proc", "proc", NSE, "", false),
    m("sysfs", "/sys", "sysfs", NSE, "", false),
    m(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        flags::NOSUID,
        "mode=0755",
        false,
    ),
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        flags::NOSUID | flags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
        false,
    ),
    m("shm", "/dev/shm", "tmpfs", NSE, "mode=1777", false),
    m(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NSE,
        "nsdelegate",
        false,
    ),
    m(
        "tmpfs",
        "/run",
        "tmpfs",
        flags::NOSUID | flags::NODEV,
        "mode=0755",
        false,
    ),
    m(
        "tmpfs",
        "/tmp",
        "tmpfs",
        flags::NOSUID | flags::NODEV,
        "mode=1777",
        false,
    ),
    m(
        "securityfs",
        "/sys/kernel/security",
        "securityfs",
        NSE,
        "",
        true,
    ),
    m("bpf", "/sys/fs/bpf", "bpf", NSE, "mode=0700", true),
];

/// Mount points listed in a `/proc/self/mountinfo` text (field 5, octal escapes decoded).
pub fn parse_mountinfo(text: &str) -> BTreeSet<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the mount points currently mounted (empty if procfs is not there yet).
pub fn current(root: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_to_string(root.join("proc/self/mountinfo"))
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Mounts every entry of `table` whose target is not in `mounted`, creating the
/// mount point first. Returns the optional mounts that failed.
///
/// `mounted` holds paths as the kernel sees them (absolute, inside the node);
/// targets are created and mounted at `root` + path.
pub fn apply(
    sys: &dyn Sys,
    root: &Path,
    table: &[MountSpec],
    mounted: &mut BTreeSet<PathBuf>,
) -> Result<Vec<(String, String)>, MountError> {
    let mut soft = Vec::new();
    for spec in table {
        let node_path = PathBuf::from(spec.target);
        if mounted.contains(&node_path) {
            continue;
        }
        let target = root.join(spec.target.trim_start_matches('/'));
        let res = std::fs::create_dir_all(&target).and_then(|()| {
            sys.mount(&Mount {
                source: spec.source,
                target: &target,
                fstype: spec.fstype,
                flags: spec.flags,
                data: spec.data,
            })
        });
        match res {
            Ok(()) => {
                mounted.insert(node_path);
            }
            Err(e) if spec.optional => soft.push((spec.target.to_string(), e.to_string())),
            Err(e) => {
                return Err(MountError::Mount {
                    target: spec.target.to_string(),
                    fstype: spec.fstype.to_string(),
                    source: e,
                });
            }
        }
    }
    Ok(soft)
}

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount {fstype} at {target}: {source}")]
    Mount {
        target: String,
        fstype: String,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, FakeSys};

    const MOUNTINFO: &str = "\
22 1 254:0 / / ro,relatime - squashfs /dev/vda ro
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw
24 22 0:20 / /proc rw - proc proc rw
25 22 0:21 / /sys rw - sysfs sysfs rw
26 22 0:30 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_mountinfo_with_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert!(m.contains(Path::new("/dev")));
        assert!(m.contains(Path::new("/mnt/with space")));
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn skips_what_stage1_moved_in_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let sys = FakeSys::new();
        let mut mounted = parse_mountinfo(MOUNTINFO);
        apply(&sys, dir.path(), BASE_TABLE, &mut mounted).unwrap();
        let targets: Vec<PathBuf> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target),
                _ => None,
            })
            .collect();
        let rel = |p: &str| dir.path().join(p);
        assert_eq!(
            targets,
            vec![
                rel("dev/pts"),
                rel("dev/shm"),
                rel("sys/fs/cgroup"),
                rel("run"),
                rel("tmp"),
                rel("sys/kernel/security"),
                rel("sys/fs/bpf"),
            ]
        );
        // Second run: nothing new.
        apply(&sys, dir.path(), BASE_TABLE, &mut mounted).unwrap();
        assert_eq!(sys.calls().len(), targets.len());
    }

    #[test]
    fn optional_failures_are_soft_required_are_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let sys = FakeSys::new();
        sys.fail_on("\"bpf\"", libc::ENODEV);
        let mut mounted = BTreeSet::new();
        let soft = apply(&sys, dir.path(), BASE_TABLE, &mut mounted).unwrap();
        assert_eq!(soft.len(), 1);
        assert_eq!(soft[0].0, "/sys/fs/bpf");

        let sys = FakeSys::new();
        sys.fail_on("cgroup2", libc::ENODEV);
        let mut mounted = BTreeSet::new();
        let e = apply(&sys, dir.path(), BASE_TABLE, &mut mounted).unwrap_err();
        assert!(e.to_string().contains("/sys/fs/cgroup"), "{e}");
    }
}
