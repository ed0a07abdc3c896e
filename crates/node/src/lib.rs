//! machined: the node's init. Stage 1 (in the initramfs) mounts the read-only
//! squashfs root and does a real switch_root; stage 2 (PID 1) mounts the rest,
//! loads modules, applies sysctls, reads the machine config from fw_cfg,
//! prepares the state disk, configures the network and supervises services.
//! Privileged OS calls go through a trait ([`sys::Sys`]) so the logic is
//! testable without root.
//!
//! It depends on the contract (`ironclad-contract`: API types, the machine
//! config, the matrix catalog, the console protocol, image layout, disk
//! serials, service names, TLS) and on no host crate. Layout contract with
//! the image builder: `docs/image-layout.md`.
//!
//! | module | owns |
//! |---|---|
//! | [`sys`] | privileged calls: real, and a recording fake for tests |
//! | [`console`] | `machined: <phase> t=<uptime>` lines |
//! | [`stage1`] | initramfs → switch_root → exec stage 2 |
//! | [`stage2`] | mounts, modules, sysctls, config, state disk, /etc, network |
//! | [`mounts`], [`modules`], [`sysctl`], [`disks`], [`net`] | the pieces of those stages |
//! | [`reaper`] | spawning children and reaping zombies, in one place |
//! | [`rlimit`] | open-file limits of PID 1 and of the services it starts |
//! | [`supervisor`] | services: order, health, back-off, logs, states |
//! | [`containerd`] | containerd/CNI configs, health probe, image import |
//! | [`etcd`] | the etcd service, bootstrap, join, members and keys |
//! | [`power`] | shutdown triggers and the final sync/unmount/reboot |
//! | [`idle_memory`] | the boot's page cache handed back to the host once booted |
//! | [`facts`] | host-checkable `machined: fact ...` lines, boot counter, kernel log |
//! | [`applied`] | configs applied through the API, stored for the next boot |
//! | [`controller`] | the real `apid::Controller`: supervisor, kmsg, power, etcd |
//! | [`pid1`] | the binary's entry: picks the stage, runs it, never returns |
//! | [`cri`] | CRI client to containerd: pod variants, exec probes, cleanup |
//! | [`matrix`] | the node side of the matrix: runs the CRI-level checks |
//! | [`runtime_spec`] | the hardened base OCI spec and CRI options for containerd |
//! | [`apid`] | the node API server (mTLS HTTPS), behind the `Controller` trait |
//!

pub mod apid;
pub mod applied;
pub mod console;
pub mod containerd;
pub mod controller;
pub mod cri;
pub mod disks;
pub mod etcd;
pub mod facts;
pub mod idle_memory;
pub mod matrix;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod pid1;
pub mod power;
pub mod reaper;
pub mod rlimit;
pub mod runtime_spec;
pub mod stage1;
pub mod stage2;
pub mod supervisor;
pub mod sys;
pub mod sysctl;

// The contract's modules, under the names this crate has always used.
pub(crate) use ironclad_contract::{api, fsutil, machine};
