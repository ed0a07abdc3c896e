//! A cluster on the host: its state dir, create/start/stop/destroy, and the
//! detached supervisor process that owns the switch and the QEMU processes.
//!
//! - [`paths`]: the state dir layout (one place decides every file name).
//! - [`state`]: `cluster.json`, the node states and their transitions.
//! - [`ports`]: host API ports, unique across clusters.
//! - [`control`]: the supervisor's control protocol.
//! - [`engine`]: where nodes run, behind one trait; [`engine::QemuEngine`]
//!   is the supervisor below.
//! - [`supervisor`]: the detached per-cluster process (switch, QEMUs, QMP).
//! - [`caplog`]: the serial and QEMU logs it writes, capped and rotated.
//! - [`etcd`]: bootstrap and join of etcd across the control planes (converge).
//! - [`lifecycle`]: the operations behind the CLI (create, start, stop,
//!   destroy, status, list, console) and the readiness wait.
//! - [`console`]: serial output made safe to print (control characters shown).
//!
//! Does not own: the QEMU command line (`qemu`), the switch itself (`network`),
//! the image (`image`), secrets and machine configs (`configdir`).

pub mod caplog;
pub mod console;
pub mod control;
pub mod engine;
pub mod etcd;
pub mod lifecycle;
pub mod paths;
pub mod ports;
pub mod state;
pub mod supervisor;
