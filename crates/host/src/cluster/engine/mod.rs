//! Where a cluster's nodes run: the seam between the lifecycle (what a
//! cluster should be doing) and the engine that places and controls its VMs.
//!
//! The lifecycle ([`crate::cluster::lifecycle`]) owns the state dir, the
//! image, secrets, machine configs, disks, ports, readiness and etcd. It never
//! starts or signals a VM process itself: every such step goes through an
//! [`Engine`], chosen once per operation by [`selected`] and passed down
//! as `&dyn Engine`.
//!
//! | operation | [`QemuEngine`] (today) |
//! |---|---|
//! | [`Engine::host_tools`] | `qemu-system-x86_64` |
//! | [`Engine::launch`] | the detached supervisor (`ironclad __supervise`), which binds the switch |
//! | [`Engine::running`] | the supervisor's pid file, checked against /proc |
//! | [`Engine::start_node`] | `start-node` on the supervisor's control socket: QEMU spawned |
//! | [`Engine::stop_node`] | `stop-node`: ACPI power button over QMP, `quit` at the deadline, SIGKILL |
//! | [`Engine::shutdown`] | `shutdown`: every node stopped, then the supervisor exits |
//! | [`Engine::kill`] | `shutdown` without grace, then SIGKILL to whatever of the cluster /proc still shows |
//! | [`Engine::console_log`], [`Engine::vmm_log`], [`Engine::log`] | the capped logs under `logs/` |
//! | [`Engine::fault`] | the switch's control socket (partition, drop, delay, heal, status) |
//! | [`Engine::snapshot_save`], [`Engine::snapshot_restore`], [`Engine::snapshot_delete`], [`Engine::snapshots_of`] | internal qcow2 snapshots in each node's state disk: QMP (`stop`, `savevm`/`loadvm`/`delvm`, `cont`) on running nodes, `qemu-img snapshot` on stopped ones ([`snapshot`]) |
//!
//! What an engine is given: the state dir ([`ClusterPaths`]) with
//! `cluster.json` (each node's CPUs, memory, MACs, host API port, the image's
//! kernel, initramfs and read-only root), the node's qcow2 state disk and its
//! machine config (handed to the guest as fw_cfg `opt/ironclad/machine-config`,
//! see [`crate::cluster::supervisor::vm_spec`] for the whole VM description).
//! What it must keep: `cluster.json`'s node states and pids current (the
//! lifecycle reads them), each node's serial console in [`Engine::console_log`]
//! (readiness and `console` read it), and the cluster network between the
//! nodes with its faults.
//!
//! A libvirt engine would implement the same operations with a domain per
//! node: direct kernel boot (`<os><kernel>`, `<initrd>`, `<cmdline>`), the
//! machine config as a `<sysinfo type='fwcfg'>` entry, the root as a
//! `<readonly/>` disk with `<serial>`, the state disk as qcow2, the user NIC
//! with a port forward, the serial console to a `<log file=...>`; `launch`
//! defines the domains, `start_node`/`stop_node` are create/shutdown/destroy of
//! a domain, `running` asks libvirtd, `kill` destroys and undefines, and
//! snapshots come with it. Its failures would be new [`LifecycleError`]
//! variants: the command line's exit map is exhaustive, so each gets its exit
//! status chosen on purpose.

mod qemu;
pub mod snapshot;

pub use qemu::QemuEngine;
pub use snapshot::{NodeSnapshot, SnapshotTarget};

use crate::cluster::lifecycle::{LifecycleError, Progress};
use crate::cluster::paths::ClusterPaths;
use crate::spec::{ClusterName, NodeName};
use std::path::PathBuf;
use std::time::Duration;

type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// Places and controls the VMs of a cluster (see the module doc).
pub trait Engine: Sync {
    /// The host tools this engine runs, with the Debian packages that hold
    /// them (checked before `create` and `start`).
    fn host_tools(&self) -> &'static [(&'static str, &'static str)];

    /// Makes the cluster ready to run nodes, unless it is: returns the pid of
    /// the process holding its VMs (shown by `status`).
    fn launch(&self, paths: &ClusterPaths, progress: &dyn Progress) -> Result<u32>;

    /// The pid of the process holding the cluster's VMs, `None` when nothing
    /// runs (then no node of the cluster runs either).
    fn running(&self, paths: &ClusterPaths) -> Option<u32>;

    /// The engine's own log, quoted when it fails.
    fn log(&self, paths: &ClusterPaths) -> PathBuf;

    /// Boots `node` from its disk; nothing to do when it runs.
    fn start_node(&self, paths: &ClusterPaths, node: &NodeName) -> Result<()>;

    /// Powers `node` off gracefully, forcing it after `timeout`; its disk is kept.
    fn stop_node(&self, paths: &ClusterPaths, node: &NodeName, timeout: Duration) -> Result<()>;

    /// Powers every node off (as [`Engine::stop_node`]) and ends the engine's
    /// hold on the cluster; returns once it is gone.
    fn shutdown(&self, paths: &ClusterPaths, timeout: Duration) -> Result<()>;

    /// Ends everything of the cluster at once, without grace, even after a
    /// crash or a half-made `create` (for `destroy`).
    fn kill(&self, paths: &ClusterPaths, cluster: &ClusterName) -> Result<()>;

    /// Where `node`'s serial console is written (the current boot's).
    fn console_log(&self, paths: &ClusterPaths, node: &NodeName) -> PathBuf;

    /// What the virtual machine monitor of `node` said (its stderr).
    fn vmm_log(&self, paths: &ClusterPaths, node: &NodeName) -> PathBuf;

    /// A fault request to the cluster network (partition, drop, delay, heal,
    /// status) and the network's answer.
    fn fault(
        &self,
        paths: &ClusterPaths,
        request: &crate::network::Request,
    ) -> Result<crate::network::Response>;

    /// Saves snapshot `target.tag` of `target.nodes`: running nodes (`live`)
    /// are all paused at once, their memory and disks saved, then all
    /// resumed; stopped nodes have their disks saved.
    fn snapshot_save(
        &self,
        paths: &ClusterPaths,
        target: &SnapshotTarget<'_>,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// Brings `target.nodes` back to snapshot `target.tag`: running nodes
    /// are all paused, loaded and resumed (no reboot); stopped nodes get
    /// their disks back.
    fn snapshot_restore(
        &self,
        paths: &ClusterPaths,
        target: &SnapshotTarget<'_>,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// Deletes snapshot `target.tag` from `target.nodes` (nothing to do on a
    /// node without it).
    fn snapshot_delete(
        &self,
        paths: &ClusterPaths,
        target: &SnapshotTarget<'_>,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// The snapshots `node` holds, read without disturbing it (it may run).
    fn snapshots_of(&self, paths: &ClusterPaths, node: &NodeName) -> Result<Vec<NodeSnapshot>>;
}

/// The engine the lifecycle runs clusters on: the one place where it is
/// chosen. Today every cluster runs on [`QemuEngine`]; with a second engine,
/// `create` would record its kind in `cluster.json` and the other operations
/// would pick it from there.
pub fn selected() -> &'static dyn Engine {
    &QemuEngine
}
