//! Boots one real node under QEMU TCG from the real image and talks to it.
//!
//! Builds (or reuses) the image, generates the config of a one-node cluster,
//! starts QEMU with the command line of `qemu::VmSpec` (root squashfs
//! read-only, qcow2 state disk, machine config over fw_cfg, user NIC with the
//! API port forwarded to a free port on 127.0.0.1, `restrict=on`), waits for
//! `machined: ready` on the serial console, checks the facts machined prints
//! (root read back from /proc/self/mounts; state disk formatted, boot 1),
//! exercises the node API over mTLS with the real admin and reader
//! certificates, reboots through the API and checks that the state disk
//! survived (`formatted=false boot=2`), then powers off through the API.
//!
//! The image cache is `<CARGO_TARGET_TMPDIR>/image-cache` (shared with the
//! other VM tests) unless `IRONCLAD_CACHE_DIR` is set. QEMU dies with the test
//! (a guard kills it, and PR_SET_PDEATHSIG covers a killed test process); on
//! failure the serial log is copied to `target/e2e-logs/`.

use futures::StreamExt;
use ironclad_contract::api::ErrorCode;
use ironclad_host::client::{ClientError, NodeClient};
use ironclad_host::image::{BuildOptions, NoProgress, RecipeRef, ensure_built};
use ironclad_host::machine::MachineConfig;
use ironclad_host::pki::{self, ClientRole, Secrets};
use ironclad_host::qemu::{Accel, ClusterNic, MachineType, Qmp, UserNic, VmSpec};
use ironclad_testkit::process::{self, Guard};
use ironclad_testkit::wait;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

const CLUSTER: &str = "\
apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata:
  name: nb
spec:
  controlPlanes:
    count: 1
  workers:
    count: 0
";

/// Deadline for one boot to reach `ready` under TCG on a busy 2-core host.
const BOOT_DEADLINE: Duration = Duration::from_secs(180);

/// A node's QEMU (under the shared [`Guard`]); its serial log is kept when
/// the test fails.
struct Vm {
    qemu: Guard,
    serial: PathBuf,
    stderr: PathBuf,
}

impl Vm {
    fn start(spec: &VmSpec) -> Vm {
        let args = spec.to_args().expect("a valid VmSpec");
        let stderr = spec.serial_log.with_extension("stderr");
        Vm {
            qemu: Guard::qemu(args, &stderr),
            serial: spec.serial_log.clone(),
            stderr,
        }
    }

    fn serial(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the serial log satisfies `pred`; fails early if QEMU exits
    /// or machined prints a fatal error.
    fn wait_serial(
        &mut self,
        what: &str,
        deadline: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let stderr = &self.stderr;
        let serial = &self.serial;
        let qemu = &mut self.qemu;
        wait::until(what, deadline, || {
            let log = read_lossy(serial);
            assert!(
                !log.contains("machined: fatal"),
                "machined failed while waiting for {what}:\n{log}"
            );
            if let Some(st) = qemu.exited() {
                panic!(
                    "QEMU exited ({st}) while waiting for {what}:\n{log}\nstderr: {}",
                    read_lossy(stderr)
                );
            }
            pred(&log).then_some(log)
        })
    }

    /// Waits for QEMU to exit on its own.
    fn wait_exit(&mut self, deadline: Instant) -> std::process::ExitStatus {
        let serial = self.serial.clone();
        self.qemu.wait_exit(deadline, || read_lossy(&serial))
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = process::kept_logs_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "node_boot");
            let _ = std::fs::create_dir_all(&dir);
            let dst = dir.join("serial.log");
            if std::fs::copy(&self.serial, &dst).is_ok() {
                eprintln!("serial log kept at {}", dst.display());
            }
        }
    }
}

/// Stands in for the cluster switch: accepts QEMU's stream connection and
/// drops what it sends (one node has no peer to talk to).
fn fake_switch(path: &Path) {
    let l = std::os::unix::net::UnixListener::bind(path).expect("bind the switch socket");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut std::io::sink());
            });
        }
    });
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The uptime of the `n`-th (0-based) `machined: ready` line.
fn ready_uptime(log: &str, n: usize) -> Option<f64> {
    log.lines()
        .filter(|l| l.starts_with("machined: ready t="))
        .nth(n)
        .and_then(|l| {
            l.trim_start_matches("machined: ready t=")
                .trim()
                .parse()
                .ok()
        })
}

fn fact<'a>(log: &'a str, prefix: &str, n: usize) -> Option<&'a str> {
    log.lines()
        .filter(|l| l.starts_with(prefix))
        .nth(n)
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::disallowed_methods,
    reason = "the test uses the cache the caller points it at"
)]
async fn node_boots_serves_the_api_and_keeps_its_state_across_a_reboot() {
    // The image, with this build's machined.
    let cache = std::env::var_os("IRONCLAD_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-cache"));
    let opts = BuildOptions {
        machined: Some(support::machined_binary()),
        cache_dir: Some(cache),
        refresh_base: false,
    };
    let t = Instant::now();
    let image = tokio::task::spawn_blocking(move || {
        ensure_built(&RecipeRef::Name("trixie".into()), &opts, &NoProgress)
    })
    .await
    .unwrap()
    .expect("the image builds");
    eprintln!(
        "image {} ({}) in {:.1}s",
        image.key,
        if image.cache_hit { "cached" } else { "built" },
        t.elapsed().as_secs_f64()
    );

    // A one-node cluster's config.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = ironclad_host::spec::parse_cluster(CLUSTER, "nb.yaml").expect("cluster parses");
    let report = ironclad_host::configdir::generate(&cluster, &dir.join("config")).unwrap();
    let node = &report.nodes[0];
    let cfg_text = std::fs::read_to_string(&node.config).unwrap();
    let cfg = MachineConfig::from_yaml(&cfg_text).unwrap();
    let (secrets, _) = Secrets::ensure(&dir.join("config/secrets"), "nb").unwrap();
    let reader = pki::issue_client_cert(&secrets.os_ca, ClientRole::Reader, "reader").unwrap();
    let ca = secrets.os_ca.cert_pem().to_string();

    let state = dir.join("state.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&state)
        .arg("2G")
        .status()
        .expect("qemu-img runs");
    assert!(st.success());
    let switch = dir.join("sw.sock");
    fake_switch(&switch);
    let port = free_port();
    let spec = VmSpec {
        name: node.name.clone(),
        kernel: image.vmlinux.clone(),
        initrd: image.initramfs.clone(),
        // The kernel command line clusters boot with (defences included).
        append: ironclad_host::cluster::supervisor::kernel_cmdline(Accel::Tcg),
        cpus: 2,
        memory_mib: 1024,
        machine: MachineType::Q35,
        accel: Accel::Tcg,
        root_image: image.rootfs.clone(),
        state_disk: state.clone(),
        machine_config: node.config.clone(),
        user_nic: UserNic {
            mac: cfg.node.user_mac.parse().unwrap(),
            restrict: true,
            host_api_port: port,
        },
        cluster_nic: Some(ClusterNic {
            mac: cfg.node.cluster_mac.parse().unwrap(),
            socket: switch,
        }),
        qmp_socket: dir.join("qmp.sock"),
        serial_log: dir.join("serial.log"),
        tcg_tb_size_mib: Some(32),
    };

    // First boot.
    let booted = Instant::now();
    let mut vm = Vm::start(&spec);
    let log = vm.wait_serial("machined: ready", booted + BOOT_DEADLINE, |l| {
        l.contains("\nmachined: ready t=")
    });
    eprintln!(
        "first boot: ready at {:?} s uptime, {:.1}s wall",
        ready_uptime(&log, 0),
        booted.elapsed().as_secs_f64()
    );
    for l in log.lines().filter(|l| l.starts_with("machined:")) {
        eprintln!("  {l}");
    }
    assert_eq!(
        fact(&log, "machined: fact root=", 0),
        Some("machined: fact root=/dev/vda fstype=squashfs ro"),
        "the root is the read-only squashfs"
    );
    assert_eq!(
        fact(&log, "machined: fact state-disk ", 0),
        Some("machined: fact state-disk formatted=true boot=1")
    );
    assert!(log.contains("machined: apid listening"), "{log}");
    assert!(!log.contains("BEGIN"), "no PEM on the console");

    // The API, as admin.
    let endpoint = SocketAddr::from(([127, 0, 0, 1], port));
    let admin_cert = std::fs::read_to_string(&report.admin_cert).unwrap();
    let admin_key = std::fs::read_to_string(&report.admin_key).unwrap();
    let admin = NodeClient::new(&node.name, endpoint, &ca, &admin_cert, &admin_key).unwrap();
    let api_deadline = Instant::now() + Duration::from_secs(60);
    let v = wait::until_ok("the node API", api_deadline, || admin.version()).await;
    assert_eq!(v.node, node.name);
    assert_eq!(v.api, "v1");
    // Its certificate names this node only: a client for another node,
    // sent to this port, refuses the answer (a squatted host port).
    let impostor = NodeClient::new("nb-cp-2", endpoint, &ca, &admin_cert, &admin_key).unwrap();
    let e = impostor.version().await.unwrap_err();
    assert!(
        matches!(&e, ironclad_host::client::ClientError::WrongNode { presented, .. }
            if presented.contains(&node.name)),
        "{e}"
    );
    let health = admin.health().await.unwrap();
    assert!(!health.etcd_bootstrapped);
    // `ready` does not wait for containerd: it answers a few seconds later.
    vm.wait_serial(
        "machined: containerd answering",
        booted + BOOT_DEADLINE,
        |l| l.contains("\nmachined: containerd answering t="),
    );
    let services = admin.services().await.unwrap().services;
    let containerd = services
        .iter()
        .find(|s| s.name == "containerd")
        .expect("containerd is supervised");
    assert_eq!(
        containerd.state,
        ironclad_contract::api::ServiceState::Running
    );
    assert!(services.iter().any(|s| s.name == "etcd"), "{services:?}");
    let logs = admin.logs("containerd", Some(5)).await.unwrap().lines;
    assert!(!logs.is_empty() && logs.len() <= 5, "{logs:?}");
    let e = admin.logs("no-such-service", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let dmesg = admin.dmesg(None).await.unwrap().lines;
    assert!(
        dmesg.iter().any(|l| l.line.contains("Linux version")),
        "the kernel ring from its start"
    );
    assert_eq!(admin.dmesg(Some(3)).await.unwrap().lines.len(), 3);

    // Follow containerd's log across a restart through the API: the new
    // process's first line arrives on the open stream.
    let mut follow = admin.follow_logs("containerd", Some(1)).await.unwrap();
    let _last = tokio::time::timeout(Duration::from_secs(30), follow.next())
        .await
        .expect("the buffered line")
        .expect("a line")
        .unwrap();
    let st = admin.service_restart("containerd").await.unwrap();
    assert_eq!(st.name, "containerd");
    let seen = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(l) = follow.next().await {
            if l.unwrap().line.contains("starting containerd") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the restarted containerd's first line was streamed"
    );
    drop(follow);
    let e = admin.service_stop("no-such-service").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    // As reader: reads yes, power no.
    let reader =
        NodeClient::new(&node.name, endpoint, &ca, &reader.cert_pem, &reader.key_pem).unwrap();
    assert_eq!(reader.version().await.unwrap().node, node.name);
    let e = reader.reboot().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");

    // Apply a config for the next boot: refused for another node, stored for this one.
    let mut other = cfg.clone();
    other.node.name = "someone-else".parse().unwrap();
    let e = admin
        .apply_config(&other.to_yaml().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    let mut next = cfg.clone();
    next.sysctls.insert("vm.swappiness".into(), "10".into());
    assert!(
        admin
            .apply_config(&next.to_yaml().unwrap())
            .await
            .unwrap()
            .accepted
    );

    // Each boot has its own id, which health shows.
    let first_boot = admin.health().await.unwrap().boot_id.expect("a boot id");
    assert_eq!(first_boot.len(), 36, "{first_boot}");

    // Reboot through the API: same disk, not formatted again, boot 2.
    assert!(admin.reboot().await.unwrap().accepted);
    let rebooted = Instant::now();
    let log = vm.wait_serial("a second machined: ready", rebooted + BOOT_DEADLINE, |l| {
        ready_uptime(l, 1).is_some()
    });
    eprintln!(
        "second boot: ready at {:?} s uptime, {:.1}s wall after the request",
        ready_uptime(&log, 1),
        rebooted.elapsed().as_secs_f64()
    );
    let second = log
        .split("machined: shutdown requested by the node API (reboot)")
        .nth(1)
        .unwrap_or("");
    for l in second.lines().filter(|l| l.starts_with("machined:")) {
        eprintln!("  {l}");
    }
    assert!(log.contains("machined: shutdown requested by the node API (reboot)"));
    assert!(
        log.contains("machined: using the config applied through the API"),
        "the applied config is used on the next boot"
    );
    assert_eq!(
        fact(&log, "machined: fact state-disk ", 1),
        Some("machined: fact state-disk formatted=false boot=2")
    );
    let v = wait::until_ok(
        "the node API",
        wait::deadline(Duration::from_secs(60)),
        || admin.version(),
    )
    .await;
    assert_eq!(v.node, node.name);
    let second_boot = admin.health().await.unwrap().boot_id.expect("a boot id");
    assert_ne!(second_boot, first_boot, "a reboot gives another boot id");

    // A guest that resets (what a kernel crash does with panic=-1) never
    // answers a request it had; the boot id ends the wait for it. The
    // request stands for one whose answer never comes; it tells the test
    // once the watch has read the boot id it compares with.
    let (hung, watching) = wait::never_answered::<(), ClientError>();
    let watch = {
        let admin = admin.clone();
        tokio::spawn(async move {
            admin
                .unless_rebooted("a request", Duration::from_millis(500), hung)
                .await
        })
    };
    watching.await.expect("the watch started the request");
    let qmp = Qmp::connect(
        &spec.qmp_socket,
        tokio::time::Instant::now() + Duration::from_secs(10),
    )
    .await
    .expect("QMP");
    qmp.reset().await.expect("system_reset");
    let reset = Instant::now();
    let ended = tokio::time::timeout(BOOT_DEADLINE, watch)
        .await
        .expect("the watch ends the wait once the node is back")
        .unwrap();
    let e = ended.unwrap_err();
    assert!(
        matches!(&e, ClientError::Rebooted { node: n, .. } if n.as_str() == node.name.as_str()),
        "{e}"
    );
    eprintln!(
        "reset noticed {:.1}s after it: {e}",
        reset.elapsed().as_secs_f64()
    );
    let log = vm.wait_serial("a third machined: ready", reset + BOOT_DEADLINE, |l| {
        ready_uptime(l, 2).is_some()
    });
    assert_eq!(
        fact(&log, "machined: fact state-disk ", 2),
        Some("machined: fact state-disk formatted=false boot=3")
    );
    let third_boot = wait::until_ok(
        "the node API after the reset",
        wait::deadline(Duration::from_secs(60)),
        || admin.health(),
    )
    .await
    .boot_id
    .expect("a boot id");
    assert!(third_boot != second_boot && third_boot != first_boot);

    // Power off through the API: QEMU exits.
    assert!(admin.shutdown().await.unwrap().accepted);
    let st = vm.wait_exit(Instant::now() + Duration::from_secs(120));
    eprintln!("QEMU exited after the API power-off: {st}");
    let log = vm.serial();
    assert!(log.contains("machined: shutdown requested by the node API (shutdown)"));
}
