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

use super::ImageError;
use super::cache;
use super::closure::{library_closure, resolve_in_tree};
use super::hostcheck;
use super::initramfs::Archive;
use super::manifest::{self, Manifest, ModuleManifest, RecipeInfo};
use super::modules::{DepTable, ModuleFile, read_module};
use super::oci::images_archive;
use super::recipe::{self, LoadedRecipe, RecipeRef};
use super::squashfs::make_squashfs;
use ironclad_contract::layout;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Names that must not exist anywhere in the final root.
pub const FORBIDDEN_NAMES: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "busybox", "apt", "apt-get", "dpkg", "dpkg-deb", "rpm",
];

/// Where the build reports what it is doing.
pub trait Progress {
    fn phase(&self, message: &str);
}

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
    pub vmlinuz: PathBuf,
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
            vmlinuz: dir.join("vmlinuz"),
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
    if let Some(m) = cache::read_cached(&dir) {
        let t = Instant::now();
        cache::verify(&dir, &m).map_err(|damage| ImageError::Damaged {
            dir: dir.clone(),
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
        return Ok(BuiltImage::at(&dir, m, true, &inputs.recipe));
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
    let mksquashfs = find_tool("mksquashfs");
    let mmdebstrap = find_tool("mmdebstrap");
    let needs_mmdebstrap = opts.refresh_base || !base_tar.is_file();
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
    ensure_base(
        &inputs.recipe,
        &base_tar,
        mmdebstrap.as_deref(),
        opts,
        progress,
    )?;

    let tmp_root = root.join("tmp");
    fs::create_dir_all(&tmp_root)
        .map_err(ImageError::io(format!("creating {}", tmp_root.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("scratch-")
        .tempdir_in(&tmp_root)
        .map_err(ImageError::io("creating a scratch dir"))?;
    let tree = scratch.path().join("debian");
    phase(progress, "extract", || {
        let n = extract_base(&base_tar, &tree)?;
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
    let manifest = assemble(&inputs, &tree, &staging, out.path(), &mksquashfs, progress)?;

    // Into place, atomically.
    let tmp_path = out.keep();
    fs::set_permissions(&tmp_path, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io("setting output dir mode"))?;
    if let Some(existing) = cache::read_cached(&dir) {
        // Someone else finished the same build first: theirs is identical.
        let _ = fs::remove_dir_all(&tmp_path);
        return Ok(BuiltImage::at(&dir, existing, true, &inputs.recipe));
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(ImageError::io(format!(
            "removing incomplete {}",
            dir.display()
        )))?;
    }
    fs::rename(&tmp_path, &dir).map_err(ImageError::io(format!(
        "moving the image to {}",
        dir.display()
    )))?;
    progress.phase(&format!(
        "built {} in {:.1}s: {}",
        &inputs.key[..12],
        started.elapsed().as_secs_f64(),
        dir.display()
    ));
    Ok(BuiltImage::at(&dir, manifest, false, &inputs.recipe))
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

fn ensure_base(
    recipe: &LoadedRecipe,
    tar_path: &Path,
    mmdebstrap: Option<&Path>,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    if tar_path.is_file() && !opts.refresh_base {
        progress.phase(&format!(
            "mmdebstrap: base tree cached ({})",
            tar_path.display()
        ));
        return Ok(());
    }
    let Some(mmdebstrap) = mmdebstrap else {
        return Err(ImageError::MissingTools {
            tools: vec!["mmdebstrap".into()],
            packages: vec!["mmdebstrap".into()],
        });
    };
    // The mode is ironclad's choice, not mmdebstrap's guess: root, or a user
    // namespace for an ordinary user, or an error naming the fix.
    let mode = hostcheck::chroot_mode()?;
    progress.phase(&format!("mmdebstrap: mode {}", mode.arg()));
    let r = &recipe.recipe;
    let dir = tar_path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(ImageError::io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(".partial-{}.tar", std::process::id()));
    let log_path = tar_path.with_extension("log");
    phase(progress, "mmdebstrap", || {
        let log = fs::File::create(&log_path)
            .map_err(ImageError::io(format!("creating {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(ImageError::io("duplicating the log handle"))?;
        // No mirror argument: mmdebstrap uses its (and the host's) default.
        let status = Command::new(mmdebstrap)
            .arg(format!("--mode={}", mode.arg()))
            .arg(format!("--variant={}", r.variant))
            .arg(format!("--include={}", r.packages.join(",")))
            .arg("--skip=output/dev")
            .arg("--dpkgopt=path-exclude=/usr/share/man/*")
            .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
            .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
            .arg("--dpkgopt=path-exclude=/usr/share/info/*")
            .arg(&r.suite)
            .arg(&tmp)
            .env("SOURCE_DATE_EPOCH", r.source_date_epoch.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(ImageError::io("running mmdebstrap"))?;
        if !status.success() {
            let _ = fs::remove_file(&tmp);
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(ImageError::ToolFailed {
                tool: "mmdebstrap".into(),
                status: status.to_string(),
                log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        fs::rename(&tmp, tar_path)
            .map_err(ImageError::io(format!("moving {}", tar_path.display())))?;
        Ok(((), format!("{} {} packages", r.suite, r.packages.len())))
    })
}

fn wanted_from_base(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    (s.starts_with("usr/") && !s.starts_with("usr/share/"))
        || s == "usr"
        || s.starts_with("boot/")
        || ["bin", "sbin", "lib", "lib64"].contains(&s.as_ref())
        || s == "var/lib/dpkg/status"
}

fn strip_dot(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

/// Unpacks the parts of the base tarball the build reads. Device nodes are
/// skipped (so this works without root).
fn extract_base(tar_path: &Path, dest: &Path) -> Result<usize, ImageError> {
    let f = fs::File::open(tar_path)
        .map_err(ImageError::io(format!("opening {}", tar_path.display())))?;
    let mut a = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, f));
    a.set_preserve_mtime(false);
    fs::create_dir_all(dest).map_err(ImageError::io(format!("creating {}", dest.display())))?;
    let ctx = || format!("unpacking {}", tar_path.display());
    let mut n = 0;
    for entry in a.entries().map_err(ImageError::io(ctx()))? {
        let mut entry = entry.map_err(ImageError::io(ctx()))?;
        let ty = entry.header().entry_type();
        if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            continue;
        }
        let rel = strip_dot(&entry.path().map_err(ImageError::io(ctx()))?);
        if !wanted_from_base(&rel) {
            continue;
        }
        if ty.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(ImageError::io(ctx()))?
                .map(|t| strip_dot(&t));
            if !target.as_deref().is_some_and(wanted_from_base) {
                continue;
            }
        }
        entry.unpack_in(dest).map_err(ImageError::io(format!(
            "unpacking {} from the base tree",
            rel.display()
        )))?;
        n += 1;
    }
    Ok(n)
}

/// `/lib/...` → `/usr/lib/...` (the root is merged-/usr).
fn usr_path(logical: &str) -> String {
    for top in ["/lib/", "/lib64/", "/bin/", "/sbin/"] {
        if logical.starts_with(top) {
            return format!("/usr{logical}");
        }
    }
    logical.to_string()
}

/// The final root being assembled on disk.
struct Staging {
    root: PathBuf,
}

impl Staging {
    fn host(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    fn parent_dirs(&self, logical: &str) -> Result<PathBuf, ImageError> {
        let p = self.host(logical);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(ImageError::io(format!("creating {}", parent.display())))?;
        }
        Ok(p)
    }

    fn write(&self, logical: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
        let p = self.parent_dirs(logical)?;
        fs::write(&p, data).map_err(ImageError::io(format!("writing {}", p.display())))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io(format!("chmod {}", p.display())))
    }

    fn copy(&self, logical: &str, src: &Path) -> Result<(), ImageError> {
        let p = self.parent_dirs(logical)?;
        let meta =
            fs::metadata(src).map_err(ImageError::io(format!("reading {}", src.display())))?;
        // Keep the rwx bits, drop set-id bits.
        let mode = meta.permissions().mode() & 0o755;
        fs::copy(src, &p).map_err(ImageError::io(format!(
            "copying {} to {}",
            src.display(),
            p.display()
        )))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io(format!("chmod {}", p.display())))
    }

    fn symlink(&self, logical: &str, target: &str) -> Result<(), ImageError> {
        let p = self.parent_dirs(logical)?;
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p)
            .map_err(ImageError::io(format!("symlink {}", p.display())))
    }

    fn dir(&self, logical: &str) -> Result<(), ImageError> {
        let p = self.host(logical);
        fs::create_dir_all(&p).map_err(ImageError::io(format!("creating {}", p.display())))
    }
}

fn kernel_version(tree: &Path) -> Result<String, ImageError> {
    let dir = tree.join("usr/lib/modules");
    let mut kvers: Vec<String> = fs::read_dir(&dir)
        .map_err(ImageError::io(format!("listing {}", dir.display())))?
        .flatten()
        .filter(|e| e.path().join("modules.dep").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kvers.sort();
    match kvers.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ImageError::Tree(
            "no kernel modules dir with modules.dep".into(),
        )),
        many => Err(ImageError::Tree(format!(
            "several kernels: {}",
            many.join(", ")
        ))),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

const ETC_PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const ETC_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const ETC_NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";
const ETC_HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";

fn load_modules(
    tree: &Path,
    kver: &str,
    files: &[ModuleFile],
) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let base = tree.join("usr/lib/modules").join(kver);
    files
        .iter()
        .map(|m| Ok((m.file_name.clone(), read_module(&base.join(&m.rel_path))?)))
        .collect()
}

/// Modules machined needs before it loads the root list in the background:
/// the machine config (fw_cfg), the state disk, the /etc overlay, the NICs.
/// The image build refuses them in the root list.
const STAGE2_NEEDS_EARLY: &[&str] = &["qemu_fw_cfg", "ext4", "overlay", "virtio_net"];

/// Refuses a root module list (loaded in the background by stage 2) with a
/// module of [`STAGE2_NEEDS_EARLY`] in it, listed or pulled in as a dependency.
fn check_root_list(root: &[ModuleFile]) -> Result<(), ImageError> {
    match root
        .iter()
        .find(|m| STAGE2_NEEDS_EARLY.contains(&m.name.as_str()))
    {
        Some(m) => Err(ImageError::Tree(format!(
            "module {} is needed before stage 2's background loading (machine config, \
             state disk, /etc overlay, NICs): list it under modules.early, not modules.root",
            m.name
        ))),
        None => Ok(()),
    }
}

/// Threads that load the early modules (the smallest node has 2 vCPUs).
const EARLY_THREADS: usize = 2;

fn modules_load(files: &[ModuleFile]) -> String {
    files.iter().map(|m| format!("{}\n", m.file_name)).collect()
}

/// Builds every output into `out` from the unpacked Debian `tree`, using
/// `staging` for the root. Returns the manifest (also written to `out`).
/// Fills `staging_dir` (the root) and writes vmlinuz, initramfs, the
/// squashfs and the manifest into `out`; each step in its own function, in
/// the order their output depends on.
fn assemble(
    inputs: &Inputs,
    tree: &Path,
    staging_dir: &Path,
    out: &Path,
    mksquashfs: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, ImageError> {
    let epoch = inputs.recipe.recipe.source_date_epoch;
    let a = Assembly {
        inputs,
        tree,
        st: Staging {
            root: staging_dir.to_path_buf(),
        },
        out,
        kver: kernel_version(tree)?,
        progress,
    };
    a.skeleton()?;
    let objects = a.binaries()?;
    let mods = a.modules()?;
    a.offline_images()?;
    a.vmlinuz()?;
    a.initramfs(&mods)?;
    let mut manifest = a.manifest(&objects, &mods)?;
    normalize_dirs(staging_dir)?;
    let forbidden = forbidden_entries(staging_dir)?;
    if !forbidden.is_empty() {
        return Err(ImageError::ShellInImage(forbidden));
    }

    phase(progress, "squashfs", || {
        let p = out.join("rootfs.squashfs");
        make_squashfs(mksquashfs, staging_dir, &p, epoch)?;
        let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        Ok(((), format!("{:.1} MiB", size as f64 / (1024.0 * 1024.0))))
    })?;
    let p = out.join("rootfs.squashfs");
    manifest.parts.insert(
        "rootfs.squashfs".to_string(),
        manifest::hash_file(&p).map_err(ImageError::io("hashing rootfs.squashfs"))?,
    );
    let mut text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Tree(e.to_string()))?;
    text.push(b'\n');
    let mp = out.join("manifest.json");
    let mut f = fs::File::create(&mp).map_err(ImageError::io("writing manifest.json"))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(ImageError::io("writing manifest.json"))?;
    for part in cache::PARTS {
        let p = out.join(part);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
            .map_err(ImageError::io(format!("chmod {}", p.display())))?;
    }
    Ok(manifest)
}

/// What every step of [`assemble`] reads.
struct Assembly<'a> {
    inputs: &'a Inputs,
    tree: &'a Path,
    st: Staging,
    out: &'a Path,
    kver: String,
    progress: &'a dyn Progress,
}

/// The image's kernel modules, each list in load order.
struct ModuleSets {
    table: DepTable,
    /// Loaded by stage 1 (in the initramfs).
    init: Vec<ModuleFile>,
    /// Loaded on threads while stage 1 runs (in the initramfs).
    early: Vec<ModuleFile>,
    /// Loaded from the root after the switch.
    root: Vec<ModuleFile>,
}

impl Assembly<'_> {
    /// The root's directories and the usr-merge links.
    fn skeleton(&self) -> Result<(), ImageError> {
        for d in [
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "etc",
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "var",
            "newroot",
        ] {
            self.st.dir(d)?;
        }
        for (link, target) in [
            ("/bin", "usr/bin"),
            ("/sbin", "usr/sbin"),
            ("/lib", "usr/lib"),
            ("/lib64", "usr/lib64"),
        ] {
            self.st.symlink(link, target)?;
        }
        Ok(())
    }

    /// The recipe's binaries, machined and their library closure, links,
    /// os-release and the fixed /etc files; returns the binaries (logical
    /// path, file in the tree).
    fn binaries(&self) -> Result<Vec<(String, PathBuf)>, ImageError> {
        let mut objects = Vec::new();
        for b in &self.inputs.recipe.recipe.binaries {
            let real = resolve_in_tree(self.tree, b)?
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    ImageError::Tree(format!(
                        "binary {b} is not in the tree (is its package listed?)"
                    ))
                })?;
            objects.push((usr_path(b), real));
        }
        let machined_logical = "/usr/sbin/machined".to_string();
        objects.push((machined_logical.clone(), self.inputs.machined.clone()));
        let libs = phase(self.progress, "closure", || {
            let libs = library_closure(self.tree, &objects)?;
            let n = libs.len();
            Ok((libs, format!("{} binaries, {n} libraries", objects.len())))
        })?;
        for (logical, real) in &objects {
            self.st.copy(logical, real)?;
        }
        fs::set_permissions(
            self.st.host(&machined_logical),
            fs::Permissions::from_mode(0o755),
        )
        .map_err(ImageError::io("chmod machined"))?;
        for (logical, real) in &libs {
            self.st.copy(&usr_path(logical), real)?;
        }
        for (link, target) in &self.inputs.recipe.recipe.links {
            self.st.symlink(&usr_path(link), target)?;
        }
        let os_release = self.tree.join("usr/lib/os-release");
        if os_release.is_file() {
            self.st.copy("/usr/lib/os-release", &os_release)?;
            self.st
                .symlink("/etc/os-release", "../usr/lib/os-release")?;
        }
        self.st.write("/etc/passwd", ETC_PASSWD.as_bytes(), 0o644)?;
        self.st.write("/etc/group", ETC_GROUP.as_bytes(), 0o644)?;
        self.st
            .write("/etc/nsswitch.conf", ETC_NSSWITCH.as_bytes(), 0o644)?;
        self.st.write("/etc/hosts", ETC_HOSTS.as_bytes(), 0o644)?;
        Ok(objects)
    }

    /// The module lists, the root's modules and their load list, the sysctls.
    fn modules(&self) -> Result<ModuleSets, ImageError> {
        let r = &self.inputs.recipe.recipe;
        let kver = &self.kver;
        let (table, init, early, root) = phase(self.progress, "modules", || {
            let dep_path = self
                .tree
                .join("usr/lib/modules")
                .join(kver)
                .join("modules.dep");
            let text = fs::read_to_string(&dep_path)
                .map_err(ImageError::io(format!("reading {}", dep_path.display())))?;
            let table = DepTable::parse(&text)?;
            let init = table.load_order(&r.modules.initramfs, &[])?;
            // Loaded while stage 1 loads `init`.
            let early = table.concurrent_order(&r.modules.early, &init)?;
            let before_root: Vec<_> = init.iter().chain(&early).cloned().collect();
            let root = table.load_order(&r.modules.root, &before_root)?;
            check_root_list(&root)?;
            let detail = format!(
                "{} for stage 1, {} early, {} for the root ({kver})",
                init.len(),
                early.len(),
                root.len()
            );
            Ok(((table, init, early, root), detail))
        })?;
        for (name, data) in load_modules(self.tree, kver, &root)? {
            self.st.write(
                &format!("/usr/lib/modules/{kver}/ironclad/{name}"),
                &data,
                0o644,
            )?;
        }
        self.st
            .write(layout::ROOT_MODULES, modules_load(&root).as_bytes(), 0o644)?;
        let mut sysctl =
            serde_json::to_vec_pretty(&r.sysctls).map_err(|e| ImageError::Tree(e.to_string()))?;
        sysctl.push(b'\n');
        self.st.write(layout::SYSCTL_JSON, &sysctl, 0o644)?;
        Ok(ModuleSets {
            table,
            init,
            early,
            root,
        })
    }

    /// The offline OCI archive (pause and toolbox from the tree's static
    /// busybox).
    fn offline_images(&self) -> Result<(), ImageError> {
        phase(self.progress, "oci", || {
            let bb_path = resolve_in_tree(self.tree, "/usr/bin/busybox")?
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    ImageError::Tree(
                        "no /usr/bin/busybox (package busybox-static) for the OCI images".into(),
                    )
                })?;
            let bb = fs::read(&bb_path).map_err(ImageError::io("reading busybox"))?;
            let is_static =
                library_closure(self.tree, &[("/bin/busybox".into(), bb_path.clone())])?.is_empty();
            if !is_static {
                return Err(ImageError::Tree(
                    "busybox in the tree is not static (use busybox-static)".into(),
                ));
            }
            let archive = images_archive(&bb, self.inputs.recipe.recipe.source_date_epoch)?;
            self.st.write(
                &format!("{}/{}", layout::IMAGES_DIR, layout::OFFLINE_ARCHIVE),
                &archive,
                0o644,
            )?;
            Ok((
                (),
                format!("pause and toolbox {} KiB", archive.len() / 1024),
            ))
        })
    }

    fn vmlinuz(&self) -> Result<(), ImageError> {
        let vmlinuz = self
            .tree
            .join("boot")
            .join(format!("vmlinuz-{}", self.kver));
        fs::copy(&vmlinuz, self.out.join("vmlinuz"))
            .map_err(ImageError::io(format!("copying {}", vmlinuz.display())))?;
        Ok(())
    }

    /// The uncompressed initramfs: machined as /init, its libraries, the
    /// stage-1 and early modules and their lists.
    fn initramfs(&self, mods: &ModuleSets) -> Result<(), ImageError> {
        phase(self.progress, "initramfs", || {
            let mut a = Archive::new();
            a.file("init", self.inputs.machined_bytes.clone(), 0o755)?;
            for d in ["dev", "proc", "sys", "newroot", "run", "tmp"] {
                a.dir(d, 0o755)?;
            }
            a.char_dev("dev/console", 5, 1, 0o600)?;
            a.char_dev("dev/null", 1, 3, 0o666)?;
            let init_libs =
                library_closure(self.tree, &[("/init".into(), self.inputs.machined.clone())])?;
            for (logical, real) in &init_libs {
                let data = fs::read(real)
                    .map_err(ImageError::io(format!("reading {}", real.display())))?;
                a.file(logical, data, 0o755)?;
            }
            let both: Vec<_> = mods.init.iter().chain(&mods.early).cloned().collect();
            let mut sizes = BTreeMap::new();
            for (name, data) in load_modules(self.tree, &self.kver, &both)? {
                sizes.insert(name.clone(), data.len() as u64);
                a.file(&format!("lib/modules/{name}"), data, 0o644)?;
            }
            a.file(
                layout::rel(layout::INITRAMFS_MODULES),
                modules_load(&mods.init).into_bytes(),
                0o644,
            )?;
            // One group per vCPU of the smallest node (2), separated by a blank
            // line: each loads on its own thread.
            let groups = mods
                .table
                .split_concurrent(&mods.early, EARLY_THREADS, |m| {
                    sizes.get(&m.file_name).copied().unwrap_or(0)
                });
            let early_text: Vec<String> = groups.iter().map(|g| modules_load(g)).collect();
            a.file(
                layout::rel(layout::INITRAMFS_EARLY_MODULES),
                early_text.join("\n").into_bytes(),
                0o644,
            )?;
            let mtime = u32::try_from(self.inputs.recipe.recipe.source_date_epoch).unwrap_or(0);
            // Uncompressed: under TCG the kernel's inflate of a gzip initramfs
            // (17 MB) cost 0.75 s of boot; reading 17 MB more from the host
            // costs nothing measurable.
            let bytes = a.to_newc(mtime)?;
            let p = self.out.join("initramfs");
            fs::write(&p, &bytes).map_err(ImageError::io(format!("writing {}", p.display())))?;
            Ok((
                (),
                format!("{} KiB, {} libraries", bytes.len() / 1024, init_libs.len()),
            ))
        })
    }

    /// The manifest with the hashes of vmlinuz and initramfs, also written
    /// into the root (the squashfs's hash is added after it is made).
    fn manifest(
        &self,
        objects: &[(String, PathBuf)],
        mods: &ModuleSets,
    ) -> Result<Manifest, ImageError> {
        let r = &self.inputs.recipe.recipe;
        let epoch = r.source_date_epoch;
        let dpkg_status = fs::read_to_string(self.tree.join("var/lib/dpkg/status"))
            .map_err(ImageError::io("reading the dpkg status"))?;
        let mut manifest = Manifest {
            api_version: crate::API_VERSION.to_string(),
            kind: manifest::MANIFEST_KIND.to_string(),
            key: self.inputs.key.clone(),
            recipe: RecipeInfo {
                name: r.name.clone(),
                sha256: sha256_hex(&self.inputs.recipe.bytes),
                suite: r.suite.clone(),
            },
            machined_sha256: sha256_hex(&self.inputs.machined_bytes),
            kernel_version: self.kver.clone(),
            source_date_epoch: epoch,
            packages: manifest::installed_packages(&dpkg_status),
            binaries: objects.iter().map(|o| o.0.clone()).collect(),
            modules: ModuleManifest {
                initramfs: mods.init.iter().map(|m| m.file_name.clone()).collect(),
                early: mods.early.iter().map(|m| m.file_name.clone()).collect(),
                root: mods.root.iter().map(|m| m.file_name.clone()).collect(),
            },
            sysctls: r.sysctls.clone(),
            parts: BTreeMap::new(),
        };
        for part in ["vmlinuz", "initramfs"] {
            let p = self.out.join(part);
            manifest.parts.insert(
                part.to_string(),
                manifest::hash_file(&p)
                    .map_err(ImageError::io(format!("hashing {}", p.display())))?,
            );
        }
        let inner =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Tree(e.to_string()))?;
        self.st.write(layout::MANIFEST, &inner, 0o644)?;
        Ok(manifest)
    }
}

/// Every directory 0755, whatever the umask was.
fn normalize_dirs(dir: &Path) -> Result<(), ImageError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io(format!("chmod {}", dir.display())))?;
    for e in fs::read_dir(dir).map_err(ImageError::io(format!("listing {}", dir.display())))? {
        let e = e.map_err(ImageError::io(format!("listing {}", dir.display())))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            normalize_dirs(&e.path())?;
        }
    }
    Ok(())
}

/// Paths (relative to `root`) whose name is a shell or a package manager.
pub fn forbidden_entries(root: &Path) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(ImageError::io(format!("listing {}", dir.display())))? {
            let e = e.map_err(ImageError::io(format!("listing {}", dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if FORBIDDEN_NAMES.contains(&name.as_str()) {
                out.push(format!(
                    "/{}",
                    path.strip_prefix(root).unwrap_or(&path).display()
                ));
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_critical_modules_are_refused_in_the_root_list() {
        let m = |name: &str| ModuleFile {
            name: name.into(),
            rel_path: format!("kernel/{name}.ko.xz"),
            file_name: format!("{name}.ko"),
        };
        assert!(check_root_list(&[m("bridge"), m("veth")]).is_ok());
        let e = check_root_list(&[m("bridge"), m("ext4")]).unwrap_err();
        assert!(e.to_string().contains("ext4"), "{e}");
        assert!(e.to_string().contains("modules.early"), "{e}");
    }

    #[test]
    fn usr_merge_paths() {
        assert_eq!(
            usr_path("/lib/x86_64-linux-gnu/libc.so.6"),
            "/usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            usr_path("/lib64/ld-linux-x86-64.so.2"),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(usr_path("/usr/bin/etcd"), "/usr/bin/etcd");
        assert_eq!(usr_path("/library/x"), "/library/x");
    }

    #[test]
    fn shells_and_package_managers_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/etcd"), b"x").unwrap();
        assert!(forbidden_entries(root).unwrap().is_empty());
        std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
        fs::write(root.join("usr/bin/dpkg"), b"x").unwrap();
        assert_eq!(
            forbidden_entries(root).unwrap(),
            ["/usr/bin/dpkg", "/usr/bin/sh"]
        );
    }

    #[test]
    fn base_filter_keeps_only_what_the_build_reads() {
        for keep in [
            "usr/bin/etcd",
            "usr",
            "lib64",
            "boot/vmlinuz-6.12",
            "var/lib/dpkg/status",
        ] {
            assert!(wanted_from_base(Path::new(keep)), "{keep}");
        }
        for drop in ["usr/share/doc/x", "etc/passwd", "var/cache/apt/x", "root"] {
            assert!(!wanted_from_base(Path::new(drop)), "{drop}");
        }
        assert_eq!(strip_dot(Path::new("./usr/bin")), PathBuf::from("usr/bin"));
    }

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
