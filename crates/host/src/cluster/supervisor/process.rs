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
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from the
    // terminal's session so a Ctrl-C or a closed terminal does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(io("cannot start the cluster supervisor"))
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
    fn own_process_is_not_a_supervisor() {
        assert!(!is_supervisor_of(std::process::id(), Path::new("/nope")));
        assert!(cmdline(std::process::id()).is_some());
        assert!(processes_of(Path::new("/definitely/not/a/cluster")).is_empty());
    }
}
