//! The build pipeline: recipe + machined → cached image.
//!
//! 0. The recipe: built in by name, or a file the user owns (see `recipe`);
//!    its origin is reported first (`recipe trixie (built in)`). The cache
//!    root is created 0700 and refused when others could write it.
//! 1. Key = sha256(recipe bytes, machined bytes); a complete image under that
//!    key whose parts match the sha256 sums of its manifest is returned (cache
//!    hit). A part that does not match is [`ImageError::Damaged`]: the caller
//!    decides (`image build` replaces the entry, `create` stops).
//! 2. Base tree: mmdebstrap (its default mirror) writes the suite and packages
//!    to a tarball cached by suite, variant and packages, so a rebuild after a
//!    machined change does not fetch anything. Its `--mode` is chosen by
//!    [`super::hostcheck`]: `root` for root, `unshare` for an ordinary user.
//!    With a `gvisor` section, the gVisor stage ([`super::gvisor`]) is taken
//!    from its own cache entry or built (a Go build in a second chroot).
//! 3. The tarball is unpacked (only `usr/`, `boot/` and the dpkg status) into a
//!    scratch dir; the final root is assembled from it per
//!    `docs/image-layout.md`: the kept binaries, their library closure,
//!    decompressed modules, sysctls, minimal `/etc`, OCI archives, machined.
//! 4. Outputs are written into a temporary dir beside the cache entry, which is
//!    then renamed into place (atomic), after checking that the root has no
//!    shell and no package manager.
//!
//! Everything written is deterministic (fixed times, owners, ordering), so two
//! cold builds with the same Debian package versions give identical bytes.
//!
//! This module owns the entry point ([`ensure_built`]), the inputs and their
//! key, the host tools and the cache hit, and putting a finished image into
//! place. The steps live in submodules: [`base`] (mmdebstrap's tarball and
//! unpacking it), [`assemble`] (the root's contents, the manifest, the
//! squashfs), [`kernel`] (module lists, vmlinux, the initramfs) and
//! [`staging`] (writing into the root being assembled, and the check that it
//! holds no shell).

mod assemble;
mod base;
mod kernel;
mod staging;

pub(crate) use base::{tail_of, wait_with_heartbeat};
pub use staging::{FORBIDDEN_NAMES, forbidden_entries};

use super::ImageError;
use super::cache;
use super::gvisor;
use super::manifest::Manifest;
use super::recipe::{self, LoadedRecipe, RecipeRef};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the build reports what it is doing.
pub trait Progress {
    /// A step began or ended (`mmdebstrap ...`, `squashfs: 31 MiB (4.2s)`).
    fn phase(&self, message: &str);
    /// A long step is still running (`mmdebstrap ... (40 s) <its last log
    /// line>`, every [`HEARTBEAT`]); by default printed like a phase. A live
    /// view may show it in place instead.
    fn heartbeat(&self, message: &str) {
        self.phase(message);
    }
}

/// How often a long build step (mmdebstrap) reports that it still runs.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// Progress lines on stderr, `image: ...`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrProgress;

impl Progress for StderrProgress {
    fn phase(&self, message: &str) {
        eprintln!("image: {message}");
    }
}

/// No progress output.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _message: &str) {}
}

/// Knobs of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The machined binary; default: `IRONCLAD_MACHINED`, then `machined` beside
    /// the running executable.
    pub machined: Option<PathBuf>,
    /// The cache root; default: [`cache::cache_root`].
    pub cache_dir: Option<PathBuf>,
    /// Run mmdebstrap again even when a base tree is cached (e.g. to pick up
    /// Debian security updates).
    pub refresh_base: bool,
}

/// A built (or cached) image.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltImage {
    pub key: String,
    pub dir: PathBuf,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    pub cache_hit: bool,
    /// Where the recipe came from: `trixie (built in)`, `./my.yaml (file)`.
    pub recipe: String,
}

impl BuiltImage {
    fn at(dir: &Path, manifest: Manifest, cache_hit: bool, recipe: &LoadedRecipe) -> BuiltImage {
        BuiltImage {
            recipe: recipe.origin.to_string(),
            key: manifest.key.clone(),
            dir: dir.to_path_buf(),
            vmlinux: dir.join("vmlinux"),
            initramfs: dir.join("initramfs"),
            rootfs: dir.join("rootfs.squashfs"),
            manifest_path: dir.join("manifest.json"),
            manifest,
            cache_hit,
        }
    }
}

/// Finds an executable on `PATH` (and in the sbin dirs, which a normal user's
/// PATH may lack).
#[expect(
    clippy::disallowed_methods,
    reason = "a tool is looked up on PATH as a shell would"
)]
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The machined binary to put in the image: `explicit`, else
/// `$IRONCLAD_MACHINED`, else `machined` beside the running executable.
#[expect(
    clippy::disallowed_methods,
    reason = "IRONCLAD_MACHINED is documented for every command that builds an image"
)]
pub fn locate_machined(explicit: Option<&Path>) -> Result<PathBuf, ImageError> {
    let mut looked = Vec::new();
    let candidates: Vec<PathBuf> = if let Some(p) = explicit {
        vec![p.to_path_buf()]
    } else if let Some(p) = std::env::var_os("IRONCLAD_MACHINED").filter(|v| !v.is_empty()) {
        vec![PathBuf::from(p)]
    } else {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("machined")))
            .into_iter()
            .collect()
    };
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    Err(ImageError::MachinedNotFound { looked })
}

/// The inputs of a build: the recipe, the machined path and bytes, the key.
pub struct Inputs {
    pub recipe: LoadedRecipe,
    pub machined: PathBuf,
    pub machined_bytes: Vec<u8>,
    pub key: String,
}

/// Loads the recipe and machined and computes the cache key.
pub fn inputs(recipe: &RecipeRef, opts: &BuildOptions) -> Result<Inputs, ImageError> {
    let recipe = recipe::load(recipe)?;
    let machined = locate_machined(opts.machined.as_deref())?;
    let machined_bytes =
        fs::read(&machined).map_err(ImageError::io(format!("reading {}", machined.display())))?;
    let key = cache::image_key(&recipe.bytes, &machined_bytes);
    Ok(Inputs {
        recipe,
        machined,
        machined_bytes,
        key,
    })
}

/// The cache root, created (0700) if needed and checked (see `cache::open_root`).
fn cache_root(opts: &BuildOptions) -> Result<PathBuf, ImageError> {
    let root = match &opts.cache_dir {
        Some(d) => d.clone(),
        None => cache::cache_root()?,
    };
    cache::open_root(&root)?;
    Ok(root)
}

/// Returns the image for `recipe` and the chosen machined, building it if it is
/// not cached.
pub fn ensure_built(
    recipe: &RecipeRef,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuiltImage, ImageError> {
    let started = Instant::now();
    let inputs = inputs(recipe, opts)?;
    progress.phase(&format!("recipe {}", inputs.recipe.origin));
    let root = cache_root(opts)?;
    let dir = cache::image_dir(&root, &inputs.key);
    if let Some(hit) = cache_hit(&dir, &inputs, recipe, started, progress)? {
        return Ok(hit);
    }
    progress.phase(&format!(
        "building {} from {} with machined {} (key {})",
        inputs.recipe.recipe.name,
        inputs.recipe.origin,
        inputs.machined.display(),
        &inputs.key[..12]
    ));
    let r = &inputs.recipe.recipe;
    let base_tar = cache::base_tar(&root, &cache::base_key(&r.suite, &r.variant, &r.packages));
    let (mksquashfs, stage) = host_tools(&root, &inputs, &base_tar, opts, progress)?;
    let (built, manifest) = build_outputs(
        &root,
        &inputs,
        &base_tar,
        stage.as_ref(),
        &mksquashfs,
        progress,
    )?;
    let image = publish(&built, &dir, manifest, &inputs)?;
    if !image.cache_hit {
        progress.phase(&format!(
            "built {} in {:.1}s: {}",
            &inputs.key[..12],
            started.elapsed().as_secs_f64(),
            dir.display()
        ));
    }
    Ok(image)
}

/// The cached image under `dir`, when there is one and its parts match its
/// manifest; a damaged one is an error.
fn cache_hit(
    dir: &Path,
    inputs: &Inputs,
    recipe: &RecipeRef,
    started: Instant,
    progress: &dyn Progress,
) -> Result<Option<BuiltImage>, ImageError> {
    let Some(m) = cache::read_cached(dir) else {
        return Ok(None);
    };
    let t = Instant::now();
    cache::verify(dir, &m).map_err(|damage| ImageError::Damaged {
        dir: dir.to_path_buf(),
        damage,
        recipe: recipe.to_string(),
    })?;
    progress.phase(&format!(
        "cache hit {} ({}) in {:.2}s (parts verified in {:.2}s)",
        &inputs.key[..12],
        dir.display(),
        started.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    ));
    Ok(Some(BuiltImage::at(dir, m, true, &inputs.recipe)))
}

/// Checks the host tools the build needs (mmdebstrap only when the base tree
/// or the gVisor stage must be made), makes the base tree and the gVisor
/// stage; returns mksquashfs and the stage.
fn host_tools(
    root: &Path,
    inputs: &Inputs,
    base_tar: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<(PathBuf, Option<gvisor::Stage>), ImageError> {
    let r = &inputs.recipe.recipe;
    let mksquashfs = find_tool("mksquashfs");
    let mmdebstrap = find_tool("mmdebstrap");
    let stage_missing = r
        .gvisor
        .as_ref()
        .is_some_and(|g| !gvisor::is_cached(root, g, &r.suite, r.source_date_epoch));
    let needs_mmdebstrap = opts.refresh_base || !base_tar.is_file() || stage_missing;
    let missing = missing_tools(
        mksquashfs.is_some(),
        mmdebstrap.is_some() || !needs_mmdebstrap,
    );
    let Some(mksquashfs) = mksquashfs.filter(|_| missing.is_empty()) else {
        return Err(ImageError::MissingTools {
            tools: missing.iter().map(|m| m.0.to_string()).collect(),
            packages: missing.iter().map(|m| m.1.to_string()).collect(),
        });
    };
    base::ensure_base(
        &inputs.recipe,
        base_tar,
        mmdebstrap.as_deref(),
        opts,
        progress,
    )?;
    let stage = match &r.gvisor {
        Some(g) => Some(gvisor::ensure_stage(
            root,
            g,
            &r.suite,
            r.source_date_epoch,
            mmdebstrap.as_deref(),
            progress,
        )?),
        None => None,
    };
    Ok((mksquashfs, stage))
}

/// Unpacks the base tree into a scratch dir under the cache root and builds
/// every output into a new directory beside the cache entries; returns that
/// directory (mode 0755, not yet in place) and the manifest.
fn build_outputs(
    root: &Path,
    inputs: &Inputs,
    base_tar: &Path,
    stage: Option<&gvisor::Stage>,
    mksquashfs: &Path,
    progress: &dyn Progress,
) -> Result<(PathBuf, Manifest), ImageError> {
    let tmp_root = root.join("tmp");
    fs::create_dir_all(&tmp_root)
        .map_err(ImageError::io(format!("creating {}", tmp_root.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("scratch-")
        .tempdir_in(&tmp_root)
        .map_err(ImageError::io("creating a scratch dir"))?;
    let tree = scratch.path().join("debian");
    phase(progress, "extract", || {
        let n = base::extract_base(base_tar, &tree)?;
        Ok(((), format!("{n} entries from {}", base_tar.display())))
    })?;

    let images = root.join("images");
    fs::create_dir_all(&images)
        .map_err(ImageError::io(format!("creating {}", images.display())))?;
    let out = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}-", &inputs.key[..12]))
        .tempdir_in(&images)
        .map_err(ImageError::io("creating the output dir"))?;
    let staging = scratch.path().join("root");
    let manifest = assemble::assemble(
        inputs,
        &tree,
        stage,
        &staging,
        out.path(),
        mksquashfs,
        progress,
    )?;
    let built = out.keep();
    fs::set_permissions(&built, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io("setting output dir mode"))?;
    Ok((built, manifest))
}

/// Renames the finished image `built` into place at `dir`, atomically. When
/// another build finished the same key first, theirs is kept (it is
/// identical) and returned as a cache hit.
fn publish(
    built: &Path,
    dir: &Path,
    manifest: Manifest,
    inputs: &Inputs,
) -> Result<BuiltImage, ImageError> {
    if let Some(existing) = cache::read_cached(dir) {
        let _ = fs::remove_dir_all(built);
        return Ok(BuiltImage::at(dir, existing, true, &inputs.recipe));
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(ImageError::io(format!(
            "removing incomplete {}",
            dir.display()
        )))?;
    }
    fs::rename(built, dir).map_err(ImageError::io(format!(
        "moving the image to {}",
        dir.display()
    )))?;
    Ok(BuiltImage::at(dir, manifest, false, &inputs.recipe))
}

/// The (tool, Debian package) pairs that are missing.
fn missing_tools(
    have_mksquashfs: bool,
    have_mmdebstrap: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut missing = Vec::new();
    if !have_mmdebstrap {
        missing.push(("mmdebstrap", "mmdebstrap"));
    }
    if !have_mksquashfs {
        missing.push(("mksquashfs", "squashfs-tools"));
    }
    missing
}

fn phase<T>(
    progress: &dyn Progress,
    name: &str,
    f: impl FnOnce() -> Result<(T, String), ImageError>,
) -> Result<T, ImageError> {
    progress.phase(&format!("{name} ..."));
    let t = Instant::now();
    let (v, detail) = f()?;
    progress.phase(&format!(
        "{name}: {detail} ({:.1}s)",
        t.elapsed().as_secs_f64()
    ));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machined_lookup_prefers_the_explicit_path() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("machined");
        fs::write(&m, b"x").unwrap();
        assert_eq!(locate_machined(Some(&m)).unwrap(), m);
        let missing = dir.path().join("nope");
        let err = locate_machined(Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(err.is_bad_input());
    }

    #[test]
    fn missing_tools_are_reported_together() {
        assert!(missing_tools(true, true).is_empty());
        assert_eq!(
            missing_tools(false, false),
            [
                ("mmdebstrap", "mmdebstrap"),
                ("mksquashfs", "squashfs-tools")
            ]
        );
        assert_eq!(missing_tools(true, false), [("mmdebstrap", "mmdebstrap")]);
    }

    #[test]
    fn missing_tools_error_names_the_packages() {
        let err = ImageError::MissingTools {
            tools: vec!["mmdebstrap".into(), "mksquashfs".into()],
            packages: vec!["mmdebstrap".into(), "squashfs-tools".into()],
        };
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install mmdebstrap squashfs-tools"),
            "{msg}"
        );
        assert!(err.is_missing_dependency());
    }
}
