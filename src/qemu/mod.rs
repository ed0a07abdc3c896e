//! QEMU: the command-line builder, accelerator detection and QMP control.
//!
//! Owns how one node's QEMU is described ([`cmdline::VmSpec`] → argv), which
//! accelerator it runs with ([`accel`]) and how it is driven once running
//! ([`qmp`]). Does not own process supervision, restart policy or the cluster
//! state dir (the `cluster` module), nor the cluster switch (`network`).

pub mod accel;
pub mod cmdline;
pub mod qmp;

pub use accel::{Accel, AccelChoice, AccelError};
pub use cmdline::{ClusterNic, CmdlineError, MachineType, UserNic, VmSpec};
pub use qmp::{Qmp, QmpError, RunStatus, ShutdownOutcome};

#[cfg(test)]
mod tests;
