//! Kernel sysctls: merges the image's hardening set (`/usr/lib/ironclad/sysctl.json`,
//! a flat JSON object of strings) with the machine config's `sysctls` (the config
//! wins on a conflict) and writes each value under `<root>/proc/sys`.

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
