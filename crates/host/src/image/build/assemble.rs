//! Assembling the image from the unpacked Debian tree: the root's skeleton,
//! binaries, libraries, links and `/etc`, the offline OCI images, the
//! manifest, and last the squashfs and `manifest.json` in the output dir
//! (per `docs/image-layout.md`). The kernel side (module lists, vmlinux,
//! the initramfs) is [`super::kernel`]'s.

use super::kernel::{ModuleSets, kernel_version};
use super::staging::{Staging, forbidden_entries, normalize_dirs, usr_path};
use super::{Inputs, Progress, phase};
use crate::image::ImageError;
use crate::image::cache;
use crate::image::closure::{library_closure, resolve_in_tree};
use crate::image::gvisor;
use crate::image::manifest::{self, Manifest, ModuleManifest, RecipeInfo};
use crate::image::oci::images_archive;
use crate::image::squashfs::make_squashfs;
use ironclad_contract::layout;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Builds every output into `out` from the unpacked Debian `tree`, using
/// `staging_dir` for the root. Returns the manifest (also written to `out`).
/// Fills `staging_dir` (the root) and writes vmlinux, initramfs, the
/// squashfs and the manifest into `out`; each step in its own function, in
/// the order their output depends on.
pub(super) fn assemble(
    inputs: &Inputs,
    tree: &Path,
    stage: Option<&gvisor::Stage>,
    staging_dir: &Path,
    out: &Path,
    mksquashfs: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, ImageError> {
    let a = Assembly {
        inputs,
        tree,
        st: Staging {
            root: staging_dir.to_path_buf(),
        },
        out,
        kver: kernel_version(tree)?,
        stage,
        progress,
    };
    a.skeleton()?;
    let objects = a.binaries()?;
    let mods = a.modules()?;
    a.offline_images()?;
    a.vmlinux()?;
    a.initramfs(&mods)?;
    let mut manifest = a.manifest(&objects, &mods)?;
    a.check_root()?;
    a.squashfs(mksquashfs, &mut manifest)?;
    a.seal(&manifest)?;
    Ok(manifest)
}

/// What every step of [`assemble`] reads.
pub(super) struct Assembly<'a> {
    pub(super) inputs: &'a Inputs,
    pub(super) tree: &'a Path,
    pub(super) st: Staging,
    pub(super) out: &'a Path,
    pub(super) kver: String,
    /// The gVisor stage, when the recipe has one.
    pub(super) stage: Option<&'a gvisor::Stage>,
    pub(super) progress: &'a dyn Progress,
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
        // The gVisor stage's binaries: static (no library may come with them).
        if let Some(stage) = self.stage {
            let bins = stage.binaries();
            let libs = library_closure(self.tree, &bins)?;
            if !libs.is_empty() {
                return Err(ImageError::Tree(format!(
                    "the gvisor stage's binaries are not static (they need {})",
                    libs.keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            objects.extend(bins);
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
        if let Some(stage) = self.stage {
            self.st
                .write(gvisor::INFO_PATH, &stage.info_json(), 0o644)?;
        }
        self.st.write("/etc/passwd", ETC_PASSWD.as_bytes(), 0o644)?;
        self.st.write("/etc/group", ETC_GROUP.as_bytes(), 0o644)?;
        self.st
            .write("/etc/nsswitch.conf", ETC_NSSWITCH.as_bytes(), 0o644)?;
        self.st.write("/etc/hosts", ETC_HOSTS.as_bytes(), 0o644)?;
        Ok(objects)
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

    /// The manifest with the hashes of vmlinux and initramfs, also written
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
        for part in ["vmlinux", "initramfs"] {
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

    /// Normalizes the root's directory modes and refuses a root with a shell
    /// or a package manager in it.
    fn check_root(&self) -> Result<(), ImageError> {
        normalize_dirs(&self.st.root)?;
        let forbidden = forbidden_entries(&self.st.root)?;
        if !forbidden.is_empty() {
            return Err(ImageError::ShellInImage(forbidden));
        }
        Ok(())
    }

    /// The root as `rootfs.squashfs` in the output dir, its hash added to
    /// `manifest`.
    fn squashfs(&self, mksquashfs: &Path, manifest: &mut Manifest) -> Result<(), ImageError> {
        let epoch = self.inputs.recipe.recipe.source_date_epoch;
        let p = self.out.join("rootfs.squashfs");
        phase(self.progress, "squashfs", || {
            make_squashfs(mksquashfs, &self.st.root, &p, epoch)?;
            let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            Ok(((), format!("{:.1} MiB", size as f64 / (1024.0 * 1024.0))))
        })?;
        manifest.parts.insert(
            "rootfs.squashfs".to_string(),
            manifest::hash_file(&p).map_err(ImageError::io("hashing rootfs.squashfs"))?,
        );
        Ok(())
    }

    /// Writes `manifest.json` (synced) and makes every part 0644.
    fn seal(&self, manifest: &Manifest) -> Result<(), ImageError> {
        let mut text =
            serde_json::to_vec_pretty(manifest).map_err(|e| ImageError::Tree(e.to_string()))?;
        text.push(b'\n');
        let mp = self.out.join("manifest.json");
        let mut f = fs::File::create(&mp).map_err(ImageError::io("writing manifest.json"))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(ImageError::io("writing manifest.json"))?;
        for part in cache::PARTS {
            let p = self.out.join(part);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
                .map_err(ImageError::io(format!("chmod {}", p.display())))?;
        }
        Ok(())
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

const ETC_PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const ETC_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const ETC_NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";
const ETC_HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";
