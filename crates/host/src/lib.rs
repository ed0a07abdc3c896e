//! The host side of ironclad: everything that runs on the user's machine.
//! It depends on the contract (`ironclad-contract`) and never on the node
//! (machined).
//!
//! | module | owns |
//! |---|---|
//! | [`spec`] | the cluster file: parsing, validation, defaults, diagnostics |
//! | [`pki`] | the cluster's CAs, keys and certificates |
//! | [`machine`] | rendering a node's machine config from the spec and the PKI |
//! | [`configdir`] | `gen config`'s directory: secrets, machine configs, client config |
//! | [`clientconfig`] | `client.yaml`: the admin's endpoints and certificate |
//! | [`image`] | recipes, the image build, the image cache |
//! | [`qemu`] | QEMU's command line, QMP, accelerator detection |
//! | [`network`] | the cluster's user-space L2 switch and its fault injection |
//! | [`cluster`] | state dirs, the lifecycle, the supervisor, etcd converge |
//! | [`client`] | the node API client (mTLS, the node's name verified) |
//! | [`matrix`] | matrix orchestration over the node API and its reports |
//! | [`support`] | support bundles: what a bug report needs about one cluster |
//! | [`repro`] | a support bundle's cluster made again on this host |

pub mod client;
pub mod clientconfig;
pub mod cluster;
pub mod configdir;
pub mod image;
pub mod interrupt;
pub mod machine;
pub mod matrix;
pub mod network;
pub mod pki;
pub mod qemu;
pub mod repro;
pub mod runtime;
mod serde_text;
pub mod spec;
pub mod support;
pub mod version;

pub use ironclad_contract as contract;
// The contract's modules, under the names this crate has always used.
pub use ironclad_contract::{API_VERSION, VERSION, api, fsutil};
