//! Kernel modules: reads a `modules.load` list (one file name per line, in load
//! order, `#` comments allowed) and loads each decompressed `.ko` from a flat
//! directory with `finit_module`. A module that is already loaded (EEXIST) is
//! fine; other failures are collected so the caller decides whether they matter.

use super::sys::Sys;
use std::path::{Path, PathBuf};

/// Parses a `modules.load` list. Blank lines and `#` comments are skipped; a
/// name with a path separator is refused (the directory is flat).
pub fn parse_list(text: &str) -> Result<Vec<String>, ModuleError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.contains('/') || line == ".." || line == "." {
            return Err(ModuleError::BadName {
                line: i + 1,
                name: line.to_string(),
            });
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Outcome of loading a list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Newly loaded modules.
    pub loaded: Vec<String>,
    /// Modules that were already present (built in or loaded before).
    pub present: Vec<String>,
    /// Modules that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Time spent in `finit_module` per module, in load order (boot-time analysis).
    pub timings: Vec<(String, std::time::Duration)>,
}

impl LoadReport {
    /// The `n` slowest modules, slowest first.
    pub fn slowest(&self, n: usize) -> Vec<(String, std::time::Duration)> {
        let mut t = self.timings.clone();
        t.sort_by_key(|e| std::cmp::Reverse(e.1));
        t.truncate(n);
        t
    }
}

/// Modules the boot cannot go on without (machine config, state disk, /etc
/// overlay, NICs). Everything after the last of them in the list (bridge,
/// netfilter, veth: what pods need) can load in the background.
pub const CRITICAL: &[&str] = &["qemu_fw_cfg.ko", "ext4.ko", "overlay.ko", "virtio_net.ko"];

/// Splits a list in load order into the part up to and including the last
/// critical module, and the rest. Order (and so dependencies) is kept: the
/// late part only depends on modules before it.
pub fn split_critical(names: &[String], critical: &[&str]) -> (Vec<String>, Vec<String>) {
    let cut = names
        .iter()
        .rposition(|n| critical.contains(&n.as_str()))
        .map_or(0, |i| i + 1);
    (names[..cut].to_vec(), names[cut..].to_vec())
}

/// Loads every module of the list file `list` from directory `dir`, in order.
pub fn load_from(sys: &dyn Sys, list: &Path, dir: &Path) -> Result<LoadReport, ModuleError> {
    let text = std::fs::read_to_string(list).map_err(|e| ModuleError::List {
        path: list.to_path_buf(),
        source: e,
    })?;
    let names = parse_list(&text)?;
    Ok(load(sys, &names, dir))
}

/// Loads the named modules from `dir`, in order.
pub fn load(sys: &dyn Sys, names: &[String], dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    for name in names {
        let path: PathBuf = dir.join(name);
        let started = std::time::Instant::now();
        let res = sys.finit_module(&path);
        report.timings.push((name.clone(), started.elapsed()));
        match res {
            Ok(()) => report.loaded.push(name.clone()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => report.present.push(name.clone()),
            Err(e) => report.failed.push((name.clone(), e.to_string())),
        }
    }
    report
}

impl LoadReport {
    /// Appends another report (a later batch).
    pub fn extend(&mut self, other: LoadReport) {
        self.loaded.extend(other.loaded);
        self.present.extend(other.present);
        self.failed.extend(other.failed);
        self.timings.extend(other.timings);
    }
}

/// Why a module list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read module list {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module list line {line}: {name:?} is not a plain file name")]
    BadName { line: usize, name: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::sys::{Call, FakeSys};

    #[test]
    fn parses_with_comments_and_refuses_paths() {
        let l = parse_list("# root\nvirtio_blk.ko\n\n squashfs.ko # fs\n").unwrap();
        assert_eq!(l, vec!["virtio_blk.ko", "squashfs.ko"]);
        assert!(matches!(
            parse_list("a.ko\n../x.ko\n"),
            Err(ModuleError::BadName { line: 2, .. })
        ));
    }

    #[test]
    fn loads_in_order_and_sorts_outcomes() {
        let sys = FakeSys::new();
        sys.fail_on("b.ko", libc::EEXIST);
        sys.fail_on("c.ko", libc::ENOEXEC);
        let names: Vec<String> = ["a.ko", "b.ko", "c.ko", "d.ko"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = load(&sys, &names, Path::new("/lib/modules"));
        assert_eq!(r.loaded, vec!["a.ko", "d.ko"]);
        assert_eq!(r.present, vec!["b.ko"]);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.timings.len(), 4);
        assert_eq!(r.slowest(2).len(), 2);
        let order: Vec<Call> = sys.calls();
        assert_eq!(
            order,
            names
                .iter()
                .map(|n| Call::Module(Path::new("/lib/modules").join(n)))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn critical_prefix_and_background_rest() {
        let names: Vec<String> = ["crc16.ko", "ext4.ko", "overlay.ko", "bridge.ko", "veth.ko"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (early, late) = split_critical(&names, CRITICAL);
        assert_eq!(early, ["crc16.ko", "ext4.ko", "overlay.ko"]);
        assert_eq!(late, ["bridge.ko", "veth.ko"]);
        let (early, late) = split_critical(&names[3..], CRITICAL);
        assert!(early.is_empty());
        assert_eq!(late.len(), 2);
    }
}
