//! Reading a support bundle someone else made. The archive is hostile input:
//! it is read as a stream, in memory, and nothing of it is ever extracted to
//! the file system. Every entry must be a regular file or a directory under
//! one `support-<cluster>/` top directory, with a plain relative path (no
//! `..`, no `.`, no absolute path, no control character); links, devices,
//! FIFOs and sparse files are refused, and so are duplicate files, more than
//! [`Limits::max_entries`] entries, an entry larger than its cap and more than
//! [`Limits::max_total`] bytes in all (a gzip bomb stops there). Only the
//! entries `repro` needs are kept, each with its own cap; the others (logs)
//! are read past.

use crate::image::manifest::{MANIFEST_KIND, Manifest};
use crate::spec::ClusterName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The bundle format this ironclad writes and reads (`format` in
/// `bundle.json`; a bundle without the field is format 1).
pub const FORMAT: u32 = 1;

/// Caps on what a bundle may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest bundle file (compressed).
    pub max_file: u64,
    /// The most entries.
    pub max_entries: usize,
    /// The largest entry that is read past (a log).
    pub max_entry: u64,
    /// The most bytes of all entries together, uncompressed.
    pub max_total: u64,
}

/// What `repro` accepts: the writer caps each log at 8 MiB
/// ([`crate::support::LOG_LIMIT`]).
pub const LIMITS: Limits = Limits {
    max_file: 512 << 20,
    max_entries: 10_000,
    max_entry: 16 << 20,
    max_total: 1 << 30,
};

/// The entries `repro` reads, each with the most bytes it may have, and
/// whether the bundle must hold it.
const KEPT: &[(&str, u64, bool)] = &[
    ("bundle.json", 8 << 20, true),
    ("version.json", 1 << 20, true),
    ("cluster.yaml", crate::spec::MAX_CLUSTER_FILE_BYTES, true),
    ("network.json", 8 << 20, false),
    ("image/key", 1024, false),
    ("image/manifest.json", 8 << 20, true),
    ("image/recipe.yaml", 1 << 20, true),
];

/// Why a bundle is refused (the command line's exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("bad bundle {file}: {why}")]
pub struct BadBundle {
    pub file: String,
    pub why: String,
}

/// What `bundle.json` says (only what `repro` uses; other fields are
/// ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub format: Option<u32>,
    pub cluster: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub files: Vec<(String, u64)>,
    #[serde(default)]
    pub missing: Vec<IndexMissing>,
}

/// One entry of `bundle.json`'s `missing`.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexMissing {
    pub what: String,
    pub why: String,
}

/// A bundle, read and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The cluster the bundle is of.
    pub cluster: ClusterName,
    pub index: Index,
    /// `version.json`: the reporter's version report.
    pub version: serde_json::Value,
    pub cluster_yaml: String,
    /// `network.json`, when the cluster ran when the bundle was made.
    pub network: Option<Vec<u8>>,
    pub key: Option<String>,
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub recipe_bytes: Vec<u8>,
    /// How many entries the archive holds.
    pub entries: usize,
}

impl Bundle {
    /// Why the bundle lacks `what`, as `bundle.json` says (scrubbed and
    /// shown safely), when it says.
    pub fn why_missing(&self, what: &str) -> Option<String> {
        self.index
            .missing
            .iter()
            .find(|m| m.what == what)
            .map(|m| shown(&m.why))
    }
}

/// Reads and checks the bundle in `file`.
pub fn read(file: &Path, limits: &Limits) -> Result<Bundle, BadBundle> {
    let shown_file = file.display().to_string();
    let bad = |why: String| BadBundle {
        file: shown_file.clone(),
        why,
    };
    let f = std::fs::File::open(file).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > limits.max_file {
        return Err(bad(format!(
            "it is {} bytes, more than a bundle may be ({} bytes)",
            meta.len(),
            limits.max_file
        )));
    }
    read_from(f.take(limits.max_file), limits).map_err(bad)
}

/// Reads a bundle from a gzip-compressed tar stream.
pub fn read_from(r: impl Read, limits: &Limits) -> Result<Bundle, String> {
    let raw = raw_entries(r, limits)?;
    assemble(raw)
}

/// The top directory and the kept entries (path below the top → bytes).
struct Raw {
    top: String,
    kept: BTreeMap<String, Vec<u8>>,
    entries: usize,
}

fn raw_entries(r: impl Read, limits: &Limits) -> Result<Raw, String> {
    let gz = flate2::read::GzDecoder::new(r);
    let mut ar = tar::Archive::new(gz);
    let entries = ar
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    let mut top: Option<String> = None;
    let mut kept = BTreeMap::new();
    let mut files = std::collections::BTreeSet::new();
    let mut total = 0u64;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a readable tar.gz archive: {e}"))?;
        count += 1;
        if count > limits.max_entries {
            return Err(format!("more than {} entries", limits.max_entries));
        }
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| "an entry's path is not UTF-8".to_string())?;
        let kind = entry.header().entry_type();
        let is_dir = kind == tar::EntryType::Directory;
        if !(is_dir || kind == tar::EntryType::Regular) {
            return Err(format!(
                "entry {} is {}: a bundle holds only files and directories",
                shown(&path),
                kind_name(kind)
            ));
        }
        let (first, rest) = split_path(&path)?;
        match &top {
            None => {
                let Some(name) = first.strip_prefix("support-") else {
                    return Err(format!(
                        "entry {} is not under a support-<cluster>/ directory",
                        shown(&path)
                    ));
                };
                name.parse::<ClusterName>().map_err(|e| {
                    format!(
                        "the top directory {} does not name a cluster: {e}",
                        shown(first)
                    )
                })?;
                top = Some(first.to_string());
            }
            Some(t) if t == first => {}
            Some(t) => {
                return Err(format!(
                    "entry {} is outside the bundle's top directory {t}/",
                    shown(&path)
                ));
            }
        }
        let size = entry.size();
        if is_dir {
            if size != 0 {
                return Err(format!("directory entry {} has a size", shown(&path)));
            }
            continue;
        }
        let Some(rest) = rest else {
            return Err(format!("the top directory {} is a file", shown(&path)));
        };
        if !files.insert(rest.clone()) {
            return Err(format!("entry {} appears twice", shown(&path)));
        }
        let cap = KEPT
            .iter()
            .find(|(p, _, _)| *p == rest)
            .map_or(limits.max_entry, |(_, cap, _)| (*cap).min(limits.max_entry));
        if size > cap {
            return Err(format!(
                "entry {} is {size} bytes, more than its limit of {cap} bytes",
                shown(&path)
            ));
        }
        total = total.saturating_add(size);
        if total > limits.max_total {
            return Err(format!(
                "its entries hold more than {} bytes in all",
                limits.max_total
            ));
        }
        let mut data = Vec::new();
        let keep = KEPT.iter().any(|(p, _, _)| *p == rest);
        let read = if keep {
            (&mut entry).take(cap + 1).read_to_end(&mut data)
        } else {
            std::io::copy(&mut (&mut entry).take(cap + 1), &mut std::io::sink()).map(|n| n as usize)
        }
        .map_err(|e| format!("entry {} cannot be read: {e}", shown(&path)))?;
        if read as u64 != size {
            return Err(format!(
                "entry {} holds {read} bytes, its header says {size}",
                shown(&path)
            ));
        }
        if keep {
            kept.insert(rest, data);
        }
    }
    let top = top.ok_or("the archive is empty")?;
    Ok(Raw {
        top,
        kept,
        entries: count,
    })
}

/// A path's first component and the rest (`None` for the first alone);
/// refuses anything that is not a plain relative path.
fn split_path(path: &str) -> Result<(&str, Option<String>), String> {
    let refuse = |why: &str| Err(format!("entry {}: {why}", shown(path)));
    if path.len() > 1024 {
        return refuse("its path is too long");
    }
    if path.starts_with('/') {
        return refuse("an absolute path");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return refuse("a control character or backslash in its path");
    }
    // A directory's path may end with '/'.
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let parts: Vec<&str> = trimmed.split('/').collect();
    for p in &parts {
        match *p {
            "" => return refuse("an empty path component"),
            "." | ".." => return refuse("a `.` or `..` path component"),
            _ => {}
        }
    }
    let first = parts[0];
    let rest = (parts.len() > 1).then(|| parts[1..].join("/"));
    Ok((first, rest))
}

fn kind_name(k: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match k {
        T::Symlink => "a symbolic link",
        T::Link => "a hard link",
        T::Char => "a character device",
        T::Block => "a block device",
        T::Fifo => "a FIFO",
        T::GNUSparse => "a sparse file",
        _ => "not a regular file",
    }
}

/// Turns the kept entries into a [`Bundle`], checking each.
fn assemble(mut raw: Raw) -> Result<Bundle, String> {
    for (path, _, required) in KEPT {
        if *required && !raw.kept.contains_key(*path) {
            return Err(format!("it has no {path}"));
        }
    }
    let mut take = |p: &str| raw.kept.remove(p);
    let index_bytes = take("bundle.json").unwrap_or_default();
    let index: Index = serde_json::from_slice(&index_bytes)
        .map_err(|e| format!("bundle.json is not a bundle index: {e}"))?;
    if index.kind != "SupportBundle" {
        return Err(format!(
            "bundle.json says kind {}, not SupportBundle",
            shown(&index.kind)
        ));
    }
    let format = index.format.unwrap_or(1);
    if index.api_version != crate::API_VERSION || format > FORMAT || format == 0 {
        return Err(format!(
            "it is bundle format {format} of {}; this ironclad reads format {FORMAT} of {} (a newer ironclad made it? reproduce it with that version)",
            shown(&index.api_version),
            crate::API_VERSION
        ));
    }
    let cluster: ClusterName = index.cluster.parse().map_err(|e| {
        format!(
            "bundle.json names the cluster {}: {e}",
            shown(&index.cluster)
        )
    })?;
    if raw.top != format!("support-{cluster}") {
        return Err(format!(
            "bundle.json is of cluster {cluster} but the archive's top directory is {}",
            shown(&raw.top)
        ));
    }
    // What the index lists must be what the archive holds.
    let listed: BTreeMap<&str, u64> = index.files.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let check_size = |path: &str, data: &[u8]| match listed.get(path) {
        Some(n) if *n != data.len() as u64 => Err(format!(
            "bundle.json says {path} is {n} bytes, the archive holds {}",
            data.len()
        )),
        _ => Ok(()),
    };
    let version_bytes = take("version.json").unwrap_or_default();
    check_size("version.json", &version_bytes)?;
    let version: serde_json::Value = serde_json::from_slice(&version_bytes)
        .map_err(|e| format!("version.json is not JSON: {e}"))?;
    if !version.is_object() {
        return Err("version.json is not a version report".into());
    }
    let cluster_bytes = take("cluster.yaml").unwrap_or_default();
    check_size("cluster.yaml", &cluster_bytes)?;
    let cluster_yaml =
        String::from_utf8(cluster_bytes).map_err(|_| "cluster.yaml is not UTF-8".to_string())?;
    let network = take("network.json");
    if let Some(n) = &network {
        check_size("network.json", n)?;
    }
    let key = match take("image/key") {
        Some(k) => {
            check_size("image/key", &k)?;
            let k = String::from_utf8(k).map_err(|_| "image/key is not UTF-8".to_string())?;
            let k = k.trim().to_string();
            if !is_hex(&k, 64) {
                return Err(format!("image/key {} is not an image key", shown(&k)));
            }
            Some(k)
        }
        None => None,
    };
    let manifest_bytes = take("image/manifest.json").unwrap_or_default();
    check_size("image/manifest.json", &manifest_bytes)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("image/manifest.json is not an image manifest: {e}"))?;
    check_manifest(&manifest)?;
    if let Some(k) = &key
        && *k != manifest.key
    {
        return Err(format!(
            "image/key {k} is not the key in image/manifest.json ({})",
            shown(&manifest.key)
        ));
    }
    let recipe_bytes = take("image/recipe.yaml").unwrap_or_default();
    check_size("image/recipe.yaml", &recipe_bytes)?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&recipe_bytes));
    if sha != manifest.recipe.sha256 {
        return Err(format!(
            "image/recipe.yaml has sha256 {sha}, but the manifest's recipe has {}",
            shown(&manifest.recipe.sha256)
        ));
    }
    Ok(Bundle {
        cluster,
        index,
        version,
        cluster_yaml,
        network,
        key,
        manifest_bytes,
        manifest,
        recipe_bytes,
        entries: raw.entries,
    })
}

/// The manifest's header and parts are well formed.
fn check_manifest(m: &Manifest) -> Result<(), String> {
    if m.kind != MANIFEST_KIND {
        return Err(format!(
            "image/manifest.json says kind {}, not {MANIFEST_KIND}",
            shown(&m.kind)
        ));
    }
    if !is_hex(&m.key, 64) || !is_hex(&m.recipe.sha256, 64) {
        return Err("image/manifest.json: its key or recipe sha256 is not a sha256".into());
    }
    for part in crate::image::cache::PARTS {
        match m.parts.get(*part) {
            Some(p) if is_hex(&p.sha256, 64) => {}
            Some(_) => {
                return Err(format!(
                    "image/manifest.json: part {part} has no valid sha256"
                ));
            }
            None => return Err(format!("image/manifest.json does not list part {part}")),
        }
    }
    Ok(())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Text from a bundle as it may be shown on a terminal: control characters
/// (escape sequences) replaced, at most 200 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}
