//! Stage 1, inside the initramfs: mount devtmpfs, proc and sysfs; load the
//! modules needed to reach the root disk; wait for the disk whose serial is
//! `ironclad-root`; mount it (squashfs, read-only) at `/newroot`; delete the
//! initramfs files; move `/dev`, `/proc`, `/sys` into the new root; do a real
//! switch_root (chdir, move `.` onto `/`, chroot `.`, chdir `/`). Stage 2
//! then runs in the same process: executing machined again from the
//! squashfs cost 0.7 s under TCG (paging 13 MB in through decompression).
//! Stage 2's early modules (`etc/ironclad/modules.early`: machine config,
//! state disk, /etc overlay, NICs) load from the initramfs on background
//! threads (one per group) while stage 1 loads its own (the image build keeps the two lists
//! apart); their files are opened before the initramfs is deleted. See `docs/image-layout.md`.
//!
//! Every path is joined to a root directory so the sequence is unit-tested
//! against a temporary directory with the recording fake (`sys::FakeSys`,
//! tests only); the real binary passes `/`.

use super::console;
use super::disks::{self, DiskError};
use super::modules::{self, ModuleError, Pending};
use super::sys::{Mount, Sys, flags};
use ironclad_contract::layout;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Module list inside the initramfs.
pub const MODULES_LIST: &str = layout::INITRAMFS_MODULES;
/// Stage 2's early modules inside the initramfs (loaded in the background).
pub const EARLY_LIST: &str = layout::INITRAMFS_EARLY_MODULES;
/// Flat module directory inside the initramfs.
pub const MODULES_DIR: &str = "lib/modules";
/// Where the root disk is mounted before the switch.
pub const NEWROOT: &str = "newroot";

/// Tunables of stage 1.
#[derive(Debug, Clone)]
pub struct Stage1 {
    /// The initramfs root (`/` for real).
    pub root: PathBuf,
    /// How long to wait for the root disk to appear.
    pub disk_timeout: Duration,
}

impl Default for Stage1 {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            disk_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether this process is stage 1: argv[0] is `/init`, or PID 1 in a tree
/// that has the initramfs module list but no image files.
pub fn is_stage1(argv0: &str, pid: u32, root: &Path) -> bool {
    argv0 == "/init"
        || (pid == 1
            && root.join(layout::rel(MODULES_LIST)).exists()
            && !root.join(layout::rel(layout::DATA_DIR)).exists())
}

impl Stage1 {
    fn p(&self, path: &str) -> PathBuf {
        self.root.join(layout::rel(path))
    }

    /// Runs stage 1 up to and including the switch to the new root; the
    /// caller goes on with stage 2 in the same process. With `bg`, stage 2's
    /// early modules load on background threads (without, now); the caller
    /// waits for them. On error the caller prints it and powers off.
    pub fn run(&self, sys: &dyn Sys, bg: Option<Arc<dyn Sys>>) -> Result<Pending, Stage1Error> {
        self.early_mounts(sys)?;
        let _ = console::attach(&self.p("dev/console"));
        console::phase(console::Phase::Stage1);
        // The image build makes sure that the two lists share no module.
        let early = self.start_early_modules(sys, bg)?;
        let report = modules::load_from(sys, &self.p(MODULES_LIST), &self.p(MODULES_DIR))?;
        for (m, e) in &report.failed {
            console::say(&format!("machined: module {m}: {e}"));
        }
        console::phase(console::Phase::Stage1Modules);
        let disk = disks::wait_for(&self.root, disks::ROOT_SERIAL, self.disk_timeout)?;
        self.mount_root(sys, &disk)?;
        console::phase(console::Phase::Stage1RootMounted);
        self.switch_root(sys)?;
        Ok(early)
    }

    /// Opens the early modules (before the initramfs is deleted) and starts
    /// loading them, one thread per group. No list: nothing to load.
    pub fn start_early_modules(
        &self,
        sys: &dyn Sys,
        bg: Option<Arc<dyn Sys>>,
    ) -> Result<Pending, Stage1Error> {
        let list = self.p(EARLY_LIST);
        let text = match std::fs::read_to_string(&list) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pending::None),
            Err(e) => {
                return Err(ModuleError::List {
                    path: list,
                    source: e,
                }
                .into());
            }
        };
        let dir = self.p(MODULES_DIR);
        let opened = modules::parse_groups(&text)?
            .iter()
            .map(|names| modules::open(names, &dir))
            .collect();
        Ok(Pending::start(sys, bg, opened))
    }

    /// Mounts devtmpfs, proc and sysfs.
    pub fn early_mounts(&self, sys: &dyn Sys) -> Result<(), Stage1Error> {
        for (src, dir, fstype, fl) in [
            ("devtmpfs", "dev", "devtmpfs", flags::NOSUID),
            (
                "proc",
                "proc",
                "proc",
                flags::NOSUID | flags::NODEV | flags::NOEXEC,
            ),
            (
                "sysfs",
                "sys",
                "sysfs",
                flags::NOSUID | flags::NODEV | flags::NOEXEC,
            ),
        ] {
            let target = self.p(dir);
            std::fs::create_dir_all(&target)
                .and_then(|()| {
                    sys.mount(&Mount {
                        source: src,
                        target: &target,
                        fstype,
                        flags: fl,
                        data: "",
                    })
                })
                .or_else(|e| {
                    // Already mounted (e.g. the kernel mounted devtmpfs itself).
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| Stage1Error::Os(format!("mount {fstype} at /{dir}"), e))?;
        }
        Ok(())
    }

    /// Mounts the root disk read-only at `/newroot`.
    pub fn mount_root(&self, sys: &dyn Sys, disk: &Path) -> Result<(), Stage1Error> {
        let newroot = self.p(NEWROOT);
        let src = disk.to_string_lossy();
        // The kernel sees the device under /dev, not under our test root.
        let src = match disk.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => src.into_owned(),
        };
        std::fs::create_dir_all(&newroot)
            .and_then(|()| {
                sys.mount(&Mount {
                    source: &src,
                    target: &newroot,
                    fstype: "squashfs",
                    flags: flags::RDONLY,
                    data: "",
                })
            })
            .map_err(|e| Stage1Error::Os(format!("mount {src} (squashfs) at /{NEWROOT}"), e))
    }

    /// Deletes the initramfs files, moves the API filesystems into the new root
    /// and switches root.
    pub fn switch_root(&self, sys: &dyn Sys) -> Result<(), Stage1Error> {
        let newroot = self.p(NEWROOT);
        delete_initramfs(&self.root).map_err(|e| Stage1Error::Os("delete initramfs".into(), e))?;
        for dir in ["dev", "proc", "sys"] {
            sys.move_mount(&self.p(dir), &newroot.join(dir))
                .map_err(|e| Stage1Error::Os(format!("move /{dir} into the new root"), e))?;
        }
        sys.chdir(&newroot)
            .map_err(|e| Stage1Error::Os("chdir /newroot".into(), e))?;
        sys.move_mount(Path::new("."), Path::new("/"))
            .map_err(|e| Stage1Error::Os("move the new root onto /".into(), e))?;
        sys.chroot(Path::new("."))
            .map_err(|e| Stage1Error::Os("chroot .".into(), e))?;
        sys.chdir(Path::new("/"))
            .map_err(|e| Stage1Error::Os("chdir /".into(), e))?;
        console::phase(console::Phase::Stage1SwitchRoot);
        Ok(())
    }
}

/// Removes everything in the initramfs except the mount points (`dev`, `proc`,
/// `sys`, `newroot`), without crossing into other filesystems.
pub fn delete_initramfs(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let root_dev = std::fs::symlink_metadata(root)?.dev();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_str(), Some("dev" | "proc" | "sys" | NEWROOT)) {
            continue;
        }
        remove_same_fs(&entry.path(), root_dev)?;
    }
    Ok(())
}

fn remove_same_fs(path: &Path, dev: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path)?;
    if md.dev() != dev {
        return Ok(());
    }
    if md.is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_same_fs(&entry?.path(), dev)?;
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Why stage 1 failed.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("{0}: {1}")]
    Os(String, std::io::Error),
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::tests::fake_disk;
    use crate::sys::{Call, FakeSys};

    fn initramfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc/ironclad")).unwrap();
        std::fs::write(
            r.join(layout::rel(MODULES_LIST)),
            "virtio_blk.ko\nsquashfs.ko\n",
        )
        .unwrap();
        std::fs::write(
            r.join(layout::rel(EARLY_LIST)),
            "jbd2.ko\next4.ko\n\noverlay.ko\n",
        )
        .unwrap();
        std::fs::create_dir_all(r.join("lib/modules")).unwrap();
        for m in [
            "virtio_blk.ko",
            "squashfs.ko",
            "jbd2.ko",
            "ext4.ko",
            "overlay.ko",
        ] {
            std::fs::write(r.join("lib/modules").join(m), b"elf").unwrap();
        }
        std::fs::write(r.join("init"), b"elf").unwrap();
        std::fs::create_dir_all(r.join("lib64")).unwrap();
        std::fs::write(r.join("lib64/ld.so"), b"elf").unwrap();
        fake_disk(r, "vda", "ironclad-state");
        fake_disk(r, "vdb", "ironclad-root");
        dir
    }

    #[test]
    fn detects_stage1() {
        let dir = initramfs();
        assert!(is_stage1("/init", 77, Path::new("/nonexistent")));
        assert!(is_stage1("machined", 1, dir.path()));
        assert!(!is_stage1("machined", 2, dir.path()));
        std::fs::create_dir_all(dir.path().join("usr/lib/ironclad")).unwrap();
        assert!(!is_stage1("/usr/sbin/machined", 1, dir.path()));
    }

    #[test]
    fn full_sequence_in_order() {
        let dir = initramfs();
        let r = dir.path().to_path_buf();
        let sys = FakeSys::new();
        let s1 = Stage1 {
            root: r.clone(),
            disk_timeout: Duration::from_millis(50),
        };
        // Early modules on a thread: it loads from files opened before the
        // initramfs was deleted.
        let bg = Arc::new(FakeSys::new());
        let early = s1.run(&sys, Some(bg.clone())).unwrap();
        let report = early.wait();
        assert_eq!(report.loaded, ["jbd2.ko", "ext4.ko", "overlay.ko"]);
        // Two groups, two threads: order is kept within a group only.
        let bg_calls = bg.calls();
        let at = |m: &str| {
            let want = Call::Module(r.join("lib/modules").join(m));
            bg_calls.iter().position(|c| *c == want).unwrap()
        };
        assert_eq!(bg_calls.len(), 3);
        assert!(at("jbd2.ko") < at("ext4.ko"));
        let calls = sys.calls();
        let mounts: Vec<(String, PathBuf, u64)> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    fstype,
                    target,
                    flags,
                    source,
                    ..
                } => Some((format!("{fstype}:{source}"), target.clone(), *flags)),
                _ => None,
            })
            .collect();
        assert_eq!(mounts[0].0, "devtmpfs:devtmpfs");
        assert_eq!(mounts[1].0, "proc:proc");
        assert_eq!(mounts[2].0, "sysfs:sysfs");
        // The root disk is found by serial (vdb), not by order, and mounted read-only.
        assert_eq!(mounts[3].0, "squashfs:/dev/vdb");
        assert_eq!(mounts[3].1, r.join("newroot"));
        assert_eq!(mounts[3].2 & flags::RDONLY, flags::RDONLY);
        let tail: Vec<Call> = calls
            .iter()
            .filter(|c| !matches!(c, Call::Mount { .. }))
            .cloned()
            .collect();
        assert_eq!(
            tail,
            vec![
                Call::Module(r.join("lib/modules/virtio_blk.ko")),
                Call::Module(r.join("lib/modules/squashfs.ko")),
                Call::Move(r.join("dev"), r.join("newroot/dev")),
                Call::Move(r.join("proc"), r.join("newroot/proc")),
                Call::Move(r.join("sys"), r.join("newroot/sys")),
                Call::Chdir(r.join("newroot")),
                Call::Move(PathBuf::from("."), PathBuf::from("/")),
                Call::Chroot(PathBuf::from(".")),
                Call::Chdir(PathBuf::from("/")),
            ]
        );
        // Initramfs files are gone; mount points stay.
        assert!(!r.join("init").exists());
        assert!(!r.join("lib64").exists());
        assert!(!r.join("etc").exists());
        assert!(r.join("dev").exists() && r.join("newroot").exists());
    }

    #[test]
    fn missing_root_disk_is_an_error_before_any_switch() {
        let dir = initramfs();
        std::fs::remove_dir_all(dir.path().join("sys/block/vdb")).unwrap();
        let sys = FakeSys::new();
        let s1 = Stage1 {
            root: dir.path().to_path_buf(),
            disk_timeout: Duration::from_millis(30),
        };
        let err = s1.run(&sys, None).unwrap_err();
        assert!(matches!(err, Stage1Error::Disk(_)), "{err}");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Chroot(_))));
        assert!(dir.path().join("init").exists());
    }

    #[test]
    fn already_mounted_devtmpfs_is_fine() {
        let dir = initramfs();
        let sys = FakeSys::new();
        sys.fail_on("devtmpfs", libc::EBUSY);
        let s1 = Stage1 {
            root: dir.path().to_path_buf(),
            disk_timeout: Duration::from_millis(30),
        };
        s1.early_mounts(&sys).unwrap();
    }
}
