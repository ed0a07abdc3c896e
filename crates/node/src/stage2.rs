//! Stage 2, the synchronous part of PID 1's boot: mount table, modules,
//! sysctls, machine config (fw_cfg), state disk (format on first boot, mount
//! at /var), writable /etc overlay, hostname, network and the containerd/CNI
//! configs. The async part (services, shutdown) is in [`super::pid1`].
//!
//! All paths are joined to [`Stage2::root`], so the whole sequence runs in unit
//! tests against a temporary directory with the recording fake
//! (`sys::FakeSys`, tests only).

use super::applied;
use super::console;
use super::containerd::{self, ContainerdError};
use super::disks::{self, DiskError};
use super::facts;
use super::modules::{self, ModuleError, Pending};
use super::mounts::{self, MountError};
use super::net::{self, NetError};
use super::sys::{Mount, Sys, flags};
use super::sysctl;
use crate::machine::{MachineConfig, MachineConfigError, mke2fs_args};
use ironclad_contract::layout;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Module list of the image.
pub const MODULES_LIST: &str = layout::ROOT_MODULES;
/// Image sysctls.
pub const SYSCTL_JSON: &str = layout::SYSCTL_JSON;
/// The machine config as exposed by the `qemu_fw_cfg` module.
pub const CONFIG_PATH: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/ironclad/machine-config/raw";
/// Tmpfs holding the /etc overlay's upper and work directories.
pub const ETC_OVERLAY: &str = "run/ironclad/etc";
/// The mke2fs of the image.
pub const MKE2FS: &str = "/usr/sbin/mke2fs";

/// Stage-2 tunables.
#[derive(Debug, Clone)]
pub struct Stage2 {
    /// `/` for real.
    pub root: PathBuf,
    /// `uname -r`, to find `/usr/lib/modules/<release>/ironclad`.
    pub kernel_release: String,
    /// Deadline for devices (state disk, NICs, fw_cfg entry) to appear.
    pub device_timeout: Duration,
}

/// What the synchronous boot produced.
#[derive(Debug)]
pub struct Prepared {
    /// The effective config (fw_cfg, or the one applied through the API).
    pub config: MachineConfig,
    /// SHA-256 of the fw_cfg config document.
    pub fw_cfg_digest: String,
    /// The boot counter on the state disk (1 on the first boot; 0 if unreadable).
    pub boot: u64,
    /// Whether the state disk was formatted during this boot.
    pub formatted: bool,
    /// Mounts to undo at shutdown, in order (node paths).
    pub unmount_at_shutdown: Vec<PathBuf>,
    /// The modules loading in the background, if any.
    pub late_modules: Option<std::thread::JoinHandle<modules::LoadReport>>,
    /// Sysctls of those modules (`net.bridge.*`), to apply once they are loaded.
    pub deferred_sysctls: BTreeMap<String, String>,
}

/// The state disk as found (and formatted) before it is mounted.
#[derive(Debug)]
pub struct StateDisk {
    /// Its device path as the kernel sees it (`/dev/vdb`).
    pub kernel_path: String,
    /// Whether it was formatted during this boot.
    pub formatted: bool,
}

/// Files read once in the background during stage 2, so that their squashfs
/// blocks are decompressed (on the other vCPU) by the time they are
/// executed: under TCG, paging a Go binary in from the squashfs is a good
/// part of its start time. containerd starts with the services; the shim,
/// runc and ctr are first used after it (prefetching all four, 111 MB,
/// slowed the state disk setup more than it saved).
pub const PREFETCH: &[&str] = &["usr/bin/containerd"];
/// Read first on a control plane: etcd starts on bootstrap, about half a
/// second after the services, and the cluster waits for it.
pub const PREFETCH_CONTROL_PLANE: &[&str] = &["usr/bin/etcd", "usr/bin/containerd"];

/// The CPU priority of the background thread that prefetches the services'
/// binaries and loads the root modules: below the boot's own path (nice 0),
/// the node API and containerd (0) and etcd (-10), which it shares one or
/// two vCPUs with. Nothing waits for it before `ready`; the pods' modules it
/// loads are waited for by the image import, which the matrix waits for.
pub const LATE_NICE: i32 = 10;

/// Sets the calling thread's nice value (Linux: `setpriority` on a thread
/// id is per thread). A failure only leaves the priority as it was.
pub fn lower_this_threads_priority(nice: i32) {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain syscall on this thread's id.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
}

/// Reads `paths` to the end (missing files are skipped) so that the data
/// lands in the page cache; returns the bytes read.
pub fn prefetch(paths: &[PathBuf]) -> u64 {
    use std::io::Read;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        let Ok(mut f) = std::fs::File::open(p) else {
            continue;
        };
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    total
}

/// Takes the sysctls provided by late modules (`net.bridge.*`, from
/// br_netfilter) out of `set`.
pub fn defer_module_sysctls(set: &mut BTreeMap<String, String>) -> BTreeMap<String, String> {
    let keys: Vec<String> = set
        .keys()
        .filter(|k| k.starts_with("net.bridge."))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| set.remove_entry(&k))
        .collect()
}

/// What `config` sets that `image` does not already set to the same value.
pub fn config_only_sysctls(
    image: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    config
        .iter()
        .filter(|(k, v)| image.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits for stage 1's early modules and says which failed and which were
/// slowest.
fn wait_early_modules(early: Pending) {
    let report = early.wait();
    for (m, e) in &report.failed {
        console::say(&format!("machined: module {m}: {e}"));
    }
    let slow: Vec<String> = report
        .slowest(3)
        .into_iter()
        .map(|(m, d)| format!("{m} {:.0}ms", d.as_secs_f64() * 1000.0))
        .collect();
    console::phase(console::Phase::Modules { slowest: slow });
}

/// Sysctls being applied on a thread ([`Stage2::apply_image_sysctls`],
/// [`Stage2::apply_config_sysctls`]).
struct PendingSysctls {
    applying: std::thread::JoinHandle<Vec<(String, String)>>,
    deferred: BTreeMap<String, String>,
}

impl PendingSysctls {
    /// `set`, less the sysctls of the image's modules (kept for after
    /// them), written under `root` on a thread of its own.
    fn spawn(root: &Path, mut set: BTreeMap<String, String>) -> Self {
        let deferred = defer_module_sysctls(&mut set);
        let root = root.to_path_buf();
        let applying = std::thread::spawn(move || sysctl::apply(&root, &set));
        PendingSysctls { applying, deferred }
    }

    /// `set` written once these are (so its values win), as above; the
    /// failures and the sysctls left for later are those of both.
    fn then(self, root: &Path, mut set: BTreeMap<String, String>) -> Self {
        let mut deferred = self.deferred;
        deferred.extend(defer_module_sysctls(&mut set));
        let root = root.to_path_buf();
        let before = self.applying;
        let applying = std::thread::spawn(move || {
            let mut failed = joined(before);
            failed.extend(sysctl::apply(&root, &set));
            failed
        });
        PendingSysctls { applying, deferred }
    }

    /// Waits until they are applied, says which failed, and returns those
    /// left for after the late modules.
    fn finish(self) -> BTreeMap<String, String> {
        let failed = joined(self.applying);
        for (k, e) in failed {
            console::say(&format!("machined: sysctl {k}: {e}"));
        }
        self.deferred
    }
}

/// What a thread applying sysctls says failed.
fn joined(applying: std::thread::JoinHandle<Vec<(String, String)>>) -> Vec<(String, String)> {
    applying.join().unwrap_or_else(|_| {
        vec![(
            "*".to_string(),
            "the thread applying them panicked".to_string(),
        )]
    })
}

/// The boot being counted on the state disk ([`Stage2::mount_state`]).
struct BootCount(std::thread::JoinHandle<u64>);

impl BootCount {
    /// Waits until the count is written and said; the count (0 when it
    /// could not be read or written).
    fn finish(self) -> u64 {
        self.0.join().unwrap_or_else(|_| {
            console::say("machined: boot counter: the thread counting it panicked");
            0
        })
    }
}

impl Stage2 {
    pub fn new() -> Self {
        Self {
            root: PathBuf::from("/"),
            kernel_release: kernel_release(),
            device_timeout: Duration::from_secs(10),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Runs the synchronous boot, printing a phase line after each step; every
    /// module of the image's list is loaded before it returns, and `early`
    /// (stage 1's) is waited for.
    pub fn prepare(&self, sys: &dyn Sys, early: Pending) -> Result<Prepared, Stage2Error> {
        self.prepare_with(sys, None, early)
    }

    /// As [`Stage2::prepare`], but with `late_sys` the image's modules (what
    /// pods need: bridge, netfilter, veth) load on a background thread
    /// ([`Prepared::late_modules`]), and the sysctls they provide
    /// ([`Prepared::deferred_sysctls`]) are left for after it.
    ///
    /// The state disk is formatted (mke2fs needs no ext4 module) while
    /// stage 1's early modules are still loading on the other vCPU; those are
    /// waited for before the machine config is read (`qemu_fw_cfg`).
    pub fn prepare_with(
        &self,
        sys: &dyn Sys,
        late_sys: Option<Arc<dyn Sys>>,
        early: Pending,
    ) -> Result<Prepared, Stage2Error> {
        self.mount_base(sys)?;
        let (late, image_sysctls) = self.read_image_lists()?;
        let image_applying = self.apply_image_sysctls(&image_sysctls);
        let state_dev = self.format_state_disk(sys)?;
        if state_dev.formatted {
            console::phase(console::Phase::StateDiskFormatted);
        }
        wait_early_modules(early);
        let mounts_text = std::fs::read_to_string(self.p("proc/self/mounts")).unwrap_or_default();
        console::say(&facts::root_fact(&mounts_text));

        let (fw_cfg, fw_cfg_text) = self.read_config()?;
        console::phase(console::Phase::Config);
        let late = self.load_late_modules(sys, late_sys, late, fw_cfg.etcd.is_some());
        let boot = self.mount_state(sys, &state_dev)?;
        let fw_cfg_digest = applied::digest(&fw_cfg_text);
        let config = self.effective_config(fw_cfg, &fw_cfg_text);
        let sysctls = self.apply_config_sysctls(image_applying, &image_sysctls, &config);
        let etc = self.etc_overlay(sys);
        // The sysctls are in before the hostname is set (it wins over a
        // `kernel.hostname` of the config) and before the network is
        // configured (a `net.*.default.*` applies to what that makes).
        let deferred_sysctls = sysctls.finish();
        console::phase(console::Phase::Sysctls);
        etc?;
        self.hostname(sys, &config)?;
        let boot = boot.finish();
        net::configure(sys, &self.root, &config, self.device_timeout)?;
        console::phase(console::Phase::Network);
        self.containerd_configs(&config)?;
        Ok(Prepared {
            late_modules: late,
            deferred_sysctls,
            config,
            fw_cfg_digest,
            boot,
            formatted: state_dev.formatted,
            unmount_at_shutdown: vec![PathBuf::from("/var")],
        })
    }

    /// The base mount table, and Ctrl-Alt-Del made a signal to PID 1.
    fn mount_base(&self, sys: &dyn Sys) -> Result<(), Stage2Error> {
        let mut mounted = mounts::current(&self.root);
        let soft = mounts::apply(sys, &self.root, mounts::BASE_TABLE, &mut mounted)?;
        for (t, e) in soft {
            console::say(&format!("machined: optional mount {t}: {e}"));
        }
        if let Err(e) = sys.disable_cad() {
            console::say(&format!("machined: RB_DISABLE_CAD: {e}"));
        }
        console::phase(console::Phase::Mounts);
        Ok(())
    }

    /// The image's module list and its sysctls (none when it has no file).
    fn read_image_lists(&self) -> Result<(Vec<String>, BTreeMap<String, String>), Stage2Error> {
        let list = self.p(MODULES_LIST);
        let text = std::fs::read_to_string(&list).map_err(|e| ModuleError::List {
            path: list.clone(),
            source: e,
        })?;
        let modules = modules::parse_list(&text)?;
        let sysctls = match std::fs::read_to_string(self.p(SYSCTL_JSON)) {
            Ok(t) => sysctl::parse_image_set(&t).map_err(Stage2Error::Sysctl)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(Stage2Error::Read(self.p(SYSCTL_JSON), e)),
        };
        Ok((modules, sysctls))
    }

    /// Loads the image's modules (what pods need: bridge, netfilter, veth).
    /// With `late_sys`, on one background thread (the other vCPU) that first
    /// reads the services' binaries; otherwise here, before it returns.
    fn load_late_modules(
        &self,
        sys: &dyn Sys,
        late_sys: Option<Arc<dyn Sys>>,
        names: Vec<String>,
        control_plane: bool,
    ) -> Option<std::thread::JoinHandle<modules::LoadReport>> {
        let moddir = self.p(&format!("usr/lib/modules/{}/ironclad", self.kernel_release));
        let Some(bg) = late_sys else {
            for (m, e) in &modules::load(sys, &names, &moddir).failed {
                console::say(&format!("machined: module {m}: {e}"));
            }
            return None;
        };
        let list = if control_plane {
            PREFETCH_CONTROL_PLANE
        } else {
            PREFETCH
        };
        let files: Vec<PathBuf> = list.iter().map(|p| self.p(p)).collect();
        Some(std::thread::spawn(move || {
            lower_this_threads_priority(LATE_NICE);
            prefetch(&files);
            modules::load(bg.as_ref(), &names, &moddir)
        }))
    }

    /// Mounts the state disk at /var, and counts this boot on a thread of
    /// its own (its write waits for the disk: two journal commits, about
    /// 30 ms of a TCG boot that the next steps do not need to wait for).
    fn mount_state(&self, sys: &dyn Sys, disk: &StateDisk) -> Result<BootCount, Stage2Error> {
        self.mount_state_disk(sys, &disk.kernel_path)?;
        console::phase(console::Phase::StateDiskMounted);
        let root = self.root.clone();
        let formatted = disk.formatted;
        Ok(BootCount(std::thread::spawn(move || {
            let boot = match facts::bump_boot_count(&root) {
                Ok(n) => n,
                Err(e) => {
                    console::say(&format!("machined: boot counter: {e}"));
                    0
                }
            };
            console::say(&facts::state_fact(formatted, boot));
            boot
        })))
    }

    /// The config of this boot: fw_cfg's, or one applied through the API
    /// over that same fw_cfg document.
    fn effective_config(&self, fw_cfg: MachineConfig, fw_cfg_text: &str) -> MachineConfig {
        let (config, choice) = applied::choose(&self.root, fw_cfg, fw_cfg_text);
        match choice {
            applied::Choice::None => {}
            applied::Choice::Stored => {
                console::say("machined: using the config applied through the API");
            }
            applied::Choice::Ignored(why) => {
                console::say(&format!("machined: applied config not used: {why}"));
            }
        }
        config
    }

    /// Applies the image's sysctls on a thread of their own, from the start
    /// of stage 2: they need neither the machine config nor the state disk,
    /// and some writes wait on the kernel rather than work (`kernel.sysrq`
    /// unregisters the SysRq input handler and waits for an RCU grace
    /// period, 33 ms of a TCG boot), so they go in while the state disk is
    /// formatted and stage 1's modules finish loading. Those of the image's
    /// modules (`net.bridge.*`) are left for after them
    /// ([`PendingSysctls::finish`] returns them, [`Prepared::deferred_sysctls`]).
    fn apply_image_sysctls(&self, image: &BTreeMap<String, String>) -> PendingSysctls {
        PendingSysctls::spawn(&self.root, image.clone())
    }

    /// Applies what the effective config sets other than the image did
    /// (usually nothing) once the image's (`image_applying`) are in, so
    /// that the config's values win.
    fn apply_config_sysctls(
        &self,
        image_applying: PendingSysctls,
        image: &BTreeMap<String, String>,
        config: &MachineConfig,
    ) -> PendingSysctls {
        image_applying.then(&self.root, config_only_sysctls(image, &config.sysctls))
    }

    /// The hostname (kernel and /etc/hostname) and /etc/resolv.conf, once
    /// /etc is writable ([`Stage2::etc_overlay`]).
    fn hostname(&self, sys: &dyn Sys, config: &MachineConfig) -> Result<(), Stage2Error> {
        sys.sethostname(&config.node.name)
            .map_err(|e| Stage2Error::Os("sethostname".into(), e))?;
        let _ = crate::fsutil::write_public(
            &self.p("etc/hostname"),
            format!("{}\n", config.node.name).as_bytes(),
        );
        // containerd copies it into every pod. Without egress there is no
        // resolver to name; with it, QEMU's user-net DNS.
        let resolv = if config.cluster.egress {
            "nameserver 10.0.2.3\n"
        } else {
            "# egress is off: this node and its pods resolve no names\n"
        };
        let _ = crate::fsutil::write_public(&self.p("etc/resolv.conf"), resolv.as_bytes());
        console::phase(console::Phase::EtcAndHostname);
        Ok(())
    }

    /// containerd's and the CNI's configs, after the previous boot's pod
    /// networks are forgotten.
    fn containerd_configs(&self, config: &MachineConfig) -> Result<(), Stage2Error> {
        if let Err(e) = containerd::forget_previous_pod_networks(&self.root) {
            console::say(&format!(
                "machined: cannot remove the previous boot's pod networks ({}): {e}",
                containerd::CNI_STATE
            ));
        }
        containerd::write_configs(&self.root, &config.containerd)?;
        Ok(())
    }

    /// Reads and parses the machine config from fw_cfg (waiting briefly for
    /// the entry); also returns the document's text.
    pub fn read_config(&self) -> Result<(MachineConfig, String), Stage2Error> {
        let path = self.p(CONFIG_PATH);
        let deadline = Instant::now() + self.device_timeout;
        let text = loop {
            match std::fs::read_to_string(&path) {
                Ok(t) => break t,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Stage2Error::NoConfig(path, e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        Ok((MachineConfig::from_document(&text)?, text))
    }

    /// Finds the state disk and formats it when it has no ext4 superblock.
    pub fn format_state_disk(&self, sys: &dyn Sys) -> Result<StateDisk, Stage2Error> {
        let dev = disks::wait_for(&self.root, disks::STATE_SERIAL, self.device_timeout)?;
        let kernel_dev = match dev.strip_prefix(&self.root) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => dev.clone(),
        };
        let kdev = kernel_dev.to_string_lossy().into_owned();
        if disks::has_ext4(&dev)? {
            return Ok(StateDisk {
                kernel_path: kdev,
                formatted: false,
            });
        }
        let st = sys
            .run(Path::new(MKE2FS), &mke2fs_args(&kdev))
            .map_err(|e| Stage2Error::Os(format!("run {MKE2FS}"), e))?;
        if !st.success() {
            return Err(Stage2Error::Format(kdev, st.to_string()));
        }
        Ok(StateDisk {
            kernel_path: kdev,
            formatted: true,
        })
    }

    /// Mounts the (formatted) state disk at /var and makes the directories
    /// the services need.
    pub fn mount_state_disk(&self, sys: &dyn Sys, kdev: &str) -> Result<(), Stage2Error> {
        let var = self.p("var");
        std::fs::create_dir_all(&var)
            .and_then(|()| {
                sys.mount(&Mount {
                    source: kdev,
                    target: &var,
                    fstype: "ext4",
                    flags: flags::NOSUID | flags::NODEV | flags::NOATIME,
                    data: "",
                })
            })
            .map_err(|e| Stage2Error::Os(format!("mount {kdev} (ext4) at /var"), e))?;
        for d in ["var/log", "var/lib/containerd"] {
            std::fs::create_dir_all(self.p(d))
                .map_err(|e| Stage2Error::Os(format!("mkdir /{d}"), e))?;
        }
        Ok(())
    }

    /// Makes /etc writable: an overlay with a tmpfs upper over the read-only /etc.
    pub fn etc_overlay(&self, sys: &dyn Sys) -> Result<(), Stage2Error> {
        let base = self.p(ETC_OVERLAY);
        let os = |what: &str, e| Stage2Error::Os(what.to_string(), e);
        std::fs::create_dir_all(&base).map_err(|e| os("mkdir overlay base", e))?;
        sys.mount(&Mount {
            source: "tmpfs",
            target: &base,
            fstype: "tmpfs",
            flags: flags::NOSUID | flags::NODEV,
            data: "mode=0755",
        })
        .map_err(|e| os("mount tmpfs for /etc overlay", e))?;
        for d in ["upper", "work"] {
            std::fs::create_dir_all(base.join(d)).map_err(|e| os("mkdir overlay dirs", e))?;
        }
        let data =
            format!("lowerdir=/etc,upperdir=/{ETC_OVERLAY}/upper,workdir=/{ETC_OVERLAY}/work");
        sys.mount(&Mount {
            source: "overlay",
            target: &self.p("etc"),
            fstype: "overlay",
            flags: flags::NOSUID | flags::NODEV,
            data: &data,
        })
        .map_err(|e| os("mount overlay on /etc", e))
    }
}

impl Default for Stage2 {
    fn default() -> Self {
        Self::new()
    }
}

/// Why stage 2 could not bring the node up.
#[derive(Debug, thiserror::Error)]
pub enum Stage2Error {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Sysctl(sysctl::SysctlError),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(
        "no machine config at {0} ({1}); start QEMU with -fw_cfg name=opt/ironclad/machine-config,file=..."
    )]
    NoConfig(PathBuf, std::io::Error),
    #[error(transparent)]
    Config(#[from] MachineConfigError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("formatting {0} failed: {1}")]
    Format(String, String),
    #[error("{0}: {1}")]
    Os(String, std::io::Error),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::tests::fake_disk;
    use crate::net::tests::{config, fake_nics};
    use crate::sys::{Call, FakeSys};

    fn node(formatted: bool) -> (tempfile::TempDir, Stage2) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let w = |path: &str, data: &[u8]| {
            let p = r.join(layout::rel(path));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        w(MODULES_LIST, b"qemu_fw_cfg.ko\next4.ko\noverlay.ko\n");
        for m in ["qemu_fw_cfg.ko", "ext4.ko", "overlay.ko"] {
            w(&format!("usr/lib/modules/6.12.0-test/ironclad/{m}"), b"elf");
        }
        w(
            SYSCTL_JSON,
            br#"{"kernel.kptr_restrict":"2","net.ipv4.ip_forward":"0"}"#,
        );
        w(CONFIG_PATH, config(false).to_yaml().unwrap().as_bytes());
        std::fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(r.join("proc/sys/net/ipv4")).unwrap();
        w(
            "proc/self/mountinfo",
            b"1 0 254:0 / / ro - squashfs /dev/vdb ro\n2 1 0:5 / /dev rw - devtmpfs devtmpfs rw\n3 1 0:6 / /proc rw - proc proc rw\n4 1 0:7 / /sys rw - sysfs sysfs rw\n",
        );
        fake_disk(r, "vda", "ironclad-root");
        fake_disk(r, "vdb", "ironclad-state");
        if formatted {
            let mut img = vec![0u8; 2048];
            img[1080] = 0x53;
            img[1081] = 0xEF;
            std::fs::write(r.join("dev/vdb"), img).unwrap();
        }
        fake_nics(r);
        let s2 = Stage2 {
            root: r.to_path_buf(),
            kernel_release: "6.12.0-test".into(),
            device_timeout: Duration::from_millis(30),
        };
        (dir, s2)
    }

    #[test]
    fn first_boot_formats_the_state_disk_and_sets_everything_up() {
        let (dir, s2) = node(false);
        let r = dir.path();
        let sys = FakeSys::new();
        let p = s2.prepare(&sys, Pending::None).unwrap();
        assert!(p.formatted);
        assert_eq!(p.config.node.name, "cp1");
        let calls = sys.calls();
        let pos = |pred: &dyn Fn(&Call) -> bool| calls.iter().position(pred).unwrap();
        // Modules from the versioned flat dir, in list order.
        let m0 = pos(&|c| matches!(c, Call::Module(_)));
        assert_eq!(
            calls[m0],
            Call::Module(r.join("usr/lib/modules/6.12.0-test/ironclad/qemu_fw_cfg.ko"))
        );
        // mke2fs on the disk with the state serial (vdb here), before the /var mount.
        let mk = pos(&|c| matches!(c, Call::Run(..)));
        assert_eq!(
            calls[mk],
            Call::Run(
                PathBuf::from(MKE2FS),
                mke2fs_args("/dev/vdb")
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            )
        );
        let var = pos(&|c| matches!(c, Call::Mount { fstype, .. } if fstype == "ext4"));
        assert!(mk < var);
        match &calls[var] {
            Call::Mount { source, target, .. } => {
                assert_eq!(source, "/dev/vdb");
                assert_eq!(target, &r.join("var"));
            }
            _ => unreachable!(),
        }
        let ov = pos(&|c| matches!(c, Call::Mount { fstype, .. } if fstype == "overlay"));
        match &calls[ov] {
            Call::Mount { target, data, .. } => {
                assert_eq!(target, &r.join("etc"));
                assert!(data.contains("lowerdir=/etc,upperdir=/run/ironclad/etc/upper"));
            }
            _ => unreachable!(),
        }
        assert!(calls.contains(&Call::Hostname("cp1".into())));
        assert!(calls.contains(&Call::LinkUp("lo".into())));
        // Base mounts skipped what was already there (proc, sys, dev).
        assert!(
            !calls
                .iter()
                .any(|c| matches!(c, Call::Mount { fstype, .. } if fstype == "proc"))
        );
        // Sysctls: image set with the config's override.
        let rd = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(rd("proc/sys/kernel/kptr_restrict"), "2");
        assert_eq!(rd("proc/sys/net/ipv4/ip_forward"), "1");
        assert!(rd("etc/containerd/config.toml").contains("ironclad.local/pause:1"));
        assert!(r.join("var/log").is_dir());
    }

    #[test]
    fn later_boots_keep_the_state_disk() {
        let (_dir, s2) = node(true);
        let sys = FakeSys::new();
        let p = s2.prepare(&sys, Pending::None).unwrap();
        assert!(!p.formatted);
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Run(..))));
    }

    #[test]
    fn missing_or_bad_config_is_fatal_with_a_hint() {
        let (dir, s2) = node(true);
        std::fs::remove_file(dir.path().join(CONFIG_PATH)).unwrap();
        let e = s2.prepare(&FakeSys::new(), Pending::None).unwrap_err();
        assert!(e.to_string().contains("-fw_cfg"), "{e}");
        std::fs::write(dir.path().join(CONFIG_PATH), "apiVersion: nope\n").unwrap();
        let e = s2.prepare(&FakeSys::new(), Pending::None).unwrap_err();
        assert!(matches!(e, Stage2Error::Config(_)), "{e}");
    }

    #[test]
    fn failed_format_stops_before_mounting() {
        let (_dir, s2) = node(false);
        let sys = FakeSys::new();
        sys.fail_on("mke2fs", libc::ENOENT);
        assert!(s2.prepare(&sys, Pending::None).is_err());
        assert!(
            !sys.calls()
                .iter()
                .any(|c| matches!(c, Call::Mount { fstype, .. } if fstype == "ext4"))
        );
    }

    #[test]
    fn the_background_thread_lowers_only_its_own_priority() {
        let prio = |tid: libc::pid_t| {
            // SAFETY: plain syscalls; errno is cleared first since -1..=19 are
            // all valid answers.
            unsafe {
                *libc::__errno_location() = 0;
                libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
            }
        };
        // SAFETY: gettid cannot fail.
        let me = unsafe { libc::gettid() };
        let before = prio(me);
        let (theirs, mine) = std::thread::spawn(move || {
            lower_this_threads_priority(before + 5);
            // SAFETY: gettid cannot fail.
            (prio(unsafe { libc::gettid() }), prio(me))
        })
        .join()
        .unwrap();
        assert_eq!(theirs, (before + 5).min(19));
        assert_eq!(mine, before, "the spawning thread keeps its priority");
    }

    /// The image's sysctls go in first and the config's after them: a
    /// value both set ends as the config's, what the config repeats is not
    /// written twice, and the bridge sysctls of either wait for their module.
    #[test]
    fn config_sysctls_follow_the_image_ones_and_win() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let image = map(&[
            ("kernel.kptr_restrict", "2"),
            ("net.ipv4.ip_forward", "0"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
        ]);
        let config = map(&[
            ("kernel.kptr_restrict", "2"),
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-ip6tables", "1"),
        ]);
        assert_eq!(
            config_only_sysctls(&image, &config),
            map(&[
                ("net.ipv4.ip_forward", "1"),
                ("net.bridge.bridge-nf-call-ip6tables", "1"),
            ])
        );
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            for d in ["kernel", "net/ipv4"] {
                std::fs::create_dir_all(r.join("proc/sys").join(d)).unwrap();
            }
            let deferred = PendingSysctls::spawn(r, image.clone())
                .then(r, config_only_sysctls(&image, &config))
                .finish();
            let rd = |p: &str| std::fs::read_to_string(r.join("proc/sys").join(p)).unwrap();
            assert_eq!(rd("net/ipv4/ip_forward"), "1");
            assert_eq!(rd("kernel/kptr_restrict"), "2");
            assert_eq!(
                deferred.keys().collect::<Vec<_>>(),
                [
                    "net.bridge.bridge-nf-call-ip6tables",
                    "net.bridge.bridge-nf-call-iptables"
                ]
            );
        }
    }

    #[test]
    fn prefetch_reads_what_exists_and_bridge_sysctls_wait_for_their_module() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, vec![7u8; 3 << 20]).unwrap();
        assert_eq!(prefetch(&[dir.path().join("missing"), f]), 3 << 20);
        let mut set: BTreeMap<String, String> = [
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.ipv4.ip_forward", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let later = defer_module_sysctls(&mut set);
        assert_eq!(set.keys().collect::<Vec<_>>(), ["net.ipv4.ip_forward"]);
        assert_eq!(
            later.keys().collect::<Vec<_>>(),
            ["net.bridge.bridge-nf-call-iptables"]
        );
    }
}
