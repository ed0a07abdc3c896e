//! Support bundles (`ironclad support`): what a bug report needs about one
//! cluster, in one `.tar.gz` that holds no secret.
//!
//! Inside the archive, under `support-<cluster>/`:
//!
//! ```text
//! bundle.json                its format, what was collected, what could not be and why, what was redacted
//! version.json               ironclad, its commit, machined, QEMU, the accelerator and why, the host
//! cluster.yaml               the cluster file the cluster was created from
//! cluster.json               what runs: nodes, ports, pids (no secret in it)
//! status.json                `ironclad status --output json`
//! network.json               the switch: counters per port and the faults in force
//! image/key                  the image's cache key
//! image/manifest.json        the image's manifest (parts, packages, modules)
//! image/recipe.yaml          the recipe the image was built from
//! host/<node>.serial.log     each node's serial console
//! host/<node>.qemu.log       each node's QEMU stderr
//! host/supervisor.log        the supervisor's log
//! nodes/<node>/version.json        from each node that answers: its machined,
//! nodes/<node>/services.json       its services,
//! nodes/<node>/logs/<service>.log  each service's log,
//! nodes/<node>/dmesg.log           its kernel log,
//! nodes/<node>/etcd-members.json   and, on control planes, etcd's member list
//! matrix/last.json, last.xml the last matrix report, when there is one
//! ```
//!
//! Collection works on a running, stopped or crashed cluster and never stops
//! at the first problem: what could not be collected is listed in
//! `bundle.json` with the reason. Every entry is scrubbed before it is
//! written (see [`scrub`]): PEM private-key blocks and the bytes of each of
//! the cluster's secrets are replaced, and each replacement is counted in
//! `bundle.json`. The CA keys, the machine configs and the admin key are
//! never read into the bundle in the first place.

mod archive;
mod nodes;
pub mod scrub;

pub use archive::{default_file_name, write_tar_gz};

use crate::cluster::lifecycle;
use crate::cluster::paths::{ClusterPaths, Found};
use crate::cluster::state::ClusterState;
use crate::spec::ClusterName;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most of a host-side log kept (its end): a serial log of a cluster
/// that ran for days must not make the bundle unsendable.
pub const LOG_LIMIT: u64 = 8 << 20;

/// The longest reason kept for something missing.
pub const MAX_REASON: usize = 4096;

/// Why no bundle could be made at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SupportError {
    /// No cluster of that name.
    #[error("no cluster named {name:?} under {root}")]
    #[diagnostic(
        code(ironclad::support::no_cluster),
        help("`ironclad list` shows the clusters there are")
    )]
    NoCluster { name: ClusterName, root: String },
    /// The place of the cluster holds something that is not a cluster.
    #[error("{0}")]
    #[diagnostic(code(ironclad::support::foreign))]
    Foreign(String),
    /// The bundle file already exists.
    #[error("{0} already exists")]
    #[diagnostic(
        code(ironclad::support::file_exists),
        help("remove it, or name another file with --file")
    )]
    Exists(PathBuf),
    /// Reading the state root or writing the bundle failed.
    #[error("{what}: {source}")]
    #[diagnostic(code(ironclad::support::io))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One file of the bundle, already scrubbed.
pub struct Entry {
    /// Its path inside `support-<cluster>/`.
    pub path: String,
    pub data: Vec<u8>,
}

/// Something the bundle should hold and does not.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub what: String,
    pub why: String,
}

/// Replacements made in one entry.
#[derive(Debug, Clone, Serialize)]
pub struct Redaction {
    pub path: String,
    pub count: usize,
}

/// A collected bundle, before it is written.
#[derive(Default)]
pub struct Bundle {
    pub entries: Vec<Entry>,
    pub missing: Vec<Missing>,
    pub redacted: Vec<Redaction>,
    needles: scrub::Needles,
}

impl Bundle {
    /// Adds an entry, scrubbed.
    pub fn add(&mut self, path: impl Into<String>, data: Vec<u8>) {
        let path = path.into();
        let (data, count) = self.needles.scrub(&data);
        if count > 0 {
            self.redacted.push(Redaction {
                path: path.clone(),
                count,
            });
        }
        self.entries.push(Entry { path, data });
    }

    /// Adds `value` as pretty JSON.
    pub fn add_json(&mut self, path: &str, value: &impl Serialize) {
        match serde_json::to_vec_pretty(value) {
            Ok(mut v) => {
                v.push(b'\n');
                self.add(path, v);
            }
            Err(e) => self.miss(path, format!("cannot encode: {e}")),
        }
    }

    /// Records that `what` could not be collected, and why.
    /// The reason is scrubbed too (a node's error may quote anything) and
    /// cut to [`MAX_REASON`] bytes.
    pub fn miss(&mut self, what: impl Into<String>, why: impl std::fmt::Display) {
        let (why, _) = self.needles.scrub(why.to_string().as_bytes());
        let mut why = String::from_utf8_lossy(&why).into_owned();
        if why.len() > MAX_REASON {
            let cut = (0..=MAX_REASON)
                .rev()
                .find(|&i| why.is_char_boundary(i))
                .unwrap_or(0);
            why.truncate(cut);
            why.push_str(" [...]");
        }
        self.missing.push(Missing {
            what: what.into(),
            why,
        });
    }

    /// Adds the end of the file at `src` (at most [`LOG_LIMIT`] bytes).
    pub fn add_file(&mut self, path: &str, src: &Path) {
        match read_tail(src, LOG_LIMIT) {
            Ok(data) => self.add(path, data),
            Err(e) => self.miss(path, format!("{}: {e}", src.display())),
        }
    }

    /// The total size of the entries.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.data.len() as u64).sum()
    }

    /// Adds `bundle.json`: the list of entries, what is missing and what
    /// was redacted. Called last.
    fn seal(&mut self, cluster: &ClusterName, needles: usize) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Index<'a> {
            api_version: &'a str,
            kind: &'a str,
            /// Bumped when what `repro` reads changes.
            format: u32,
            cluster: &'a ClusterName,
            created_at: String,
            files: Vec<(&'a str, usize)>,
            missing: &'a [Missing],
            redacted: &'a [Redaction],
            secrets_searched_for: usize,
        }
        let created_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let index = Index {
            api_version: crate::API_VERSION,
            kind: "SupportBundle",
            format: crate::repro::bundle::FORMAT,
            cluster,
            created_at,
            files: self
                .entries
                .iter()
                .map(|e| (e.path.as_str(), e.data.len()))
                .collect(),
            missing: &self.missing,
            redacted: &self.redacted,
            secrets_searched_for: needles,
        };
        let json = serde_json::to_vec_pretty(&index).unwrap_or_default();
        self.entries.push(Entry {
            path: "bundle.json".into(),
            data: json,
        });
    }
}

/// What [`collect`] needs besides the cluster.
pub struct Request<'a> {
    pub root: &'a Path,
    pub name: &'a ClusterName,
    /// The version report (`ironclad version --output json`), made by the
    /// caller, which knows the commit.
    pub version: serde_json::Value,
    /// The longest wait for one node API call.
    pub node_timeout: Duration,
}

/// Collects the bundle of cluster `req.name`; `say` gets one progress line
/// per step and per node. Blocks: the nodes are asked on the process's one
/// runtime ([`crate::runtime`]), so this must not be called from a task of it.
pub fn collect(req: &Request<'_>, say: &(dyn Fn(&str) + Sync)) -> Result<Bundle, SupportError> {
    let paths = match crate::cluster::paths::find(req.root, req.name) {
        Ok(Found::Cluster(p)) => p,
        Ok(Found::Absent) => {
            return Err(SupportError::NoCluster {
                name: req.name.clone(),
                root: req.root.display().to_string(),
            });
        }
        Ok(Found::Foreign { path, why }) => {
            return Err(SupportError::Foreign(Found::foreign_message(&path, &why)));
        }
        Err(source) => {
            return Err(SupportError::Io {
                what: format!("cannot look for cluster {:?}", req.name),
                source,
            });
        }
    };
    let needles = scrub::Needles::of_cluster(paths.dir());
    let searched = needles.len();
    let mut b = Bundle {
        needles,
        ..Bundle::default()
    };
    b.add_json("version.json", &req.version);
    say("host: cluster file, state, status, image, logs");
    host_side(&mut b, &paths, req);
    let state = ClusterState::load(&paths.cluster_json()).ok();
    match &state {
        Some(state) => {
            let asked = crate::runtime::block_on(nodes::collect(
                &mut b,
                &paths,
                state,
                req.node_timeout,
                say,
            ));
            if let Err(e) = asked {
                b.miss("nodes/", format!("cannot start the async runtime: {e}"));
            }
        }
        None => b.miss(
            "nodes/",
            "the cluster's state (cluster.json) cannot be read",
        ),
    }
    matrix_report(&mut b, &paths);
    b.seal(req.name, searched);
    Ok(b)
}

/// What the host holds: files of the state dir, status, the image, the
/// switch.
fn host_side(b: &mut Bundle, paths: &ClusterPaths, req: &Request<'_>) {
    b.add_file("cluster.yaml", &paths.cluster_yaml());
    b.add_file("cluster.json", &paths.cluster_json());
    match lifecycle::status(req.root, req.name) {
        Ok(st) => b.add_json("status.json", &st),
        Err(e) => b.miss("status.json", e),
    }
    let state = ClusterState::load(&paths.cluster_json());
    match &state {
        Ok(state) => {
            image(b, state);
            for n in &state.nodes {
                b.add_file(
                    &format!("host/{}.serial.log", n.name),
                    &paths.serial_log(&n.name),
                );
                b.add_file(
                    &format!("host/{}.qemu.log", n.name),
                    &paths.qemu_log(&n.name),
                );
            }
        }
        Err(e) => b.miss(
            "image/, host/<node>.*.log",
            format!("cannot read cluster.json: {e}"),
        ),
    }
    b.add_file("host/supervisor.log", &paths.supervisor_log());
    let engine = crate::cluster::engine::selected();
    if engine.running(paths).is_some() {
        network(b, paths);
    } else {
        b.miss(
            "network.json",
            "the cluster is not running (no switch to ask)",
        );
    }
}

/// The switch's counters and faults.
fn network(b: &mut Bundle, paths: &ClusterPaths) {
    use crate::network::{Request, Response};
    match crate::cluster::engine::selected().fault(paths, &Request::Status {}) {
        Ok(Response::Status { status }) => b.add_json("network.json", &status),
        Ok(other) => b.miss("network.json", format!("the switch answered {other:?}")),
        Err(e) => b.miss("network.json", e),
    }
}

/// The image's key, manifest and recipe.
fn image(b: &mut Bundle, state: &ClusterState) {
    use crate::image::manifest::Manifest;
    b.add("image/key", format!("{}\n", state.image.key).into_bytes());
    let Some(dir) = state.image.kernel.parent() else {
        b.miss(
            "image/manifest.json",
            "the image's directory is not recorded",
        );
        return;
    };
    let manifest_path = dir.join("manifest.json");
    let manifest = std::fs::read(&manifest_path);
    let manifest = match manifest {
        Ok(bytes) => {
            let parsed = serde_json::from_slice::<Manifest>(&bytes).ok();
            b.add("image/manifest.json", bytes);
            parsed
        }
        Err(e) => {
            b.miss(
                "image/manifest.json",
                format!("{}: {e} (was the image pruned?)", manifest_path.display()),
            );
            None
        }
    };
    match manifest.map(|m| recipe_bytes(&m.recipe)) {
        Some(Ok(bytes)) => b.add("image/recipe.yaml", bytes),
        Some(Err(why)) => b.miss("image/recipe.yaml", why),
        None => b.miss("image/recipe.yaml", "no manifest to name the recipe"),
    }
}

/// The bytes of the recipe a manifest names, checked against its hash: the
/// built-in recipe of that name, or the file it names.
fn recipe_bytes(info: &crate::image::manifest::RecipeInfo) -> Result<Vec<u8>, String> {
    use sha2::Digest;
    let matches = |b: &[u8]| hex::encode(sha2::Sha256::digest(b)) == info.sha256;
    if let Some((_, text)) = crate::image::recipe::BUILT_IN
        .iter()
        .find(|(n, _)| *n == info.name)
        && matches(text.as_bytes())
    {
        return Ok(text.as_bytes().to_vec());
    }
    match std::fs::read(&info.name) {
        Ok(bytes) if matches(&bytes) => Ok(bytes),
        Ok(_) => Err(format!(
            "recipe {:?} has changed since the image was built (sha256 differs)",
            info.name
        )),
        Err(_) => Err(format!(
            "recipe {:?} with sha256 {} is not built into this ironclad and is not a readable file",
            info.name, info.sha256
        )),
    }
}

/// The last matrix report the `matrix` command kept, when there is one.
fn matrix_report(b: &mut Bundle, paths: &ClusterPaths) {
    let json = paths.matrix_report_json();
    if !json.is_file() {
        b.miss(
            "matrix/",
            "no matrix report (the matrix has not run on this cluster)",
        );
        return;
    }
    b.add_file("matrix/last.json", &json);
    b.add_file("matrix/last.xml", &paths.matrix_report_junit());
}

/// The last `limit` bytes of the file at `path`, with a first line saying
/// what was cut when it was longer.
fn read_tail(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut kept = Vec::new();
    if len <= limit {
        f.take(limit).read_to_end(&mut kept)?;
        return Ok(kept);
    }
    f.seek(SeekFrom::Start(len - limit))?;
    f.take(limit).read_to_end(&mut kept)?;
    // From the first whole line on: half a line could be half a secret the
    // scrubber no longer recognises.
    let from = kept
        .iter()
        .position(|&c| c == b'\n')
        .map_or(kept.len(), |i| i + 1);
    let mut out = format!(
        "[ironclad support: the first {} bytes were cut]\n",
        len - limit + from as u64
    )
    .into_bytes();
    out.extend_from_slice(&kept[from..]);
    Ok(out)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_long_log_keeps_its_end_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, b"0123\n56789\n").unwrap();
        assert_eq!(read_tail(&p, 100).unwrap(), b"0123\n56789\n");
        // Cut inside the first line: the rest of it goes too.
        let cut = String::from_utf8(read_tail(&p, 8).unwrap()).unwrap();
        assert_eq!(
            cut,
            "[ironclad support: the first 5 bytes were cut]\n56789\n"
        );
    }

    #[test]
    fn the_recipe_is_the_built_in_one_when_its_hash_matches() {
        use sha2::Digest;
        let text = crate::image::recipe::EMBEDDED_TRIXIE;
        let info = crate::image::manifest::RecipeInfo {
            name: "trixie".into(),
            sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            suite: "trixie".into(),
        };
        assert_eq!(recipe_bytes(&info).unwrap(), text.as_bytes());
        let other = crate::image::manifest::RecipeInfo {
            sha256: "00".repeat(32),
            ..info
        };
        assert!(recipe_bytes(&other).unwrap_err().contains("not built into"));
    }
}
