//! Disks: finds a virtio disk by its serial number (`/sys/block/vd*/serial`, as
//! set by QEMU's `-drive serial=`), waits for it with a deadline, and tells
//! whether a device already holds an ext4 filesystem (superblock magic 0xEF53 at
//! byte 1080). Never relies on probe order.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use ironclad_contract::disks::{ROOT_SERIAL, STATE_SERIAL};

/// Byte offset of the ext2/3/4 superblock magic.
const EXT4_MAGIC_OFFSET: u64 = 1080;
const EXT4_MAGIC: [u8; 2] = [0x53, 0xEF];

/// Looks for a `vd*` block device whose serial is `serial`; returns `/dev/<name>`
/// (relative to `root`).
pub fn find_by_serial(root: &Path, serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root.join("sys/block")).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let s = std::fs::read_to_string(root.join("sys/block").join(&name).join("serial")).ok()?;
        (s.trim() == serial).then(|| root.join("dev").join(&name))
    })
}

/// Polls [`find_by_serial`] until the disk shows up (and its device node
/// exists) or `timeout` passes.
pub fn wait_for(root: &Path, serial: &str, timeout: Duration) -> Result<PathBuf, DiskError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(dev) = find_by_serial(root, serial)
            && dev.exists()
        {
            return Ok(dev);
        }
        if Instant::now() >= deadline {
            return Err(DiskError::NotFound {
                serial: serial.to_string(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether the device (or image file) at `dev` carries an ext2/3/4 superblock.
pub fn has_ext4(dev: &Path) -> Result<bool, DiskError> {
    let io = |e: std::io::Error| DiskError::Read {
        path: dev.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::open(dev).map_err(io)?;
    f.seek(SeekFrom::Start(EXT4_MAGIC_OFFSET)).map_err(io)?;
    let mut magic = [0u8; 2];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == EXT4_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Why a disk could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "no disk with serial {serial:?} after {waited:?} (is the QEMU -drive given serial={serial}?)"
    )]
    NotFound { serial: String, waited: Duration },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Creates `sys/block/<name>/serial` and `dev/<name>` under `root`.
    pub(crate) fn fake_disk(root: &Path, name: &str, serial: &str) {
        let d = root.join("sys/block").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("serial"), serial).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev").join(name), b"").unwrap();
    }

    #[test]
    fn finds_by_serial_not_by_order() {
        let dir = tempfile::tempdir().unwrap();
        fake_disk(dir.path(), "vda", STATE_SERIAL);
        fake_disk(dir.path(), "vdb", ROOT_SERIAL);
        std::fs::create_dir_all(dir.path().join("sys/block/loop0")).unwrap();
        assert_eq!(
            find_by_serial(dir.path(), ROOT_SERIAL),
            Some(dir.path().join("dev/vdb"))
        );
        assert_eq!(
            wait_for(dir.path(), STATE_SERIAL, Duration::from_millis(10)).unwrap(),
            dir.path().join("dev/vda")
        );
    }

    #[test]
    fn wait_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = wait_for(dir.path(), ROOT_SERIAL, Duration::from_millis(20)).unwrap_err();
        assert!(e.to_string().contains("ironclad-root"), "{e}");
    }

    #[test]
    fn ext4_magic_detection() {
        let dir = tempfile::tempdir().unwrap();
        let blank = dir.path().join("blank");
        std::fs::write(&blank, vec![0u8; 4096]).unwrap();
        assert!(!has_ext4(&blank).unwrap());
        let short = dir.path().join("short");
        std::fs::write(&short, b"tiny").unwrap();
        assert!(!has_ext4(&short).unwrap());
        let mut img = vec![0u8; 4096];
        img[1080] = 0x53;
        img[1081] = 0xEF;
        let fs = dir.path().join("ext4");
        std::fs::write(&fs, img).unwrap();
        assert!(has_ext4(&fs).unwrap());
    }
}
