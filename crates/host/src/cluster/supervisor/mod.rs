//! The cluster supervisor: one detached process per running cluster
//! (`ironclad __supervise --dir DIR`, started by `create` and `start` in a new
//! session with its output in `logs/supervisor.log`).
//!
//! It owns the cluster's L2 switch and one QEMU child per running node, serves
//! the control socket ([`super::control`]) and keeps `cluster.json` current on
//! every transition. It restarts nothing by itself: a QEMU that ends without
//! being asked to is recorded as `crashed` and stays down until someone asks
//! for `start-node`. On `shutdown` (or SIGTERM/SIGINT) it stops every node
//! (ACPI power button through QMP, `quit` after the deadline, SIGKILL as the
//! last resort), stops the switch, removes its sockets and pid file and exits.
//!
//! Runs on a current-thread tokio runtime: QEMU children are spawned from the
//! main thread with `PR_SET_PDEATHSIG`, so if the supervisor dies (even by
//! SIGKILL) the kernel kills its QEMUs and nothing is leaked. Children are
//! reaped in one place each (the task that waits on the child). The same
//! runtime forwards the switch's frames, so it never waits for the disk:
//! `cluster.json` is written (and fsynced) by a thread of its own
//! ([`Saver`]), and a control request is answered once the state it changed
//! is on disk.
//!
//! QEMU writes neither of a node's logs itself: its serial console and its
//! stderr go into pipes, and one thread per pipe copies them into capped,
//! rotated files ([`super::caplog`]; `IRONCLAD_LOG_MAX`, default 16 MiB). The
//! task that reaps a QEMU waits for both copies to finish before it records
//! the exit, so QEMU's last words are in the log when the exit is seen.
//!
//! | module | owns |
//! |---|---|
//! | this one | the node's QEMU description ([`vm_spec`]), the kernel command line, `main` |
//! | `serve` | the run: recovered state, the switch, the control socket, signals, the end |
//! | `node` | one node: its QEMU and log copies, reaping it, stopping it through QMP |
//! | `saver` | `cluster.json` written on a thread of its own |
//! | `boot_files` | QEMU's copies of the kernel and initramfs handed back after each boot |
//! | [`process`] | the supervisor seen from outside: detached start, finding it in /proc |
//!
//! The lifecycle does not call this module directly: it goes through the
//! cluster's engine ([`crate::cluster::engine`]), whose first implementation
//! ([`crate::cluster::engine::QemuEngine`]) is this supervisor.

use super::paths::ClusterPaths;
use super::state::{ClusterState, NodeRecord, StateError, now_ms};
use crate::network::MacAddr;
use crate::qemu::{ClusterNic, MachineType, UserNic, VmSpec};
use std::path::Path;

/// The kernel command line of every node (see docs/image-layout.md), with
/// the kernel defences Debian's stock kernel offers without a rebuild
/// (docs/matrix.md, "Kernel defences", has what each blocks, measured):
/// - `lockdown=integrity`: no /dev/mem, /dev/port, ioperm, MSR writes,
///   unsigned kexec, hibernation, unsigned modules;
/// - `module.sig_enforce=1`: only modules signed by Debian's key load (the
///   image's modules are Debian's, decompressed with their signatures);
/// - `bdev_allow_write_mounted=0`: nobody opens a mounted disk for writing
///   (the root and state disks: BRK-05);
/// - `cgroup_no_v1=all,named`: no cgroup v1 hierarchy can be mounted (the
///   release_agent escape, BRK-08); containerd uses cgroup v2;
/// - `page_reporting.page_reporting_order=3`: the guest reports free blocks
///   of 32 KiB and up to the balloon (not only 2 MiB ones), so the pages
///   freed by dropping the boot's page cache, scattered as they are, go back
///   to the host too (order 5, 128 KiB, left 7-9 MiB more per idle node);
/// - `transparent_hugepage=madvise`: Debian's kernel backs every anonymous
///   mapping with 2 MiB pages where it can (`always`), so the Go heaps of
///   etcd and containerd held 22 MiB of huge pages, partly unused, on an idle
///   control plane; only what asks for them (`MADV_HUGEPAGE`) gets them now.
///
/// machined turns module loading off once the node's modules are in
/// (`kernel.modules_disabled`).
///
/// `cryptomgr.notests` skips the kernel's boot-time self-tests of its crypto
/// algorithms. With signatures enforced, the first module load waits for the
/// tests of the hash and signature algorithms; on a starved vCPU (ten nodes
/// under TCG on two cores) that wait hit its timeout, the kernel could not
/// load its own X.509 key ("Problem loading in-kernel X.509 certificate
/// (-110)"), rejected virtio_blk and squashfs, and the node never found its
/// root disk. The tests check the kernel's own code (a FIPS requirement), not
/// anything a guest or a container controls.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 quiet lockdown=integrity module.sig_enforce=1 bdev_allow_write_mounted=0 cgroup_no_v1=all,named cryptomgr.notests page_reporting.page_reporting_order=3 transparent_hugepage=madvise";

/// The kernel command line for `accel`. Under TCG the guest CPU does not
/// speculate (QEMU translates and runs instructions in order), so the
/// speculative-execution mitigations, page-table isolation above all (a CR3
/// switch and TLB flush on every syscall), only cost time: they are turned
/// off there. Under KVM the guest runs on the real CPU and keeps them.
pub fn kernel_cmdline(accel: crate::qemu::Accel) -> String {
    match accel {
        crate::qemu::Accel::Tcg => format!("{KERNEL_CMDLINE} mitigations=off"),
        crate::qemu::Accel::Kvm => KERNEL_CMDLINE.to_string(),
    }
}
/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The TCG translated-code cache per node (MiB) unless `create
/// --tcg-cache` says otherwise ([`ClusterState::tcg_cache_mib`]). QEMU's
/// default (1 GiB, filled lazily) leaves about 170 MiB more resident per
/// booted node; too small a cache is flushed over and over by the nodes' big
/// Go binaries (containerd, shims, runc, etcd), and QEMU never gives a
/// flushed cache's pages back. Measured on a dev cluster (2 cores, TCG):
/// 32 MiB: ready at 17-20 s, matrix 198 s, idle worker 346 MiB;
/// 64 MiB: ready at 15-17 s, matrix 107 s, idle worker 383 MiB;
/// 96 MiB: ready at 13.5 s, matrix 91 s, idle worker 423 MiB.
/// Session 21 (docs/benchmarks.md): 256 MiB took the dev matrix from 77.5 s
/// to 57.4 s and the 3+2 create from 37 s to 30 s, for about 150 MiB more per
/// node (423 and 493 MiB idle).
pub const TCG_TB_SIZE_MIB: u32 = crate::cluster::state::TCG_CACHE_DEFAULT_MIB;
/// The hidden subcommand that runs the supervisor.
pub const SUBCOMMAND: &str = "__supervise";

/// Supervisor failures at start-up (once serving, errors are per request).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot start the cluster switch: {0}")]
    Switch(#[from] crate::network::SwitchError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad node in cluster state: {0}")]
    BadNode(String),
    #[error("{0}")]
    Config(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let context = context.into();
    move |source| SupervisorError::Io { context, source }
}

macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", $crate::cluster::supervisor::timestamp(), format_args!($($arg)*))
    };
}

/// `[seconds.millis]` since the epoch, the prefix of every log line.
fn timestamp() -> String {
    let ms = now_ms();
    format!("[{}.{:03}]", ms / 1000, ms % 1000)
}

mod boot_files;
mod node;
pub mod process;
mod saver;
mod serve;

pub use process::{cmdline, is_supervisor_of, processes_of, running_pid, spawn_detached};

/// The QEMU description of `node` (pure: used by the supervisor and the tests).
pub fn vm_spec(
    paths: &ClusterPaths,
    state: &ClusterState,
    node: &NodeRecord,
) -> Result<VmSpec, SupervisorError> {
    let mac = |s: &str| {
        s.parse::<MacAddr>()
            .map_err(|e| SupervisorError::BadNode(format!("{}: MAC {s}: {e}", node.name)))
    };
    Ok(VmSpec {
        name: node.name.to_string(),
        kernel: state.image.kernel.clone(),
        initrd: state.image.initrd.clone(),
        append: kernel_cmdline(state.accel),
        cpus: node.cpus,
        memory_mib: node.memory_mib,
        machine: MachineType::Q35,
        accel: state.accel,
        tcg_tb_size_mib: Some(state.tcg_cache_mib),
        root_image: state.image.rootfs.clone(),
        state_disk: paths.disk(&node.name),
        machine_config: paths.fw_cfg_config(&node.name),
        user_nic: UserNic {
            mac: mac(&node.user_mac)?,
            restrict: !state.egress,
            host_api_port: node.api_port,
        },
        cluster_nic: Some(ClusterNic {
            mac: mac(&node.cluster_mac)?,
            socket: paths.switch_port(&node.name),
        }),
        qmp_socket: paths.qmp_socket(&node.name),
        serial_log: paths.serial_log(&node.name),
    })
}

/// A node name from a control request, as a [`crate::spec::NodeName`] (it
/// names files; the request was already matched against `cluster.json`).
fn spec_node(node: &str) -> Result<crate::spec::NodeName, String> {
    node.parse()
        .map_err(|e| format!("bad node name {:?}: {e}", crate::spec::clip(node)))
}

/// The serial lines carried into a rotated serial log's new file: the ready
/// line and the last boot phase, which `lifecycle` reads back.
const SERIAL_CARRY: &[&str] = &[super::lifecycle::READY_LINE, super::lifecycle::PHASE_PREFIX];

/// Runs the supervisor of the cluster in `dir` until it is shut down. Builds
/// its own current-thread runtime (see the module doc).
pub fn main(dir: &Path) -> Result<(), SupervisorError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("cannot start the async runtime"))?;
    rt.block_on(serve::run(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_spec_uses_the_fixed_identity() {
        let state = super::super::state::tests::sample();
        let paths = ClusterPaths::new(Path::new("/s"), &"dev".parse().unwrap());
        let spec = vm_spec(&paths, &state, &state.nodes[0]).unwrap();
        assert_eq!(spec.user_nic.host_api_port, 50001);
        assert!(spec.user_nic.restrict);
        assert_eq!(spec.state_disk, paths.disk(&state.nodes[0].name));
        // The JSON copy that starting the node writes, not the YAML file.
        assert_eq!(
            spec.machine_config,
            Path::new("/s/clusters/dev/nodes/dev-cp-1.fw_cfg.json")
        );
        assert_eq!(
            spec.cluster_nic.unwrap().socket,
            Path::new("/s/clusters/dev/run/sw-dev-cp-1.sock")
        );
        assert_eq!(spec.kernel, Path::new("/c/vmlinux"));
        assert!(
            spec.append.ends_with("mitigations=off"),
            "TCG: {}",
            spec.append
        );
        assert_eq!(kernel_cmdline(crate::qemu::Accel::Kvm), KERNEL_CMDLINE);
        // The translation cache is the cluster's (`create --tcg-cache`).
        assert_eq!(spec.tcg_tb_size_mib, Some(TCG_TB_SIZE_MIB));
        let mut big = state.clone();
        big.tcg_cache_mib = 256;
        let spec = vm_spec(&paths, &big, &big.nodes[0]).unwrap();
        assert_eq!(spec.tcg_tb_size_mib, Some(256));
        let mut bad = state.clone();
        bad.nodes[0].user_mac = "zz".into();
        assert!(vm_spec(&paths, &bad, &bad.nodes[0]).is_err());
    }
}
