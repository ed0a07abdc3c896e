//! The base tree: mmdebstrap writes the recipe's suite and packages to a
//! tarball cached by suite, variant and packages, and the build unpacks only
//! what it reads from it (`usr/` without `usr/share`, `boot/`, the dpkg
//! status). Nothing here writes into the image.

use super::{BuildOptions, Progress, phase};
use crate::image::ImageError;
use crate::image::hostcheck;
use crate::image::recipe::LoadedRecipe;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Makes the base tarball at `tar_path` with mmdebstrap, unless it is cached
/// and no refresh was asked for.
pub(super) fn ensure_base(
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
pub(super) fn extract_base(tar_path: &Path, dest: &Path) -> Result<usize, ImageError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
