//! Taking images out of the cache: one by key (`ironclad image rm`), or every
//! image no cluster boots from (`ironclad image prune`), and with it the
//! mmdebstrap base trees (the next cold build makes them again).
//!
//! An image a cluster uses is never removed: its nodes read the kernel, the
//! initramfs and the root image from the cache on every start. "Uses" means
//! the image key recorded in the `cluster.json` of a cluster under the state
//! root given; a cluster kept under another state root is not seen, which
//! the command says. An image is first renamed out of `images/` (so it never
//! looks complete while half removed), then deleted.

use super::cache::{self, CacheError};
use crate::cluster::paths::{ClusterPaths, list_clusters};
use crate::cluster::state::ClusterState;
use crate::spec::ClusterName;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One removed (or, dry, removable) cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// The image key, or the base tree's file name.
    pub key: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Why an image stays.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("no cached image with key {0:?} (see `ironclad image list`)")]
    NotFound(String),
    #[error(
        "image {key} is used by cluster(s) {}: destroy them first (their nodes boot from it)",
        clusters.join(", ")
    )]
    InUse { key: String, clusters: Vec<String> },
    #[error("cannot read the clusters under {path}: {source}")]
    Clusters {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PruneError {
    /// The user named something that is not there or may not go.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PruneError::NotFound(_) | PruneError::InUse { .. } => true,
            PruneError::Cache(e) => e.is_bad_input(),
            PruneError::Clusters { .. } | PruneError::Remove { .. } => false,
        }
    }
}

/// Image key → the clusters under `state_root` that boot from it.
pub fn users(state_root: &Path) -> Result<BTreeMap<String, Vec<ClusterName>>, PruneError> {
    let names = list_clusters(state_root).map_err(|source| PruneError::Clusters {
        path: state_root.to_path_buf(),
        source,
    })?;
    let mut by_key: BTreeMap<String, Vec<ClusterName>> = BTreeMap::new();
    for name in names {
        let paths = ClusterPaths::new(state_root, &name);
        // A half-made cluster has no cluster.json and so no image yet.
        if let Ok(state) = ClusterState::load(&paths.cluster_json()) {
            by_key.entry(state.image.key).or_default().push(name);
        }
    }
    Ok(by_key)
}

/// Removes the image whose key starts with `prefix`, unless a cluster uses it.
pub fn remove(
    cache_root: &Path,
    prefix: &str,
    users: &BTreeMap<String, Vec<ClusterName>>,
) -> Result<Removed, PruneError> {
    let Some((dir, manifest)) = cache::find(cache_root, prefix)? else {
        return Err(PruneError::NotFound(prefix.to_string()));
    };
    if let Some(clusters) = users.get(&manifest.key) {
        return Err(PruneError::InUse {
            key: manifest.key,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
        });
    }
    delete(cache_root, manifest.key, &dir)
}

/// Every complete image no cluster uses; removed unless `dry_run`.
pub fn prune(
    cache_root: &Path,
    users: &BTreeMap<String, Vec<ClusterName>>,
    dry_run: bool,
) -> Result<Vec<Removed>, PruneError> {
    let mut out = Vec::new();
    for (dir, manifest) in cache::list(cache_root)? {
        if users.contains_key(&manifest.key) {
            continue;
        }
        out.push(if dry_run {
            Removed {
                bytes: size_of(&dir),
                key: manifest.key,
                path: dir,
            }
        } else {
            delete(cache_root, manifest.key, &dir)?
        });
    }
    Ok(out)
}

/// Every mmdebstrap base tree (and its log); removed unless `dry_run`.
pub fn prune_bases(cache_root: &Path, dry_run: bool) -> Result<Vec<Removed>, PruneError> {
    let dir = cache_root.join("base");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(PruneError::Remove { path: dir, source }),
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let is_base = path.extension().is_some_and(|x| x == "tar" || x == "log");
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !is_base || !meta.is_file() {
            continue;
        }
        if !dry_run {
            std::fs::remove_file(&path).map_err(|source| PruneError::Remove {
                path: path.clone(),
                source,
            })?;
        }
        out.push(Removed {
            key: name,
            path,
            bytes: meta.len(),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Renames `dir` out of `images/`, then deletes it.
fn delete(cache_root: &Path, key: String, dir: &Path) -> Result<Removed, PruneError> {
    let bytes = size_of(dir);
    let doomed = cache_root.join("tmp").join(format!(".removing-{key}"));
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PruneError::Remove { path, source }
    };
    std::fs::create_dir_all(cache_root.join("tmp")).map_err(err(dir))?;
    std::fs::rename(dir, &doomed).map_err(err(dir))?;
    std::fs::remove_dir_all(&doomed).map_err(err(&doomed))?;
    Ok(Removed {
        key,
        path: dir.to_path_buf(),
        bytes,
    })
}

/// The bytes of the regular files directly in `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testing;

    /// A complete cached image under `root` with key `c` repeated.
    fn image(root: &Path, c: char) -> String {
        let key: String = std::iter::repeat_n(c, 64).collect();
        let dir = cache::image_dir(root, &key);
        std::fs::create_dir_all(&dir).unwrap();
        let parts = cache::PARTS.iter().map(|p| (*p, vec![c as u8; 1024]));
        let parts = testing::write_parts(&dir, parts).unwrap();
        let m = testing::manifest(&key, parts);
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        key
    }

    /// Cluster `dev` under `state`, booting from image `key`.
    fn cluster_on(state: &Path, key: &str) {
        let name: ClusterName = "dev".parse().unwrap();
        let paths = ClusterPaths::new(state, &name);
        paths.claim(&name).unwrap();
        let mut st = crate::cluster::state::tests::sample();
        st.image.key = key.to_string();
        st.save(&paths.cluster_json()).unwrap();
    }

    #[test]
    fn images_in_use_stay_the_rest_go() {
        let cache_root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            image(cache_root.path(), 'a'),
            image(cache_root.path(), 'b'),
            image(cache_root.path(), 'c'),
        );
        cluster_on(state.path(), &a);
        let users = users(state.path()).unwrap();
        assert_eq!(users.keys().collect::<Vec<_>>(), [&a]);

        match remove(cache_root.path(), "aaaa", &users) {
            Err(e @ PruneError::InUse { .. }) => {
                assert!(e.is_bad_input());
                assert!(e.to_string().contains("dev"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            remove(cache_root.path(), "ffff", &users),
            Err(PruneError::NotFound(_))
        ));
        let gone = remove(cache_root.path(), "bbbb", &users).unwrap();
        assert_eq!(
            (gone.key.as_str(), gone.bytes > 3 * 1024),
            (b.as_str(), true)
        );
        assert!(!cache::image_dir(cache_root.path(), &b).exists());

        let would = prune(cache_root.path(), &users, true).unwrap();
        assert_eq!(would.iter().map(|r| &r.key).collect::<Vec<_>>(), [&c]);
        assert!(cache::image_dir(cache_root.path(), &c).exists(), "dry run");
        prune(cache_root.path(), &users, false).unwrap();
        let left: Vec<String> = cache::list(cache_root.path())
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.key)
            .collect();
        assert_eq!(left, [a]);
    }

    #[test]
    fn base_trees_go_with_their_logs_only() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        for f in ["k.tar", "k.log", "notes.txt"] {
            std::fs::write(base.join(f), b"x").unwrap();
        }
        let would = prune_bases(root.path(), true).unwrap();
        assert_eq!(would.len(), 2);
        assert!(base.join("k.tar").exists());
        prune_bases(root.path(), false).unwrap();
        assert!(!base.join("k.tar").exists() && !base.join("k.log").exists());
        assert!(base.join("notes.txt").exists());
    }
}
