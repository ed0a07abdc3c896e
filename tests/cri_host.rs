//! The CRI wrapper and the node matrix executor against a real containerd on
//! this host: a private containerd (own root, state and socket in a temp dir,
//! the node's own config hardened by `ironclad_node::runtime_spec`), the offline busybox images
//! built the way the image builder does, real pods, real exec probes.
//!
//! Needs root, the distribution's `containerd`, `runc`, `ctr` and a static
//! busybox (Debian: containerd, runc, busybox-static; `ci/install-deps`
//! installs them unless Docker's own containerd.io/moby packages are there).
//! Without them the test FAILS, saying why: it never passes without having
//! run. `ci/test` knows these prerequisites and leaves the test out with a
//! printed `SKIPPED cri_host: <reason>` where they are missing (not root, or
//! Docker's containerd). Pods use the host network (no CNI here) and send
//! traffic only to loopback.

use ironclad_contract::api::MatrixRunRequest;
use ironclad_host::image::oci::{PAUSE_REF, TOOLBOX_REF, images_archive};
use ironclad_host::machine::ContainerdSettings;
use ironclad_host::matrix::Verdict;
use ironclad_node::cri::{Cri, LABEL, PodOptions, Variant};
use ironclad_node::matrix::{NodeEnv, run};
use ironclad_node::{containerd, runtime_spec};
use ironclad_testkit::process::{self, Guard};
use ironclad_testkit::wait;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";

/// The runtimes this test registers. Only runc: on this kind of host crun
/// refuses the hybrid cgroup layout, and runsc refuses a sandbox in the root
/// network namespace (pods here share the host network; on a node they get
/// their own from CNI). Measured, see docs/matrix.md.
fn runtimes() -> Vec<String> {
    vec!["runc".to_string()]
}

/// Why this host cannot run the test, if it cannot.
fn missing() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root: containerd needs root".into());
    }
    for p in [CONTAINERD, CTR, RUNC, BUSYBOX] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is not installed (ci/install-deps)"));
        }
    }
    None
}

/// A private containerd, killed and cleaned up on drop.
struct Containerd {
    child: Guard,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "containerd log (last 40 lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        self.child.signal(libc::SIGKILL);
        // Shims and runtime processes this containerd started and that
        // outlived a failed test: their command lines name our temp dir.
        process::kill_mentioning(self.dir.path());
        // Unmount whatever is left under our root (nothing, when cleanup worked).
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

/// The node's own containerd config (`containerd::Config::for_node`,
/// hardened), moved into `dir`: only paths change, and
/// `restrict_oom_score_adj` (this host may not let even root lower
/// oom_score_adj; the node does).
fn config(dir: &Path, socket: &Path, spec: &Path) -> String {
    let settings = ContainerdSettings {
        runtimes: runtimes(),
        user_namespaces: true,
    };
    let mut cfg = containerd::Config::for_node(&settings).unwrap();
    cfg.harden(&spec.display().to_string());
    cfg.root = dir.join("root").display().to_string();
    cfg.state = dir.join("state").display().to_string();
    cfg.grpc.address = socket.display().to_string();
    let cri = cfg.cri_mut().expect("the node config has the CRI plugin");
    cri.restrict_oom_score_adj = true;
    cri.cni.bin_dir = dir.join("cni").display().to_string();
    cri.cni.conf_dir = dir.join("cni").display().to_string();
    let text = cfg.render().unwrap();
    assert!(!text.contains("\"/run/containerd") && !text.contains("/var/lib/containerd"));
    text
}

async fn start() -> Containerd {
    let dir = tempfile::Builder::new()
        .prefix("ironclad-cri-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("cni")).unwrap();
    let socket = dir.path().join("c.sock");
    let spec = dir.path().join("base-runtime-spec.json");
    std::fs::write(&spec, runtime_spec::render_base_runtime_spec()).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config(dir.path(), &socket, &spec)).unwrap();
    let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
    let mut cmd = Command::new(CONTAINERD);
    cmd.arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log);
    let child = Guard::spawn(cmd, "Debian: containerd");
    let c = Containerd { child, dir, socket };
    // On a timeout the guard's drop prints containerd's log.
    let answers = wait::deadline(Duration::from_secs(60));
    wait::until_async("containerd to answer over CRI", answers, || async {
        let mut cri = Cri::connect(&c.socket).await.ok()?;
        cri.version().await.ok().map(drop)
    })
    .await;
    // The offline images, built as the image builder builds them: one
    // archive, one import, both images.
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let tar = c.dir.path().join("offline.tar");
    std::fs::write(&tar, images_archive(&busybox, 1_735_689_600).unwrap()).unwrap();
    let out = Command::new(CTR)
        .arg("--address")
        .arg(&c.socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = ctr_lines(&c, &["images", "ls"]);
    for r in [PAUSE_REF, TOOLBOX_REF] {
        assert!(
            images
                .iter()
                .any(|l| l.split_whitespace().next() == Some(r)),
            "{r} not imported: {images:?}"
        );
    }
    c
}

fn ctr_lines(c: &Containerd, args: &[&str]) -> Vec<String> {
    let out = Command::new(CTR)
        .arg("--address")
        .arg(&c.socket)
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_wrapper_and_matrix_against_real_containerd() {
    if let Some(why) = missing() {
        panic!(
            "cri_host cannot run on this host: {why}. ci/test leaves this test out (and says so) where its prerequisites are missing"
        );
    }
    let c = start().await;
    let mut cri = Cri::connect(&c.socket).await.unwrap();
    let v = cri.version().await.unwrap();
    assert_eq!(v.runtime_name, "containerd");
    assert!(cri.image_present("ironclad.local/toolbox:1").await.unwrap());
    assert!(!cri.image_present("ironclad.local/absent:1").await.unwrap());

    let opts = PodOptions {
        host_network: true,
        runtime_handler: None,
        image: "ironclad.local/toolbox:1".into(),
        cgroup_parent: String::new(),
        log_dir: String::new(),
    };
    // A sandbox + container, probes, and cleanup.
    let t = Instant::now();
    let pod = cri
        .run_pod(Variant::Unpriv, "it-unpriv", &opts)
        .await
        .unwrap();
    eprintln!("pod up in {:?}", t.elapsed());
    let o = cri
        .exec(
            &pod.container_id,
            &["/bin/busybox", "echo", "hello"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((o.exit_code, o.stdout.as_str()), (0, "hello\n"));
    let o = cri
        .exec(
            &pod.container_id,
            &["/bin/busybox", "sh", "-c", "echo err >&2; exit 3"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((o.exit_code, o.stderr.as_str()), (3, "err\n"));
    // The probe timeout is enforced: a 60 s sleep comes back in far less.
    let t = Instant::now();
    let r = cri
        .exec(
            &pod.container_id,
            &["/bin/busybox", "sleep", "60"],
            Duration::from_secs(2),
        )
        .await;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "exec timeout not enforced: {r:?}"
    );
    assert!(
        r.as_ref().map(|o| o.exit_code != 0).unwrap_or(true),
        "a timed-out exec must not look successful: {r:?}"
    );
    // The hardened base spec: no NET_RAW, no MKNOD; seccomp on by default.
    let st = cri
        .exec(
            &pod.container_id,
            &["/bin/busybox", "cat", "/proc/self/status"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        ironclad_node::matrix::rt01(&st.stdout).0,
        Verdict::Pass,
        "{}",
        st.stdout
    );
    assert_eq!(
        ironclad_node::matrix::rt02(&st.stdout).0,
        Verdict::Pass,
        "{}",
        st.stdout
    );
    assert_eq!(
        cri.labelled_sandboxes().await.unwrap(),
        vec![pod.sandbox_id.clone()]
    );
    cri.remove_sandbox(&pod.sandbox_id).await.unwrap();
    // Removing twice is fine.
    cri.remove_sandbox(&pod.sandbox_id).await.unwrap();
    assert!(cri.labelled_sandboxes().await.unwrap().is_empty());

    // A one-shot container to completion; the pod goes away with it.
    let done = cri
        .run_to_completion(
            Variant::Unpriv,
            "it-job",
            &opts,
            &["/bin/busybox", "sh", "-c", "exit 7"],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(done.exit_code, 7);
    // A failed start (unknown runtime handler) leaves nothing behind.
    let bad = PodOptions {
        runtime_handler: Some("no-such-runtime".into()),
        ..opts.clone()
    };
    assert!(cri.run_pod(Variant::Unpriv, "it-bad", &bad).await.is_err());
    assert!(cri.labelled_sandboxes().await.unwrap().is_empty());

    // The node executor with the checks that are safe on a shared host.
    let env = NodeEnv {
        node: "host".into(),
        socket: c.socket.clone(),
        root: PathBuf::from("/"),
        toolbox_image: "ironclad.local/toolbox:1".into(),
        host_network: true,
        runtimes: runtimes(),
        user_namespaces: true,
        egress: false,
        peers: vec![],
        addresses: vec![],
        host_port: None,
        containerd_wait: std::time::Duration::from_secs(10),
        run_budget: ironclad_node::matrix::RUN_BUDGET,
    };
    // RT-06 (destructive in the catalog): a bounded fork bomb under a pids
    // limit on the pod's parent cgroup, on this host's real cgroups.
    let fork = run(
        &MatrixRunRequest {
            checks: vec!["RT-06".into()],
            destructive: true,
            ..Default::default()
        },
        &env,
    )
    .await
    .unwrap();
    eprintln!("RT-06: {:?}", fork.results);
    // The sysrq power-off refuses to run anywhere but on a node.
    let off = run(
        &MatrixRunRequest {
            checks: vec!["BRK-04-O".into()],
            destructive: true,
            ..Default::default()
        },
        &env,
    )
    .await
    .unwrap();
    assert!(
        matches!(&off.results[0].verdict, Verdict::Skip { reason } if reason.contains("not an ironclad node")),
        "{:?}",
        off.results
    );
    assert_eq!(fork.results[0].verdict, Verdict::Pass, "{:?}", fork.results);
    let req = MatrixRunRequest {
        checks: [
            "RT-01", "RT-02", "RT-03", "RT-04", "RT-08", "RT-09", "BRK-01", "BRK-06", "BRK-07",
            "BRK-09", "BRK-10", "NET-01", "CONF-03",
        ]
        .map(String::from)
        .to_vec(),
        destructive: false,
        ..Default::default()
    };
    let t = Instant::now();
    let report = run(&req, &env).await.unwrap();
    eprintln!("matrix on the host containerd in {:?}:", t.elapsed());
    for r in &report.results {
        eprintln!("  {} {} {:?}", r.id, r.verdict.label(), r.evidence);
    }
    let verdict = |id: &str| {
        report
            .results
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no {id}"))
            .verdict
            .clone()
    };
    for id in ["RT-01", "RT-02", "RT-03", "RT-04", "BRK-10", "CONF-03"] {
        assert_eq!(verdict(id), Verdict::Pass, "{id}");
    }
    // The privileged hostPID pod tried to nsenter PID 1 and run a shell; on
    // this host it either ran one (FAIL) or nsenter was refused (some CI
    // sandboxes keep PID 1's namespaces out of reach): either way the
    // evidence says which.
    let brk01 = report.results.iter().find(|r| r.id == "BRK-01").unwrap();
    assert!(
        brk01.evidence.iter().any(|e| e.starts_with("priv: ")),
        "{brk01:?}"
    );
    if brk01.verdict == Verdict::Pass {
        assert!(brk01.evidence[0].contains("nsenter"), "{brk01:?}");
    }
    // The privileged pod sees the host's containerd and opens its memory; the
    // default pod sees no host process at all.
    let brk09 = report.results.iter().find(|r| r.id == "BRK-09").unwrap();
    assert!(
        brk09
            .evidence
            .iter()
            .any(|e| e.starts_with("priv: got through") && e.contains("OPENED-RW")),
        "{brk09:?}"
    );
    assert!(
        brk09
            .evidence
            .iter()
            .any(|e| e.starts_with("unpriv: blocked") && e.contains("no host process visible")),
        "{brk09:?}"
    );
    // BRK-06: where the kernel has no module loading at all, even the
    // privileged pod is blocked and the check passes; otherwise priv gets
    // through: EXPOSED (never PASS), naming what would block it.
    let brk06 = report.results.iter().find(|r| r.id == "BRK-06").unwrap();
    if brk06.evidence[0].starts_with("priv: blocked") {
        assert_eq!(brk06.verdict, Verdict::Pass, "{brk06:?}");
    } else {
        assert!(
            matches!(&brk06.verdict, Verdict::Exposed { mitigation, .. } if mitigation.contains("modules_disabled")),
            "{brk06:?}"
        );
    }
    // containerd 1.6 silently ignores the user namespace request: caught.
    if v.runtime_version.starts_with("1.6") {
        assert_eq!(verdict("RT-08"), Verdict::Fail);
    }
    // A privileged pod opens core_pattern: EXPOSED, never PASS; neither
    // userns nor gvisor runs here, and the reason says so.
    assert!(
        matches!(verdict("BRK-07"), Verdict::Exposed { reason, .. } if reason.contains("neither the userns nor the gvisor")),
        "{:?}",
        verdict("BRK-07")
    );
    // runsc is not a runtime here: an explicit skip with the reason.
    assert!(matches!(verdict("RT-09"), Verdict::Skip { reason } if reason.contains("runsc")));
    assert!(matches!(verdict("NET-01"), Verdict::Skip { .. }));
    // The run answers before it removes its pods; never a pod left behind
    // once it did.
    wait::until_async(
        "the run's pods removed",
        wait::deadline(Duration::from_secs(60)),
        || {
            let mut cri = cri.clone();
            async move { cri.labelled_sandboxes().await.ok().filter(|l| l.is_empty()) }
        },
    )
    .await;
    wait::until_async(
        "no container left",
        wait::deadline(Duration::from_secs(30)),
        || {
            std::future::ready(
                ctr_lines(&c, &["containers", "ls"])
                    .is_empty()
                    .then_some(()),
            )
        },
    )
    .await;
    let _ = LABEL;
}
