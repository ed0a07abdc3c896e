//! Fixtures for tests of the image cache: a complete [`Manifest`] with
//! placeholder values, and parts written with their true sums. Built only for
//! the crate's own tests and with the `test-support` feature (which the
//! workspace's integration tests turn on), never into a release build of the
//! command line.

use super::manifest::{self, MANIFEST_KIND, Manifest, Part, RecipeInfo};
use std::collections::BTreeMap;
use std::path::Path;

/// A manifest under `key` with the given parts; everything else is a fixed
/// placeholder (recipe `trixie`, kernel 6.12, no packages, binaries, modules
/// or sysctls).
pub fn manifest(key: &str, parts: BTreeMap<String, Part>) -> Manifest {
    Manifest {
        api_version: crate::API_VERSION.to_string(),
        kind: MANIFEST_KIND.to_string(),
        key: key.to_string(),
        recipe: RecipeInfo {
            name: "trixie".into(),
            sha256: "0".into(),
            suite: "trixie".into(),
        },
        machined_sha256: "0".into(),
        kernel_version: "6.12".into(),
        source_date_epoch: 0,
        packages: BTreeMap::new(),
        binaries: Vec::new(),
        modules: Default::default(),
        sysctls: BTreeMap::new(),
        parts,
    }
}

/// Writes each `(name, bytes)` into `dir` and returns the manifest entries
/// (sha256 and size) of what was written.
pub fn write_parts<'a>(
    dir: &Path,
    parts: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
) -> std::io::Result<BTreeMap<String, Part>> {
    let mut out = BTreeMap::new();
    for (name, data) in parts {
        let path = dir.join(name);
        std::fs::write(&path, &data)?;
        out.insert(name.to_string(), manifest::hash_file(&path)?);
    }
    Ok(out)
}
