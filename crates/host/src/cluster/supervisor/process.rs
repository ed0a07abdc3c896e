//! The supervisor as a process seen from outside: starting it detached, and
//! finding it (and the QEMUs of its cluster) in /proc.

use super::{SUBCOMMAND, SupervisorError, io};
use crate::cluster::paths::ClusterPaths;
use std::path::Path;

/// Starts the supervisor of the cluster in `paths` as a detached process: this
/// executable with [`SUBCOMMAND`], in a new session, stdin from /dev/null,
/// stdout and stderr appended to `logs/supervisor.log`. Returns the child (the
/// caller may poll it to notice an early death; dropping it does not kill it).
pub fn spawn_detached(paths: &ClusterPaths) -> Result<std::process::Child, SupervisorError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(io("cannot find the ironclad executable"))?;
    let log_path = paths.supervisor_log();
    if let Some(parent) = log_path.parent() {
        crate::fsutil::create_private_dir(parent)
            .map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("cannot open {}", log_path.display())))
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg("--dir")
        .arg(paths.dir())
        .stdin(std::process::Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?);
    // SAFETY: `detach` makes only async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(detach);
    }
    cmd.spawn()
        .map_err(io("cannot start the cluster supervisor"))
}

/// Run in the child between fork and exec. A new session, so that a Ctrl-C
/// or a closed terminal does not reach the supervisor. And every descriptor
/// above stderr close-on-exec: the supervisor lives as long as the cluster,
/// and a descriptor its caller inherited (a `flock` around `ironclad create`,
/// a CI runner's pipe) would otherwise be held open that long. That is a
/// lock never released, a pipe whose reader never sees its end. Kernels
/// before 5.11 lack `CLOSE_RANGE_CLOEXEC`; there the descriptors stay, as
/// before.
fn detach() -> std::io::Result<()> {
    // SAFETY: setsid and close_range are plain system calls with no memory
    // arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    Ok(())
}

/// The supervisor pid recorded in the state dir, if that process is alive and
/// is a supervisor of this very directory.
pub fn running_pid(paths: &ClusterPaths) -> Option<u32> {
    let text = std::fs::read_to_string(paths.supervisor_pid()).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    is_supervisor_of(pid, paths.dir()).then_some(pid)
}

/// Whether `pid` is alive and its command line is `... __supervise --dir <dir>`.
pub fn is_supervisor_of(pid: u32, dir: &Path) -> bool {
    let Some(args) = cmdline(pid) else {
        return false;
    };
    args.iter().any(|a| a == SUBCOMMAND) && args.iter().any(|a| Path::new(a) == dir)
}

/// A process's argv (from /proc), `None` when it is gone (or a zombie).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// A process's resident memory (`VmRSS` of /proc/PID/status) in KiB, `None`
/// when it is gone or has none (a zombie).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Pids of live processes that belong to the cluster in `dir`: its supervisor
/// and QEMUs whose command line names a file under `dir`. Used by `destroy` to
/// leave nothing behind even after a crash or a half-made cluster.
pub fn processes_of(dir: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let prefix = format!("{}/", dir.display());
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(args) = cmdline(pid) else { continue };
        let is_qemu = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("qemu-system-"));
        let mine = if is_qemu {
            args.iter().any(|a| a.contains(&prefix))
        } else {
            is_supervisor_of(pid, dir)
        };
        if mine {
            found.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_child_does_not_keep_inherited_descriptors() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("held")).unwrap();
        // dup(2) gives a descriptor without close-on-exec, as a shell's or
        // flock's would be.
        // SAFETY: dup of a descriptor this test owns; closed below.
        let inherited = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(inherited > 2);
        let probe = format!("readlink /proc/self/fd/{inherited} || echo gone");
        let run = |detached: bool| {
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.args(["-c", &probe]);
            if detached {
                // SAFETY: as in spawn_detached.
                unsafe {
                    cmd.pre_exec(detach);
                }
            }
            let out = cmd.output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // Without `detach` the child holds the file; with it, not.
        assert!(run(false).ends_with("held"), "{}", run(false));
        assert_eq!(run(true), "gone");
        // SAFETY: closing the descriptor dup'ed above.
        unsafe { libc::close(inherited) };
    }

    #[test]
    fn own_resident_memory_is_read() {
        assert!(vm_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        // A pid no process has (above the kernel's pid_max limit).
        assert_eq!(vm_rss_kib(u32::MAX), None);
    }

    #[test]
    fn own_process_is_not_a_supervisor() {
        assert!(!is_supervisor_of(std::process::id(), Path::new("/nope")));
        assert!(cmdline(std::process::id()).is_some());
        assert!(processes_of(Path::new("/definitely/not/a/cluster")).is_empty());
    }
}
