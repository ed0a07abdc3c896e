//! The read-only root as a squashfs, written by `mksquashfs` (squashfs-tools)
//! with flags that make the output depend only on the tree's content: every
//! file owned by root, one fixed timestamp for files and the superblock, no
//! xattrs, lz4 compression (the Debian kernel has `CONFIG_SQUASHFS_LZ4=y`),
//! and squashfs-tools' own reproducible mode (its default since 4.4).

use std::path::Path;
use std::process::Command;

/// A problem running mksquashfs.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("cannot run mksquashfs: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("mksquashfs failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// The mksquashfs arguments after the source and destination.
pub fn mksquashfs_flags(epoch: u64) -> Vec<String> {
    let t = epoch.to_string();
    [
        "-noappend",
        "-comp",
        // lz4, not zstd: under TCG every page a node faults in from the root
        // costs the guest CPU the decompression of its whole block, and
        // etcd's, containerd's and runsc's binaries are read at every boot.
        // Measured on one node (`ironclad-bench --only node,etcd --runs 3`,
        // TCG, 2 cores): zstd level 6, 72.0 MB: etcd healthy at 5.58 s
        // uptime, containerd answering at 4.68 s; lz4 high compression,
        // 87.8 MB: 4.51 s and 4.04 s; no compression, 210 MB: 4.80 s and
        // 4.43 s (three times the bytes through virtio-blk).
        "lz4",
        "-Xhc",
        "-b",
        "1M",
        "-all-root",
        "-no-xattrs",
        "-reproducible",
        "-mkfs-time",
        &t,
        "-all-time",
        &t,
        "-quiet",
        "-no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Squashes `tree` into `out`.
pub fn make_squashfs(
    mksquashfs: &Path,
    tree: &Path,
    out: &Path,
    epoch: u64,
) -> Result<(), SquashfsError> {
    let output = Command::new(mksquashfs)
        .arg(tree)
        .arg(out)
        .args(mksquashfs_flags(epoch))
        .output()
        .map_err(SquashfsError::Spawn)?;
    if !output.status.success() {
        return Err(SquashfsError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_pin_time_owner_and_compression() {
        let f = mksquashfs_flags(1_735_689_600);
        let s = f.join(" ");
        assert!(s.contains("-all-root"));
        assert!(s.contains("-mkfs-time 1735689600"));
        assert!(s.contains("-all-time 1735689600"));
        assert!(s.contains("-comp lz4 -Xhc"));
        assert!(s.contains("-noappend"));
    }

    #[test]
    fn same_tree_gives_same_bytes() {
        let Ok(mk) = which("mksquashfs") else {
            panic!("mksquashfs (squashfs-tools) is required on the build host");
        };
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        std::fs::write(tree.join("usr/bin/x"), vec![3u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("usr/bin", tree.join("bin")).unwrap();
        let a = dir.path().join("a.sqfs");
        let b = dir.path().join("b.sqfs");
        make_squashfs(&mk, &tree, &a, 42).unwrap();
        // Touch the tree: timestamps must not matter.
        std::fs::write(tree.join("usr/bin/x"), vec![3u8; 100_000]).unwrap();
        make_squashfs(&mk, &tree, &b, 42).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(make_squashfs(&mk, &dir.path().join("missing"), &a, 42).is_err());
    }

    fn which(name: &str) -> Result<std::path::PathBuf, ()> {
        super::super::build::find_tool(name).ok_or(())
    }
}
