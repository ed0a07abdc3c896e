//! containerd's `config.toml` (version 2) as types, written with a TOML
//! library: what machined puts on a node, and what a test changes (paths,
//! one setting) to run the same config on a host.

use super::{ContainerdError, RUNTIMES, SANDBOX_IMAGE, SOCKET, default_runtime};
use crate::machine::ContainerdSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The config file's first line.
const HEADER: &str = "# Written by machined at boot; do not edit.\n";

/// Plugins a node never uses (no such filesystems, no tracing endpoint).
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// The seccomp profile of a container whose pod asks for none.
pub const UNSET_SECCOMP_PROFILE: &str = "runtime/default";

/// The whole file (the parts ironclad sets; containerd's defaults for the rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    pub root: String,
    pub state: String,
    pub disabled_plugins: Vec<String>,
    pub grpc: Grpc,
    /// By plugin id; ironclad sets only the CRI plugin ([`CRI_PLUGIN`]). A map,
    /// not a struct field: the id holds dots, and the TOML writer quotes map
    /// keys by their content (a renamed field would be written bare).
    pub plugins: BTreeMap<String, Cri>,
}

/// The CRI plugin's id.
pub const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grpc {
    pub address: String,
}

/// The CRI plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cri {
    pub sandbox_image: String,
    pub enable_selinux: bool,
    pub restrict_oom_score_adj: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unset_seccomp_profile: Option<String>,
    pub containerd: CriContainerd,
    pub cni: Cni,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriContainerd {
    pub snapshotter: String,
    pub default_runtime_name: String,
    /// By handler name.
    pub runtimes: BTreeMap<String, RuntimeEntry>,
}

/// One runtime handler: the runc v2 shim driving `options.BinaryName`, or
/// gVisor's shim reading `options.ConfigPath`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    pub runtime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_runtime_spec: Option<String>,
    pub options: RuntimeOptions,
}

/// A runtime's options: `BinaryName` and `SystemdCgroup` for the runc
/// shim, `TypeUrl` and `ConfigPath` for gVisor's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeOptions {
    #[serde(
        rename = "BinaryName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub binary_name: Option<String>,
    #[serde(
        rename = "SystemdCgroup",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub systemd_cgroup: Option<bool>,
    #[serde(rename = "TypeUrl", default, skip_serializing_if = "Option::is_none")]
    pub type_url: Option<String>,
    #[serde(
        rename = "ConfigPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub config_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cni {
    pub bin_dir: String,
    pub conf_dir: String,
    pub max_conf_num: u32,
}

impl Config {
    /// The node's config for the runtimes of `settings` (runc is always
    /// registered; the default handler is [`default_runtime`]).
    pub fn for_node(settings: &ContainerdSettings) -> Result<Config, ContainerdError> {
        for r in &settings.runtimes {
            if !RUNTIMES.iter().any(|k| k.name == r) {
                return Err(ContainerdError::UnknownRuntime(r.clone()));
            }
        }
        let runtimes = RUNTIMES
            .iter()
            .filter(|rt| rt.name == "runc" || settings.runtimes.iter().any(|r| r == rt.name))
            .map(|rt| {
                let entry = if rt.name == "runsc" {
                    RuntimeEntry {
                        runtime_type: super::RUNSC_RUNTIME_TYPE.into(),
                        base_runtime_spec: None,
                        options: RuntimeOptions {
                            binary_name: None,
                            systemd_cgroup: None,
                            type_url: Some(super::RUNSC_OPTIONS_TYPE.into()),
                            config_path: Some(super::RUNSC_CONFIG.into()),
                        },
                    }
                } else {
                    RuntimeEntry {
                        runtime_type: "io.containerd.runc.v2".into(),
                        base_runtime_spec: None,
                        options: RuntimeOptions {
                            binary_name: Some(rt.binary.into()),
                            systemd_cgroup: Some(false),
                            type_url: None,
                            config_path: None,
                        },
                    }
                };
                (rt.name.to_string(), entry)
            })
            .collect();
        Ok(Config {
            version: 2,
            root: "/var/lib/containerd".into(),
            state: "/run/containerd".into(),
            disabled_plugins: DISABLED_PLUGINS.iter().map(|p| p.to_string()).collect(),
            grpc: Grpc {
                address: SOCKET.into(),
            },
            plugins: BTreeMap::from([(
                CRI_PLUGIN.to_string(),
                Cri {
                    sandbox_image: SANDBOX_IMAGE.into(),
                    enable_selinux: false,
                    restrict_oom_score_adj: false,
                    unset_seccomp_profile: None,
                    containerd: CriContainerd {
                        snapshotter: "overlayfs".into(),
                        default_runtime_name: default_runtime(settings).into(),
                        runtimes,
                    },
                    cni: Cni {
                        bin_dir: "/usr/lib/cni".into(),
                        conf_dir: "/etc/cni/net.d".into(),
                        max_conf_num: 1,
                    },
                },
            )]),
        })
    }

    /// The hardening on top (see `runtime_spec`): seccomp `RuntimeDefault`
    /// for a container whose pod asks for no profile, and `spec_path` as every
    /// runtime's base spec (no NET_RAW or MKNOD by default).
    pub fn harden(&mut self, spec_path: &str) {
        let Some(cri) = self.plugins.get_mut(CRI_PLUGIN) else {
            return;
        };
        cri.unset_seccomp_profile = Some(UNSET_SECCOMP_PROFILE.into());
        for rt in cri.containerd.runtimes.values_mut() {
            rt.base_runtime_spec = Some(spec_path.into());
        }
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, ContainerdError> {
        let body = toml::to_string(self).map_err(|e| ContainerdError::Render(e.to_string()))?;
        Ok(format!("{HEADER}{body}"))
    }

    /// The CRI plugin's settings (every config [`Config::for_node`] makes has them).
    pub fn cri_mut(&mut self) -> Option<&mut Cri> {
        self.plugins.get_mut(CRI_PLUGIN)
    }

    /// Reads a file of this shape back.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}
