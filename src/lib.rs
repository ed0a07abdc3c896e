//! ironclad: declarative, rootless QEMU clusters built from an immutable node image.
//!
//! The library holds all the work; the two binaries (`ironclad`, the host CLI, and
//! `machined`, PID 1 inside a node) are thin shells over it. See `docs/design.md`
//! and the module docs below for who owns what.

pub mod agent;
pub mod api;
pub mod cli;
pub mod client;
pub mod clientconfig;
pub mod cluster;
pub mod configdir;
pub mod fsutil;
pub mod image;
pub mod machine;
pub mod matrix;
pub mod network;
pub mod pki;
pub mod qemu;
pub mod spec;

/// The `apiVersion` every versioned document of ironclad carries.
pub const API_VERSION: &str = "ironclad.dev/v1alpha1";

/// The version of this build, reported by the node API and the CLI.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
