//! The image cache: where built images and mmdebstrap base trees live, their
//! keys, and listing and finding cached images.
//!
//! Layout: `<root>/images/<key>/{vmlinux,initramfs,rootfs.squashfs,manifest.json}`,
//! `<root>/base/<base-key>.tar` and `<root>/stages/gvisor-<stage-key>/` (the
//! gVisor stage's binaries and `stage.json`, see `gvisor`), with `<root>` = `$IRONCLAD_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/ironclad`, else `~/.cache/ironclad`. An image key is the
//! sha256 of the recipe's bytes and machined's bytes (so editing either gives a
//! new image); a base key is the sha256 of suite, variant and packages (so a
//! change to machined alone reuses the Debian tree).
//!
//! Trust: the root is created with mode 0700 and is used only when it is owned
//! by the user (or root) and not writable by group or others ([`open_root`],
//! [`check_root`]). A cached image is used only after every part's size and
//! sha256 match its manifest ([`verify`]): a cache hit costs one read of the
//! parts (about 100 MB), done once per `image build` or `create`.

use super::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped when the builder's output for the same inputs changes (v2: the
/// squashfs is lz4; v3: the initramfs is lz4 too; v4: the kernel is the ELF
/// `vmlinux`, booted through its PVH entry point).
const IMAGE_FORMAT: &str = "ironclad-image-v4";

/// The files of a built image.
pub const PARTS: &[&str] = &["vmlinux", "initramfs", "rootfs.squashfs"];

/// A problem with the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no cache directory: set IRONCLAD_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoHome,
    #[error("cannot read the image cache {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{prefix:?} matches several cached images: {}", keys.join(", "))]
    Ambiguous { prefix: String, keys: Vec<String> },
    #[error(
        "refusing the image cache {path}: it is {problem}, so someone else could swap the images you boot; {fix}, or set IRONCLAD_CACHE_DIR to a directory of your own"
    )]
    Untrusted {
        path: String,
        problem: super::trust::Untrusted,
        fix: String,
    },
    #[error(
        "the image cache {path} is not a directory; set IRONCLAD_CACHE_DIR to a directory of your own"
    )]
    NotADirectory { path: String },
}

impl CacheError {
    /// Whether the user must fix the cache location (bad input, not a failure).
    pub fn is_bad_input(&self) -> bool {
        match self {
            CacheError::Untrusted { .. }
            | CacheError::NotADirectory { .. }
            | CacheError::NoHome => true,
            CacheError::Io { .. } | CacheError::Ambiguous { .. } => false,
        }
    }
}

/// A cached part that does not match its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The part's file name (`rootfs.squashfs`).
    pub part: String,
    /// What is wrong, e.g. `sha256 ab12… but the manifest says cd34…`.
    pub detail: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.part, self.detail)
    }
}

/// The cache root from the environment.
#[expect(
    clippy::disallowed_methods,
    reason = "the XDG base directory rules are defined on the environment"
)]
pub fn cache_root() -> Result<PathBuf, CacheError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("IRONCLAD_CACHE_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(d.join("ironclad"));
    }
    var("HOME")
        .map(|h| h.join(".cache").join("ironclad"))
        .ok_or(CacheError::NoHome)
}

/// Checks the existing cache root `root` (see [`CacheError::Untrusted`]); a
/// root that does not exist yet is fine (nothing in it can be used).
pub fn check_root(root: &Path) -> Result<(), CacheError> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CacheError::Io {
                path: root.display().to_string(),
                source,
            });
        }
    };
    let path = root.display().to_string();
    if !meta.is_dir() {
        return Err(CacheError::NotADirectory { path });
    }
    super::trust::check(&meta).map_err(|problem| {
        let fix = if problem.is_mode() {
            format!("fix it with `chmod go-w {path}`")
        } else {
            format!(
                "fix it with `chown -R {} {path}` (as root)",
                super::trust::euid()
            )
        };
        CacheError::Untrusted { path, problem, fix }
    })
}

/// Creates the cache root (mode 0700, parents too) if it does not exist, then
/// checks it with [`check_root`]. The image build calls this before it reads or
/// writes anything under the root.
pub fn open_root(root: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::DirBuilderExt;
    if !root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|source| CacheError::Io {
                path: root.display().to_string(),
                source,
            })?;
    }
    check_root(root)
}

/// Checks every part of the image in `dir` against `manifest`: present, the
/// recorded size, the recorded sha256 (sizes first, so a truncated part costs
/// no hashing). Returns the first part that does not match.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<(), Damage> {
    let damage = |part: &str, detail: String| Damage {
        part: part.to_string(),
        detail,
    };
    for part in PARTS {
        let Some(want) = manifest.parts.get(*part) else {
            return Err(damage(part, "is not in the manifest".to_string()));
        };
        match std::fs::metadata(dir.join(part)) {
            Ok(m) if m.len() == want.size => {}
            Ok(m) => {
                return Err(damage(
                    part,
                    format!("is {} bytes but the manifest says {}", m.len(), want.size),
                ));
            }
            Err(e) => return Err(damage(part, format!("cannot be read ({e})"))),
        }
    }
    for part in PARTS {
        let want = &manifest.parts[*part];
        let got = super::manifest::hash_file(&dir.join(part))
            .map_err(|e| damage(part, format!("cannot be read ({e})")))?;
        if got.sha256 != want.sha256 {
            return Err(damage(
                part,
                format!(
                    "has sha256 {} but the manifest says {}",
                    got.sha256, want.sha256
                ),
            ));
        }
    }
    Ok(())
}

/// The key of an image built from `recipe` bytes and `machined` bytes.
pub fn image_key(recipe: &[u8], machined: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(IMAGE_FORMAT.as_bytes());
    h.update([0]);
    h.update((recipe.len() as u64).to_le_bytes());
    h.update(recipe);
    h.update((machined.len() as u64).to_le_bytes());
    h.update(machined);
    hex::encode(h.finalize())
}

/// The key of a base tree (mmdebstrap output).
pub fn base_key(suite: &str, variant: &str, packages: &[String]) -> String {
    let mut pkgs: Vec<&str> = packages.iter().map(String::as_str).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let mut h = Sha256::new();
    h.update(format!("ironclad-base-v1\0{suite}\0{variant}\0{}", pkgs.join(",")).as_bytes());
    hex::encode(h.finalize())
}

/// The directory of image `key`.
pub fn image_dir(root: &Path, key: &str) -> PathBuf {
    root.join("images").join(key)
}

/// The base tarball for `key`.
pub fn base_tar(root: &Path, key: &str) -> PathBuf {
    root.join("base").join(format!("{key}.tar"))
}

/// Reads a complete cached image's manifest: `None` if the image is absent or
/// incomplete.
pub fn read_cached(dir: &Path) -> Option<Manifest> {
    if !PARTS.iter().all(|p| dir.join(p).is_file()) {
        return None;
    }
    let text = std::fs::read(dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every complete cached image, sorted by key.
pub fn list(root: &Path) -> Result<Vec<(PathBuf, Manifest)>, CacheError> {
    let images = root.join("images");
    let rd = match std::fs::read_dir(&images) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CacheError::Io {
                path: images.display().to_string(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_key(&name) {
            continue;
        }
        if let Some(m) = read_cached(&entry.path()) {
            out.push((entry.path(), m));
        }
    }
    out.sort_by(|a, b| a.1.key.cmp(&b.1.key));
    Ok(out)
}

/// The cached image whose key starts with `prefix` (at least 4 hex digits).
pub fn find(root: &Path, prefix: &str) -> Result<Option<(PathBuf, Manifest)>, CacheError> {
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut hits: Vec<(PathBuf, Manifest)> = list(root)?
        .into_iter()
        .filter(|(_, m)| m.key.starts_with(prefix))
        .collect();
    match hits.len() {
        0 => Ok(None),
        1 => Ok(hits.pop()),
        _ => Err(CacheError::Ambiguous {
            prefix: prefix.to_string(),
            keys: hits.into_iter().map(|(_, m)| m.key).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input() {
        let k = image_key(b"recipe", b"machined");
        assert_eq!(k.len(), 64);
        assert_eq!(k, image_key(b"recipe", b"machined"));
        assert_ne!(k, image_key(b"recipe2", b"machined"));
        assert_ne!(k, image_key(b"recipe", b"machined2"));
        // The boundary between the two inputs matters.
        assert_ne!(image_key(b"ab", b"c"), image_key(b"a", b"bc"));
        let p = vec!["b".to_string(), "a".to_string()];
        let q = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        assert_eq!(
            base_key("trixie", "essential", &p),
            base_key("trixie", "essential", &q)
        );
        assert_ne!(
            base_key("trixie", "essential", &p),
            base_key("sid", "essential", &p)
        );
    }

    #[test]
    fn list_and_find_skip_incomplete_images() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
        let key = image_key(b"r", b"m");
        let img = image_dir(dir.path(), &key);
        std::fs::create_dir_all(&img).unwrap();
        let manifest = super::super::testing::manifest(&key, Default::default());
        std::fs::write(
            img.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        // Parts missing: not listed.
        assert!(list(dir.path()).unwrap().is_empty());
        for p in PARTS {
            std::fs::write(img.join(p), b"x").unwrap();
        }
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        let (_, m) = find(dir.path(), &key[..8]).unwrap().unwrap();
        assert_eq!(m, manifest);
        assert!(find(dir.path(), "zz").unwrap().is_none());
        assert!(find(dir.path(), "0000").unwrap().is_none() || key.starts_with("0000"));
    }

    use std::os::unix::fs::PermissionsExt;

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_root_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/cache");
        open_root(&root).unwrap();
        assert_eq!(mode_of(&root), 0o700);
        // An existing private root is fine, and so is 0755 (nobody else writes).
        open_root(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        open_root(&root).unwrap();
    }

    #[test]
    fn a_root_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        for mode in [0o777, 0o775, 0o1777] {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = open_root(&root).unwrap_err();
            assert!(err.is_bad_input(), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("writable by"), "{msg}");
            assert!(msg.contains("chmod go-w"), "{msg}");
            assert!(msg.contains("IRONCLAD_CACHE_DIR"), "{msg}");
            assert!(check_root(&root).is_err());
        }
        // Not a directory.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_root(&file),
            Err(CacheError::NotADirectory { .. })
        ));
        // Missing: nothing to distrust.
        check_root(&dir.path().join("absent")).unwrap();
    }

    #[test]
    fn a_root_owned_by_another_user_is_refused() {
        if super::super::trust::euid() != 0 {
            eprintln!("not root: skipped (the rule is tested in `trust`)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&root, Some(65534), None).unwrap();
        let err = open_root(&root).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("owned by uid 65534"), "{msg}");
        assert!(msg.contains("chown"), "{msg}");
    }

    fn image_with_parts(dir: &Path) -> Manifest {
        let parts = PARTS
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, vec![i as u8; 4096 + i]));
        let parts = super::super::testing::write_parts(dir, parts).unwrap();
        super::super::testing::manifest("k", parts)
    }

    #[test]
    fn verify_finds_a_flipped_byte_a_short_part_and_a_missing_entry() {
        let dir = tempfile::tempdir().unwrap();
        let m = image_with_parts(dir.path());
        verify(dir.path(), &m).unwrap();

        // One flipped byte, same size: only the hash can tell.
        let rootfs = dir.path().join("rootfs.squashfs");
        let mut bytes = std::fs::read(&rootfs).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&rootfs, &bytes).unwrap();
        let d = verify(dir.path(), &m).unwrap_err();
        assert_eq!(d.part, "rootfs.squashfs");
        assert!(d.detail.contains("sha256"), "{d}");
        bytes[100] ^= 0x01;
        std::fs::write(&rootfs, &bytes).unwrap();
        verify(dir.path(), &m).unwrap();

        // Truncated.
        let kernel = dir.path().join("vmlinux");
        let k = std::fs::read(&kernel).unwrap();
        std::fs::write(&kernel, &k[..10]).unwrap();
        let d = verify(dir.path(), &m).unwrap_err();
        assert_eq!(d.part, "vmlinux");
        assert!(d.detail.contains("10 bytes"), "{d}");
        std::fs::write(&kernel, &k).unwrap();

        // A manifest without the part's entry.
        let mut m2 = m.clone();
        m2.parts.remove("initramfs");
        assert_eq!(verify(dir.path(), &m2).unwrap_err().part, "initramfs");
    }
}
