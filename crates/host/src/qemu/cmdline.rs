//! The QEMU command line of one node, built from a typed [`VmSpec`].
//!
//! Plain synchronous code: [`VmSpec::to_args`] returns the argv (without the
//! program name) as `OsString`s, ready for `std::process::Command::args`. Every
//! path goes into a QEMU key=value option, so commas in paths are escaped the
//! QEMU way (`,,`). The line is checked against QEMU 7.2 by the tests in
//! `qemu::tests` (QEMU is started with `-S` and quit through QMP).
//!
//! What the line contains, per node:
//! - direct kernel boot (`-kernel`, `-initrd`, `-append`);
//! - the shared read-only root squashfs (virtio-blk, `serial=ironclad-root`) and
//!   the node's qcow2 state disk (`serial=ironclad-state`); the guest finds them
//!   by serial under `/dev/disk/by-id/virtio-ironclad-*`;
//! - the machine config as fw_cfg `opt/ironclad/machine-config`;
//! - a user-mode NIC (`user0`) with `hostfwd` from `127.0.0.1:<port>` to the
//!   node API port 50000, `restrict=on` unless egress is enabled;
//! - optionally a NIC (`cl0`) on the cluster switch: `-netdev stream` as a
//!   client of the switch's unix socket (the switch must be listening before
//!   QEMU starts: QEMU 7.2's stream netdev does not reconnect);
//! - a virtio balloon that is never inflated, only there for free page
//!   reporting (`free-page-reporting=on`): the guest kernel hands the pages it
//!   frees (the initramfs, boot-time allocations, page cache it drops) back to
//!   QEMU, which discards them, so an idle node's resident memory shrinks to
//!   what the guest really uses instead of every page it ever touched;
//! - a QMP socket (QEMU listens), the serial console, no default devices, no
//!   user config, no display. The serial console goes either to a file QEMU
//!   writes itself ([`VmSpec::to_args`]: unbounded, for tests and tools) or
//!   into a pipe the caller passes as an inherited descriptor
//!   ([`VmSpec::to_args_with_serial_fd`]: `-add-fd` and a `file` chardev on
//!   `/dev/fdset/1`), which the cluster supervisor copies into a capped log.
//!
//! The guest is allowed to reboot in place (no `-no-reboot`); a guest power-off
//! ends the QEMU process. Which processes run and when is the cluster
//! supervisor's business, not this module's.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::accel::Accel;
use crate::network::MacAddr;

/// The TCP port the node API (apid) listens on inside the guest.
pub const GUEST_API_PORT: u16 = ironclad_contract::machine::API_PORT;
/// The virtio serial of the shared root squashfs drive.
pub const ROOT_DRIVE_SERIAL: &str = ironclad_contract::disks::ROOT_SERIAL;
/// The virtio serial of the per-node state disk.
pub const STATE_DRIVE_SERIAL: &str = ironclad_contract::disks::STATE_SERIAL;
/// The QEMU fd set that carries the serial console's pipe.
const SERIAL_FDSET: u32 = 1;
/// The smallest memory size accepted (MiB).
pub const MIN_MEMORY_MIB: u64 = 128;
/// The guest CPU under TCG: every feature QEMU emulates, except
/// `cmpxchg16b`. With it, QEMU 7.2's TCG (Debian 12's) now and then leaves
/// the guest's RFLAGS corrupted right after the kernel's SLUB allocator
/// swaps a freelist with `cmpxchg16b` (twice in our dev clusters' matrix
/// runs: a "double fault" in `__kmalloc_cache_noprof` and in
/// `kmem_cache_alloc_node_noprof`, RFLAGS with the VM and AC bits set and
/// its middle bytes those of RAX), and the node's kernel panics and the
/// node reboots. Without the feature the kernel swaps freelists under a
/// lock instead. KVM runs the host's real CPU and keeps it.
pub const TCG_CPU: &str = "max,cx16=off";

/// QEMU machine type. A parameter because it trades boot speed against
/// compatibility: `microvm` has no PCI bus and no firmware tables to scan,
/// `pc` (i440FX) is the most widely tested, `q35` is the modern PCIe board.
///
/// Measured here (QEMU 7.2 TCG, Debian's 6.12 kernel, kernel start to the
/// root-mount panic, busy host): `q35` and `pc` are within noise of each other
/// (6.2–7.9 s uptime); `microvm` accepts this command line but the kernel stalls
/// at TSC calibration under TCG ("No reference (HPET/PMTIMER) available"), even
/// with `pit=on,pic=on,rtc=on`, so it is not the default.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    #[default]
    Q35,
    Pc,
    Microvm,
}

impl MachineType {
    /// The name given to `-machine`.
    pub fn qemu_name(self) -> &'static str {
        match self {
            MachineType::Q35 => "q35",
            MachineType::Pc => "pc",
            MachineType::Microvm => "microvm",
        }
    }

    /// virtio devices hang off PCI on `pc`/`q35`, off virtio-mmio on `microvm`.
    fn virtio(self, kind: &str) -> String {
        match self {
            MachineType::Microvm => format!("virtio-{kind}-device"),
            MachineType::Q35 | MachineType::Pc => format!("virtio-{kind}-pci"),
        }
    }
}

/// The user-mode NIC: the host's way in to the node API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNic {
    pub mac: MacAddr,
    /// `restrict=on`: the guest cannot reach anything outside QEMU's user network
    /// (hostfwd still works). Off only when the cluster enables egress.
    pub restrict: bool,
    /// The port on 127.0.0.1 forwarded to the guest's API port.
    pub host_api_port: u16,
}

/// The NIC on the cluster switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNic {
    pub mac: MacAddr,
    /// The switch's listening socket for this node (`<dir>/sw-<node>.sock`).
    pub socket: PathBuf,
}

/// Everything QEMU needs to run one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The VM's name (`-name`); the node name.
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub machine: MachineType,
    pub accel: Accel,
    /// Under TCG, the size of the translated-code cache in MiB (`tb-size`);
    /// `None` keeps QEMU's default (1 GiB, filled as code is translated: about
    /// 170 MiB of resident memory after a node boots). Ignored under KVM.
    pub tcg_tb_size_mib: Option<u32>,
    /// The shared root squashfs, attached read-only.
    pub root_image: PathBuf,
    /// The node's qcow2 state disk.
    pub state_disk: PathBuf,
    /// The rendered machine config, handed over by fw_cfg.
    pub machine_config: PathBuf,
    pub user_nic: UserNic,
    pub cluster_nic: Option<ClusterNic>,
    /// Where QEMU listens for QMP.
    pub qmp_socket: PathBuf,
    /// Where the serial console ends up: written by QEMU with
    /// [`VmSpec::to_args`], by the caller with [`VmSpec::to_args_with_serial_fd`].
    pub serial_log: PathBuf,
}

/// Why a [`VmSpec`] cannot become a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("a VM needs at least one CPU")]
    NoCpus,
    #[error("{mib} MiB of memory is below the minimum of {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall { mib: u64 },
    #[error("the host API port must not be 0")]
    NoApiPort,
    #[error("VM name {0:?} is empty or has characters QEMU cannot take")]
    BadName(String),
    #[error("the {what} path is empty")]
    EmptyPath { what: &'static str },
}

/// Escapes a value for a QEMU `key=value,...` option: a comma is doubled.
fn escape(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Builds one option value from text parts and escaped paths.
struct Opt(OsString);

impl Opt {
    fn new(s: &str) -> Self {
        Opt(OsString::from(s))
    }
    fn s(mut self, s: &str) -> Self {
        self.0.push(s);
        self
    }
    fn path(mut self, p: &std::path::Path) -> Self {
        self.0.push(escape(p.as_os_str()));
        self
    }
}

impl VmSpec {
    fn check(&self) -> Result<(), CmdlineError> {
        if self.cpus == 0 {
            return Err(CmdlineError::NoCpus);
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(CmdlineError::MemoryTooSmall {
                mib: self.memory_mib,
            });
        }
        if self.user_nic.host_api_port == 0 {
            return Err(CmdlineError::NoApiPort);
        }
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return Err(CmdlineError::BadName(self.name.clone()));
        }
        let paths = [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("root image", &self.root_image),
            ("state disk", &self.state_disk),
            ("machine config", &self.machine_config),
            ("QMP socket", &self.qmp_socket),
            ("serial log", &self.serial_log),
        ];
        for (what, p) in paths {
            if p.as_os_str().is_empty() {
                return Err(CmdlineError::EmptyPath { what });
            }
        }
        if let Some(nic) = &self.cluster_nic
            && nic.socket.as_os_str().is_empty()
        {
            return Err(CmdlineError::EmptyPath {
                what: "switch socket",
            });
        }
        Ok(())
    }

    /// The argv after the program name; QEMU writes the serial console to
    /// [`VmSpec::serial_log`] itself (as much as the guest prints).
    pub fn to_args(&self) -> Result<Vec<OsString>, CmdlineError> {
        self.args(None)
    }

    /// The argv after the program name, with the serial console written to
    /// the descriptor `fd` (the write end of a pipe that QEMU inherits: the
    /// caller clears its close-on-exec flag in the child). QEMU opens it
    /// through an fd set in append mode (a pipe cannot be truncated).
    pub fn to_args_with_serial_fd(
        &self,
        fd: std::os::fd::RawFd,
    ) -> Result<Vec<OsString>, CmdlineError> {
        self.args(Some(fd))
    }

    fn args(&self, serial_fd: Option<std::os::fd::RawFd>) -> Result<Vec<OsString>, CmdlineError> {
        self.check()?;
        let mut a = Args::default();
        self.machine_args(&mut a);
        self.boot_args(&mut a);
        self.disk_args(&mut a);
        self.nic_args(&mut a);
        self.memory_args(&mut a);
        self.control_args(&mut a, serial_fd);
        Ok(a.0)
    }

    /// The board: name, machine, accelerator, CPU, memory, no defaults.
    fn machine_args(&self, a: &mut Args) {
        a.opt("-name", format!("guest={}", self.name));
        a.opt("-machine", self.machine.qemu_name());
        let accel = match (self.accel, self.tcg_tb_size_mib) {
            (Accel::Tcg, Some(mib)) => format!("tcg,tb-size={mib}"),
            (a, _) => a.qemu_name().to_string(),
        };
        a.opt("-accel", accel);
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => TCG_CPU,
        };
        a.opt("-cpu", cpu);
        a.opt("-smp", self.cpus.to_string());
        a.opt("-m", format!("{}M", self.memory_mib));
        a.flag("-nodefaults");
        a.flag("-no-user-config");
        a.opt("-display", "none");
    }

    /// Direct kernel boot.
    fn boot_args(&self, a: &mut Args) {
        a.opt("-kernel", self.kernel.clone());
        a.opt("-initrd", self.initrd.clone());
        a.opt("-append", self.append.clone());
    }

    /// The read-only root, the state disk and the machine config (fw_cfg).
    fn disk_args(&self, a: &mut Args) {
        let blk = self.machine.virtio("blk");
        a.opt(
            "-drive",
            Opt::new("if=none,id=root,format=raw,readonly=on,file=")
                .path(&self.root_image)
                .0,
        );
        a.opt(
            "-device",
            format!("{blk},drive=root,serial={ROOT_DRIVE_SERIAL}"),
        );
        a.opt(
            "-drive",
            Opt::new("if=none,id=state,format=qcow2,discard=unmap,file=")
                .path(&self.state_disk)
                .0,
        );
        a.opt(
            "-device",
            format!("{blk},drive=state,serial={STATE_DRIVE_SERIAL}"),
        );
        a.opt(
            "-fw_cfg",
            Opt::new("name=")
                .s(crate::machine::FW_CFG_NAME)
                .s(",file=")
                .path(&self.machine_config)
                .0,
        );
    }

    /// The user-mode NIC and, when there is one, the NIC on the cluster switch.
    fn nic_args(&self, a: &mut Args) {
        let net = self.machine.virtio("net");
        let u = &self.user_nic;
        a.opt(
            "-netdev",
            format!(
                "user,id=user0,restrict={},hostfwd=tcp:127.0.0.1:{}-:{GUEST_API_PORT}",
                if u.restrict { "on" } else { "off" },
                u.host_api_port
            ),
        );
        a.opt("-device", format!("{net},netdev=user0,mac={}", u.mac));
        if let Some(c) = &self.cluster_nic {
            a.opt(
                "-netdev",
                Opt::new("stream,id=cl0,server=off,addr.type=unix,addr.path=")
                    .path(&c.socket)
                    .0,
            );
            a.opt("-device", format!("{net},netdev=cl0,mac={}", c.mac));
        }
    }

    /// The balloon for free page reporting. It is never inflated (no target
    /// is ever set through QMP): with `free-page-reporting=on` the guest's
    /// `virtio_balloon` driver reports free blocks (order 9, 2 MiB, and up) and
    /// QEMU discards them (`MADV_DONTNEED`), so they stop counting in QEMU's
    /// resident memory until the guest uses them again.
    fn memory_args(&self, a: &mut Args) {
        let balloon = self.machine.virtio("balloon");
        a.opt(
            "-device",
            format!("{balloon},id=balloon0,free-page-reporting=on"),
        );
    }

    /// QMP and the serial console (a file, or the inherited pipe `serial_fd`).
    fn control_args(&self, a: &mut Args, serial_fd: Option<std::os::fd::RawFd>) {
        a.opt(
            "-chardev",
            Opt::new("socket,id=qmp0,server=on,wait=off,path=")
                .path(&self.qmp_socket)
                .0,
        );
        a.opt("-mon", "chardev=qmp0,mode=control");
        match serial_fd {
            None => a.opt(
                "-chardev",
                Opt::new("file,id=serial0,path=").path(&self.serial_log).0,
            ),
            Some(fd) => {
                a.opt("-add-fd", format!("fd={fd},set={SERIAL_FDSET}"));
                a.opt(
                    "-chardev",
                    format!("file,id=serial0,path=/dev/fdset/{SERIAL_FDSET},append=on"),
                );
            }
        }
        a.opt("-serial", "chardev:serial0");
    }
}

/// The argv being built.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    /// `flag value`.
    fn opt(&mut self, flag: &str, value: impl Into<OsString>) {
        self.0.push(flag.into());
        self.0.push(value.into());
    }

    /// A flag without a value.
    fn flag(&mut self, flag: &str) {
        self.0.push(flag.into());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec with every part set, used by the golden test and the QEMU tests.
    pub(crate) fn sample(dir: &std::path::Path) -> VmSpec {
        VmSpec {
            name: "cp-1".into(),
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initramfs"),
            append: "console=ttyS0 quiet".into(),
            cpus: 2,
            memory_mib: 1024,
            machine: MachineType::Q35,
            accel: Accel::Tcg,
            tcg_tb_size_mib: None,
            root_image: dir.join("rootfs.squashfs"),
            state_disk: dir.join("cp-1/state.qcow2"),
            machine_config: dir.join("cp-1/machine-config.yaml"),
            user_nic: UserNic {
                mac: "52:54:00:00:01:01".parse().unwrap(),
                restrict: true,
                host_api_port: 50001,
            },
            cluster_nic: Some(ClusterNic {
                mac: "52:54:00:00:02:01".parse().unwrap(),
                socket: dir.join("sw-cp-1.sock"),
            }),
            qmp_socket: dir.join("cp-1/qmp.sock"),
            serial_log: dir.join("cp-1/serial.log"),
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn golden_q35_tcg() {
        let args = sample(std::path::Path::new("/s")).to_args().unwrap();
        let want = "\
-name
guest=cp-1
-machine
q35
-accel
tcg
-cpu
max,cx16=off
-smp
2
-m
1024M
-nodefaults
-no-user-config
-display
none
-kernel
/s/vmlinux
-initrd
/s/initramfs
-append
console=ttyS0 quiet
-drive
if=none,id=root,format=raw,readonly=on,file=/s/rootfs.squashfs
-device
virtio-blk-pci,drive=root,serial=ironclad-root
-drive
if=none,id=state,format=qcow2,discard=unmap,file=/s/cp-1/state.qcow2
-device
virtio-blk-pci,drive=state,serial=ironclad-state
-fw_cfg
name=opt/ironclad/machine-config,file=/s/cp-1/machine-config.yaml
-netdev
user,id=user0,restrict=on,hostfwd=tcp:127.0.0.1:50001-:50000
-device
virtio-net-pci,netdev=user0,mac=52:54:00:00:01:01
-netdev
stream,id=cl0,server=off,addr.type=unix,addr.path=/s/sw-cp-1.sock
-device
virtio-net-pci,netdev=cl0,mac=52:54:00:00:02:01
-device
virtio-balloon-pci,id=balloon0,free-page-reporting=on
-chardev
socket,id=qmp0,server=on,wait=off,path=/s/cp-1/qmp.sock
-mon
chardev=qmp0,mode=control
-chardev
file,id=serial0,path=/s/cp-1/serial.log
-serial
chardev:serial0";
        assert_eq!(joined(&args), want);
    }

    #[test]
    fn serial_console_into_an_inherited_pipe() {
        let spec = sample(std::path::Path::new("/s"));
        let s = joined(&spec.to_args_with_serial_fd(9).unwrap());
        assert!(
            s.ends_with(
                "-add-fd\nfd=9,set=1\n-chardev\nfile,id=serial0,path=/dev/fdset/1,append=on\n-serial\nchardev:serial0"
            ),
            "{s}"
        );
        assert!(
            !s.contains("serial.log"),
            "QEMU does not write the log: {s}"
        );
    }

    #[test]
    fn golden_microvm_kvm_no_cluster_nic_egress() {
        let mut spec = sample(std::path::Path::new("/s"));
        spec.machine = MachineType::Microvm;
        spec.accel = Accel::Kvm;
        spec.cluster_nic = None;
        spec.user_nic.restrict = false;
        let s = joined(&spec.to_args().unwrap());
        assert!(s.contains("-machine\nmicrovm\n-accel\nkvm\n-cpu\nhost\n"));
        assert!(s.contains("virtio-blk-device,drive=root,serial=ironclad-root"));
        assert!(s.contains("virtio-net-device,netdev=user0,mac=52:54:00:00:01:01"));
        assert!(s.contains("user,id=user0,restrict=off,"));
        assert!(s.contains("virtio-balloon-device,id=balloon0,free-page-reporting=on"));
        assert!(!s.contains("cl0"));
        spec.tcg_tb_size_mib = Some(64);
        assert!(joined(&spec.to_args().unwrap()).contains("-accel\nkvm\n"));
        spec.accel = Accel::Tcg;
        assert!(joined(&spec.to_args().unwrap()).contains("-accel\ntcg,tb-size=64\n"));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut spec = sample(std::path::Path::new("/a,b"));
        spec.qmp_socket = "/a,b/q,mp.sock".into();
        let s = joined(&spec.to_args().unwrap());
        assert!(s.contains("file=/a,,b/rootfs.squashfs"));
        assert!(s.contains("path=/a,,b/q,,mp.sock"));
        assert!(s.contains("addr.path=/a,,b/sw-cp-1.sock"));
        // -kernel takes a plain path, not an option list.
        assert!(s.contains("-kernel\n/a,b/vmlinux"));
    }

    #[test]
    fn refuses_bad_specs() {
        let base = sample(std::path::Path::new("/s"));
        let mut s = base.clone();
        s.cpus = 0;
        assert_eq!(s.to_args(), Err(CmdlineError::NoCpus));
        let mut s = base.clone();
        s.memory_mib = 64;
        assert_eq!(s.to_args(), Err(CmdlineError::MemoryTooSmall { mib: 64 }));
        let mut s = base.clone();
        s.name = "a,b=c".into();
        assert!(matches!(s.to_args(), Err(CmdlineError::BadName(_))));
        let mut s = base.clone();
        s.user_nic.host_api_port = 0;
        assert_eq!(s.to_args(), Err(CmdlineError::NoApiPort));
        let mut s = base;
        s.kernel = PathBuf::new();
        assert_eq!(s.to_args(), Err(CmdlineError::EmptyPath { what: "kernel" }));
    }
}
