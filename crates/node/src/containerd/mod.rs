//! containerd 1.7: renders its config (version 2) and the CNI bridge config,
//! describes the service for the supervisor, checks that it answers on its
//! socket (an HTTP/2 handshake with its gRPC server) and imports the image's
//! offline OCI archives into the `k8s.io` namespace.
//!
//! Runtimes: `runc` and `crun` through the runc v2 shim with `BinaryName`;
//! `runsc` (gVisor) through gVisor's own shim, `containerd-shim-runsc-v1`
//! (runtime type [`RUNSC_RUNTIME_TYPE`]), which the image build makes from
//! Debian's gVisor source (the host's `image::gvisor`) and puts beside
//! containerd. One gVisor sandbox per pod: the pod's containers run inside
//! it. The shim reads [`RUNSC_CONFIG`] ([`render_runsc_config`]):
//! `/usr/bin/runsc` with gVisor's own network stack (`network = "sandbox"`)
//! in the pod's CNI network namespace, on the ptrace platform under TCG and
//! systrap otherwise ([`GvisorPlatform`]); that runsc carries upstream's fix of
//! the root-netns check (google/gvisor#10704), so no `--network=host` is
//! needed. The runc shim cannot drive runsc for a pod's app container (its
//! start never returns: docs/matrix.md, "gVisor").
//!
//! User namespaces for pods: containerd 1.7's CRI takes the pod's userns
//! options (KEP-127, the pre-Kubernetes-1.27 form) with no config switch; it
//! chowns the snapshot for the mapping (1.7 has no idmapped overlay mounts;
//! that needs containerd 2.0 and runc 1.2, while trixie ships 1.7.24 and
//! runc 1.1.15, crun 1.21). What the node provides: a real switch_root (a
//! chrooted init cannot create user namespaces), a non-zero
//! `user.max_user_namespaces` in the image sysctls, kernel 6.12. `ContainerdSettings::user_namespaces`
//! changes nothing here yet: refusing userns pods would be admission's job.
//! Not verified end to end (no CRI client in the image).

pub mod config;

pub use config::Config;

use super::reaper::Reaper;
use super::supervisor::{Backoff, Health, ServiceSpec};
use crate::machine::ContainerdSettings;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// containerd's gRPC socket.
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// Where machined writes the config (the /etc overlay is writable).
pub const CONFIG: &str = "/etc/containerd/config.toml";
/// The CNI config machined writes.
pub const CNI_CONFIG: &str = "/etc/cni/net.d/10-ironclad.conflist";
/// The pause image shipped in the node image.
pub const SANDBOX_IMAGE: &str = ironclad_contract::layout::PAUSE_REF;
/// The pod network of the bridge CNI config (node-local; no masquerade).
pub const POD_SUBNET: &str = "10.88.0.0/16";
/// Offline OCI archives in the image.
pub const IMAGES_DIR: &str = ironclad_contract::layout::IMAGES_DIR;
/// libcni's state on the state disk: the cached results of each pod
/// network's ADD and host-local's address leases.
pub const CNI_STATE: &str = "/var/lib/cni";

/// A runtime handler known to machined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    pub name: &'static str,
    pub binary: &'static str,
}

/// Every runtime machined can register, in config order.
pub const RUNTIMES: &[Runtime] = &[
    Runtime {
        name: "runc",
        binary: "/usr/sbin/runc",
    },
    Runtime {
        name: "crun",
        binary: "/usr/bin/crun",
    },
    Runtime {
        name: "runsc",
        binary: RUNSC,
    },
];

/// runsc in the image (built with its shim by the image's gVisor stage).
pub const RUNSC: &str = "/usr/bin/runsc";
/// The runtime type of gVisor's containerd shim (`containerd-shim-runsc-v1`,
/// found beside containerd).
pub const RUNSC_RUNTIME_TYPE: &str = "io.containerd.runsc.v1";
/// The options type containerd's CRI hands that shim.
pub const RUNSC_OPTIONS_TYPE: &str = "io.containerd.runsc.v1.options";
/// The shim's config (the /etc overlay is writable).
pub const RUNSC_CONFIG: &str = "/etc/containerd/runsc.toml";
/// Where runsc keeps its state (tmpfs).
pub const RUNSC_ROOT: &str = "/run/containerd/runsc";

/// How gVisor's sentry takes the sandbox's system calls (runsc's
/// `--platform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GvisorPlatform {
    /// runsc's default: seccomp traps served by stub threads that spin
    /// while they wait for the sentry.
    Systrap,
    /// One ptrace stop per system call. Under TCG on one vCPU the matrix on
    /// the dev cluster took 66–71 s with it against 94–102 s with systrap
    /// (docs/matrix.md, "gVisor on a node"): the spinning stubs take the
    /// only vCPU from the sentry they wait for.
    Ptrace,
}

impl GvisorPlatform {
    /// Ptrace when the CPU says it is QEMU's TCG (hypervisor vendor
    /// `TCGTCGTCGTCG`), systrap otherwise (KVM, bare metal).
    pub fn for_hypervisor(vendor: Option<&str>) -> Self {
        if vendor == Some("TCGTCGTCGTCG") {
            GvisorPlatform::Ptrace
        } else {
            GvisorPlatform::Systrap
        }
    }

    /// The platform for the CPU this runs on.
    pub fn detect() -> Self {
        Self::for_hypervisor(hypervisor_vendor().as_deref())
    }

    pub fn name(self) -> &'static str {
        match self {
            GvisorPlatform::Systrap => "systrap",
            GvisorPlatform::Ptrace => "ptrace",
        }
    }
}

/// The hypervisor's CPUID vendor string (leaf 0x40000000), when the CPU
/// says it runs under one (leaf 1, ECX bit 31).
#[cfg(target_arch = "x86_64")]
pub fn hypervisor_vendor() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = __cpuid(0x4000_0000);
    let bytes: Vec<u8> = [leaf.ebx, leaf.ecx, leaf.edx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    Some(
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .to_string(),
    )
}

#[cfg(not(target_arch = "x86_64"))]
pub fn hypervisor_vendor() -> Option<String> {
    None
}

/// The shim's `runsc.toml`: which runsc, its state dir, and runsc's own flags
/// (`[runsc_config]`): gVisor's network stack in the pod's network
/// namespace, and its platform.
pub fn render_runsc_config(platform: GvisorPlatform) -> String {
    format!(
        "# Written by machined at boot; do not edit.\n\
         # Read by containerd-shim-runsc-v1 (runtime handler runsc).\n\
         binary_name = \"{RUNSC}\"\n\
         root = \"{RUNSC_ROOT}\"\n\
         \n\
         [runsc_config]\n\
         network = \"sandbox\"\n\
         platform = \"{}\"\n",
        platform.name()
    )
}

/// Why containerd could not be configured or prepared.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("unknown container runtime {0:?} (known: runc, crun, runsc)")]
    UnknownRuntime(String),
    #[error("cannot render the containerd config: {0}")]
    Render(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The runtime handler of pods that name none: crun when the cluster has it
/// (a C runtime: every container start and exec spawns the runtime, and
/// under emulation runc's Go start-up costs seconds each time), else runc.
pub fn default_runtime(settings: &ContainerdSettings) -> &'static str {
    if settings.runtimes.iter().any(|r| r == "crun") {
        "crun"
    } else {
        "runc"
    }
}

/// Renders `config.toml` for the runtimes of `settings`, without the
/// hardening ([`Config::for_node`]).
pub fn render_config(settings: &ContainerdSettings) -> Result<String, ContainerdError> {
    Config::for_node(settings)?.render()
}

/// The CNI network: a bridge with host-local addresses, no masquerade.
pub fn render_cni() -> String {
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "ironclad",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "loopback"}
        ]
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Forgets the pod networks of the previous boot. None of them exists any
/// more (their network namespaces went with the kernel), their leases would
/// only shrink the address pool, and a result file cut short by a hard power
/// off makes every later teardown of that sandbox fail ("failed to get
/// network cached result: unexpected end of JSON input"). At boot only,
/// before containerd starts: a restarted containerd keeps its pods.
pub fn forget_previous_pod_networks(root: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(root.join(CNI_STATE.trim_start_matches('/'))) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes the containerd and CNI configs under `root`.
pub fn write_configs(root: &Path, settings: &ContainerdSettings) -> Result<(), ContainerdError> {
    // The hardening (no NET_RAW/MKNOD by default, seccomp RuntimeDefault when
    // a pod asks for none) goes on top of the plain config; see runtime_spec.
    let mut config = Config::for_node(settings)?;
    config.harden(super::runtime_spec::BASE_SPEC_PATH);
    let cfg = config.render()?;
    let mut files = vec![
        (CONFIG, cfg),
        (CNI_CONFIG, render_cni()),
        (
            super::runtime_spec::BASE_SPEC_PATH,
            super::runtime_spec::render_base_runtime_spec(),
        ),
    ];
    if settings.runtimes.iter().any(|r| r == "runsc") {
        files.push((RUNSC_CONFIG, render_runsc_config(GvisorPlatform::detect())));
    }
    for (rel, data) in files {
        let path = root.join(rel.trim_start_matches('/'));
        let res = match path.parent() {
            Some(p) => std::fs::create_dir_all(p),
            None => Ok(()),
        }
        .and_then(|()| crate::fsutil::write_public(&path, data.as_bytes()));
        res.map_err(|e| ContainerdError::Write { path, source: e })?;
    }
    Ok(())
}

/// Checks that a gRPC (HTTP/2) server answers on `socket`: sends the client
/// preface and an empty SETTINGS frame and expects a SETTINGS frame back.
pub async fn probe(socket: &Path) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        s.write_all(&hello).await.map_err(|e| e.to_string())?;
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
        if head[3] == 4 {
            Ok(())
        } else {
            Err(format!("unexpected HTTP/2 frame type {}", head[3]))
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .unwrap_or_else(|_| Err("no answer within 2s".into()))
}

/// The supervisor entry for containerd.
pub fn service(root: &Path) -> ServiceSpec {
    let cfg = root.join(CONFIG.trim_start_matches('/'));
    let mut s = ServiceSpec::new(
        "containerd",
        "/usr/bin/containerd",
        &["--config", &cfg.to_string_lossy()],
    );
    s.env = vec![(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".into(),
    )];
    let sock = root.join(SOCKET.trim_start_matches('/'));
    s.health = Health::Probe {
        probe: Arc::new(move || {
            let sock = sock.clone();
            Box::pin(async move { probe(&sock).await })
        }),
        interval: Duration::from_millis(25),
        timeout: Duration::from_secs(60),
    };
    s.backoff = Backoff::default();
    s
}

/// Imports every `*.tar` of `dir` into namespace `k8s.io` with `ctr`; returns
/// the archives imported, or the first failure.
pub async fn import_images(reaper: &Reaper, dir: &Path) -> Result<Vec<String>, String> {
    let mut tars: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    tars.sort();
    let mut done = Vec::new();
    for t in tars {
        let mut cmd = std::process::Command::new("/usr/bin/ctr");
        cmd.args(["--address", SOCKET, "-n", "k8s.io", "images", "import"])
            .arg(&t);
        let (st, out) = reaper
            .output(&mut cmd)
            .await
            .map_err(|e| format!("ctr: {e}"))?;
        if !st.success() {
            return Err(format!("import {}: {st}: {}", t.display(), out.trim()));
        }
        done.push(t.display().to_string());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> ContainerdSettings {
        ContainerdSettings {
            runtimes: vec!["runc".into(), "crun".into(), "runsc".into()],
            user_namespaces: false,
        }
    }

    #[test]
    fn previous_pod_networks_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("var/lib/cni/results");
        std::fs::create_dir_all(&results).unwrap();
        // What a power-off in the middle of a write leaves.
        std::fs::write(results.join("ironclad-abc-eth0"), b"").unwrap();
        forget_previous_pod_networks(dir.path()).unwrap();
        assert!(!dir.path().join("var/lib/cni").exists());
        // Nothing to forget on a first boot.
        forget_previous_pod_networks(dir.path()).unwrap();
        assert!(dir.path().join("var/lib").exists());
    }

    #[test]
    fn config_matches_golden() {
        let got = render_config(&all()).unwrap();
        let want = include_str!("containerd-config.toml");
        assert_eq!(
            got, want,
            "update crates/node/src/containerd/containerd-config.toml if intended"
        );
        // The text is what the types say.
        assert_eq!(
            Config::parse(&got).unwrap(),
            Config::for_node(&all()).unwrap()
        );
    }

    #[test]
    fn runtimes_are_filtered_and_validated() {
        let cfg = render_config(&ContainerdSettings {
            runtimes: vec!["crun".into()],
            user_namespaces: false,
        })
        .unwrap();
        assert!(cfg.contains("runtimes.runc]"));
        assert!(cfg.contains("runtimes.crun]"));
        assert!(!cfg.contains("runsc"));
        let e = render_config(&ContainerdSettings {
            runtimes: vec!["kata".into()],
            user_namespaces: false,
        })
        .unwrap_err();
        assert!(e.to_string().contains("kata"));
    }

    #[test]
    fn cni_has_no_masquerade() {
        let v: serde_json::Value = serde_json::from_str(&render_cni()).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["ipMasq"], false);
    }

    #[test]
    fn configs_are_written_under_root() {
        let dir = tempfile::tempdir().unwrap();
        write_configs(dir.path(), &all()).unwrap();
        let cfg = std::fs::read_to_string(dir.path().join("etc/containerd/config.toml")).unwrap();
        // The hardened config points at the base spec written beside it.
        assert!(
            cfg.contains("unset_seccomp_profile = \"runtime/default\""),
            "{cfg}"
        );
        assert!(
            cfg.contains(super::super::runtime_spec::BASE_SPEC_PATH),
            "{cfg}"
        );
        let spec =
            std::fs::read_to_string(dir.path().join("etc/containerd/base-runtime-spec.json"))
                .unwrap();
        assert!(
            !spec.contains("CAP_NET_RAW") && !spec.contains("CAP_MKNOD"),
            "{spec}"
        );
        assert!(
            dir.path()
                .join("etc/cni/net.d/10-ironclad.conflist")
                .is_file()
        );
        // gVisor's shim config, with gVisor's own network stack; no wrapper.
        let runsc = std::fs::read_to_string(dir.path().join("etc/containerd/runsc.toml")).unwrap();
        assert_eq!(runsc, render_runsc_config(GvisorPlatform::detect()));
        assert!(!dir.path().join("run/ironclad/bin/runsc").exists());
        // Without runsc in the cluster, no shim config.
        let dir = tempfile::tempdir().unwrap();
        let crun_only = ContainerdSettings {
            runtimes: vec!["crun".into()],
            user_namespaces: false,
        };
        write_configs(dir.path(), &crun_only).unwrap();
        assert!(!dir.path().join("etc/containerd/runsc.toml").exists());
    }

    #[test]
    fn runsc_uses_gvisors_shim_and_its_own_netstack() {
        let cfg = render_config(&all()).unwrap();
        let runsc = cfg.split("runtimes.runsc]").nth(1).unwrap();
        assert!(
            runsc.contains("runtime_type = \"io.containerd.runsc.v1\""),
            "{cfg}"
        );
        assert!(
            runsc.contains("TypeUrl = \"io.containerd.runsc.v1.options\""),
            "{cfg}"
        );
        assert!(
            runsc.contains("ConfigPath = \"/etc/containerd/runsc.toml\""),
            "{cfg}"
        );
        assert!(!runsc.contains("BinaryName"), "{cfg}");
        let toml = render_runsc_config(GvisorPlatform::Systrap);
        assert!(toml.contains("binary_name = \"/usr/bin/runsc\""), "{toml}");
        assert!(
            toml.contains("[runsc_config]\nnetwork = \"sandbox\""),
            "{toml}"
        );
        assert!(!toml.contains("host"), "{toml}");
        // The file is TOML.
        let v: toml::Value = toml::from_str(&toml).unwrap();
        assert_eq!(v["runsc_config"]["network"].as_str(), Some("sandbox"));
        assert_eq!(v["runsc_config"]["platform"].as_str(), Some("systrap"));
        // runc and crun stay on the runc shim.
        let runc = cfg.split("runtimes.runc]").nth(1).unwrap();
        assert!(runc.contains("io.containerd.runc.v2"));
    }

    #[test]
    fn gvisor_takes_ptrace_under_tcg_only() {
        use GvisorPlatform::*;
        assert_eq!(GvisorPlatform::for_hypervisor(Some("TCGTCGTCGTCG")), Ptrace);
        for other in [Some("KVMKVMKVM"), Some("Microsoft Hv"), None] {
            assert_eq!(GvisorPlatform::for_hypervisor(other), Systrap);
        }
        let v: toml::Value = toml::from_str(&render_runsc_config(Ptrace)).unwrap();
        assert_eq!(v["runsc_config"]["platform"].as_str(), Some("ptrace"));
    }

    #[tokio::test]
    async fn probe_needs_an_http2_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        assert!(probe(&sock).await.is_err());
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            for answer in [
                vec![0u8, 0, 0, 4, 0, 0, 0, 0, 0],
                b"HTTP/1.1 400\r\n".to_vec(),
            ] {
                let (mut c, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 33];
                c.read_exact(&mut buf).await.unwrap();
                c.write_all(&answer).await.unwrap();
            }
        });
        probe(&sock).await.unwrap();
        assert!(probe(&sock).await.is_err());
    }
}
