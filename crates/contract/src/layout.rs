//! The node image's layout as the image build (host) writes it and machined
//! reads it: where the module lists, the hardening sysctls, the manifest and
//! the offline OCI images are. Paths are absolute; [`rel`] gives the form to
//! join onto a root directory.

/// Modules the initramfs's stage 1 loads, one per line, in order.
pub const INITRAMFS_MODULES: &str = "/etc/ironclad/modules.load";
/// Stage 2's early modules, shipped in the initramfs: groups separated by a
/// blank line, loaded on two threads during stage 1.
pub const INITRAMFS_EARLY_MODULES: &str = "/etc/ironclad/modules.early";
/// The image's own data directory in the squashfs root (absent in the
/// initramfs, which is how machined tells the two apart).
pub const DATA_DIR: &str = "/usr/lib/ironclad";
/// Modules machined loads from the squashfs once booted (late modules).
pub const ROOT_MODULES: &str = "/usr/lib/ironclad/modules.load";
/// The image's declared hardening sysctls (a flat JSON object of strings).
pub const SYSCTL_JSON: &str = "/usr/lib/ironclad/sysctl.json";
/// The image manifest inside the image (marks an ironclad root, names its parts).
pub const MANIFEST: &str = "/usr/lib/ironclad/manifest.json";
/// The directory of the offline OCI image archive.
pub const IMAGES_DIR: &str = "/usr/lib/ironclad/images";
/// The offline OCI image archive's file name (pause and toolbox images).
pub const OFFLINE_ARCHIVE: &str = "offline.tar";
/// The offline pause image's reference.
pub const PAUSE_REF: &str = "ironclad.local/pause:1";
/// The offline toolbox image's reference (busybox-static).
pub const TOOLBOX_REF: &str = "ironclad.local/toolbox:1";

/// `path` without its leading `/`, to join onto a root directory.
pub fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}
