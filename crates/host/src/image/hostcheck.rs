//! Which mode mmdebstrap runs in, decided by ironclad rather than left to
//! mmdebstrap's own guess (which, for an ordinary user without `uidmap`, ends in
//! "unable to pick chroot mode automatically").
//!
//! - `root` when the effective user is root;
//! - `unshare` when this user can build rootless: `newuidmap` and `newgidmap`
//!   are installed, `/etc/subuid` and `/etc/subgid` give the user a range (by
//!   name, as mmdebstrap looks it up), a child process can create a user
//!   namespace and write its uid map, and `unshare --map-auto` can map the
//!   subordinate range through newuidmap;
//! - otherwise a [`RootlessError`] that names every problem found and the
//!   exact command that fixes it on this host (install uidmap, add a range with
//!   `usermod`, turn off Ubuntu's AppArmor restriction of user namespaces, ...).
//!
//! The host is read once into [`HostFacts`] ([`HostFacts::probe`]); the choice
//! is the pure function [`decide`], unit-tested over made-up facts. This module
//! does not run mmdebstrap (see `build`); `docs/troubleshooting.md` explains
//! the fixes at more length.

use std::fmt;
use std::process::{Command, Stdio};

/// The size of a subordinate id range the fix commands propose.
const RANGE: u64 = 65536;

/// mmdebstrap's `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChrootMode {
    /// Running as root: plain chroot.
    Root,
    /// An ordinary user: a user namespace mapping the user's subordinate ids.
    Unshare,
}

impl ChrootMode {
    /// The value of mmdebstrap's `--mode=`.
    pub fn arg(self) -> &'static str {
        match self {
            ChrootMode::Root => "root",
            ChrootMode::Unshare => "unshare",
        }
    }
}

/// The user's line in `/etc/subuid` or `/etc/subgid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubIds {
    /// A range under the user's name.
    Range { start: u64, count: u64 },
    /// A range under the numeric uid only; mmdebstrap looks ranges up by name.
    ByUidOnly,
    /// No line for the user (or the file does not exist).
    Missing,
    /// The file exists but cannot be read.
    Unreadable(String),
}

/// The outcome of one probe run in a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ok,
    /// It ran and failed: what the kernel or the tool said.
    Failed(String),
    /// It could not be run here (a tool too old, ...): no verdict.
    NotRun(String),
}

/// What the decision needs to know about the host and the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub euid: u32,
    /// The name of the real user (mmdebstrap's lookup key), or its uid.
    pub user: String,
    pub newuidmap: bool,
    pub newgidmap: bool,
    pub subuid: SubIds,
    pub subgid: SubIds,
    /// The first free 65536-aligned subordinate id at or above 100000 (for
    /// the `usermod` fix).
    pub free_subid: u64,
    /// A child creates a user namespace and writes its uid map.
    pub userns: Probe,
    /// `unshare --user --map-root-user --map-auto`: the subordinate range maps
    /// through newuidmap/newgidmap. Only run when everything else is in place.
    pub subid_map: Probe,
    /// `/proc/sys/kernel/apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+).
    pub apparmor_restrict_userns: Option<bool>,
    /// `/proc/sys/kernel/unprivileged_userns_clone` (Debian's older kernels).
    pub unprivileged_userns_clone: Option<bool>,
    /// `/proc/sys/user/max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
}

/// One reason this user cannot build rootless, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// newuidmap or newgidmap (Debian/Ubuntu package uidmap) is missing.
    NoUidmap { missing: Vec<&'static str> },
    /// No usable subordinate id range in /etc/subuid and/or /etc/subgid.
    NoSubIds {
        user: String,
        subuid: SubIds,
        subgid: SubIds,
        free: u64,
    },
    /// Ubuntu's AppArmor policy denies unprivileged user namespaces.
    AppArmor { error: String },
    /// A kernel knob turns unprivileged user namespaces off.
    UsernsDisabled { sysctl: &'static str, error: String },
    /// Creating a user namespace failed for another reason.
    UsernsFailed { error: String },
    /// The subordinate range did not map through newuidmap/newgidmap.
    SubIdMapFailed { user: String, error: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoUidmap { missing } => write!(
                f,
                "{} not installed (mmdebstrap maps the subordinate ids with them)\n  fix: sudo apt-get install uidmap",
                missing.join(" and ")
            ),
            Problem::NoSubIds {
                user,
                subuid,
                subgid,
                free,
            } => {
                let mut which = Vec::new();
                let mut flags = Vec::new();
                let range = format!("{free}-{}", free + RANGE - 1);
                for (file, ids, flag) in [
                    ("/etc/subuid", subuid, "--add-subuids"),
                    ("/etc/subgid", subgid, "--add-subgids"),
                ] {
                    match ids {
                        SubIds::Range { .. } => continue,
                        SubIds::Missing => which.push(format!("{file} has no range for {user}")),
                        SubIds::ByUidOnly => which.push(format!(
                            "{file} has a range for {user}'s uid but not under the name {user} (mmdebstrap looks it up by name)"
                        )),
                        SubIds::Unreadable(e) => which.push(format!("{file}: {e}")),
                    }
                    flags.push(format!("{flag} {range}"));
                }
                write!(
                    f,
                    "{}\n  fix: sudo usermod {} {user}\n       (or, from an ironclad checkout: sudo ci/install-deps)",
                    which.join("; "),
                    flags.join(" ")
                )
            }
            Problem::AppArmor { error } => write!(
                f,
                "AppArmor restricts unprivileged user namespaces on this host (kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10 and later): {error}\n  fix: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0\n       (to keep it after a reboot: echo kernel.apparmor_restrict_unprivileged_userns=0 | sudo tee /etc/sysctl.d/60-ironclad-userns.conf)"
            ),
            Problem::UsernsDisabled { sysctl, error } => write!(
                f,
                "unprivileged user namespaces are turned off on this host: {error}\n  fix: sudo sysctl {sysctl}\n       (to keep it after a reboot: echo {sysctl} | sudo tee /etc/sysctl.d/60-ironclad-userns.conf)"
            ),
            Problem::UsernsFailed { error } => write!(
                f,
                "creating a user namespace failed: {error}\n  fix: unprivileged user namespaces must work for this user (a container or a security policy may forbid them); see docs/troubleshooting.md, or build as root"
            ),
            Problem::SubIdMapFailed { user, error } => write!(
                f,
                "{user}'s subordinate ids did not map through newuidmap/newgidmap: {error}\n  fix: check that /usr/bin/newuidmap and /usr/bin/newgidmap are setuid root (sudo apt-get install --reinstall uidmap) and that {user}'s ranges in /etc/subuid and /etc/subgid do not overlap another user's"
            ),
        }
    }
}

/// This user cannot run mmdebstrap rootless; every problem with its fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RootlessError {
    pub user: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for RootlessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot build the image's Debian base as {} (not root) without working user namespaces:",
            self.user
        )?;
        for p in &self.problems {
            write!(f, "\n- {p}")?;
        }
        write!(f, "\n(see docs/troubleshooting.md)")
    }
}

/// The mode for mmdebstrap, or every reason an ordinary user cannot build.
pub fn decide(f: &HostFacts) -> Result<ChrootMode, RootlessError> {
    if f.euid == 0 {
        return Ok(ChrootMode::Root);
    }
    let mut problems = Vec::new();
    let missing: Vec<&'static str> = [("newuidmap", f.newuidmap), ("newgidmap", f.newgidmap)]
        .into_iter()
        .filter(|(_, have)| !have)
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        problems.push(Problem::NoUidmap { missing });
    }
    let has_range = |s: &SubIds| matches!(s, SubIds::Range { count, .. } if *count > 0);
    if !has_range(&f.subuid) || !has_range(&f.subgid) {
        problems.push(Problem::NoSubIds {
            user: f.user.clone(),
            subuid: f.subuid.clone(),
            subgid: f.subgid.clone(),
            free: f.free_subid,
        });
    }
    if let Probe::Failed(error) = &f.userns {
        let error = error.clone();
        problems.push(if f.apparmor_restrict_userns == Some(true) {
            Problem::AppArmor { error }
        } else if f.unprivileged_userns_clone == Some(false) {
            Problem::UsernsDisabled {
                sysctl: "kernel.unprivileged_userns_clone=1",
                error,
            }
        } else if f.max_user_namespaces == Some(0) {
            Problem::UsernsDisabled {
                sysctl: "user.max_user_namespaces=15000",
                error,
            }
        } else {
            Problem::UsernsFailed { error }
        });
    }
    if problems.is_empty()
        && let Probe::Failed(error) = &f.subid_map
    {
        problems.push(Problem::SubIdMapFailed {
            user: f.user.clone(),
            error: error.clone(),
        });
    }
    if problems.is_empty() {
        Ok(ChrootMode::Unshare)
    } else {
        Err(RootlessError {
            user: f.user.clone(),
            problems,
        })
    }
}

/// The mode for mmdebstrap on this host, for this user.
pub fn chroot_mode() -> Result<ChrootMode, RootlessError> {
    decide(&HostFacts::probe())
}

impl HostFacts {
    /// Reads the host. As root nothing but the euid is probed.
    pub fn probe() -> HostFacts {
        let euid = rustix::process::geteuid().as_raw();
        let uid = rustix::process::getuid().as_raw();
        let user = user_name(uid).unwrap_or_else(|| uid.to_string());
        let mut facts = HostFacts {
            euid,
            user,
            newuidmap: false,
            newgidmap: false,
            subuid: SubIds::Missing,
            subgid: SubIds::Missing,
            free_subid: 0,
            userns: Probe::NotRun("root".into()),
            subid_map: Probe::NotRun("root".into()),
            apparmor_restrict_userns: None,
            unprivileged_userns_clone: None,
            max_user_namespaces: None,
        };
        if euid == 0 {
            return facts;
        }
        facts.newuidmap = super::build::find_tool("newuidmap").is_some();
        facts.newgidmap = super::build::find_tool("newgidmap").is_some();
        let subuid = std::fs::read_to_string("/etc/subuid");
        let subgid = std::fs::read_to_string("/etc/subgid");
        facts.subuid = sub_ids(&subuid, &facts.user, uid);
        facts.subgid = sub_ids(&subgid, &facts.user, uid);
        facts.free_subid = free_subid(&[
            subuid.as_deref().unwrap_or_default(),
            subgid.as_deref().unwrap_or_default(),
        ]);
        let knob =
            |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        facts.apparmor_restrict_userns =
            knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").map(|v| v != 0);
        facts.unprivileged_userns_clone =
            knob("/proc/sys/kernel/unprivileged_userns_clone").map(|v| v != 0);
        facts.max_user_namespaces = knob("/proc/sys/user/max_user_namespaces");
        facts.userns = probe_userns(uid);
        let ready = facts.newuidmap
            && facts.newgidmap
            && matches!(facts.subuid, SubIds::Range { .. })
            && matches!(facts.subgid, SubIds::Range { .. })
            && facts.userns == Probe::Ok;
        facts.subid_map = if ready {
            probe_subid_map()
        } else {
            Probe::NotRun("prerequisites missing".into())
        };
        facts
    }
}

/// The user's range in a subuid/subgid file's text (`name:start:count` lines).
pub fn sub_ids(text: &std::io::Result<String>, user: &str, uid: u32) -> SubIds {
    let text = match text {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SubIds::Missing,
        Err(e) => return SubIds::Unreadable(e.to_string()),
    };
    let mut by_uid = false;
    for line in text.lines() {
        let mut parts = line.trim().splitn(3, ':');
        let (Some(name), Some(start), Some(count)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.trim().parse::<u64>()) else {
            continue;
        };
        if name == user {
            return SubIds::Range { start, count };
        }
        if name == uid.to_string() {
            by_uid = true;
        }
    }
    if by_uid {
        SubIds::ByUidOnly
    } else {
        SubIds::Missing
    }
}

/// The first 65536-aligned id at or above 100000 past every range in the
/// given subuid/subgid texts (what `ci/install-deps` picks too).
pub fn free_subid(texts: &[&str]) -> u64 {
    let mut end = 100_000u64;
    for text in texts {
        for line in text.lines() {
            let mut parts = line.trim().splitn(3, ':').skip(1);
            if let (Some(Ok(start)), Some(Ok(count))) = (
                parts.next().map(str::parse::<u64>),
                parts.next().map(|c| c.trim().parse::<u64>()),
            ) {
                end = end.max(start.saturating_add(count));
            }
        }
    }
    end.div_ceil(RANGE) * RANGE
}

/// The login name of `uid` (through NSS, as mmdebstrap's getpwuid does).
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids);
    // getpwuid_r only fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives `pwd`'s use.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_string)
}

/// A child process creates a user namespace and maps the user to root in it
/// (the step Ubuntu's AppArmor restriction denies), then execs `true`.
fn probe_userns(uid: u32) -> Probe {
    use std::os::unix::process::CommandExt;
    let Some(true_bin) = super::build::find_tool("true") else {
        return Probe::NotRun("no `true` executable".into());
    };
    // Prepared before the fork: the child only makes system calls.
    let map = format!("0 {uid} 1");
    let mut cmd = Command::new(true_bin);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (unshare, open, write, close) on data
    // prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(c"/proc/self/uid_map".as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, map.as_ptr().cast(), map.len());
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != map.len() as isize {
                return Err(err);
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Probe::Ok,
        Ok(s) => Probe::Failed(format!("the probe child exited with {s}")),
        Err(e) if e.raw_os_error().is_some() => Probe::Failed(format!(
            "creating a user namespace and mapping uid {uid} in it failed ({e})"
        )),
        Err(e) => Probe::Failed(e.to_string()),
    }
}

/// `unshare --user --map-root-user --map-auto true`: newuidmap and newgidmap
/// map the user's subordinate ranges, as mmdebstrap's unshare mode does.
fn probe_subid_map() -> Probe {
    let Some(unshare) = super::build::find_tool("unshare") else {
        return Probe::NotRun("no unshare (util-linux)".into());
    };
    let out = Command::new(unshare)
        .args(["--user", "--map-root-user", "--map-auto", "true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Probe::Ok,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
            // util-linux before 2.38 has no --map-auto: no verdict.
            if err.contains("unrecognized option") || err.contains("invalid option") {
                Probe::NotRun(err)
            } else {
                Probe::Failed(if err.is_empty() {
                    format!("unshare --map-auto exited with {}", o.status)
                } else {
                    err
                })
            }
        }
        Err(e) => Probe::NotRun(format!("running unshare: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> HostFacts {
        HostFacts {
            euid: 1001,
            user: "dev".into(),
            newuidmap: true,
            newgidmap: true,
            subuid: SubIds::Range {
                start: 100000,
                count: 65536,
            },
            subgid: SubIds::Range {
                start: 100000,
                count: 65536,
            },
            free_subid: 196608,
            userns: Probe::Ok,
            subid_map: Probe::Ok,
            apparmor_restrict_userns: None,
            unprivileged_userns_clone: None,
            max_user_namespaces: Some(63000),
        }
    }

    fn problems(f: &HostFacts) -> Vec<Problem> {
        decide(f).unwrap_err().problems
    }

    #[test]
    fn root_is_root_mode_whatever_else() {
        let f = HostFacts {
            euid: 0,
            newuidmap: false,
            userns: Probe::Failed("x".into()),
            ..ready()
        };
        assert_eq!(decide(&f), Ok(ChrootMode::Root));
        assert_eq!(ChrootMode::Root.arg(), "root");
    }

    #[test]
    fn ordinary_user_with_everything_is_unshare() {
        assert_eq!(decide(&ready()), Ok(ChrootMode::Unshare));
        assert_eq!(ChrootMode::Unshare.arg(), "unshare");
        // A subid probe that could not run (old util-linux) is no verdict.
        let f = HostFacts {
            subid_map: Probe::NotRun("unrecognized option '--map-auto'".into()),
            ..ready()
        };
        assert_eq!(decide(&f), Ok(ChrootMode::Unshare));
    }

    #[test]
    fn missing_uidmap_says_install_it() {
        let f = HostFacts {
            newuidmap: false,
            newgidmap: false,
            ..ready()
        };
        let p = problems(&f);
        assert_eq!(
            p,
            [Problem::NoUidmap {
                missing: vec!["newuidmap", "newgidmap"]
            }]
        );
        let msg = decide(&f).unwrap_err().to_string();
        assert!(msg.contains("sudo apt-get install uidmap"), "{msg}");
        assert!(msg.contains("as dev (not root)"), "{msg}");
    }

    #[test]
    fn missing_ranges_give_the_usermod_command() {
        let f = HostFacts {
            subuid: SubIds::Missing,
            subgid: SubIds::Missing,
            ..ready()
        };
        let msg = decide(&f).unwrap_err().to_string();
        assert!(
            msg.contains(
                "sudo usermod --add-subuids 196608-262143 --add-subgids 196608-262143 dev"
            ),
            "{msg}"
        );
        assert!(msg.contains("sudo ci/install-deps"), "{msg}");
        // Only the missing file gets its flag.
        let f = HostFacts {
            subgid: SubIds::Missing,
            ..ready()
        };
        let msg = decide(&f).unwrap_err().to_string();
        assert!(
            msg.contains("sudo usermod --add-subgids 196608-262143 dev"),
            "{msg}"
        );
        assert!(!msg.contains("--add-subuids"), "{msg}");
        // A range only under the uid: mmdebstrap would not find it.
        let f = HostFacts {
            subuid: SubIds::ByUidOnly,
            ..ready()
        };
        let msg = decide(&f).unwrap_err().to_string();
        assert!(msg.contains("by name"), "{msg}");
        // An empty range is no range.
        let f = HostFacts {
            subuid: SubIds::Range {
                start: 100000,
                count: 0,
            },
            ..ready()
        };
        assert!(decide(&f).is_err());
    }

    #[test]
    fn ubuntu_apparmor_restriction_gives_the_sysctl() {
        let f = HostFacts {
            userns: Probe::Failed("Operation not permitted".into()),
            subid_map: Probe::NotRun("prerequisites missing".into()),
            apparmor_restrict_userns: Some(true),
            ..ready()
        };
        let p = problems(&f);
        assert!(matches!(p.as_slice(), [Problem::AppArmor { .. }]), "{p:?}");
        let msg = decide(&f).unwrap_err().to_string();
        assert!(
            msg.contains("sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0"),
            "{msg}"
        );
    }

    #[test]
    fn other_userns_failures_name_their_knob() {
        let base = HostFacts {
            userns: Probe::Failed("Operation not permitted".into()),
            apparmor_restrict_userns: Some(false),
            ..ready()
        };
        let f = HostFacts {
            unprivileged_userns_clone: Some(false),
            ..base.clone()
        };
        assert!(
            decide(&f)
                .unwrap_err()
                .to_string()
                .contains("sudo sysctl kernel.unprivileged_userns_clone=1")
        );
        let f = HostFacts {
            max_user_namespaces: Some(0),
            ..base.clone()
        };
        assert!(
            decide(&f)
                .unwrap_err()
                .to_string()
                .contains("sudo sysctl user.max_user_namespaces=15000")
        );
        let p = problems(&base);
        assert!(
            matches!(p.as_slice(), [Problem::UsernsFailed { .. }]),
            "{p:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = HostFacts {
            newgidmap: false,
            subuid: SubIds::Missing,
            userns: Probe::Failed("EPERM".into()),
            apparmor_restrict_userns: Some(true),
            ..ready()
        };
        assert_eq!(problems(&f).len(), 3);
    }

    #[test]
    fn subid_map_failure_only_when_the_rest_is_fine() {
        let f = HostFacts {
            subid_map: Probe::Failed("newuidmap: write to uid_map failed".into()),
            ..ready()
        };
        let msg = decide(&f).unwrap_err().to_string();
        assert!(msg.contains("setuid root"), "{msg}");
        assert!(msg.contains("newuidmap: write to uid_map failed"), "{msg}");
    }

    #[test]
    fn subid_files_parse() {
        let text = Ok("root:200000:65536\ndev:100000:65536\n1002:300000:65536\nbad line\n".into());
        assert_eq!(
            sub_ids(&text, "dev", 1001),
            SubIds::Range {
                start: 100000,
                count: 65536
            }
        );
        assert_eq!(sub_ids(&text, "ci", 1002), SubIds::ByUidOnly);
        assert_eq!(sub_ids(&text, "nobody", 65534), SubIds::Missing);
        let absent = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(sub_ids(&absent, "dev", 1001), SubIds::Missing);
        let denied = Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(
            sub_ids(&denied, "dev", 1001),
            SubIds::Unreadable(_)
        ));
        assert_eq!(free_subid(&[]), 131072);
        assert_eq!(
            free_subid(&["dev:100000:65536\n", "x:165536:65536\n"]),
            262144
        );
    }

    /// The real host, as the user running the tests: root mode for root; for
    /// anyone else the probe's verdict must agree with what `unshare` says.
    #[test]
    fn real_host_probe_is_consistent() {
        let facts = HostFacts::probe();
        if facts.euid == 0 {
            assert_eq!(decide(&facts), Ok(ChrootMode::Root));
            return;
        }
        let unshare_ok = Command::new("unshare")
            .args(["--user", "--map-root-user", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert_eq!(facts.userns == Probe::Ok, unshare_ok, "{facts:?}");
    }
}
