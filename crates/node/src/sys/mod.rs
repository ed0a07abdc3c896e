//! The seam for privileged OS calls: mount, umount, move mount, chroot, chdir,
//! finit_module, sethostname, reboot, network ioctls, running a helper to
//! completion. [`RealSys`] does the real thing through libc; in unit tests
//! `fake::FakeSys` records every call (and can be told to fail some) so the
//! boot logic is tested without root. The fake is compiled for tests only:
//! machined holds no test double.
//!
//! Plain file reads and writes (sysfs, procfs, config files) are not behind this
//! trait: the callers take a root directory instead, which tests point at a
//! temporary directory.
//!
//! | module | owns |
//! |---|---|
//! | this module | the [`Sys`] trait, mount [`flags`], [`PowerAction`], [`prefix_to_mask`] |
//! | [`real`] | [`RealSys`]: libc calls, C strings, the network ioctls |
//! | `fake` (tests) | `FakeSys` and its recorded `Call`s |

#[cfg(test)]
mod fake;
pub mod real;

#[cfg(test)]
pub use fake::{Call, FakeSys};
pub use real::RealSys;

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
/// `mount(2)` flags used by machined (the kernel's `MS_*` values).
pub mod flags {
    pub const RDONLY: u64 = libc::MS_RDONLY;
    pub const NOSUID: u64 = libc::MS_NOSUID;
    pub const NODEV: u64 = libc::MS_NODEV;
    pub const NOEXEC: u64 = libc::MS_NOEXEC;
    pub const RELATIME: u64 = libc::MS_RELATIME;
    pub const NOATIME: u64 = libc::MS_NOATIME;
    pub const MOVE: u64 = libc::MS_MOVE;
}

/// What to do with the machine at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

/// The arguments of one `mount(2)`, named: three of them are strings that
/// are easily swapped when given in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount<'a> {
    pub source: &'a str,
    pub target: &'a Path,
    pub fstype: &'a str,
    /// [`flags`] (`MS_*`).
    pub flags: u64,
    /// The filesystem-specific option string (may be empty).
    pub data: &'a str,
}

/// Privileged operations, one method per system call (or small group of them).
pub trait Sys: Send + Sync {
    /// `mount(2)`.
    fn mount(&self, m: &Mount<'_>) -> io::Result<()>;
    /// `umount2(2)`; `detach` adds `MNT_DETACH`.
    fn umount(&self, target: &Path, detach: bool) -> io::Result<()>;
    /// `mount(from, to, NULL, MS_MOVE, NULL)`.
    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn chroot(&self, path: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `finit_module(2)` of an open (decompressed) `.ko` file.
    fn finit_module(&self, module: &std::fs::File) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Sets an interface up (`SIOCSIFFLAGS` with `IFF_UP`).
    fn link_up(&self, ifname: &str) -> io::Result<()>;
    /// Sets an interface's IPv4 address and prefix (`SIOCSIFADDR`, `SIOCSIFNETMASK`).
    fn set_ipv4(&self, ifname: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()>;
    /// Adds a default route via `gateway` (`SIOCADDRT`).
    fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()>;
    /// Runs a helper program to completion (before the reaper owns children).
    fn run(&self, program: &Path, args: &[&str]) -> io::Result<std::process::ExitStatus>;
    /// `reboot(RB_DISABLE_CAD)`: Ctrl-Alt-Del becomes a SIGINT to PID 1.
    fn disable_cad(&self) -> io::Result<()>;
    fn sync(&self);
    /// `reboot(2)`; returns only on error.
    fn reboot(&self, action: PowerAction) -> io::Error;
}

/// Converts a prefix length (0..=32) to a netmask.
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    if p == 0 {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::from(u32::MAX << (32 - p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(prefix_to_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_to_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(prefix_to_mask(99), Ipv4Addr::BROADCAST);
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn fake_records_and_fails_on_request() {
        let s = FakeSys::new();
        s.fail_on("Hostname(\"bad\")", libc::EPERM);
        assert!(s.sethostname("good").is_ok());
        let e = s.sethostname("bad").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert_eq!(s.calls().len(), 2);
    }
}
