//! A small CRI client: the calls a kubelet makes to containerd (gRPC over its
//! unix socket, CRI `runtime.v1` from the `k8s-cri` crate), shaped for the
//! matrix's attacker workloads.
//!
//! It owns: connecting, the runtime version, checking that an offline image is
//! present (never pulling), the pod variants of MATRIX.md as sandbox and
//! container configs ([`Variant`]), starting a long-running toolbox container,
//! `ExecSync` probes with timeouts, one-shot containers run to completion, and
//! cleanup (stop + remove of a sandbox, and of every sandbox this module ever
//! labelled). It does not decide verdicts (that is [`crate::matrix`]).
//!
//! Every sandbox it creates carries the label [`LABEL`], so leftovers of a run
//! that was killed half way are found and removed by [`Cri::remove_labelled`].

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// The label on every sandbox this module creates.
pub const LABEL: &str = "ironclad.dev/matrix";
/// The pod namespace (CRI metadata) of matrix pods.
pub const POD_NAMESPACE: &str = "ironclad-matrix";
/// The runtime handler of gVisor in machined's containerd config.
pub const GVISOR_HANDLER: &str = "runsc";
/// The first host uid/gid of the user-namespaced variant's mapping (0 → this).
pub const USERNS_HOST_BASE: u32 = 65536 * 16;
/// The size of that mapping.
pub const USERNS_LENGTH: u32 = 65536;
/// The uid/gid the restricted variant runs as.
pub const RESTRICTED_UID: i64 = 65534;
/// How long one CRI call other than exec may take.
/// Generous: under TCG on one vCPU a sandbox (shim, CNI plugins, runc) can
/// take a minute when several start at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(240);

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to containerd at {path}: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error("CRI {call} failed: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("CRI {call} did not answer within {}s", .timeout.as_secs())]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    #[error("CRI {call}: {reason}")]
    Unexpected { call: &'static str, reason: String },
}

/// The attacker workload variants of MATRIX.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Privileged, host PID.
    Priv,
    /// The runtime's defaults.
    Unpriv,
    /// A user-namespaced pod (0 → [`USERNS_HOST_BASE`]), all capabilities inside.
    Userns,
    /// gVisor (runtime handler [`GVISOR_HANDLER`]), all capabilities inside.
    Gvisor,
    /// Drop ALL capabilities, no_new_privs, seccomp RuntimeDefault, non-root.
    Restricted,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Priv,
        Variant::Unpriv,
        Variant::Userns,
        Variant::Gvisor,
        Variant::Restricted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Priv => "priv",
            Variant::Unpriv => "unpriv",
            Variant::Userns => "userns",
            Variant::Gvisor => "gvisor",
            Variant::Restricted => "restricted",
        }
    }

    /// Whether the pod and container ask for `privileged`.
    pub fn privileged(self) -> bool {
        self == Variant::Priv
    }

    /// Whether the container adds ALL capabilities: the userns and gvisor
    /// variants are "privileged inside their sandbox" (RT-10). They do not set
    /// `privileged` itself: Kubernetes refuses it with `hostUsers: false`, and
    /// it would hand host devices to the gVisor sandbox.
    pub fn all_caps(self) -> bool {
        matches!(self, Variant::Userns | Variant::Gvisor)
    }

    /// The runtime handler (empty: containerd's default, runc).
    pub fn runtime_handler(self) -> &'static str {
        match self {
            Variant::Gvisor => GVISOR_HANDLER,
            _ => "",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-pod choices that are not the variant's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodOptions {
    /// Use the node's network namespace (no CNI). The host test uses it; the
    /// node uses the CNI bridge.
    pub host_network: bool,
    /// Overrides the variant's runtime handler (CONF-03 runs one per class).
    pub runtime_handler: Option<String>,
    /// The image of the workload container.
    pub image: String,
    /// The pod's parent cgroup (cgroupfs path, e.g. `/ironclad-matrix-rt06`);
    /// empty: containerd's default.
    pub cgroup_parent: String,
}

fn ns_mode(m: cri::NamespaceMode) -> i32 {
    m as i32
}

fn namespaces(variant: Variant, opts: &PodOptions) -> cri::NamespaceOption {
    let network = if opts.host_network {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    let pid = if variant == Variant::Priv {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Container
    };
    let userns = match variant {
        Variant::Userns => Some(cri::UserNamespace {
            mode: ns_mode(cri::NamespaceMode::Pod),
            uids: vec![cri::IdMapping {
                host_id: USERNS_HOST_BASE,
                container_id: 0,
                length: USERNS_LENGTH,
            }],
            gids: vec![cri::IdMapping {
                host_id: USERNS_HOST_BASE,
                container_id: 0,
                length: USERNS_LENGTH,
            }],
        }),
        _ => None,
    };
    cri::NamespaceOption {
        network: ns_mode(network),
        pid: ns_mode(pid),
        ipc: ns_mode(cri::NamespaceMode::Pod),
        target_id: String::new(),
        userns_options: userns,
    }
}

/// The sandbox config of `variant`; `name` is unique per run.
pub fn sandbox_config(variant: Variant, name: &str, opts: &PodOptions) -> cri::PodSandboxConfig {
    let mut labels = HashMap::new();
    labels.insert(LABEL.to_string(), "1".to_string());
    labels.insert(format!("{LABEL}-variant"), variant.name().to_string());
    let restricted = variant == Variant::Restricted;
    let sc = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces(variant, opts)),
        privileged: variant.privileged(),
        run_as_user: restricted.then_some(cri::Int64Value {
            value: RESTRICTED_UID,
        }),
        run_as_group: restricted.then_some(cri::Int64Value {
            value: RESTRICTED_UID,
        }),
        seccomp: restricted.then(runtime_default),
        ..Default::default()
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: name.to_string(),
            namespace: POD_NAMESPACE.to_string(),
            attempt: 0,
        }),
        // A host-network sandbox shares the node's UTS namespace: no hostname.
        hostname: if opts.host_network {
            String::new()
        } else {
            name.chars().take(63).collect()
        },
        labels,
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(sc),
            cgroup_parent: opts.cgroup_parent.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn runtime_default() -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    }
}

/// The workload container config of `variant`: `command` runs in the toolbox.
pub fn container_config(
    variant: Variant,
    name: &str,
    opts: &PodOptions,
    command: &[&str],
) -> cri::ContainerConfig {
    let restricted = variant == Variant::Restricted;
    let sc = cri::LinuxContainerSecurityContext {
        namespace_options: Some(namespaces(variant, opts)),
        privileged: variant.privileged(),
        capabilities: if restricted {
            Some(cri::Capability {
                drop_capabilities: vec!["ALL".to_string()],
                ..Default::default()
            })
        } else if variant.all_caps() {
            Some(cri::Capability {
                add_capabilities: vec!["ALL".to_string()],
                ..Default::default()
            })
        } else {
            // A kubelet always sends the message, with empty lists for a
            // default pod: the runtime's (base spec's) set applies.
            Some(cri::Capability::default())
        },
        no_new_privs: restricted,
        run_as_user: restricted.then_some(cri::Int64Value {
            value: RESTRICTED_UID,
        }),
        run_as_group: restricted.then_some(cri::Int64Value {
            value: RESTRICTED_UID,
        }),
        seccomp: restricted.then(runtime_default),
        // What a kubelet sends for the default procMount: containerd applies
        // only the lists it is given.
        masked_paths: if variant.privileged() {
            Vec::new()
        } else {
            strings(crate::runtime_spec::MASKED_PATHS)
        },
        readonly_paths: if variant.privileged() {
            Vec::new()
        } else {
            strings(crate::runtime_spec::READONLY_PATHS)
        },
        ..Default::default()
    };
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: opts.image.clone(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The output of one `ExecSync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// stdout then stderr, trimmed, for evidence.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.trim().to_string();
        let e = self.stderr.trim();
        if !e.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(e);
        }
        s
    }
}

/// A running pod: a sandbox and one long-running toolbox container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub variant: Variant,
    pub sandbox_id: String,
    pub container_id: String,
}

/// How a one-shot container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub exit_code: i32,
    pub reason: String,
}

/// A connected CRI client.
#[derive(Debug, Clone)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn timed<T>(
    call: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(CriError::Call {
            call,
            status: Box::new(status),
        }),
        Err(_) => Err(CriError::Timeout { call, timeout }),
    }
}

impl Cri {
    /// Connects to containerd's socket (a gRPC channel over a unix stream).
    pub async fn connect(socket: &Path) -> Result<Cri, CriError> {
        let path = socket.to_path_buf();
        let err = |reason: String| CriError::Connect {
            path: socket.to_path_buf(),
            reason,
        };
        // The URI is required by tonic and ignored by the connector.
        let endpoint = Endpoint::try_from("http://[::1]:50051")
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        });
        let channel = tokio::time::timeout(
            Duration::from_secs(10),
            endpoint.connect_with_connector(connector),
        )
        .await
        .map_err(|_| err("no connection within 10s".into()))?
        .map_err(|e| err(format!("{e}: {}", source_chain(&e))))?;
        Ok(Cri {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
        })
    }

    /// The runtime's name and version (`containerd 1.7.x`).
    pub async fn version(&mut self) -> Result<cri::VersionResponse, CriError> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        timed("Version", CALL_TIMEOUT, self.rt.version(req)).await
    }

    /// Whether `image` is present in the runtime's store (never pulls).
    pub async fn image_present(&mut self, image: &str) -> Result<bool, CriError> {
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp = timed("ImageStatus", CALL_TIMEOUT, self.img.image_status(req)).await?;
        Ok(resp.image.is_some())
    }

    /// Creates a sandbox of `variant` and starts a toolbox container in it
    /// that sleeps until removed. On any failure the sandbox is removed again.
    pub async fn run_pod(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
    ) -> Result<Pod, CriError> {
        let sandbox_id = self.run_sandbox(variant, name, opts).await?;
        let cmd = ["/bin/busybox", "sleep", "2147483647"];
        match self
            .start_container(&sandbox_id, variant, "toolbox", name, opts, &cmd)
            .await
        {
            Ok(container_id) => Ok(Pod {
                variant,
                sandbox_id,
                container_id,
            }),
            Err(e) => {
                let _ = self.remove_sandbox(&sandbox_id).await;
                Err(e)
            }
        }
    }

    async fn run_sandbox(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
    ) -> Result<String, CriError> {
        let handler = opts
            .runtime_handler
            .clone()
            .unwrap_or_else(|| variant.runtime_handler().to_string());
        let req = cri::RunPodSandboxRequest {
            config: Some(sandbox_config(variant, name, opts)),
            runtime_handler: handler,
        };
        let resp = timed("RunPodSandbox", CALL_TIMEOUT, self.rt.run_pod_sandbox(req)).await?;
        Ok(resp.pod_sandbox_id)
    }

    async fn start_container(
        &mut self,
        sandbox_id: &str,
        variant: Variant,
        cname: &str,
        pod_name: &str,
        opts: &PodOptions,
        cmd: &[&str],
    ) -> Result<String, CriError> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(container_config(variant, cname, opts, cmd)),
            sandbox_config: Some(sandbox_config(variant, pod_name, opts)),
        };
        let created = timed(
            "CreateContainer",
            CALL_TIMEOUT,
            self.rt.create_container(req),
        )
        .await?;
        let id = created.container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        timed(
            "StartContainer",
            CALL_TIMEOUT,
            self.rt.start_container(start),
        )
        .await?;
        Ok(id)
    }

    /// Runs `cmd` in the container and waits for it at most `timeout`.
    pub async fn exec(
        &mut self,
        container_id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput, CriError> {
        let secs = timeout.as_secs().max(1);
        let req = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: secs as i64,
        };
        // containerd enforces `timeout`; the client waits a little longer.
        let wait = Duration::from_secs(secs + 10);
        let r = timed("ExecSync", wait, self.rt.exec_sync(req)).await?;
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        })
    }

    /// Runs `cmd` as the only container of a new pod of `variant` until it
    /// exits (at most `timeout`); the pod is removed in every case.
    pub async fn run_to_completion(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<Completion, CriError> {
        let sandbox_id = self.run_sandbox(variant, name, opts).await?;
        let res = self
            .wait_exit(&sandbox_id, variant, name, opts, cmd, timeout)
            .await;
        let cleanup = self.remove_sandbox(&sandbox_id).await;
        let done = res?;
        cleanup?;
        Ok(done)
    }

    async fn wait_exit(
        &mut self,
        sandbox_id: &str,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<Completion, CriError> {
        let id = self
            .start_container(sandbox_id, variant, "job", name, opts, cmd)
            .await?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let req = cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            };
            let st = timed(
                "ContainerStatus",
                CALL_TIMEOUT,
                self.rt.container_status(req),
            )
            .await?;
            let Some(st) = st.status else {
                return Err(CriError::Unexpected {
                    call: "ContainerStatus",
                    reason: "no status".into(),
                });
            };
            if st.state == cri::ContainerState::ContainerExited as i32 {
                return Ok(Completion {
                    exit_code: st.exit_code,
                    reason: st.reason,
                });
            }
            if Instant::now() >= deadline {
                return Err(CriError::Timeout {
                    call: "ContainerStatus (wait for exit)",
                    timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Stops and removes a sandbox and its containers. Removing a sandbox that
    /// is already gone is not an error.
    pub async fn remove_sandbox(&mut self, sandbox_id: &str) -> Result<(), CriError> {
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let stopped = timed(
            "StopPodSandbox",
            CALL_TIMEOUT,
            self.rt.stop_pod_sandbox(stop),
        )
        .await;
        let rm = cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let removed = timed(
            "RemovePodSandbox",
            CALL_TIMEOUT,
            self.rt.remove_pod_sandbox(rm),
        )
        .await;
        match (stopped, removed) {
            (_, Ok(_)) => Ok(()),
            (_, Err(e)) if is_not_found(&e) => Ok(()),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// The ids of every sandbox carrying [`LABEL`].
    pub async fn labelled_sandboxes(&mut self) -> Result<Vec<String>, CriError> {
        let mut sel = HashMap::new();
        sel.insert(LABEL.to_string(), "1".to_string());
        let req = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: sel,
                ..Default::default()
            }),
        };
        let r = timed(
            "ListPodSandbox",
            CALL_TIMEOUT,
            self.rt.list_pod_sandbox(req),
        )
        .await?;
        Ok(r.items.into_iter().map(|s| s.id).collect())
    }

    /// Removes every sandbox carrying [`LABEL`]; returns how many there were.
    pub async fn remove_labelled(&mut self) -> Result<usize, CriError> {
        let ids = self.labelled_sandboxes().await?;
        let mut first_err = None;
        for id in &ids {
            if let Err(e) = self.remove_sandbox(id).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ids.len()),
        }
    }
}

fn is_not_found(e: &CriError) -> bool {
    matches!(e, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PodOptions {
        PodOptions {
            host_network: false,
            runtime_handler: None,
            image: "ironclad.local/toolbox:1".into(),
            cgroup_parent: String::new(),
        }
    }

    #[test]
    fn priv_is_privileged_with_host_pid() {
        let s = sandbox_config(Variant::Priv, "p", &opts());
        let sc = s.linux.unwrap().security_context.unwrap();
        assert!(sc.privileged);
        let ns = sc.namespace_options.unwrap();
        assert_eq!(ns.pid, cri::NamespaceMode::Node as i32);
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert!(ns.userns_options.is_none());
        assert_eq!(s.labels.get(LABEL).map(String::as_str), Some("1"));
    }

    #[test]
    fn userns_maps_root_to_a_high_range() {
        let c = container_config(Variant::Userns, "c", &opts(), &["x"]);
        let ns = c
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        let u = ns.userns_options.unwrap();
        assert_eq!(u.mode, cri::NamespaceMode::Pod as i32);
        assert_eq!(u.uids[0].container_id, 0);
        assert!(u.uids[0].host_id >= 65536);
        assert_eq!(u.uids, u.gids);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn restricted_drops_everything() {
        let c = container_config(Variant::Restricted, "c", &opts(), &["x"]);
        let sc = c.linux.unwrap().security_context.unwrap();
        assert!(!sc.privileged);
        assert!(sc.no_new_privs);
        assert_eq!(sc.capabilities.unwrap().drop_capabilities, vec!["ALL"]);
        assert_eq!(sc.run_as_user.unwrap().value, RESTRICTED_UID);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            cri::security_profile::ProfileType::RuntimeDefault as i32
        );
    }

    #[test]
    fn unpriv_leaves_defaults_to_the_runtime() {
        let c = container_config(Variant::Unpriv, "c", &opts(), &["x"]);
        let sc = c.linux.unwrap().security_context.unwrap();
        assert!(!sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert!(caps.add_capabilities.is_empty() && caps.drop_capabilities.is_empty());
        // No profile: the runtime's `unset_seccomp_profile` applies.
        assert!(sc.seccomp.is_none());
        assert!(!sc.no_new_privs);
        assert!(sc.masked_paths.iter().any(|p| p == "/proc/kcore"));
        assert!(sc.readonly_paths.iter().any(|p| p == "/proc/sys"));
        let p = container_config(Variant::Priv, "c", &opts(), &["x"]);
        assert!(
            p.linux
                .unwrap()
                .security_context
                .unwrap()
                .masked_paths
                .is_empty()
        );
    }

    #[test]
    fn handlers_and_host_network() {
        assert_eq!(Variant::Gvisor.runtime_handler(), "runsc");
        assert_eq!(Variant::Priv.runtime_handler(), "");
        let o = PodOptions {
            host_network: true,
            ..opts()
        };
        let s = sandbox_config(Variant::Unpriv, "p", &o);
        let ns = s
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    }

    #[test]
    fn exec_output_combines_streams() {
        let o = ExecOutput {
            exit_code: 1,
            stdout: "a\n".into(),
            stderr: " b ".into(),
        };
        assert_eq!(o.combined(), "a\nb");
    }
}
