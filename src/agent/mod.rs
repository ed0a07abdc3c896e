//! machined: the node's init. Stage 1 (in the initramfs) mounts the read-only
//! squashfs root and does a real switch_root; stage 2 (PID 1) mounts the rest,
//! loads modules, applies sysctls, reads the machine config from fw_cfg,
//! prepares the state disk, configures the network and supervises services.
//! Privileged OS calls go through a trait so the logic is testable without root.
pub mod apid;
