//! Tests against the real QEMU (7.2 on the build machines): the built command
//! line is accepted, QMP works, and the cluster NIC connects to the switch and
//! carries frames both ways. Each test owns its QEMU through the shared
//! test guard (`ironclad_testkit::process::Guard`), which kills and reaps it
//! even when the test fails. No guest kernel is
//! needed: VMs start paused (`-S`) with a stand-in kernel header.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironclad_testkit::process::Guard;
use ironclad_testkit::wait;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::cmdline::tests::sample;
use super::*;
use crate::network::frame::{read_frame, write_frame};
use crate::network::{self, MacAddr, Switch, SwitchConfig};

const WAIT: Duration = Duration::from_secs(20);

/// QEMU with `args` under the shared test guard (killed and reaped when the
/// test ends, however it ends), its stderr in `dir/qemu.stderr`.
fn spawn_qemu(args: &[std::ffi::OsString], dir: &Path) -> Guard {
    Guard::qemu(args, &dir.join("qemu.stderr"))
}

/// Waits for QEMU to exit, with its stderr in the failure.
async fn exit_of(qemu: &mut Guard, dir: &Path) -> std::process::ExitStatus {
    qemu.wait_exit_async(wait::deadline(WAIT), || {
        std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default()
    })
    .await
}

/// A file QEMU's x86 loader takes as a Linux kernel: a boot-protocol 2.15
/// header ("HdrS") with a loaded-high flag. Never executed (the VM stays paused).
fn fake_kernel(path: &Path) {
    let mut k = vec![0u8; 8192];
    k[0x1f1] = 4; // setup sectors
    k[0x1fe] = 0x55;
    k[0x1ff] = 0xaa;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    k[0x211] = 0x01; // LOADED_HIGH
    k[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    std::fs::write(path, k).unwrap();
}

/// Lays out every file a [`VmSpec`] points at, in `dir`.
fn node_files(dir: &Path, spec: &VmSpec) {
    std::fs::create_dir_all(spec.state_disk.parent().unwrap()).unwrap();
    fake_kernel(&spec.kernel);
    std::fs::write(&spec.initrd, vec![0u8; 4096]).unwrap();
    std::fs::write(&spec.root_image, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&spec.machine_config, b"apiVersion: ironclad.dev/v1alpha1\n").unwrap();
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&spec.state_disk)
        .arg("64M")
        .current_dir(dir)
        .output()
        .expect("qemu-img (Debian: qemu-utils) must be installed for these tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct SwitchGuard {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for SwitchGuard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_switch(dir: &Path, nodes: &[&str]) -> SwitchGuard {
    let config = SwitchConfig {
        dir: dir.to_path_buf(),
        nodes: nodes.iter().map(|n| n.parse().unwrap()).collect(),
        seed: Some(1),
    };
    let switch = Switch::bind(&config).await.unwrap();
    let (stop, rx) = oneshot::channel();
    tokio::spawn(switch.serve(async {
        let _ = rx.await;
    }));
    SwitchGuard { stop: Some(stop) }
}

async fn switch_status(dir: &Path) -> network::Status {
    let mut ctl = network::ControlClient::connect(&network::control_socket(dir))
        .await
        .unwrap();
    match ctl.request(&network::Request::Status {}).await.unwrap() {
        network::Response::Status { status } => status,
        other => panic!("unexpected {other:?}"),
    }
}

async fn wait_port_connected(dir: &Path, node: &str) {
    let what = format!("switch port {node} to connect");
    wait::until_async(&what, wait::deadline(WAIT), || async {
        let s = switch_status(dir).await;
        s.ports
            .iter()
            .any(|p| p.node == node && p.connected)
            .then_some(())
    })
    .await
}

/// QEMU 7.2 accepts the full line for every machine type; the VM is paused
/// (`-S`), answers QMP, its cluster NIC connects to the switch, and `quit` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_accepts_the_line_and_connects_to_the_switch() {
    for machine in [MachineType::Q35, MachineType::Pc, MachineType::Microvm] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut spec = sample(dir);
        spec.machine = machine;
        // Ports are per test run; pick a free one by binding port 0.
        spec.user_nic.host_api_port = free_port();
        node_files(dir, &spec);
        let _switch = start_switch(dir, &["cp-1"]).await;
        let mut args = spec.to_args().unwrap();
        args.push("-S".into());
        let mut qemu = spawn_qemu(&args, dir);
        let qmp = Qmp::connect(&spec.qmp_socket, Instant::now() + WAIT)
            .await
            .unwrap_or_else(|e| {
                let err = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
                panic!("{machine:?}: {e}; QEMU stderr: {err}")
            });
        let status = qmp.status().await.unwrap();
        assert_eq!(
            status,
            RunStatus {
                running: false,
                status: "prelaunch".into()
            },
            "{machine:?}"
        );
        wait_port_connected(dir, "cp-1").await;
        assert!(spec.serial_log.exists(), "serial log file is created");
        qmp.quit().await.unwrap();
        let exit = exit_of(&mut qemu, dir).await;
        assert!(exit.success(), "{machine:?}: {exit:?}");
        assert!(qmp.wait_closed(Instant::now() + WAIT).await);
        assert!(matches!(
            qmp.status().await,
            Err(QmpError::Disconnected { .. })
        ));
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A paused VM has no guest to answer the power button: the graceful shutdown
/// runs into its deadline and falls back to `quit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_a_guest_is_forced_after_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut spec = sample(dir);
    spec.cluster_nic = None;
    spec.user_nic.host_api_port = free_port();
    node_files(dir, &spec);
    let mut args = spec.to_args().unwrap();
    args.push("-S".into());
    let mut qemu = spawn_qemu(&args, dir);
    let qmp = Qmp::connect(&spec.qmp_socket, Instant::now() + WAIT)
        .await
        .unwrap();
    let start = Instant::now();
    let outcome = qmp
        .shutdown_gracefully(Instant::now() + Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(outcome, ShutdownOutcome::Forced);
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(exit_of(&mut qemu, dir).await.success());
}

/// The SHUTDOWN event ends the wait early: QEMU emits it when it gets SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_event_ends_the_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let qmp_path = dir.join("qmp.sock");
    let args: Vec<std::ffi::OsString> = vec![
        "-machine".into(),
        "none".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-S".into(),
        "-chardev".into(),
        format!(
            "socket,id=qmp0,server=on,wait=off,path={}",
            qmp_path.display()
        )
        .into(),
        "-mon".into(),
        "chardev=qmp0,mode=control".into(),
    ];
    let mut qemu = spawn_qemu(&args, dir);
    let qmp = Qmp::connect(&qmp_path, Instant::now() + WAIT)
        .await
        .unwrap();
    assert!(!qmp.status().await.unwrap().running);
    qemu.signal(libc::SIGTERM);
    // QEMU 7.2's SHUTDOWN event (reason host-signal) parses with qapi's schema.
    assert!(qmp.wait_shutdown_event(Instant::now() + WAIT).await);
    let outcome = qmp
        .shutdown_gracefully(Instant::now() + WAIT)
        .await
        .unwrap();
    assert_eq!(outcome, ShutdownOutcome::Graceful);
    exit_of(&mut qemu, dir).await;
}

#[tokio::test]
async fn connect_gives_up_at_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = Qmp::connect(
        &tmp.path().join("absent.sock"),
        start + Duration::from_millis(200),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, QmpError::ConnectTimeout { .. }), "{err}");
    assert!(start.elapsed() < WAIT);
}

/// End to end through real QEMU: a stream netdev to the switch, joined on a
/// QEMU hub to a user-mode (slirp) netdev. A test port sends an ARP request for
/// slirp's gateway 10.0.2.2 through the switch; slirp's ARP reply comes back
/// the same way. This checks the length-prefixed framing against QEMU itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cross_real_qemu_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _switch = start_switch(dir, &["vm", "probe"]).await;
    let vm_sock = network::port_socket(dir, &"vm".parse().unwrap());
    let args: Vec<std::ffi::OsString> = vec![
        "-machine".into(),
        "none".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-netdev".into(),
        "user,id=u0,restrict=on".into(),
        "-netdev".into(),
        format!(
            "stream,id=s0,server=off,addr.type=unix,addr.path={}",
            vm_sock.display()
        )
        .into(),
        "-netdev".into(),
        "hubport,id=h0,hubid=0,netdev=u0".into(),
        "-netdev".into(),
        "hubport,id=h1,hubid=0,netdev=s0".into(),
    ];
    let _qemu = spawn_qemu(&args, dir);
    wait_port_connected(dir, "vm").await;

    let probe_sock = network::port_socket(dir, &"probe".parse().unwrap());
    let mut probe = tokio::net::UnixStream::connect(&probe_sock).await.unwrap();
    wait_port_connected(dir, "probe").await;
    let me = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    let mut arp = Vec::new();
    arp.extend_from_slice(&MacAddr::BROADCAST.0);
    arp.extend_from_slice(&me.0);
    arp.extend_from_slice(&[0x08, 0x06]); // ARP
    arp.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    arp.extend_from_slice(&me.0);
    arp.extend_from_slice(&[10, 0, 2, 15]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 0, 2, 2]);
    arp.resize(60, 0);

    let deadline = Instant::now() + WAIT;
    let reply = loop {
        // slirp may still be starting: repeat the request until a reply arrives.
        write_frame(&mut probe, &arp).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(500), read_frame(&mut probe)).await {
            Ok(frame) => {
                let frame = frame.unwrap().expect("switch closed the probe port");
                if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2] {
                    break frame;
                }
            }
            Err(_) => assert!(Instant::now() < deadline, "no ARP reply from QEMU"),
        }
    };
    assert_eq!(MacAddr::dst_of(&reply), Some(me));
    assert_eq!(&reply[28..32], &[10, 0, 2, 2], "sender is slirp's gateway");
    // The switch learned slirp's MAC on the vm port.
    let gw = MacAddr::src_of(&reply).unwrap();
    let s = switch_status(dir).await;
    assert!(
        s.macs.iter().any(|m| m.mac == gw && m.node == "vm"),
        "{s:?}"
    );
}
