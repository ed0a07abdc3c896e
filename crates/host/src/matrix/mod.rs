//! The host side of the matrix: [`run`] orchestrates a run over the node API
//! (and runs the host's own checks: TLS, etcd, clocks), [`render`] turns the
//! merged report into a table, JSON or JUnit XML, [`settings`] resolves
//! which checks run (the command line over the cluster file's `spec.matrix`). The catalog, verdicts and
//! report types are the contract's ([`ironclad_contract::matrix`], re-exported
//! here); the probes run on the nodes (machined's `matrix`).

pub use ironclad_contract::matrix::*;

pub mod render;
pub mod run;
pub mod settings;
