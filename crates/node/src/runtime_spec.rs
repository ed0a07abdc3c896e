//! The node's container hardening that lives in containerd's CRI config: a
//! base OCI runtime spec whose default capability set has no `NET_RAW` and no
//! `MKNOD`, and the CRI options that make seccomp `RuntimeDefault` the default.
//!
//! How containerd's CRI plugin (1.6 and 1.7) uses them, checked in its source
//! and against a real containerd by `tests/cri_host.rs`:
//! - `base_runtime_spec` (per runtime, under
//!   `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>`) is a
//!   whole OCI spec loaded once at start; every container of that runtime
//!   starts from a copy of it instead of containerd's built-in default. A
//!   container whose CRI security context carries no `capabilities` (or empty
//!   add/drop lists, which is what a kubelet sends for a default pod) keeps the
//!   base spec's set; `privileged` still gets every capability, and a drop of
//!   `ALL` still drops everything.
//! - `unset_seccomp_profile` (top level of the CRI plugin) is the profile used
//!   when a container asks for none; `"runtime/default"` turns on containerd's
//!   default seccomp profile (the `Seccomp: 2` of RT-02).
//!
//! This module only renders; machined writes [`BASE_SPEC_PATH`] and the
//! containerd config (see `docs/matrix.md` for the exact lines).

use serde_json::{Value, json};

/// Where machined writes the base spec on the node (the /etc overlay).
pub const BASE_SPEC_PATH: &str = "/etc/containerd/base-runtime-spec.json";

/// The capabilities a default container gets: containerd's default set
/// without `CAP_NET_RAW` (raw sockets: ARP/ICMP spoofing on the pod network)
/// and `CAP_MKNOD` (device nodes).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Capabilities that must never be in [`DEFAULT_CAPS`].
pub const REMOVED_CAPS: &[&str] = &["CAP_NET_RAW", "CAP_MKNOD"];

/// The paths masked in every container (as containerd's default spec).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths mounted read-only in every container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The base OCI runtime spec: containerd's built-in default, with the reduced
/// capability set.
pub fn base_runtime_spec() -> Value {
    let mount = |dest: &str, ty: &str, src: &str, opts: &[&str]| json!({"destination": dest, "type": ty, "source": src, "options": opts});
    json!({
        "ociVersion": "1.1.0",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": false
        },
        "root": {"path": "rootfs"},
        "mounts": [
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
            mount("/run", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"}
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS
        }
    })
}

/// The base spec as the file machined writes.
pub fn render_base_runtime_spec() -> String {
    let mut s = serde_json::to_string_pretty(&base_runtime_spec()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_the_node_config() {
        let settings = crate::machine::ContainerdSettings {
            runtimes: vec!["runc".into(), "crun".into(), "runsc".into()],
            user_namespaces: true,
        };
        let plain = crate::containerd::Config::for_node(&settings).unwrap();
        let mut h = plain.clone();
        h.harden(BASE_SPEC_PATH);
        let cri = &h.plugins[crate::containerd::config::CRI_PLUGIN];
        assert_eq!(
            cri.unset_seccomp_profile.as_deref(),
            Some("runtime/default")
        );
        assert_eq!(cri.containerd.runtimes.len(), 3);
        for rt in cri.containerd.runtimes.values() {
            assert_eq!(rt.base_runtime_spec.as_deref(), Some(BASE_SPEC_PATH));
        }
        // Idempotent, and nothing else changed.
        let mut again = h.clone();
        again.harden(BASE_SPEC_PATH);
        assert_eq!(again, h);
        let mut undone = h.clone();
        let cri = undone.cri_mut().unwrap();
        cri.unset_seccomp_profile = None;
        for rt in cri.containerd.runtimes.values_mut() {
            rt.base_runtime_spec = None;
        }
        assert_eq!(undone, plain);
        // In the file: the keys land in their tables.
        let text = h.render().unwrap();
        assert_eq!(text.matches("base_runtime_spec = ").count(), 3);
        assert_eq!(
            text.matches("unset_seccomp_profile = \"runtime/default\"")
                .count(),
            1
        );
        assert!(BASE_SPEC_PATH.ends_with("base-runtime-spec.json"));
    }

    #[test]
    fn default_caps_lack_net_raw_and_mknod() {
        let v = base_runtime_spec();
        for set in ["bounding", "effective", "permitted"] {
            let caps: Vec<&str> = v["process"]["capabilities"][set]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            for r in REMOVED_CAPS {
                assert!(!caps.contains(r), "{r} in {set}");
            }
            assert!(caps.contains(&"CAP_CHOWN"));
        }
    }

    #[test]
    fn spec_is_complete_enough_for_runc() {
        let v: Value = serde_json::from_str(&render_base_runtime_spec()).unwrap();
        assert_eq!(v["root"]["path"], "rootfs");
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        for d in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"] {
            assert!(dests.contains(&d), "{d}");
        }
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
        assert!(
            v["linux"]["readonlyPaths"]
                .as_array()
                .unwrap()
                .contains(&json!("/proc/sysrq-trigger"))
        );
    }
}
