//! The shared-library closure of ELF binaries, resolved inside a Debian tree
//! (never on the host): `PT_INTERP`, `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`, the
//! multiarch search path, and symlinks followed as if the tree were `/`.
//!
//! It only finds files; copying them is `build`'s job.

use goblin::elf::Elf;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

/// Where the dynamic loader looks when a binary carries no run path and there is
/// no `ld.so.cache` (the final image has none). The order picks the canonical
/// Debian location first.
pub const DEFAULT_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// A problem finding a binary's libraries.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ELF file: {message}")]
    NotElf { path: String, message: String },
    #[error("{object} needs {library}, which is not in the tree")]
    Missing { object: String, library: String },
    #[error("{path}: too many levels of symbolic links in the tree")]
    SymlinkLoop { path: String },
}

/// Resolves `logical` (an absolute path inside the tree) to the host path of the
/// file it names, following symlinks with `root` as `/`. Returns `None` when a
/// component does not exist.
pub fn resolve_in_tree(root: &Path, logical: &str) -> Result<Option<PathBuf>, ClosureError> {
    let mut pending: VecDeque<String> = logical
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut current: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        let mut host = root.to_path_buf();
        host.extend(&current);
        host.push(&comp);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(source) => {
                return Err(ClosureError::Read {
                    path: host.display().to_string(),
                    source,
                });
            }
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(ClosureError::SymlinkLoop {
                    path: logical.to_string(),
                });
            }
            let target = std::fs::read_link(&host).map_err(|source| ClosureError::Read {
                path: host.display().to_string(),
                source,
            })?;
            if target.is_absolute() {
                current.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(s) => pending.push_front(s.to_string_lossy().into_owned()),
                    Component::ParentDir => pending.push_front("..".to_string()),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
        } else {
            current.push(comp);
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&current);
    Ok(Some(host))
}

struct ElfDeps {
    interp: Option<String>,
    needed: Vec<String>,
    runpath: Vec<String>,
}

fn elf_deps(path: &Path) -> Result<ElfDeps, ClosureError> {
    let data = std::fs::read(path).map_err(|source| ClosureError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let elf = Elf::parse(&data).map_err(|e| ClosureError::NotElf {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut runpath = Vec::new();
    for rp in elf.runpaths.iter().chain(elf.rpaths.iter()) {
        runpath.extend(rp.split(':').filter(|s| !s.is_empty()).map(str::to_string));
    }
    Ok(ElfDeps {
        interp: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        runpath,
    })
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The libraries (and loader) that `objects` need, transitively, found in the
/// tree at `root`. `objects` are host paths with their logical path in the image
/// (for `$ORIGIN`). Returns logical path (where the loader will look for it) →
/// host path of the file's content. Static binaries add nothing.
pub fn library_closure(
    root: &Path,
    objects: &[(String, PathBuf)],
) -> Result<BTreeMap<String, PathBuf>, ClosureError> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue: VecDeque<(String, PathBuf)> = objects.iter().cloned().collect();
    while let Some((logical, host)) = queue.pop_front() {
        if !seen.insert(host.clone()) {
            continue;
        }
        let deps = elf_deps(&host)?;
        let origin = Path::new(&logical)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_string());
        if let Some(interp) = deps.interp {
            let real = resolve_in_tree(root, &interp)?
                .filter(|p| p.is_file())
                .ok_or_else(|| ClosureError::Missing {
                    object: logical.clone(),
                    library: interp.clone(),
                })?;
            found.insert(interp.clone(), real.clone());
            queue.push_back((interp, real));
        }
        let search: Vec<String> = deps
            .runpath
            .iter()
            .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
            .chain(DEFAULT_LIB_DIRS.iter().map(|s| s.to_string()))
            .collect();
        for lib in deps.needed {
            let candidates: Vec<String> = if lib.contains('/') {
                vec![lib.clone()]
            } else {
                search.iter().map(|d| format!("{d}/{lib}")).collect()
            };
            let mut hit = None;
            for cand in candidates {
                if let Some(real) = resolve_in_tree(root, &cand)?
                    && real.is_file()
                    && is_elf(&real)
                {
                    hit = Some((cand, real));
                    break;
                }
            }
            let (cand, real) = hit.ok_or_else(|| ClosureError::Missing {
                object: logical.clone(),
                library: lib.clone(),
            })?;
            found.insert(cand.clone(), real.clone());
            queue.push_back((cand, real));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_symlinks_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib/x")).unwrap();
        std::fs::write(root.join("usr/lib/x/libz.so.1.3"), b"z").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("libz.so.1.3", root.join("usr/lib/x/libz.so.1")).unwrap();
        // An absolute link must stay inside the tree, not escape to the host.
        symlink("/usr/lib/x/libz.so.1", root.join("usr/lib/abs")).unwrap();
        let got = resolve_in_tree(root, "/lib/x/libz.so.1").unwrap().unwrap();
        assert_eq!(got, root.join("usr/lib/x/libz.so.1.3"));
        let got = resolve_in_tree(root, "/usr/lib/abs").unwrap().unwrap();
        assert_eq!(got, root.join("usr/lib/x/libz.so.1.3"));
        assert!(resolve_in_tree(root, "/lib/x/nope").unwrap().is_none());
        symlink("loop", root.join("loop")).unwrap();
        assert!(matches!(
            resolve_in_tree(root, "/loop"),
            Err(ClosureError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn closure_of_a_real_host_binary() {
        // The host is Debian: resolve a real dynamically linked binary's closure
        // with `/` as the tree.
        let exe = std::env::current_exe().unwrap();
        let closure = library_closure(Path::new("/"), &[("/usr/bin/t".to_string(), exe)]).unwrap();
        assert!(
            closure.contains_key("/lib64/ld-linux-x86-64.so.2"),
            "{closure:?}"
        );
        let libc = closure
            .keys()
            .find(|k| k.ends_with("/libc.so.6"))
            .expect("libc in the closure");
        assert!(libc.starts_with("/lib/x86_64-linux-gnu/"), "{libc}");
        // Every entry is a real file.
        assert!(closure.values().all(|p| p.is_file()));
    }

    #[test]
    fn missing_library_is_an_error() {
        let exe = std::env::current_exe().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let err = library_closure(empty.path(), &[("/t".to_string(), exe)]).unwrap_err();
        assert!(matches!(err, ClosureError::Missing { .. }), "{err}");
    }

    #[test]
    fn not_elf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("script");
        std::fs::write(&f, b"#!/bin/sh\necho hi\n").unwrap();
        let err = library_closure(dir.path(), &[("/script".to_string(), f)]).unwrap_err();
        assert!(matches!(err, ClosureError::NotElf { .. }), "{err}");
    }
}
