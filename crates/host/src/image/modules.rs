//! Kernel modules: parsing `modules.dep`, the load order of the modules a recipe
//! asks for (dependencies first), and decompressing Debian's `.ko.xz` files so
//! the node loads plain `.ko` files with `finit_module`.
//!
//! It does not load modules (machined does) and does not pick them (the recipe
//! does).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// A problem resolving or reading modules.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("modules.dep line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("kernel module {0:?} is not in modules.dep (is it built in, or misspelt?)")]
    Unknown(String),
    #[error("cannot read module {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("module {0}: unsupported compression (only .ko and .ko.xz)")]
    Unsupported(String),
    #[error(
        "module {0} is needed both to mount the root (modules.initramfs) and by the early modules; \
         the two lists load at the same time, so their dependencies must not overlap"
    )]
    Overlap(String),
}

/// The kernel's dependency table: module path (relative to the modules dir) →
/// paths of every module it needs, as `depmod` wrote them.
#[derive(Debug, Clone, Default)]
pub struct DepTable {
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

/// One module to ship: where it is in the tree and the flat file name it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Normalised module name (`crc32c_generic`).
    pub name: String,
    /// Path relative to `/usr/lib/modules/<kver>/` (`kernel/fs/ext4/ext4.ko.xz`).
    pub rel_path: String,
    /// File name in the image, decompressed (`ext4.ko`).
    pub file_name: String,
}

/// `-` and `_` are interchangeable in module names.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn file_stem(rel_path: &str) -> &str {
    let base = rel_path.rsplit('/').next().unwrap_or(rel_path);
    for ext in [".ko.xz", ".ko.zst", ".ko.gz", ".ko"] {
        if let Some(stem) = base.strip_suffix(ext) {
            return stem;
        }
    }
    base
}

impl DepTable {
    /// Parses `modules.dep` text (`path: dep dep ...` per line).
    pub fn parse(text: &str) -> Result<DepTable, ModulesError> {
        let mut table = DepTable::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (module, deps) = line.split_once(':').ok_or_else(|| ModulesError::Parse {
                line: i + 1,
                message: "no ':'".to_string(),
            })?;
            let module = module.trim();
            if module.is_empty() || !module.contains(".ko") {
                return Err(ModulesError::Parse {
                    line: i + 1,
                    message: format!("{module:?} is not a module path"),
                });
            }
            let deps: Vec<String> = deps.split_whitespace().map(str::to_string).collect();
            table
                .by_name
                .insert(normalize(file_stem(module)), module.to_string());
            table.deps.insert(module.to_string(), deps);
        }
        Ok(table)
    }

    fn file(&self, rel_path: &str) -> ModuleFile {
        let stem = file_stem(rel_path);
        ModuleFile {
            name: normalize(stem),
            rel_path: rel_path.to_string(),
            file_name: format!("{stem}.ko"),
        }
    }

    fn visit(
        &self,
        rel_path: &str,
        done: &mut BTreeSet<String>,
        out: &mut Vec<ModuleFile>,
    ) -> Result<(), ModulesError> {
        if !done.insert(rel_path.to_string()) {
            return Ok(());
        }
        let deps = self
            .deps
            .get(rel_path)
            .ok_or_else(|| ModulesError::Unknown(rel_path.to_string()))?;
        // depmod lists the deepest dependencies last; visit them first.
        for dep in deps.iter().rev() {
            self.visit(dep, done, out)?;
        }
        out.push(self.file(rel_path));
        Ok(())
    }

    /// The modules `wanted` and their dependencies, each after everything it
    /// needs, without those already in `loaded` (e.g. loaded by stage 1).
    pub fn load_order(
        &self,
        wanted: &[String],
        loaded: &[ModuleFile],
    ) -> Result<Vec<ModuleFile>, ModulesError> {
        let mut done: BTreeSet<String> = loaded.iter().map(|m| m.rel_path.clone()).collect();
        let mut out = Vec::new();
        for name in wanted {
            let rel = self
                .by_name
                .get(&normalize(name))
                .ok_or_else(|| ModulesError::Unknown(name.clone()))?;
            self.visit(rel, &mut done, &mut out)?;
        }
        Ok(out)
    }
}

impl DepTable {
    /// The load order of `early` when it loads at the same time as `init`
    /// (already in load order): refused if one of `early`'s modules or their
    /// dependencies is in `init`.
    pub fn concurrent_order(
        &self,
        early: &[String],
        init: &[ModuleFile],
    ) -> Result<Vec<ModuleFile>, ModulesError> {
        let order = self.load_order(early, &[])?;
        match order.iter().find(|m| init.contains(m)) {
            Some(m) => Err(ModulesError::Overlap(m.file_name.clone())),
            None => Ok(order),
        }
    }

    /// Splits a load order into at most `n` lists that can load at the same
    /// time, one per thread: a module and everything it needs stay in one
    /// list, in load order. Groups of related modules go, biggest first (by
    /// `size`), to the list with the least so far.
    pub fn split_concurrent(
        &self,
        order: &[ModuleFile],
        n: usize,
        size: impl Fn(&ModuleFile) -> u64,
    ) -> Vec<Vec<ModuleFile>> {
        // Union-find over the positions in `order`.
        let mut parent: Vec<usize> = (0..order.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (i, m) in order.iter().enumerate() {
            for dep in self.deps.get(&m.rel_path).into_iter().flatten() {
                if let Some(j) = order.iter().position(|o| &o.rel_path == dep) {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut groups: BTreeMap<usize, (u64, Vec<usize>)> = BTreeMap::new();
        for (i, m) in order.iter().enumerate() {
            let g = groups.entry(root(&mut parent, i)).or_default();
            g.0 += size(m);
            g.1.push(i);
        }
        let mut groups: Vec<(u64, Vec<usize>)> = groups.into_values().collect();
        // Biggest first; ties in load order (stable sort).
        groups.sort_by_key(|g| std::cmp::Reverse(g.0));
        let mut lists: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); n.max(1)];
        for (sz, members) in groups {
            if let Some(l) = lists.iter_mut().min_by_key(|l| l.0) {
                l.0 += sz;
                l.1.extend(members);
            }
        }
        lists
            .into_iter()
            .filter(|l| !l.1.is_empty())
            .map(|(_, mut idx)| {
                idx.sort_unstable();
                idx.into_iter().map(|i| order[i].clone()).collect()
            })
            .collect()
    }
}

/// Reads a module file, decompressing `.ko.xz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModulesError> {
    let read_err = |source| ModulesError::Read {
        path: path.display().to_string(),
        source,
    };
    let name = path.to_string_lossy();
    let raw = std::fs::read(path).map_err(read_err)?;
    if name.ends_with(".ko") {
        Ok(raw)
    } else if name.ends_with(".ko.xz") {
        let mut out = Vec::with_capacity(raw.len() * 3);
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(read_err)?;
        Ok(out)
    } else {
        Err(ModulesError::Unsupported(name.into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
";

    fn names(v: &[ModuleFile]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let t = DepTable::parse(DEP).unwrap();
        let order = t
            .load_order(&["virtio_net".into(), "ext4".into()], &[])
            .unwrap();
        assert_eq!(
            names(&order),
            [
                "failover",
                "net_failover",
                "virtio_net",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4"
            ]
        );
        assert_eq!(order[2].file_name, "virtio_net.ko");
        assert_eq!(order[2].rel_path, "kernel/drivers/net/virtio_net.ko.xz");
    }

    #[test]
    fn lists_loaded_at_the_same_time_must_not_share_a_module() {
        let t = DepTable::parse(DEP).unwrap();
        let init = t.load_order(&["virtio_blk".into()], &[]).unwrap();
        let early = t.concurrent_order(&["virtio_net".into()], &init).unwrap();
        assert_eq!(names(&early), ["failover", "net_failover", "virtio_net"]);
        // failover is a dependency of virtio_net: loading both lists at once
        // would race on it.
        let init = t.load_order(&["failover".into()], &[]).unwrap();
        let e = t
            .concurrent_order(&["virtio_net".into()], &init)
            .unwrap_err();
        assert!(
            matches!(e, ModulesError::Overlap(ref m) if m == "failover.ko"),
            "{e}"
        );
    }

    #[test]
    fn concurrent_lists_keep_related_modules_together_and_balance_size() {
        let t = DepTable::parse(DEP).unwrap();
        let order = t
            .load_order(
                &["crc32c_intel".into(), "ext4".into(), "virtio_net".into()],
                &[],
            )
            .unwrap();
        let size = |m: &ModuleFile| if m.name == "ext4" { 100 } else { 10 };
        let lists = t.split_concurrent(&order, 2, size);
        assert_eq!(lists.len(), 2);
        assert_eq!(names(&lists[0]), ["jbd2", "mbcache", "crc16", "ext4"]);
        assert_eq!(
            names(&lists[1]),
            ["crc32c_intel", "failover", "net_failover", "virtio_net"]
        );
        // One thread: everything, in load order.
        assert_eq!(t.split_concurrent(&order, 1, size), vec![order.clone()]);
        assert!(t.split_concurrent(&[], 2, size).is_empty());
    }

    #[test]
    fn dashes_and_underscores_match_and_file_name_keeps_dash() {
        let t = DepTable::parse(DEP).unwrap();
        let order = t.load_order(&["crc32c_intel".into()], &[]).unwrap();
        assert_eq!(order[0].name, "crc32c_intel");
        assert_eq!(order[0].file_name, "crc32c-intel.ko");
    }

    #[test]
    fn already_loaded_and_repeated_modules_are_skipped() {
        let t = DepTable::parse(DEP).unwrap();
        let stage1 = t
            .load_order(&["virtio_blk".into(), "failover".into()], &[])
            .unwrap();
        let order = t
            .load_order(
                &[
                    "virtio_net".into(),
                    "virtio_blk".into(),
                    "net_failover".into(),
                ],
                &stage1,
            )
            .unwrap();
        assert_eq!(names(&order), ["net_failover", "virtio_net"]);
    }

    #[test]
    fn unknown_module_and_bad_lines_are_errors() {
        let t = DepTable::parse(DEP).unwrap();
        assert!(matches!(
            t.load_order(&["9p".into()], &[]),
            Err(ModulesError::Unknown(_))
        ));
        assert!(matches!(
            DepTable::parse("kernel/a.ko.xz kernel/b.ko.xz\n"),
            Err(ModulesError::Parse { line: 1, .. })
        ));
        // A dependency that has no line of its own.
        let t = DepTable::parse("kernel/a.ko: kernel/b.ko\n").unwrap();
        assert!(matches!(
            t.load_order(&["a".into()], &[]),
            Err(ModulesError::Unknown(_))
        ));
    }

    #[test]
    fn xz_modules_are_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let payload = b"\x7fELF fake module body".repeat(10);
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut enc, &payload).unwrap();
        let xz = enc.finish().unwrap();
        let p = dir.path().join("m.ko.xz");
        std::fs::write(&p, xz).unwrap();
        assert_eq!(read_module(&p).unwrap(), payload);
        let plain = dir.path().join("n.ko");
        std::fs::write(&plain, b"x").unwrap();
        assert_eq!(read_module(&plain).unwrap(), b"x");
        let zst = dir.path().join("o.ko.zst");
        std::fs::write(&zst, b"x").unwrap();
        assert!(matches!(
            read_module(&zst),
            Err(ModulesError::Unsupported(_))
        ));
    }
}
