//! `image`: `ironclad image build` timed as a user runs it, with an empty
//! scratch cache (cold), the same cache again (warm: a cache hit), and with
//! only the Debian base tree cached (what a machined or recipe change
//! costs); `sizes`: the node image's file sizes.

use crate::bench::{Bench, log};
use crate::vm::round3;
use crate::{BenchError, Result};
use std::path::Path;
use std::time::Instant;

/// `ironclad image build --output json` with `IRONCLAD_CACHE_DIR=cache`:
/// wall seconds, or the last line of its error output.
fn timed_build(b: &Bench, cache: &Path, log: &str) -> Result<Result<f64, String>> {
    let log = b.scratch(log);
    let t0 = Instant::now();
    let r = crate::boot::command(
        std::process::Command::new(&b.ironclad)
            .args(["image", "build", "--output", "json"])
            .env("IRONCLAD_CACHE_DIR", cache),
        "ironclad image build",
        &log,
    );
    let secs = round3(t0.elapsed().as_secs_f64());
    match r {
        Ok(()) => Ok(Ok(secs)),
        Err(BenchError::Failed(_)) => Ok(Err(crate::vm::tail(&log, 300)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string())),
        Err(e) => Err(e),
    }
}

pub fn bench_image(b: &mut Bench) -> Result<()> {
    let c = b.scratch("cold-cache");
    for i in 1..=b.opts.runs {
        log!(
            "image build cold run {i}/{} (empty cache: mmdebstrap and all)",
            b.opts.runs
        );
        let _ = std::fs::remove_dir_all(&c);
        match timed_build(b, &c, "cold.log")? {
            Ok(s) => b.sample(
                "ironclad",
                "image_build_cold_wall",
                "s",
                s,
                "image build with an empty cache (wall)",
            ),
            Err(e) => {
                b.failed(
                    "ironclad",
                    "image_build_cold_wall",
                    "s",
                    format!("run {i}: {e}"),
                );
                continue;
            }
        }
        // Warm: the same cache again, a cache hit.
        match timed_build(b, &c, "warm.log")? {
            Ok(s) => b.sample(
                "ironclad",
                "image_build_warm_wall",
                "s",
                s,
                "image build, cache hit (wall)",
            ),
            Err(e) => b.failed(
                "ironclad",
                "image_build_warm_wall",
                "s",
                format!("run {i}: {e}"),
            ),
        }
        // Base tree cached, image not.
        let _ = std::fs::remove_dir_all(c.join("images"));
        match timed_build(b, &c, "rebuild.log")? {
            Ok(s) => b.sample(
                "ironclad",
                "image_build_base_cached_wall",
                "s",
                s,
                "image build with the mmdebstrap base tree cached (wall)",
            ),
            Err(e) => b.failed(
                "ironclad",
                "image_build_base_cached_wall",
                "s",
                format!("run {i}: {e}"),
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&c);
    Ok(())
}

pub fn bench_sizes(b: &mut Bench) -> Result<()> {
    let img = b.image()?.clone();
    for (name, path, what) in [
        ("size_rootfs", &img.rootfs, "rootfs.squashfs size"),
        ("size_initramfs", &img.initramfs, "initramfs size"),
        ("size_vmlinux", &img.vmlinux, "vmlinux size"),
    ] {
        let bytes = std::fs::metadata(path)
            .map_err(|e| BenchError::Failed(format!("{}: {e}", path.display())))?
            .len();
        let mib = (bytes as f64 / 1_048_576.0 * 1e3).round() / 1e3;
        b.sample("ironclad", name, "MiB", mib, what);
    }
    Ok(())
}
