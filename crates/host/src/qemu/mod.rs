//! QEMU: the command-line builder, accelerator detection and QMP control.
//!
//! Owns how one node's QEMU is described ([`cmdline::VmSpec`] → argv), which
//! accelerator it runs with ([`accel`]), how it is driven once running
//! ([`qmp`]) and how its copies of the kernel and initramfs go back to the
//! host after boot ([`boot_files`]). Does not own process supervision, restart policy or the cluster
//! state dir (the `cluster` module), nor the cluster switch (`network`).
//!
//! ```no_run
//! # async fn example(spec: ironclad::qemu::VmSpec) -> Result<(), Box<dyn std::error::Error>> {
//! use ironclad::qemu::{Accel, AccelChoice, Qmp};
//! use tokio::time::{Duration, Instant};
//! let (accel, why) = Accel::resolve(AccelChoice::Auto)?;
//! if let Some(why) = why {
//!     eprintln!("{why}"); // e.g. "using TCG, not KVM: /dev/kvm is provided by kvm_pvm, ..."
//! }
//! let spec = ironclad::qemu::VmSpec { accel, ..spec };
//! let mut child = std::process::Command::new("qemu-system-x86_64")
//!     .args(spec.to_args()?)
//!     .spawn()?;
//! let qmp = Qmp::connect(&spec.qmp_socket, Instant::now() + Duration::from_secs(10)).await?;
//! println!("{}", qmp.status().await?.status);
//! qmp.shutdown_gracefully(Instant::now() + Duration::from_secs(30)).await?;
//! child.wait()?;
//! # Ok(()) }
//! ```

pub mod accel;
pub mod boot_files;
pub mod cmdline;
pub mod qmp;

pub use accel::{Accel, AccelChoice, AccelError};
pub use cmdline::{ClusterNic, CmdlineError, MachineType, UserNic, VmSpec};
pub use qmp::{Qmp, QmpError, RunStatus, ShutdownOutcome};

#[cfg(test)]
mod tests;
