//! The final root while it is assembled: [`Staging`] writes files, copies,
//! links and directories at their logical paths (merged-/usr), and the checks
//! run on the finished tree (directory modes, no shell or package manager).

use crate::image::ImageError;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Names that must not exist anywhere in the final root.
pub const FORBIDDEN_NAMES: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "busybox", "apt", "apt-get", "dpkg", "dpkg-deb", "rpm",
];

/// `/lib/...` → `/usr/lib/...` (the root is merged-/usr).
pub(super) fn usr_path(logical: &str) -> String {
    for top in ["/lib/", "/lib64/", "/bin/", "/sbin/"] {
        if logical.starts_with(top) {
            return format!("/usr{logical}");
        }
    }
    logical.to_string()
}

/// The final root being assembled on disk.
pub(super) struct Staging {
    pub(super) root: PathBuf,
}

impl Staging {
    pub(super) fn host(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    fn parent_dirs(&self, logical: &str) -> Result<PathBuf, ImageError> {
        let p = self.host(logical);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(ImageError::io(format!("creating {}", parent.display())))?;
        }
        Ok(p)
    }

    pub(super) fn write(&self, logical: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
        let p = self.parent_dirs(logical)?;
        fs::write(&p, data).map_err(ImageError::io(format!("writing {}", p.display())))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io(format!("chmod {}", p.display())))
    }

    pub(super) fn copy(&self, logical: &str, src: &Path) -> Result<(), ImageError> {
        let p = self.parent_dirs(logical)?;
        let meta =
            fs::metadata(src).map_err(ImageError::io(format!("reading {}", src.display())))?;
        // Keep the rwx bits, drop set-id bits.
        let mode = meta.permissions().mode() & 0o755;
        fs::copy(src, &p).map_err(ImageError::io(format!(
            "copying {} to {}",
            src.display(),
            p.display()
        )))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io(format!("chmod {}", p.display())))
    }

    pub(super) fn symlink(&self, logical: &str, target: &str) -> Result<(), ImageError> {
        let p = self.parent_dirs(logical)?;
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p)
            .map_err(ImageError::io(format!("symlink {}", p.display())))
    }

    pub(super) fn dir(&self, logical: &str) -> Result<(), ImageError> {
        let p = self.host(logical);
        fs::create_dir_all(&p).map_err(ImageError::io(format!("creating {}", p.display())))
    }
}

/// Every directory 0755, whatever the umask was.
pub(super) fn normalize_dirs(dir: &Path) -> Result<(), ImageError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io(format!("chmod {}", dir.display())))?;
    for e in fs::read_dir(dir).map_err(ImageError::io(format!("listing {}", dir.display())))? {
        let e = e.map_err(ImageError::io(format!("listing {}", dir.display())))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            normalize_dirs(&e.path())?;
        }
    }
    Ok(())
}

/// Paths (relative to `root`) whose name is a shell or a package manager.
pub fn forbidden_entries(root: &Path) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(ImageError::io(format!("listing {}", dir.display())))? {
            let e = e.map_err(ImageError::io(format!("listing {}", dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if FORBIDDEN_NAMES.contains(&name.as_str()) {
                out.push(format!(
                    "/{}",
                    path.strip_prefix(root).unwrap_or(&path).display()
                ));
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_merge_paths() {
        assert_eq!(
            usr_path("/lib/x86_64-linux-gnu/libc.so.6"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            usr_path("/lib64/ld-linux-x86-64.so.2"),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(usr_path("/usr/bin/etcd"), "/usr/bin/etcd");
        assert_eq!(usr_path("/library/x"), "/library/x");
    }

    #[test]
    fn shells_and_package_managers_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/etcd"), b"x").unwrap();
        assert!(forbidden_entries(root).unwrap().is_empty());
        std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
        fs::write(root.join("usr/bin/dpkg"), b"x").unwrap();
        assert_eq!(
            forbidden_entries(root).unwrap(),
            ["/usr/bin/dpkg", "/usr/bin/sh"]
        );
    }
}
