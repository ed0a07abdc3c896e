//! ironclad: declarative, rootless QEMU clusters built from an immutable node image.
//!
//! This package is the `ironclad` command line ([`cli`]): it parses
//! arguments, calls the host library (`ironclad-host`) and prints. The node
//! side is `ironclad-node` (machined); what both sides agree on is
//! `ironclad-contract`. See `docs/design.md`.

pub mod cli;

// The host library's and the contract's modules, under the names the command
// line has always used.
pub(crate) use ironclad_contract::{api, fsutil};
pub(crate) use ironclad_host::{
    client, clientconfig, cluster, configdir, image, matrix, network, pki, qemu, repro, spec,
    support,
};
