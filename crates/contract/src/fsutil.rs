//! Small filesystem helpers shared by every module that stores state:
//! atomic writes (temp file in the same directory, fsync, rename, fsync of the
//! directory) and private directories.
//!
//! The temporary file has a random name and is created exclusively
//! (`O_CREAT|O_EXCL`, through [`tempfile`]), so nothing planted beforehand
//! (a symlink at a guessable name, a file of someone else's) is ever opened
//! or followed; its mode is set before a single byte is written, so a secret
//! ([`write_secret`], 0600) is never readable by others, not even while it is
//! written.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `data` to `path` atomically with the given mode: the content goes to
/// a new temporary file beside `path` (random name, created exclusively, mode
/// set before writing), is synced, then renamed over `path`, and the directory
/// is synced so the rename survives a crash. A temporary file is removed when
/// anything fails.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_whole(path, data, mode, true)
}

/// As [`write_atomic`], but never replaces a file: when `path` exists (also
/// one that appeared while the data was written), the error is
/// [`io::ErrorKind::AlreadyExists`] and nothing is left behind.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_whole(path, data, mode, false)
}

fn write_whole(path: &Path, data: &[u8], mode: u32, replace: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp.");
    // O_EXCL (and so no symlink followed), mode 0600 from creation on.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    // The mode given at creation is filtered by the umask; set it exactly,
    // still before any data is written.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    // On an error the temporary file is dropped, which removes it.
    if replace {
        tmp.persist(path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    File::open(dir)?.sync_all()
}

/// Writes a secret (key, token): mode 0600, atomically.
pub fn write_secret(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic(path, data, 0o600)
}

/// Writes a public file (certificate, config without secrets): mode 0644, atomically.
pub fn write_public(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic(path, data, 0o644)
}

/// Creates `path` and its parents if needed and sets it to mode 0700.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_0600_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_secret(&p, b"one").unwrap();
        write_secret(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_at_the_old_temp_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        // The name the old write_atomic used, pointing at a file an attacker
        // would like to see overwritten (or read back with the secret in it).
        let victim = dir.path().join("victim");
        fs::write(&victim, b"untouched").unwrap();
        let planted = dir
            .path()
            .join(format!(".k.key.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        // A dangling one too (following it would create the target).
        let dangling_target = dir.path().join("created-through-link");
        std::os::unix::fs::symlink(&dangling_target, dir.path().join(".k.key.tmp")).unwrap();

        write_secret(&p, b"secret").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert!(!dangling_target.exists());
        assert!(
            fs::symlink_metadata(&planted)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let meta = fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file(), "a regular file, not the link");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        // No temporary file is left behind: the two links, the victim, the key.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 4);
    }

    #[test]
    fn modes_are_exact_when_a_file_is_replaced() {
        // The mode is the new file's own (created 0600, set before writing),
        // never inherited from the file it replaces.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.crt");
        write_public(&p, b"cert").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        write_secret(&p, b"key").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn failure_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should go: the rename fails.
        let p = dir.path().join("taken");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"x").unwrap();
        assert!(write_secret(&p, b"secret").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_dir_is_0700() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        create_private_dir(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
