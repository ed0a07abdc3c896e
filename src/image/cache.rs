//! The image cache: where built images and mmdebstrap base trees live, their
//! keys, and listing and finding cached images.
//!
//! Layout: `<root>/images/<key>/{vmlinuz,initramfs,rootfs.squashfs,manifest.json}`
//! and `<root>/base/<base-key>.tar`, with `<root>` = `$IRONCLAD_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/ironclad`, else `~/.cache/ironclad`. An image key is the
//! sha256 of the recipe's bytes and machined's bytes (so editing either gives a
//! new image); a base key is the sha256 of suite, variant and packages (so a
//! change to machined alone reuses the Debian tree).

use super::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped when the builder's output for the same inputs changes.
const IMAGE_FORMAT: &str = "ironclad-image-v1";

/// The files of a built image.
pub const PARTS: &[&str] = &["vmlinuz", "initramfs", "rootfs.squashfs"];

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
}

/// The cache root from the environment.
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
        let manifest = Manifest {
            api_version: crate::API_VERSION.to_string(),
            kind: super::super::manifest::MANIFEST_KIND.to_string(),
            key: key.clone(),
            recipe: super::super::manifest::RecipeInfo {
                name: "t".into(),
                sha256: "0".into(),
                suite: "trixie".into(),
            },
            machined_sha256: "0".into(),
            kernel_version: "6.12".into(),
            source_date_epoch: 0,
            packages: Default::default(),
            binaries: vec![],
            modules: Default::default(),
            sysctls: Default::default(),
            parts: Default::default(),
        };
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
}
