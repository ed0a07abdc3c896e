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

/// Parses a list of groups: groups are separated by blank lines, each loads
/// on its own thread (the image build keeps related modules in one group).
pub fn parse_groups(text: &str) -> Result<Vec<Vec<String>>, ModuleError> {
    let mut groups = Vec::new();
    let mut offset = 0;
    for block in text.split("\n\n") {
        let names = parse_list(block).map_err(|e| match e {
            ModuleError::BadName { line, name } => ModuleError::BadName {
                line: line + offset,
                name,
            },
            other => other,
        })?;
        offset += block.lines().count() + 1;
        if !names.is_empty() {
            groups.push(names);
        }
    }
    Ok(groups)
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

/// Loads every module of the list file `list` from directory `dir`, in order.
pub fn load_from(sys: &dyn Sys, list: &Path, dir: &Path) -> Result<LoadReport, ModuleError> {
    let text = std::fs::read_to_string(list).map_err(|e| ModuleError::List {
        path: list.to_path_buf(),
        source: e,
    })?;
    let names = parse_list(&text)?;
    Ok(load(sys, &names, dir))
}

/// Module files opened ahead of loading, in load order. Stage 1 opens the
/// early modules and then deletes the initramfs while a thread loads them.
#[derive(Debug)]
pub struct Opened {
    files: Vec<(String, std::io::Result<std::fs::File>)>,
}

/// Opens the named modules in `dir` (an error is kept and reported at load).
pub fn open(names: &[String], dir: &Path) -> Opened {
    Opened {
        files: names
            .iter()
            .map(|n| (n.clone(), std::fs::File::open(dir.join(n))))
            .collect(),
    }
}

/// Loads the named modules from `dir`, in order.
pub fn load(sys: &dyn Sys, names: &[String], dir: &Path) -> LoadReport {
    load_opened(sys, open(names, dir))
}

/// Loads opened modules, in order.
pub fn load_opened(sys: &dyn Sys, opened: Opened) -> LoadReport {
    let mut report = LoadReport::default();
    for (name, file) in opened.files {
        let started = std::time::Instant::now();
        let res = file.and_then(|f| sys.finit_module(&f));
        report.timings.push((name.clone(), started.elapsed()));
        match res {
            Ok(()) => report.loaded.push(name),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => report.present.push(name),
            Err(e) => report.failed.push((name, e.to_string())),
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

/// Modules that one stage starts loading and a later one waits for: stage 1
/// starts stage 2's early modules (machine config, state disk, /etc overlay,
/// NICs) from the initramfs, and stage 2 (in the same process) waits for
/// them when it needs them.
#[derive(Debug)]
pub enum Pending {
    /// Nothing to wait for.
    None,
    /// Loaded already (no background thread was asked for).
    Loaded(LoadReport),
    /// Loading on background threads, one per group.
    Loading(Vec<std::thread::JoinHandle<LoadReport>>),
}

impl Pending {
    /// Starts loading each group of `opened` on its own thread with `bg`, or
    /// loads them now, one after the other, with `sys` when there is no `bg`.
    pub fn start(sys: &dyn Sys, bg: Option<std::sync::Arc<dyn Sys>>, opened: Vec<Opened>) -> Self {
        match bg {
            Some(bg) => Self::Loading(
                opened
                    .into_iter()
                    .map(|group| {
                        let bg = bg.clone();
                        std::thread::spawn(move || load_opened(bg.as_ref(), group))
                    })
                    .collect(),
            ),
            None => {
                let mut report = LoadReport::default();
                for group in opened {
                    report.extend(load_opened(sys, group));
                }
                Self::Loaded(report)
            }
        }
    }

    /// Waits for the loading to end.
    pub fn wait(self) -> LoadReport {
        match self {
            Self::None => LoadReport::default(),
            Self::Loaded(r) => r,
            Self::Loading(threads) => {
                let mut report = LoadReport::default();
                for t in threads {
                    report.extend(t.join().unwrap_or_else(|_| LoadReport {
                        failed: vec![(
                            "(early modules)".into(),
                            "the loading thread panicked".into(),
                        )],
                        ..LoadReport::default()
                    }));
                }
                report
            }
        }
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
    use crate::sys::{Call, FakeSys};

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
        let dir = tempfile::tempdir().unwrap();
        for n in &names {
            std::fs::write(dir.path().join(n), b"elf").unwrap();
        }
        let r = load(&sys, &names, dir.path());
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
                .map(|n| Call::Module(dir.path().join(n)))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn groups_are_separated_by_blank_lines() {
        let g = parse_groups("a.ko\nb.ko\n\n# second\nc.ko\n\n\n").unwrap();
        assert_eq!(g, [vec!["a.ko", "b.ko"], vec!["c.ko"]]);
        assert!(parse_groups("").unwrap().is_empty());
        assert!(matches!(
            parse_groups("a.ko\n\nb.ko\nx/c.ko\n"),
            Err(ModuleError::BadName { line: 4, .. })
        ));
    }

    #[test]
    fn opened_modules_load_after_their_directory_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ext4.ko"), b"elf").unwrap();
        let names: Vec<String> = ["ext4.ko", "missing.ko"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let opened = open(&names, dir.path());
        let path = dir.path().join("ext4.ko");
        std::fs::remove_file(&path).unwrap();
        let sys = FakeSys::new();
        let r = load_opened(&sys, opened);
        assert_eq!(r.loaded, ["ext4.ko"]);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, "missing.ko");
        assert_eq!(sys.calls(), [Call::Module(path)]);
    }
}
