//! The seam for privileged OS calls: mount, umount, move mount, chroot, chdir,
//! finit_module, sethostname, reboot, network ioctls, running a helper to
//! completion. [`RealSys`] does the real thing through libc;
//! [`FakeSys`] records every call (and can be told to fail some) so the boot
//! logic is unit-tested without root.
//!
//! Plain file reads and writes (sysfs, procfs, config files) are not behind this
//! trait: the callers take a root directory instead, which tests point at a
//! temporary directory.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Privileged operations, one method per system call (or small group of them).
pub trait Sys: Send + Sync {
    /// `mount(2)`; `data` is the filesystem-specific option string (may be empty).
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()>;
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

fn cstr_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real implementation, for PID 1 inside a node.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSys;

impl RealSys {
    fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
        let bytes = ifname.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {ifname:?}"),
            ));
        }
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        Ok(req)
    }

    fn inet_socket() -> io::Result<std::os::fd::OwnedFd> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }

    fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(addr).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size on Linux.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    }

    fn ioctl(req: libc::Ioctl, arg: *mut libc::c_void) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let sock = Self::inet_socket()?;
        // SAFETY: arg points to a live ifreq/rtentry owned by the caller.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), req, arg) })
    }
}

impl Sys for RealSys {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()> {
        let source = cstr(source)?;
        let target = cstr_path(target)?;
        let fstype = cstr(fstype)?;
        let data = cstr(data)?;
        // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags as libc::c_ulong,
                data.as_ptr().cast(),
            )
        })
    }

    fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let target = cstr_path(target)?;
        let flags = if detach { libc::MNT_DETACH } else { 0 };
        // SAFETY: valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = cstr_path(from)?;
        let to = cstr_path(to)?;
        // SAFETY: valid C strings; NULL fstype and data are allowed with MS_MOVE.
        check(unsafe {
            libc::mount(
                from.as_ptr(),
                to.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        })
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        let p = cstr_path(path)?;
        // SAFETY: valid C string.
        check(unsafe { libc::chroot(p.as_ptr()) })
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn finit_module(&self, module: &std::fs::File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let params = c"";
        // SAFETY: fd is open for the call; params is a valid empty C string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                module.as_raw_fd(),
                params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: pointer and length describe `name`.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn link_up(&self, ifname: &str) -> io::Result<()> {
        let mut req = Self::ifreq(ifname)?;
        Self::ioctl(libc::SIOCGIFFLAGS, (&raw mut req).cast())?;
        // SAFETY: the kernel filled ifru_flags.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        Self::ioctl(libc::SIOCSIFFLAGS, (&raw mut req).cast())
    }

    fn set_ipv4(&self, ifname: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut req = Self::ifreq(ifname)?;
        req.ifr_ifru.ifru_addr = Self::sockaddr_in(addr);
        Self::ioctl(libc::SIOCSIFADDR, (&raw mut req).cast())?;
        let mut req = Self::ifreq(ifname)?;
        req.ifr_ifru.ifru_netmask = Self::sockaddr_in(prefix_to_mask(prefix));
        Self::ioctl(libc::SIOCSIFNETMASK, (&raw mut req).cast())
    }

    fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        // SAFETY: rtentry is plain old data; all-zero is valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = Self::sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = Self::sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = Self::sockaddr_in(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        match Self::ioctl(libc::SIOCADDRT, (&raw mut rt).cast()) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    fn run(&self, program: &Path, args: &[&str]) -> io::Result<std::process::ExitStatus> {
        std::process::Command::new(program).args(args).status()
    }

    fn disable_cad(&self) -> io::Result<()> {
        // SAFETY: reboot(RB_DISABLE_CAD) only changes the Ctrl-Alt-Del behaviour.
        check(unsafe { libc::reboot(libc::RB_DISABLE_CAD) })
    }

    fn sync(&self) {
        // SAFETY: sync(2) has no arguments and cannot fail.
        unsafe { libc::sync() }
    }

    fn reboot(&self, action: PowerAction) -> io::Error {
        let cmd = match action {
            PowerAction::PowerOff => libc::RB_POWER_OFF,
            PowerAction::Reboot => libc::RB_AUTOBOOT,
        };
        // SAFETY: reboot(2) with a valid command; returns only on error.
        unsafe { libc::reboot(cmd) };
        io::Error::last_os_error()
    }
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

/// One recorded call of [`FakeSys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        flags: u64,
        data: String,
    },
    Umount(PathBuf),
    Move(PathBuf, PathBuf),
    Chroot(PathBuf),
    Chdir(PathBuf),
    Module(PathBuf),
    Hostname(String),
    LinkUp(String),
    Ipv4(String, Ipv4Addr, u8),
    DefaultRoute(Ipv4Addr),
    Run(PathBuf, Vec<String>),
    DisableCad,
    Sync,
    Reboot(PowerAction),
}

/// A recording fake: every call is appended to a log; calls whose rendering
/// contains one of the configured failure substrings return an error.
#[derive(Debug, Default)]
pub struct FakeSys {
    calls: Mutex<Vec<Call>>,
    fail: Mutex<Vec<(String, i32)>>,
}

impl FakeSys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call whose `Debug` rendering contains `needle` fail with `errno`.
    pub fn fail_on(&self, needle: &str, errno: i32) {
        if let Ok(mut f) = self.fail.lock() {
            f.push((needle.to_string(), errno));
        }
    }

    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: Call) -> io::Result<()> {
        let rendered = format!("{call:?}");
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
        let fail = self.fail.lock().map(|f| f.clone()).unwrap_or_default();
        match fail.iter().find(|(n, _)| rendered.contains(n.as_str())) {
            Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }
}

impl Sys for FakeSys {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.into(),
        })
    }
    fn umount(&self, target: &Path, _detach: bool) -> io::Result<()> {
        self.record(Call::Umount(target.into()))
    }
    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(Call::Move(from.into(), to.into()))
    }
    fn chroot(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chroot(path.into()))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.into()))
    }
    /// Records the file's path (from `/proc/self/fd`), even when its
    /// directory is gone by now.
    fn finit_module(&self, module: &std::fs::File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", module.as_raw_fd()))?;
        let shown = link.to_string_lossy();
        let path = shown.strip_suffix(" (deleted)").unwrap_or(&shown);
        self.record(Call::Module(PathBuf::from(path)))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Hostname(name.into()))
    }
    fn link_up(&self, ifname: &str) -> io::Result<()> {
        self.record(Call::LinkUp(ifname.into()))
    }
    fn set_ipv4(&self, ifname: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.record(Call::Ipv4(ifname.into(), addr, prefix))
    }
    fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        self.record(Call::DefaultRoute(gateway))
    }
    fn run(&self, program: &Path, args: &[&str]) -> io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        self.record(Call::Run(
            program.into(),
            args.iter().map(|a| a.to_string()).collect(),
        ))?;
        Ok(std::process::ExitStatus::from_raw(0))
    }
    fn disable_cad(&self) -> io::Result<()> {
        self.record(Call::DisableCad)
    }
    fn sync(&self) {
        let _ = self.record(Call::Sync);
    }
    fn reboot(&self, action: PowerAction) -> io::Error {
        let _ = self.record(Call::Reboot(action));
        io::Error::other("fake reboot")
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
