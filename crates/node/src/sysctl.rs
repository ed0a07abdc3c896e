//! Kernel sysctls: merges the image's hardening set (`/usr/lib/ironclad/sysctl.json`,
//! a flat JSON object of strings) with the machine config's `sysctls` (the config
//! wins on a conflict) and writes each value under `<root>/proc/sys`; and the
//! one-way switches machined throws itself once the node's own modules are
//! loaded ([`AFTER_MODULES`]), which no config can override.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parses the image's `sysctl.json`.
pub fn parse_image_set(text: &str) -> Result<BTreeMap<String, String>, SysctlError> {
    serde_json::from_str(text).map_err(|e| SysctlError::Json(e.to_string()))
}

/// Merges the image set and the machine config's set; the config wins.
pub fn merge(
    image: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = image.clone();
    for (k, v) in config {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The procfs path of a sysctl key (`net.ipv4.ip_forward` → `net/ipv4/ip_forward`).
/// Keys with empty, `.` or `..` components or slashes are refused.
pub fn key_path(key: &str) -> Result<PathBuf, SysctlError> {
    let mut p = PathBuf::new();
    for part in key.split('.') {
        if part.is_empty() || part.contains('/') || part == ".." {
            return Err(SysctlError::BadKey(key.to_string()));
        }
        p.push(part);
    }
    Ok(p)
}

/// Writes every sysctl; returns the ones that failed (key, error) without
/// stopping at the first one: a missing key (module not loaded) must not stop boot.
pub fn apply(root: &Path, set: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let base = root.join("proc/sys");
    let mut failed = Vec::new();
    for (k, v) in set {
        let res = key_path(k).and_then(|rel| {
            std::fs::write(base.join(rel), v.as_bytes())
                .map_err(|e| SysctlError::Write(e.to_string()))
        });
        if let Err(e) = res {
            failed.push((k.clone(), e.to_string()));
        }
    }
    failed
}

/// Set by machined once every module of the image is loaded, whatever the
/// image and the config say: `kernel.modules_disabled=1` refuses
/// `init_module`/`finit_module` to everyone (a privileged container
/// included) until the next boot, and cannot be turned back to 0. Nothing
/// loads a module after that point: the image has no `modprobe` for the
/// kernel's on-demand requests, and machined loads only its lists (initramfs,
/// early, root/late), all finished by then. The matrix's RT-07 checks these
/// values and BRK-06 shows the effect.
pub const AFTER_MODULES: &[(&str, &str)] = &[("kernel.modules_disabled", "1")];

/// Applies [`AFTER_MODULES`] under `root`; returns the ones that failed.
pub fn lock_after_modules(root: &Path) -> Vec<(String, String)> {
    let set: BTreeMap<String, String> = AFTER_MODULES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    apply(root, &set)
}

/// Why a sysctl could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl.json is not a flat object of strings: {0}")]
    Json(String),
    #[error("bad sysctl key {0:?}")]
    BadKey(String),
    #[error("{0}")]
    Write(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins_and_values_land_in_procfs() {
        let img =
            parse_image_set(r#"{"kernel.kptr_restrict":"2","net.ipv4.ip_forward":"0"}"#).unwrap();
        let cfg: BTreeMap<String, String> = [("net.ipv4.ip_forward".into(), "1".into())].into();
        let set = merge(&img, &cfg);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/net/ipv4")).unwrap();
        let failed = apply(dir.path(), &set);
        assert!(failed.is_empty(), "{failed:?}");
        let rd = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(rd("proc/sys/kernel/kptr_restrict"), "2");
        assert_eq!(rd("proc/sys/net/ipv4/ip_forward"), "1");
    }

    #[test]
    fn module_loading_is_locked_after_the_modules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        assert!(lock_after_modules(dir.path()).is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("proc/sys/kernel/modules_disabled")).unwrap(),
            "1"
        );
        // Without the directory (not a node): reported, not fatal.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(lock_after_modules(empty.path()).len(), 1);
    }

    #[test]
    fn bad_keys_and_missing_entries_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let set: BTreeMap<String, String> = [
            ("../etc/passwd".to_string(), "x".to_string()),
            ("net.bridge.nope".to_string(), "1".to_string()),
        ]
        .into();
        let failed = apply(dir.path(), &set);
        assert_eq!(failed.len(), 2);
        assert!(key_path("a..b").is_err());
        assert!(parse_image_set(r#"{"a": 1}"#).is_err());
    }
}
