//! The image manifest (`manifest.json`, `kind: ImageManifest`): what went into
//! an image (recipe and machined hashes, kernel version, Debian package
//! versions, modules, sysctls) and the sha256 and size of each output. Also
//! reading package versions from a tree's dpkg status file.
//!
//! A copy without the `rootfs.squashfs` entry (it cannot hash itself) is put
//! inside the root at `/usr/lib/ironclad/manifest.json`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The kind of the manifest document.
pub const MANIFEST_KIND: &str = "ImageManifest";

/// The recipe an image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipeInfo {
    pub name: String,
    /// sha256 of the recipe file's bytes.
    pub sha256: String,
    pub suite: String,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub sha256: String,
    pub size: u64,
}

/// Module file names in load order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModuleManifest {
    /// Loaded by stage 1 to mount the root.
    pub initramfs: Vec<String>,
    /// Also in the initramfs, loaded in the background from stage 1 on.
    #[serde(default)]
    pub early: Vec<String>,
    /// In the root, loaded by stage 2 in the background.
    pub root: Vec<String>,
}

/// The manifest of one built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    /// The cache key: see `cache::image_key`.
    pub key: String,
    pub recipe: RecipeInfo,
    pub machined_sha256: String,
    pub kernel_version: String,
    pub source_date_epoch: u64,
    /// Every installed package of the build tree → its version.
    pub packages: BTreeMap<String, String>,
    /// Binaries kept in the root.
    pub binaries: Vec<String>,
    pub modules: ModuleManifest,
    pub sysctls: BTreeMap<String, String>,
    /// Output file name → hash and size.
    pub parts: BTreeMap<String, Part>,
}

/// sha256 (hex) and size of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<Part> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Part {
        sha256: hex::encode(h.finalize()),
        size,
    })
}

/// Installed packages and versions from a dpkg `status` file.
pub fn installed_packages(status: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            out.insert(n.to_string(), v.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_keeps_installed_packages_only() {
        let status = "Package: etcd-server\nStatus: install ok installed\nPriority: optional\n\
                      Version: 3.5.16-4\n\nPackage: gone\nStatus: deinstall ok config-files\n\
                      Version: 1.0\n\nPackage: runc\nStatus: install ok installed\nVersion: 1.1.15+ds1-2\n";
        let p = installed_packages(status);
        assert_eq!(p.len(), 2);
        assert_eq!(p["etcd-server"], "3.5.16-4");
        assert_eq!(p["runc"], "1.1.15+ds1-2");
    }

    #[test]
    fn hash_file_matches_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        let p = hash_file(&f).unwrap();
        assert_eq!(p.size, 3);
        assert_eq!(
            p.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
