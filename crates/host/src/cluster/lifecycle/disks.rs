//! The nodes' disks: qcow2 overlays of the image and state disks formatted on
//! the host when mke2fs is there.

use super::*;

/// Makes a node's state disk: a qcow2 image of `bytes`, formatted as the
/// node expects it (ext4, [`crate::machine::mke2fs_args`]) when the host has
/// mke2fs, so that the node's first boot does not spend its CPU on it
/// (0.6 s under TCG). Without mke2fs, or if formatting fails, the disk is
/// left blank and machined formats it on first boot; then the reason is
/// returned, for the progress output. Public for the benchmark
/// (`crates/bench`), which boots a node on a disk made the same way.
pub fn make_disk(path: &Path, bytes: u64) -> Result<Option<String>> {
    let blank = match crate::image::build::find_tool("mke2fs") {
        Some(mke2fs) => formatted_disk(&mke2fs, path, bytes)
            .err()
            .map(|e| e.to_string()),
        None => Some("no mke2fs on this host (Debian: e2fsprogs)".to_string()),
    };
    if blank.is_some() {
        qemu_img(
            &["create", "-q", "-f", "qcow2"],
            &[path.as_os_str(), bytes.to_string().as_ref()],
        )?;
    }
    // qemu-img honours the umask; the disk holds the node's secrets at rest.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(blank)
}

/// A sparse raw file formatted by mke2fs, converted to qcow2 at `path` (only
/// the blocks mke2fs wrote are stored: a few MiB).
pub(super) fn formatted_disk(mke2fs: &Path, path: &Path, bytes: u64) -> Result<()> {
    let raw = path.with_extension("raw.tmp");
    let result = (|| {
        std::fs::File::create(&raw).and_then(|f| f.set_len(bytes))?;
        let raw_arg = raw.to_string_lossy();
        run_tool(
            "mke2fs",
            std::process::Command::new(mke2fs).args(crate::machine::mke2fs_args(&raw_arg)),
            || raw.display().to_string(),
        )?;
        qemu_img(
            &["convert", "-q", "-f", "raw", "-O", "qcow2"],
            &[raw.as_os_str(), path.as_os_str()],
        )
    })();
    let _ = std::fs::remove_file(&raw);
    result
}

/// Runs `qemu-img ARGS FILES...`.
pub(super) fn qemu_img(args: &[&str], files: &[&std::ffi::OsStr]) -> Result<()> {
    run_tool(
        "qemu-img",
        std::process::Command::new("qemu-img")
            .args(args)
            .args(files),
        || args.first().copied().unwrap_or_default().to_string(),
    )?;
    Ok(())
}

/// Runs host tool `tool` as `cmd` to its end: its output when it succeeded;
/// [`LifecycleError::ToolSpawn`] when it could not start,
/// [`LifecycleError::ToolFailed`] (with `what` it was doing and its stderr)
/// when it failed.
pub(crate) fn run_tool(
    tool: &'static str,
    cmd: &mut std::process::Command,
    what: impl FnOnce() -> String,
) -> Result<std::process::Output> {
    let out = cmd
        .output()
        .map_err(|source| LifecycleError::ToolSpawn { tool, source })?;
    if !out.status.success() {
        return Err(LifecycleError::ToolFailed {
            tool,
            what: what(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}
