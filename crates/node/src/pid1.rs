//! The entry point of the `machined` binary: decides between stage 1 and
//! stage 2, runs it, and never returns while PID 1. A fatal error is printed on
//! the console and the machine powers off (returning from PID 1 would panic
//! the kernel).

use super::apid::{self, Apid};
use super::console;
use super::containerd;
use super::controller::NodeController;
use super::etcd::Etcd;
use super::idle_memory;
use super::modules::{LoadReport, Pending};
use super::net;
use super::power;
use super::reaper::{ReapMode, Reaper};
use super::rlimit;
use super::stage1::{self, Stage1};
use super::stage2::{Prepared, Stage2};
use super::supervisor::{self, ServiceState, Settings, SupervisorHandle};
use super::sys::{PowerAction, RealSys, Sys};
use super::sysctl;
use crate::machine::MachineConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long containerd may take to answer before the image import is given
/// up (it keeps being supervised; this only bounds that wait).
const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs machined. `argv0` is the program name it was started as.
pub fn main(argv0: &str) -> ! {
    let pid = std::process::id();
    let sys = RealSys;
    let early = if stage1::is_stage1(argv0, pid, Path::new("/")) {
        // Stage 2 goes on in this process after the switch.
        match Stage1::default().run(&sys, Some(Arc::new(RealSys))) {
            Ok(early) => early,
            Err(e) => fatal(&sys, &format!("stage 1: {e}")),
        }
    } else if pid != 1 {
        eprintln!("machined is the init of an ironclad node and must run as PID 1");
        std::process::exit(2);
    } else {
        // Started as PID 1 without stage 1: attach the console ourselves.
        // The early modules are only in the initramfs: say so, since the
        // machine config (qemu_fw_cfg) will then be missing.
        let _ = console::attach(Path::new("/dev/console"));
        console::say(
            "machined: started without stage 1: the early modules (initramfs) are not loaded",
        );
        Pending::None
    };
    console::phase(console::Phase::Stage2);
    // The services' runtime is made while stage 2 prepares the node (its
    // threads cost a TCG boot 10-30 ms, and nothing here needs them yet).
    let runtime = std::thread::spawn(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    });
    let prepared = match Stage2::new().prepare_with(&sys, Some(Arc::new(RealSys)), early) {
        Ok(p) => p,
        Err(e) => fatal(&sys, &format!("stage 2: {e}")),
    };
    harden();
    let runtime = match runtime.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => fatal(&sys, &format!("tokio runtime: {e}")),
        Err(_) => fatal(&sys, "tokio runtime: the thread making it panicked"),
    };
    let unmount = prepared.unmount_at_shutdown.clone();
    let action = runtime.block_on(serve(prepared));
    let action = match action {
        Ok(a) => a,
        Err(e) => {
            console::say(&format!("machined: {e}; powering off"));
            PowerAction::PowerOff
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(2));
    power::kill_everything(Duration::from_secs(5));
    console::phase(console::Phase::ServicesStopped);
    let err = power::final_sequence(&sys, &unmount, action);
    fatal(&sys, &format!("reboot(2) failed: {err}"));
}

/// PID 1's open-file limit, and the node's policy routing rules (the pods'
/// block on the node API and etcd, the host's loopback out of reach), once
/// the network is configured and before any service or the API starts. A
/// failure is said on the console and the boot goes on (the matrix's BRK-10
/// and NET-02 then fail).
fn harden() {
    match rlimit::raise_nofile(Path::new("/")) {
        Ok((soft, hard)) => console::say(&format!(
            "machined: open files: {soft} (hard {hard}); services start with {}",
            rlimit::child_limit((soft, hard)).0
        )),
        Err(e) => console::say(&format!("machined: cannot raise the open-file limit: {e}")),
    }
    let rules = net::node_rules();
    let installed =
        net::rtnl::Netlink::open().map_err(|e| net::NetError::Step("netlink socket".into(), e));
    match installed.and_then(|mut nl| net::install_rules(&mut nl, &rules)) {
        Ok(()) => console::phase(console::Phase::NetworkRules(rules.len())),
        Err(e) => console::say(&format!("machined: network rules: {e}")),
    }
}

/// Services until a shutdown request; returns what to do with the machine.
async fn serve(prepared: Prepared) -> Result<PowerAction, String> {
    let reaper = Reaper::new(ReapMode::All);
    tokio::spawn(reaper.clone().run());
    // Long enough for the background module loading (button, evdev) under TCG.
    let button = power::watch_power_button(Path::new("/"), Duration::from_secs(120));
    let config = prepared.config;
    let etcd = Etcd::new(&config, Path::new("/"));
    let handle = start_services(&reaper, etcd.as_ref())?;

    // The node API, while containerd starts.
    let (power_tx, mut power_rx) = mpsc::channel::<PowerAction>(1);
    let apid = bind_apid(&config).await;
    let apid_up = apid.is_some();
    let late_done = finish_late_modules(prepared.late_modules, prepared.deferred_sysctls);
    if let Some(apid) = apid {
        let controller = NodeController {
            config: config.clone(),
            fw_cfg_digest: prepared.fw_cfg_digest.clone(),
            services: handle.clone(),
            etcd: etcd.clone(),
            power: power_tx.clone(),
            root: PathBuf::from("/"),
        };
        spawn_apid(apid, controller);
    }

    // Ready: the state disk is mounted, the network configured, every boot
    // service started, and the node API answers. The services' own health
    // (containerd answering, etcd healthy) is reported by the API and on
    // its own line below; the host needs only the API to go on (bootstrap,
    // join, matrix).
    if apid_up {
        console::phase(console::Phase::Ready);
    } else {
        console::say("machined: not ready: the node API is not listening");
    }
    tokio::spawn(import_images_when_ready(
        handle.clone(),
        reaper.clone(),
        late_done,
    ));

    let (why, action) = tokio::select! {
        why = power::wait_for_request(button) => {
            let why = why.map_err(|e| format!("cannot watch for shutdown requests: {e}"))?;
            (why, PowerAction::PowerOff)
        }
        Some(action) = power_rx.recv() => (api_request(action), action),
    };
    console::say(&format!("machined: shutdown requested by {why}"));
    // Further API power requests get "already shutting down".
    drop(power_rx);
    handle.shutdown().await;
    Ok(action)
}

/// Starts the node's services: containerd, and etcd on a control plane.
fn start_services(reaper: &Reaper, etcd: Option<&Etcd>) -> Result<SupervisorHandle, String> {
    let settings = Settings {
        log_dir: Some(PathBuf::from("/var/log")),
        ring_lines: 2000,
    };
    let mut specs = vec![containerd::service(Path::new("/"))];
    if let Some(e) = etcd {
        specs.push(e.service());
    }
    let handle = supervisor::start(reaper.clone(), settings, specs).map_err(|e| e.to_string())?;
    console::phase(console::Phase::ServicesStarted);
    Ok(handle)
}

/// Binds the node API on the node's addresses; `None` (said on the
/// console) when it cannot.
async fn bind_apid(config: &MachineConfig) -> Option<Apid> {
    match Apid::bind(&apid::node_addrs(config), &config.pki).await {
        Ok(a) => {
            console::phase(console::Phase::ApidListening(
                a.local_addrs().unwrap_or_default(),
            ));
            Some(a)
        }
        // The error names the PEM block, never its content.
        Err(e) => {
            console::say(&format!("machined: apid: {e}"));
            None
        }
    }
}

/// Serves the node API in the background.
fn spawn_apid(apid: Apid, controller: NodeController) {
    let controller = Arc::new(controller);
    tokio::spawn(async move {
        if let Err(e) = apid.serve(controller).await {
            console::say(&format!("machined: apid stopped: {e}"));
        }
    });
}

/// Waits (off the runtime's workers) for the late modules (pods'
/// networking), then applies their sysctls and turns module loading off
/// ([`sysctl::AFTER_MODULES`]).
fn finish_late_modules(
    late: Option<std::thread::JoinHandle<LoadReport>>,
    deferred: BTreeMap<String, String>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        if let Some(t) = late {
            match t.join() {
                Ok(report) => {
                    for (m, e) in &report.failed {
                        console::say(&format!("machined: module {m}: {e}"));
                    }
                    console::phase(console::Phase::LateModules(report.loaded.len()));
                }
                Err(_) => console::say("machined: late module loading failed"),
            }
        }
        for (k, e) in sysctl::apply(Path::new("/"), &deferred) {
            console::say(&format!("machined: sysctl {k}: {e}"));
        }
        // Every module of the image is in: no more module loading until the
        // next boot (the matrix's BRK-06 and RT-07).
        for (k, e) in sysctl::lock_after_modules(Path::new("/")) {
            console::say(&format!("machined: sysctl {k}: {e}"));
        }
    })
}

/// Imports the offline images once containerd answers and the late modules
/// are in. The pods' modules (and their sysctls) finish under TCG seconds
/// after containerd answers; importing after them means a client waiting
/// for the images (the matrix) cannot start a pod before the bridge module
/// is in.
async fn import_images_when_ready(
    services: SupervisorHandle,
    reaper: Reaper,
    late_done: tokio::task::JoinHandle<()>,
) {
    let running = services
        .wait_for("containerd", CONTAINERD_TIMEOUT, |s| {
            s.state == ServiceState::Running
        })
        .await;
    if let Err(e) = running {
        console::say(&format!("machined: containerd is not answering: {e}"));
        return;
    }
    console::phase(console::Phase::ContainerdAnswering);
    let _ = late_done.await;
    match containerd::import_images(&reaper, Path::new(containerd::IMAGES_DIR)).await {
        Ok(done) => console::phase(console::Phase::ImagesImported(done.len())),
        Err(e) => console::say(&format!("machined: image import failed: {e}")),
    }
    // Once the boot is over (services running, images imported): the
    // memory boot used and nothing needs goes back to the host; and again
    // after each workload that filled the page cache.
    idle_memory::keep_handing_back(Path::new("/")).await;
}

/// Who asked for `action` through the node API, as the shutdown line says it.
fn api_request(action: PowerAction) -> String {
    let what = match action {
        PowerAction::Reboot => "reboot",
        PowerAction::PowerOff => "shutdown",
    };
    format!("the node API ({what})")
}

/// Prints the error, syncs and powers off; never returns.
pub fn fatal(sys: &dyn Sys, msg: &str) -> ! {
    console::say(&format!("machined: fatal: {msg}"));
    console::say("machined: powering off");
    sys.sync();
    let err = sys.reboot(PowerAction::PowerOff);
    console::say(&format!("machined: power off failed: {err}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
