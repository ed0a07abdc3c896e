//! The host side of the matrix: [`run`] orchestrates a run over the node API
//! (and runs the host's own checks: TLS, etcd, clocks), [`render`] turns the
//! merged report into a table, JSON or JUnit XML, [`settings`] resolves
//! which checks run (the command line over the cluster file's `spec.matrix`),
//! [`normalize`] checks every verdict a node sends against the catalog and its
//! evidence (the host does not take a node's word for it). The catalog, verdicts and
//! report types are the contract's ([`ironclad_contract::matrix`], re-exported
//! here); the probes run on the nodes (machined's `matrix`).

pub use ironclad_contract::matrix::*;

pub mod normalize;
pub mod render;
pub mod run;
pub mod settings;
