//! The boot groups: `limit` (the image's kernel with a tiny busybox
//! initramfs that prints its uptime and powers off), `node` (one ironclad
//! node booted directly with the library's QEMU command line) and `baseline`
//! (the cached Debian VM, see [`crate::baseline`]). Each is set up once and
//! then run once per round.

use crate::bench::{Bench, CPUS, MEMORY_MIB, QEMU, log, qemu_path};
use crate::options::Group;
use crate::vm::{self, Matcher, VmRun, Want};
use crate::{BenchError, Result};
use ironclad_host::image::initramfs::Archive;
use ironclad_host::qemu::{MachineType, UserNic, VmSpec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A boot group, ready to run.
pub enum Setup {
    Limit { kernel: PathBuf, initrd: PathBuf },
    Node(Box<NodeSetup>),
    Baseline,
}

pub struct NodeSetup {
    kernel: PathBuf,
    initrd: PathBuf,
    rootfs: PathBuf,
    config: PathBuf,
    user_mac: String,
    cluster_mac: String,
}

pub fn setup(b: &mut Bench, g: Group) -> Result<Setup> {
    match g {
        Group::Limit => {
            let kernel = b.image()?.vmlinux.clone();
            Ok(Setup::Limit {
                kernel,
                initrd: limit_initramfs(&b.work)?,
            })
        }
        Group::Node => setup_node(b),
        Group::Baseline => {
            let dir = crate::baseline::ensure(&b.work)?;
            let kv = std::fs::read_to_string(dir.join("kernel-version")).unwrap_or_default();
            let kv = kv.trim();
            if let Some(image_kv) = b.kernel_version()
                && kv != image_kv
            {
                b.note(format!(
                    "baseline kernel {kv} differs from the node image's {image_kv} (rebuild the baseline: rm -r {})",
                    dir.display()
                ));
            }
            Ok(Setup::Baseline)
        }
        Group::Etcd | Group::Ha | Group::Scale | Group::Dev | Group::Image | Group::Sizes => {
            Err(BenchError::Failed(format!("{g:?} is not a boot group")))
        }
    }
}

pub fn run_round(b: &mut Bench, s: &Setup, round: u32) -> Result<()> {
    match s {
        Setup::Limit { kernel, initrd } => run_limit(b, kernel, initrd, round),
        Setup::Node(n) => run_node(b, n, round),
        Setup::Baseline => run_baseline(b, round),
    }
}

/// An interrupt ends the invocation; any other failure is the run's.
fn vm_run(b: &Bench, run: &VmRun) -> Result<Result<vm::VmResult, String>> {
    match vm::run(QEMU, run) {
        Ok(r) => Ok(Ok(r)),
        Err(vm::VmError::Interrupted) => Err(BenchError::Interrupted),
        Err(vm::VmError::Spawn(e)) => Err(BenchError::MissingTool(format!("{QEMU}: {e}"))),
        Err(e) => {
            b.check_interrupt()?;
            Ok(Err(e.to_string()))
        }
    }
}

/// `-chardev file` and `-serial` for a console written to `log`.
fn serial_args(log: &Path) -> [OsString; 4] {
    [
        "-chardev".into(),
        format!("file,id=serial0,path={}", qemu_path(log)).into(),
        "-serial".into(),
        "chardev:serial0".into(),
    ]
}

// ---------------------------------------------------------------- limit

/// The `/init` of the limit's initramfs.
const LIMIT_INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read up idle </proc/uptime
echo \"bench: init t=$up\"
/bin/busybox poweroff -f
";

/// Runs a command, its output into `log`; Err with the log's tail on failure.
pub fn command(cmd: &mut std::process::Command, what: &str, log: &Path) -> Result<()> {
    let out = std::fs::File::create(log)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| BenchError::Failed(format!("{}: {e}", log.display())))?;
    let mut child = cmd.stdout(out).stderr(err).spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BenchError::MissingTool(format!("{what}: not installed"))
        } else {
            BenchError::Failed(format!("{what}: {e}"))
        }
    })?;
    // Polled, so that a Ctrl-C or SIGTERM sent to this process alone reaches
    // the child too (as SIGINT: `ironclad create` then undoes what it made).
    let mut forwarded = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(BenchError::Failed(format!("{what}: {e}"))),
        }
        if ironclad_host::interrupt::requested() && !forwarded {
            forwarded = true;
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe {
                    libc::kill(pid, libc::SIGINT);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if ironclad_host::interrupt::requested() {
        return Err(BenchError::Interrupted);
    }
    if !status.success() {
        return Err(BenchError::Failed(format!(
            "{what} failed ({status}); {} ends with:\n{}",
            log.display(),
            vm::tail(log, 2000)
        )));
    }
    Ok(())
}

/// `<work>/limit/initramfs.cpio.gz`: Debian's static busybox (downloaded
/// with `apt-get download busybox-static`, never part of the node image) and
/// [`LIMIT_INIT`], as a newc archive made by the image builder's writer,
/// gzip'd. Cached; made once.
fn limit_initramfs(work: &Path) -> Result<PathBuf> {
    let d = work.join("limit");
    let out = d.join("initramfs.cpio.gz");
    if std::fs::metadata(&out).is_ok_and(|m| m.len() > 0) {
        return Ok(out);
    }
    log!(
        "making the limit's initramfs (busybox-static, once; cached in {})",
        d.display()
    );
    let fail = |what: &str, e: &dyn std::fmt::Display| BenchError::Failed(format!("{what}: {e}"));
    let _ = std::fs::remove_dir_all(&d);
    let deb = d.join("deb");
    std::fs::create_dir_all(&deb).map_err(|e| fail(&deb.display().to_string(), &e))?;
    command(
        std::process::Command::new("apt-get")
            .args(["download", "busybox-static"])
            .current_dir(&deb),
        "apt-get download busybox-static",
        &d.join("apt-get.log"),
    )?;
    let pkg = std::fs::read_dir(&deb)
        .map_err(|e| fail("reading the download dir", &e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("busybox-static_"))
        })
        .ok_or_else(|| BenchError::Failed("apt-get left no busybox-static_*.deb".into()))?;
    let x = deb.join("x");
    command(
        std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(&pkg)
            .arg(&x),
        "dpkg-deb -x",
        &d.join("dpkg-deb.log"),
    )?;
    let busybox = std::fs::read(x.join("bin/busybox")).map_err(|e| fail("bin/busybox", &e))?;
    let mut a = Archive::new();
    let cpio = (|| {
        a.dir("bin", 0o755)?;
        a.dir("proc", 0o755)?;
        a.file("bin/busybox", busybox, 0o755)?;
        a.file("init", LIMIT_INIT.as_bytes().to_vec(), 0o755)?;
        a.to_newc(0)
    })()
    .map_err(|e| fail("the limit's initramfs", &e))?;
    let tmp = d.join("initramfs.cpio.gz.tmp");
    gzip(&cpio, &tmp)?;
    std::fs::rename(&tmp, &out).map_err(|e| fail(&out.display().to_string(), &e))?;
    Ok(out)
}

/// `gzip -9n` of `data` into `out`.
fn gzip(data: &[u8], out: &Path) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(out)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", out.display())))?;
    let mut child = std::process::Command::new("gzip")
        .arg("-9n")
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|e| BenchError::MissingTool(format!("gzip: {e}")))?;
    let wrote = child.stdin.take().map(|mut s| s.write_all(data));
    let status = child
        .wait()
        .map_err(|e| BenchError::Failed(format!("gzip: {e}")))?;
    match wrote {
        Some(Ok(())) if status.success() => Ok(()),
        _ => Err(BenchError::Failed(format!("gzip failed ({status})"))),
    }
}

fn run_limit(b: &mut Bench, kernel: &Path, initrd: &Path, i: u32) -> Result<()> {
    log!("limit run {i}/{}", b.opts.runs);
    let log = b.scratch(&format!("limit-{i}.log"));
    let mut args = b.machine_args("limit");
    args.extend(["-no-reboot".into(), "-kernel".into(), kernel.into()]);
    args.extend(["-initrd".into(), initrd.into()]);
    args.extend(["-append".into(), b.append().into()]);
    args.extend(serial_args(&log));
    let run = VmRun {
        args,
        log,
        wants: vec![Want::new("init", Matcher::Uptime("bench: init t="))],
        until_exit: true,
        timeout: Duration::from_secs(300),
        rss_delay: None,
        hand_back: Vec::new(),
    };
    match vm_run(b, &run)? {
        Ok(r) => {
            let (Some(up), Some(wall), Some(exit)) =
                (r.guest.get("init"), r.wall.get("init"), r.exit_wall)
            else {
                b.failed(
                    "limit",
                    "init_uptime",
                    "s",
                    format!("run {i}: incomplete result"),
                );
                return Ok(());
            };
            b.sample(
                "limit",
                "init_uptime",
                "s",
                *up,
                "kernel start to /init (guest uptime)",
            );
            b.sample(
                "limit",
                "init_wall",
                "s",
                *wall,
                "QEMU start to /init output (wall)",
            );
            b.sample(
                "limit",
                "poweroff_wall",
                "s",
                exit,
                "QEMU start to QEMU exit after power-off (wall)",
            );
        }
        Err(e) => b.failed("limit", "init_uptime", "s", format!("run {i}: {e}")),
    }
    Ok(())
}

// ---------------------------------------------------------------- node

/// `dev-cp-1` of `clusters/dev.yaml`: its machine config, generated with the
/// library (as `ironclad gen config` does), and its MACs.
fn setup_node(b: &mut Bench) -> Result<Setup> {
    let img = b.image()?.clone();
    let file = b.repo.join("clusters/dev.yaml");
    let cluster = ironclad_host::spec::parse_cluster_file(&file)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", file.display())))?;
    let dir = b.scratch("node-cfg");
    ironclad_host::configdir::generate(&cluster, &dir)
        .map_err(|e| BenchError::Failed(format!("machine configs for {}: {e}", file.display())))?;
    let node = cluster
        .nodes
        .first()
        .ok_or_else(|| BenchError::Failed(format!("{} has no nodes", file.display())))?;
    let macs = ironclad_host::machine::node_macs(cluster.name.as_str(), 0)
        .map_err(|e| BenchError::Failed(e.to_string()))?;
    // What `ironclad create` hands a node through fw_cfg.
    let config = ironclad_host::configdir::node_fw_cfg_path(&dir, &node.name);
    ironclad_host::configdir::write_fw_cfg_document(
        &ironclad_host::configdir::node_config_path(&dir, &node.name),
        &config,
    )
    .map_err(|e| BenchError::Failed(format!("machine config of {}: {e}", node.name)))?;
    Ok(Setup::Node(Box::new(NodeSetup {
        kernel: img.vmlinux,
        initrd: img.initramfs,
        rootfs: img.rootfs,
        config,
        user_mac: macs.user,
        cluster_mac: macs.cluster,
    })))
}

/// A free TCP port on 127.0.0.1 (for the API's hostfwd).
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Failed(format!("no free port on 127.0.0.1: {e}")))
}

/// The node's QEMU line: the library's [`VmSpec`] as `ironclad create`
/// builds it, but with QEMU's default TCG translation cache (the figure
/// `qemu_rss_idle` has always been taken with it) and the cluster NIC on an
/// unconnected QEMU hub instead of a switch (one node has no peers).
fn node_args(
    b: &Bench,
    n: &NodeSetup,
    log: &Path,
    disk: &Path,
    port: u16,
) -> Result<Vec<OsString>> {
    let mac = |s: &str| {
        s.parse()
            .map_err(|e| BenchError::Failed(format!("MAC {s}: {e}")))
    };
    let spec = VmSpec {
        name: "node".into(),
        kernel: n.kernel.clone(),
        initrd: n.initrd.clone(),
        append: b.append(),
        cpus: CPUS,
        memory_mib: MEMORY_MIB,
        machine: MachineType::Q35,
        accel: b.accel,
        tcg_tb_size_mib: None,
        root_image: n.rootfs.clone(),
        state_disk: disk.to_path_buf(),
        machine_config: n.config.clone(),
        user_nic: UserNic {
            mac: mac(&n.user_mac)?,
            restrict: true,
            host_api_port: port,
        },
        cluster_nic: None,
        qmp_socket: b.scratch("qmp.sock"),
        serial_log: log.to_path_buf(),
    };
    let mut args = spec
        .to_args()
        .map_err(|e| BenchError::Failed(format!("the node's QEMU line: {e}")))?;
    args.extend([
        "-netdev".into(),
        "hubport,id=cl0,hubid=0".into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=cl0,mac={}", n.cluster_mac).into(),
    ]);
    Ok(args)
}

/// What a node boot waits for (its tests use the same list).
pub(crate) const NODE_WANTS: [Want; 4] = [
    Want::new("stage1", Matcher::Phase("stage1")),
    Want::new("ready", Matcher::Phase("ready")),
    Want::new("containerd", Matcher::Phase("containerd answering")),
    Want::new(
        "settled",
        Matcher::Any(&["machined: images imported", "machined: image import failed"]),
    ),
];

fn run_node(b: &mut Bench, n: &NodeSetup, i: u32) -> Result<()> {
    log!("node run {i}/{}", b.opts.runs);
    let log = b.scratch(&format!("node-{i}.log"));
    // A new state disk per run, made as `ironclad create` makes it.
    let disk = b.scratch("state.qcow2");
    let _ = std::fs::remove_file(&disk);
    match ironclad_host::cluster::lifecycle::make_disk(&disk, 4 << 30) {
        Ok(None) => {}
        Ok(Some(why)) if i == 1 => log!("state disk left blank (machined formats it): {why}"),
        Ok(Some(_)) => {}
        Err(e) => return Err(BenchError::Failed(format!("the state disk: {e}"))),
    }
    let run = VmRun {
        args: node_args(b, n, &log, &disk, free_port()?)?,
        log,
        wants: NODE_WANTS.to_vec(),
        until_exit: false,
        timeout: Duration::from_secs(600),
        rss_delay: Some(Duration::from_secs(5)),
        hand_back: vec![n.kernel.clone(), n.initrd.clone()],
    };
    let result = vm_run(b, &run)?;
    let _ = std::fs::remove_file(&disk);
    match result {
        Ok(r) => {
            let (Some(ready), Some(stage1), Some(wall), Some(containerd)) = (
                r.guest.get("ready"),
                r.guest.get("stage1"),
                r.wall.get("ready"),
                r.guest.get("containerd"),
            ) else {
                b.failed(
                    "ironclad",
                    "node_ready_uptime",
                    "s",
                    format!("run {i}: incomplete result"),
                );
                return Ok(());
            };
            b.sample(
                "ironclad",
                "node_ready_uptime",
                "s",
                *ready,
                "kernel start to machined: ready (guest uptime)",
            );
            b.sample("ironclad", "node_stage1_uptime", "s", *stage1, "kernel start to machined stage 1 in the initramfs (guest uptime; compare limit/init_uptime)");
            b.sample(
                "ironclad",
                "node_ready_wall",
                "s",
                *wall,
                "QEMU start to machined: ready (wall)",
            );
            b.sample(
                "ironclad",
                "node_containerd_uptime",
                "s",
                *containerd,
                "kernel start to containerd answering on its socket (guest uptime)",
            );
            b.sample(
                "ironclad",
                "qemu_rss_idle",
                "MiB",
                r.rss_kib.unwrap_or(0) as f64 / 1024.0,
                "QEMU VmRSS of one idle node, 5 s after ready and the offline image import, its kernel and initramfs handed back",
            );
            b.record(crate::report::Sample::Timeline(r.phases));
        }
        Err(e) => b.failed(
            "ironclad",
            "node_ready_uptime",
            "s",
            format!("run {i}: {e}"),
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------- baseline

fn run_baseline(b: &mut Bench, i: u32) -> Result<()> {
    log!("baseline run {i}/{}", b.opts.runs);
    let d = b.work.join("baseline");
    let log = b.scratch(&format!("baseline-{i}.log"));
    // A fresh copy-on-write overlay: every run is the same first boot.
    let overlay = b.scratch("baseline.qcow2");
    let _ = std::fs::remove_file(&overlay);
    command(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(d.join("root.img"))
            .arg(&overlay),
        "qemu-img create",
        &b.scratch("qemu-img.log"),
    )?;
    let mut args = b.machine_args("baseline");
    args.extend([
        "-no-reboot".into(),
        "-kernel".into(),
        d.join("vmlinuz").into(),
    ]);
    args.extend(["-initrd".into(), d.join("initrd.img").into()]);
    args.extend([
        "-append".into(),
        format!("{} root=/dev/vda rw", b.append()).into(),
    ]);
    args.extend([
        "-drive".into(),
        format!("if=none,id=root,format=qcow2,file={}", qemu_path(&overlay)).into(),
        "-device".into(),
        "virtio-blk-pci,drive=root".into(),
    ]);
    args.extend(serial_args(&log));
    let run = VmRun {
        args,
        log,
        wants: vec![
            Want::new("etcd", Matcher::Uptime("bench: etcd healthy t=")),
            Want::new("containerd", Matcher::Uptime("bench: containerd t=")),
        ],
        until_exit: false,
        timeout: Duration::from_secs(900),
        rss_delay: None,
        hand_back: Vec::new(),
    };
    let result = vm_run(b, &run)?;
    let _ = std::fs::remove_file(&overlay);
    match result {
        Ok(r) => {
            let (Some(etcd), Some(containerd), Some(wall)) = (
                r.guest.get("etcd"),
                r.guest.get("containerd"),
                r.wall.get("etcd"),
            ) else {
                b.failed(
                    "baseline",
                    "etcd_healthy_uptime",
                    "s",
                    format!("run {i}: incomplete result"),
                );
                return Ok(());
            };
            b.sample(
                "baseline",
                "etcd_healthy_uptime",
                "s",
                *etcd,
                "etcd /health answers true (guest uptime)",
            );
            b.sample(
                "baseline",
                "containerd_uptime",
                "s",
                *containerd,
                "ctr version answers (guest uptime)",
            );
            b.sample(
                "baseline",
                "etcd_healthy_wall",
                "s",
                *wall,
                "QEMU start to etcd healthy (wall)",
            );
        }
        Err(e) => b.failed(
            "baseline",
            "etcd_healthy_uptime",
            "s",
            format!("run {i}: {e}"),
        ),
    }
    Ok(())
}
