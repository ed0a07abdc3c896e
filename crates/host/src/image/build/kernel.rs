//! The kernel side of the image: the kernel version of the tree, the three
//! module lists (stage 1, early, root) in load order and the root's copy of
//! its modules, the kernel (vmlinux, out of the tree's vmlinuz), and the initramfs (machined as `/init`, its
//! libraries, the stage-1 and early modules and their lists).

use super::assemble::Assembly;
use super::phase;
use crate::image::ImageError;
use crate::image::closure::library_closure;
use crate::image::initramfs::{Archive, lz4_legacy};
use crate::image::modules::{DepTable, ModuleFile, read_module};
use ironclad_contract::layout;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// The image's kernel modules, each list in load order.
pub(super) struct ModuleSets {
    table: DepTable,
    /// Loaded by stage 1 (in the initramfs).
    pub(super) init: Vec<ModuleFile>,
    /// Loaded on threads while stage 1 runs (in the initramfs).
    pub(super) early: Vec<ModuleFile>,
    /// Loaded from the root after the switch.
    pub(super) root: Vec<ModuleFile>,
}

impl Assembly<'_> {
    /// The module lists, the root's modules and their load list, the sysctls.
    pub(super) fn modules(&self) -> Result<ModuleSets, ImageError> {
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

    /// The kernel as QEMU boots it: the ELF inside the tree's vmlinuz
    /// (`image::vmlinux`).
    pub(super) fn vmlinux(&self) -> Result<(), ImageError> {
        let vmlinuz = self
            .tree
            .join("boot")
            .join(format!("vmlinuz-{}", self.kver));
        phase(self.progress, "kernel", || {
            let bz = fs::read(&vmlinuz)
                .map_err(ImageError::io(format!("reading {}", vmlinuz.display())))?;
            let elf = crate::image::vmlinux::extract(&bz).map_err(|source| ImageError::Kernel {
                path: vmlinuz.clone(),
                source,
            })?;
            let out = self.out.join("vmlinux");
            fs::write(&out, &elf).map_err(ImageError::io(format!("writing {}", out.display())))?;
            let detail = format!(
                "vmlinux {:.1} MiB from vmlinuz {:.1} MiB",
                elf.len() as f64 / (1 << 20) as f64,
                bz.len() as f64 / (1 << 20) as f64
            );
            Ok(((), detail))
        })
    }

    /// The initramfs (lz4): machined as /init, its libraries, the
    /// stage-1 and early modules and their lists.
    pub(super) fn initramfs(&self, mods: &ModuleSets) -> Result<(), ImageError> {
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
            // lz4, not gzip: under TCG the kernel's inflate of the gzip
            // initramfs (17 MB) cost 0.75 s of boot; lz4's unpacking is lost
            // in the noise of `stage1`'s uptime (1.87-1.99 s against
            // 1.90-2.21 s uncompressed, 3 boots each). QEMU keeps the file
            // mapped for the node's whole life (for a reset), so every node's
            // RSS carries the file: 7 MiB instead of 17.
            let cpio = a.to_newc(mtime)?;
            let bytes = lz4_legacy(&cpio);
            let p = self.out.join("initramfs");
            fs::write(&p, &bytes).map_err(ImageError::io(format!("writing {}", p.display())))?;
            Ok((
                (),
                format!(
                    "{} KiB (lz4; {} KiB unpacked), {} libraries",
                    bytes.len() / 1024,
                    cpio.len() / 1024,
                    init_libs.len()
                ),
            ))
        })
    }
}

/// The one kernel of the tree (the modules dir with a `modules.dep`).
pub(super) fn kernel_version(tree: &Path) -> Result<String, ImageError> {
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
}
