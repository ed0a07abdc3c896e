//! The contract between the ironclad host and its nodes: everything both
//! sides must agree on, defined once. The host (`ironclad-host`) and the node
//! (`ironclad-node`, machined) depend on this crate and never on each other.
//!
//! - [`api`]: the node API's paths, requests, replies, roles and error codes;
//! - [`machine`]: the machine config document a node boots with;
//! - [`matrix`]: the check catalog, verdicts and reports;
//! - [`console`]: the serial console's phase and fact lines;
//! - [`layout`]: where things are in the node image;
//! - [`disks`]: the drives' serials; [`services`]: the supervised services;
//! - [`names`] and [`role`]: cluster and node names, node and client roles;
//! - [`tls`]: the one TLS builder for mTLS connections;
//! - [`fsutil`]: atomic, private file writes, the same on both sides.
//!
//! Nothing here does network or process I/O.

pub mod api;
pub mod console;
pub mod disks;
pub mod fsutil;
pub mod layout;
pub mod machine;
pub mod matrix;
pub mod names;
pub mod role;
pub mod services;
pub mod tls;

/// The `apiVersion` every versioned document of ironclad carries.
pub const API_VERSION: &str = "ironclad.dev/v1alpha1";

/// The version of this build (the workspace's), reported by the node API and
/// the CLI.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
