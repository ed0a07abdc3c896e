//! The node image: recipes (`images/*.yaml`), the build (mmdebstrap into a
//! scratch tree, keep only the listed binaries and their library closure),
//! outputs (vmlinuz, initramfs, rootfs.squashfs, manifest) and the cache keyed by
//! the recipe and machined hashes.
