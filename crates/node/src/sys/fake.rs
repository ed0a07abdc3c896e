//! `FakeSys`, the recording [`Sys`] of the unit tests: every call is
//! appended to a log of [`Call`]s, and calls can be told to fail.

use super::{Mount, PowerAction, Sys};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    fn mount(&self, m: &Mount<'_>) -> io::Result<()> {
        self.record(Call::Mount {
            source: m.source.into(),
            target: m.target.into(),
            fstype: m.fstype.into(),
            flags: m.flags,
            data: m.data.into(),
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
