//! `ironclad repro BUNDLE`: the cluster of someone else's support bundle,
//! made again on this host.
//!
//! In order: the bundle is read and checked as hostile input ([`bundle`]);
//! its cluster file passes the same validation as `create`'s, under the
//! bundle's cluster name or `--name` ([`plan`]); the image is built (or found
//! in the cache) from the bundled recipe bytes, which match the manifest's
//! sha256, and compared part by part with the bundled manifest ([`image`];
//! a difference stops here unless allowed); the cluster is created through
//! the ordinary `create` ([`create`]); the network faults the bundle's
//! switch had in force are applied again and read back ([`faults`]). The
//! reporter's version report is compared with this host's ([`compare::hosts`]).
//!
//! Nothing of the bundle is extracted: the few entries used are held in
//! memory. A recipe that is not built into this ironclad is written, by its
//! sha256, under the image cache (`recipes/<sha256>.yaml`, mode 0600), where
//! `create` reads it like any recipe file.

pub mod bundle;
pub mod compare;
mod faults;
#[cfg(test)]
mod tests;

pub use faults::AppliedFault;

use crate::cluster::lifecycle::{self, LifecycleError, Progress, UpReport};
use crate::cluster::paths::Found;
use crate::image::{ImageError, RecipeRef};
use crate::qemu::AccelChoice;
use crate::spec::{Cluster, ClusterName, SpecError};
use bundle::{BadBundle, Bundle};
use compare::{HostRow, PartDiff};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why `repro` stopped.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReproError {
    #[error(transparent)]
    #[diagnostic(
        code(ironclad::repro::bad_bundle),
        help("a bundle is the .tar.gz `ironclad support` writes; nothing of it was used")
    )]
    BadBundle(#[from] BadBundle),
    /// The bundle's cluster file does not validate.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(Box<SpecError>),
    #[error("the bundle's cluster file cannot be renamed to {name}: {why}")]
    #[diagnostic(
        code(ironclad::repro::rename),
        help("reproduce it under the bundle's own name (without --name)")
    )]
    Rename { name: ClusterName, why: String },
    #[error("a cluster named {name} already exists ({dir})")]
    #[diagnostic(
        code(ironclad::repro::exists),
        help(
            "give the reproduction another name with --name NAME, or `ironclad destroy {name}` first"
        )
    )]
    Exists { name: ClusterName, dir: String },
    #[error("{0}")]
    #[diagnostic(code(ironclad::repro::foreign))]
    Foreign(String),
    #[error(
        "the image built here differs from the reporter's: {}",
        diffs.iter().map(|d| format!("{} (bundle: {}; here: {})", d.part, d.bundle, d.here)).collect::<Vec<_>>().join("; ")
    )]
    #[diagnostic(
        code(ironclad::repro::image_mismatch),
        help(
            "the reproduction would not run the reporter's image; --allow-image-mismatch goes on anyway (a different machined is the usual cause: use the reporter's ironclad version)"
        )
    )]
    Mismatch { diffs: Vec<PartDiff> },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lifecycle(Box<LifecycleError>),
    #[error("cluster {name} is up, but its network faults could not be set: {why}")]
    #[diagnostic(
        code(ironclad::repro::faults),
        help(
            "the cluster is kept; `ironclad net status {name}` shows its network, `ironclad destroy {name}` removes it"
        )
    )]
    Faults { name: ClusterName, why: String },
    #[error("{what}: {source}")]
    #[diagnostic(code(ironclad::repro::io))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<LifecycleError> for ReproError {
    fn from(e: LifecycleError) -> Self {
        ReproError::Lifecycle(Box::new(e))
    }
}

/// What [`plan`] and the steps after it need.
pub struct Request<'a> {
    pub file: &'a Path,
    pub root: &'a Path,
    /// `--name`; default: the bundle's cluster.
    pub name: Option<ClusterName>,
    pub accel: AccelChoice,
    /// Under TCG, each node's translated-code cache (MiB).
    pub tcg_cache_mib: u32,
    pub timeout: Duration,
    pub allow_image_mismatch: bool,
    /// Image cache root (default: the image module's).
    pub cache_dir: Option<PathBuf>,
    /// This host's version report as JSON (the caller knows the commit).
    pub here: serde_json::Value,
}

/// The bundle, read and checked, and what will be made of it.
pub struct Plan {
    pub bundle: Bundle,
    /// The cluster file as it will be created (renamed when asked).
    pub cluster: Cluster,
    /// Its text, kept as the new cluster's `cluster.yaml`.
    pub source: String,
    /// The recipe the bundle carries.
    pub recipe: RecipeSource,
    /// The switch requests that set the bundle's faults on the new cluster,
    /// with what each node should then have.
    pub faults: faults::FaultPlan,
    pub hosts: Vec<HostRow>,
}

/// Where the bundled recipe is taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipeSource {
    /// Its bytes are those of a recipe built into this ironclad.
    BuiltIn(String),
    /// Written under the cache when the image is built.
    File,
}

/// Reads and checks everything before anything is built or created:
/// every failure here is bad input.
pub fn plan(req: &Request<'_>) -> Result<Plan, ReproError> {
    let b = bundle::read(req.file, &bundle::LIMITS)?;
    let bad = |why: String| BadBundle {
        file: req.file.display().to_string(),
        why,
    };
    let original = crate::spec::parse_cluster(&b.cluster_yaml, "cluster.yaml (in the bundle)")
        .map_err(|e| ReproError::Spec(Box::new(e)))?;
    let name = req.name.clone().unwrap_or_else(|| original.name.clone());
    let (source, cluster) = if name == original.name {
        (b.cluster_yaml.clone(), original.clone())
    } else {
        renamed(&b.cluster_yaml, &original, &name).map_err(|why| ReproError::Rename {
            name: name.clone(),
            why,
        })?
    };
    match crate::cluster::paths::find(req.root, &name) {
        Ok(Found::Absent) => {}
        Ok(Found::Cluster(p)) => {
            return Err(ReproError::Exists {
                name,
                dir: p.dir().display().to_string(),
            });
        }
        Ok(Found::Foreign { path, why }) => {
            return Err(ReproError::Foreign(Found::foreign_message(&path, &why)));
        }
        Err(source) => {
            return Err(ReproError::Io {
                what: format!("cannot look for cluster {name}"),
                source,
            });
        }
    }
    let text = std::str::from_utf8(&b.recipe_bytes)
        .map_err(|_| bad("image/recipe.yaml is not UTF-8".into()))?;
    crate::image::recipe::Recipe::parse(text, "image/recipe.yaml (in the bundle)")
        .map_err(|e| bad(e.to_string()))?;
    let recipe = match crate::image::recipe::BUILT_IN
        .iter()
        .find(|(_, t)| t.as_bytes() == b.recipe_bytes.as_slice())
    {
        Some((n, _)) => RecipeSource::BuiltIn((*n).to_string()),
        None => RecipeSource::File,
    };
    let faults = match &b.network {
        Some(json) => faults::plan(json, &original, &cluster).map_err(bad)?,
        None => faults::FaultPlan::default(),
    };
    let hosts = compare::hosts(&b.version, &req.here);
    Ok(Plan {
        bundle: b,
        cluster,
        source,
        recipe,
        faults,
        hosts,
    })
}

/// The text of the valid cluster file `src` (which gives `from`) with the
/// cluster renamed to `to`, and the cluster it gives. Each whole-word use of
/// the old name is tried in turn; the one that renames the cluster (and
/// changes nothing but names) is kept. A file that names no cluster gets a
/// `metadata` section.
fn renamed(src: &str, from: &Cluster, to: &ClusterName) -> Result<(String, Cluster), String> {
    let old = from.name.as_str();
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let same_but_names = |c: &Cluster| {
        let mut back = c.clone();
        back.name = from.name.clone();
        if back.nodes.len() != from.nodes.len() {
            return false;
        }
        for (n, o) in back.nodes.iter_mut().zip(&from.nodes) {
            n.name = o.name.clone();
        }
        back == *from
    };
    let try_text = |text: String| match crate::spec::parse_cluster(&text, "cluster.yaml") {
        Ok(c) if c.name == *to && same_but_names(&c) => Some((text, c)),
        _ => None,
    };
    let uses = src.match_indices(old).filter(|(i, _)| {
        let before = src[..*i].chars().next_back();
        let after = src[i + old.len()..].chars().next();
        !before.is_some_and(name_char) && !after.is_some_and(name_char)
    });
    for (i, _) in uses.take(256) {
        let text = format!("{}{to}{}", &src[..i], &src[i + old.len()..]);
        if let Some(found) = try_text(text) {
            return Ok(found);
        }
    }
    if !src.lines().any(|l| l.starts_with("metadata")) {
        let sep = if src.ends_with('\n') || src.is_empty() {
            ""
        } else {
            "\n"
        };
        if let Some(found) = try_text(format!("{src}{sep}metadata:\n  name: {to}\n")) {
            return Ok(found);
        }
    }
    Err(format!(
        "its metadata.name ({old}) could not be replaced in the file's text"
    ))
}

/// The image, checked against the bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCheck {
    pub key: String,
    pub dir: PathBuf,
    pub cache_hit: bool,
    /// Where the recipe came from: `trixie (built in)`, `<cache>/recipes/<sha256>.yaml (file)`.
    pub recipe: String,
    /// sha256 of the bundle's `image/manifest.json`.
    pub bundle_manifest_sha256: String,
    /// sha256 of the manifest of the image built here.
    pub manifest_sha256: String,
    /// What differs (empty: the same image).
    pub differs: Vec<PartDiff>,
    pub seconds: f64,
}

/// Builds (or finds in the cache) the image of the bundled recipe and
/// compares it part by part with the bundled manifest; a difference is an
/// error unless `req.allow_image_mismatch`. Returns the check and the recipe
/// as `create` is to name it.
pub fn image(
    plan: &Plan,
    req: &Request<'_>,
    progress: &dyn crate::image::Progress,
) -> Result<(ImageCheck, String), ReproError> {
    let started = Instant::now();
    let recipe = match &plan.recipe {
        RecipeSource::BuiltIn(n) => n.clone(),
        RecipeSource::File => {
            let path = store_recipe(&plan.bundle, req.cache_dir.as_deref())?;
            path.display().to_string()
        }
    };
    let built = crate::image::ensure_built(
        &RecipeRef::parse(&recipe),
        &crate::image::BuildOptions {
            machined: None,
            cache_dir: req.cache_dir.clone(),
            refresh_base: false,
        },
        progress,
    )?;
    let manifest_sha256 = std::fs::read(&built.manifest_path)
        .map(|b| sha256_hex(&b))
        .map_err(|source| ReproError::Io {
            what: format!("cannot read {}", built.manifest_path.display()),
            source,
        })?;
    let differs = compare::image(&plan.bundle.manifest, &built.manifest);
    if !differs.is_empty() && !req.allow_image_mismatch {
        return Err(ReproError::Mismatch { diffs: differs });
    }
    Ok((
        ImageCheck {
            key: built.key,
            dir: built.dir,
            cache_hit: built.cache_hit,
            recipe: built.recipe,
            bundle_manifest_sha256: sha256_hex(&plan.bundle.manifest_bytes),
            manifest_sha256,
            differs,
            seconds: started.elapsed().as_secs_f64(),
        },
        recipe,
    ))
}

/// Writes the bundled recipe to `<cache>/recipes/<sha256>.yaml` (0600, in a
/// 0700 directory of the checked cache root) unless it is there already.
fn store_recipe(b: &Bundle, cache_dir: Option<&Path>) -> Result<PathBuf, ReproError> {
    let root = match cache_dir {
        Some(d) => d.to_path_buf(),
        None => crate::image::cache::cache_root().map_err(ImageError::from)?,
    };
    crate::image::cache::open_root(&root).map_err(ImageError::from)?;
    let dir = root.join("recipes");
    let io = |what: String| move |source| ReproError::Io { what, source };
    crate::fsutil::create_private_dir(&dir)
        .map_err(io(format!("cannot make {}", dir.display())))?;
    let sha = sha256_hex(&b.recipe_bytes);
    let path = dir.join(format!("{sha}.yaml"));
    match std::fs::read(&path) {
        Ok(bytes) if bytes == b.recipe_bytes => {}
        _ => crate::fsutil::write_atomic(&path, &b.recipe_bytes, 0o600)
            .map_err(io(format!("cannot write {}", path.display())))?,
    }
    Ok(path)
}

/// Creates the cluster of `plan` with the recipe `recipe` (from [`image`]).
pub fn create(
    plan: &Plan,
    recipe: &str,
    req: &Request<'_>,
    progress: &dyn Progress,
) -> Result<UpReport, LifecycleError> {
    let mut cluster = plan.cluster.clone();
    cluster.image = recipe.to_string();
    lifecycle::create(
        &lifecycle::CreateOptions {
            root: req.root.to_path_buf(),
            cluster: &cluster,
            source: Some(plan.source.clone()),
            accel: req.accel,
            tcg_cache_mib: req.tcg_cache_mib,
            timeout: req.timeout,
            cache_dir: req.cache_dir.clone(),
        },
        progress,
    )
}

/// Sets the bundle's faults on the new cluster and reads them back.
pub fn faults(plan: &Plan, root: &Path) -> Result<Vec<AppliedFault>, ReproError> {
    faults::apply(&plan.faults, root, &plan.cluster.name).map_err(|why| ReproError::Faults {
        name: plan.cluster.name.clone(),
        why,
    })
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
}
