//! Disk serials: QEMU sets them on the node's drives (`-drive serial=`), and
//! machined finds its disks by them (`/sys/block/vd*/serial`), never by probe
//! order.

/// Serial of the shared read-only root disk (the image's squashfs).
pub const ROOT_SERIAL: &str = "ironclad-root";
/// Serial of the per-node state disk (qcow2, ext4 inside, mounted as /var).
pub const STATE_SERIAL: &str = "ironclad-state";
