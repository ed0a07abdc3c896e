//! The pod variants of MATRIX.md ([`Variant`]) and the per-pod choices
//! ([`PodOptions`]) as the CRI sandbox and container configs a kubelet would
//! send: namespaces, privilege, capabilities, user namespace mapping,
//! seccomp, masked and read-only paths. Pure functions of their inputs; the
//! calls that use them are in [`super::Cri`].

use super::{
    GVISOR_HANDLER, LABEL, POD_NAMESPACE, RESTRICTED_UID, USERNS_HOST_BASE, USERNS_LENGTH,
};
use k8s_cri::v1 as cri;
use std::collections::HashMap;

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
    /// The pod's CRI log directory (a container's output goes to
    /// `<log_dir>/<container name>.log`, as a kubelet sets it up); empty: no
    /// container logs.
    pub log_dir: String,
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
        log_directory: opts.log_dir.clone(),
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
        log_path: if opts.log_dir.is_empty() {
            String::new()
        } else {
            format!("{name}.log")
        },
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    }
}
