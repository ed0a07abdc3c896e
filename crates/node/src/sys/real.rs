//! [`RealSys`], the [`Sys`] of a real node: each method one system call (or
//! a few), through libc, with paths and names turned into C strings.

use super::{Mount, PowerAction, Sys, prefix_to_mask};
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    fn mount(&self, m: &Mount<'_>) -> io::Result<()> {
        let source = cstr(m.source)?;
        let target = cstr_path(m.target)?;
        let fstype = cstr(m.fstype)?;
        let data = cstr(m.data)?;
        // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                m.flags as libc::c_ulong,
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
