//! Machine configs applied through the node API (`POST /v1/config`).
//!
//! The host hands every boot a config through fw_cfg; that one is the source
//! of truth. An applied config is stored on the state disk (atomically, 0600:
//! it holds private keys) next to the SHA-256 of the fw_cfg config that was in
//! effect when it was applied. On the next boot stage 2 uses the stored config
//! only if the fw_cfg config is still that same document and the stored one
//! names the same cluster and node; as soon as the host hands a different
//! config, the host's wins and the stored one is ignored. Nothing is applied
//! live: the reply says it takes effect on the next boot.

use crate::machine::MachineConfig;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The stored config (relative to the node root).
pub const STORED: &str = "var/lib/ironclad/applied-config.yaml";
/// SHA-256 (hex) of the fw_cfg config it was applied over.
pub const STORED_BASE: &str = "var/lib/ironclad/applied-config.base";

/// SHA-256 of a config document, in hex.
pub fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("the config is for cluster {got:?}, this node is in cluster {want:?}")]
    OtherCluster { got: String, want: String },
    #[error("the config is for node {got:?}, this node is {want:?}")]
    OtherNode { got: String, want: String },
    #[error("the config changes the node's role ({want:?} to {got:?})")]
    OtherRole { got: String, want: String },
}

/// Whether `new` may replace `current` (same cluster, node and role).
pub fn check(current: &MachineConfig, new: &MachineConfig) -> Result<(), ApplyError> {
    if new.cluster.name != current.cluster.name {
        return Err(ApplyError::OtherCluster {
            got: new.cluster.name.to_string(),
            want: current.cluster.name.to_string(),
        });
    }
    if new.node.name != current.node.name {
        return Err(ApplyError::OtherNode {
            got: new.node.name.to_string(),
            want: current.node.name.to_string(),
        });
    }
    if new.node.role != current.node.role {
        return Err(ApplyError::OtherRole {
            got: format!("{:?}", new.node.role),
            want: format!("{:?}", current.node.role),
        });
    }
    Ok(())
}

/// Stores `yaml` (already validated) as the config of the next boot, over the
/// fw_cfg config whose digest is `base`.
pub fn store(root: &Path, yaml: &str, base: &str) -> std::io::Result<()> {
    let path = root.join(STORED);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Base first: a crash between the two leaves the old document with a
    // base that may not match, which only means "ignored".
    crate::fsutil::write_public(&root.join(STORED_BASE), format!("{base}\n").as_bytes())?;
    crate::fsutil::write_secret(&path, yaml.as_bytes())
}

/// What stage 2 decided about a stored config.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// Nothing stored.
    None,
    /// Use the stored config.
    Stored,
    /// Stored but not used, and why (printed on the console).
    Ignored(String),
}

/// Picks the effective config: the stored one if it was applied over exactly
/// `fw_cfg_text` and names the same cluster, node and role as `fw_cfg`.
pub fn choose(root: &Path, fw_cfg: MachineConfig, fw_cfg_text: &str) -> (MachineConfig, Choice) {
    let Ok(stored_text) = std::fs::read_to_string(root.join(STORED)) else {
        return (fw_cfg, Choice::None);
    };
    let base = std::fs::read_to_string(root.join(STORED_BASE)).unwrap_or_default();
    if base.trim() != digest(fw_cfg_text) {
        return (
            fw_cfg,
            Choice::Ignored("the host handed a different config since it was applied".into()),
        );
    }
    let stored = match MachineConfig::from_yaml(&stored_text) {
        Ok(c) => c,
        // The error gives a position and a field path, never the document's
        // text (which holds keys): safe for the console.
        Err(e) => {
            return (
                fw_cfg,
                Choice::Ignored(format!("it no longer parses as a machine config: {e}")),
            );
        }
    };
    match check(&fw_cfg, &stored) {
        Ok(()) => (stored, Choice::Stored),
        Err(e) => (fw_cfg, Choice::Ignored(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::config;

    #[test]
    fn stored_config_wins_only_over_the_same_fw_cfg_document() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let base = config(false);
        let base_text = base.to_yaml().unwrap();
        assert_eq!(choose(r, base.clone(), &base_text).1, Choice::None);

        let mut new = base.clone();
        new.sysctls.insert("vm.swappiness".into(), "10".into());
        check(&base, &new).unwrap();
        store(r, &new.to_yaml().unwrap(), &digest(&base_text)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(r.join(STORED))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let (eff, why) = choose(r, base.clone(), &base_text);
        assert_eq!(why, Choice::Stored);
        assert_eq!(eff, new);

        // The host hands a different document: the host's wins.
        let mut host = base.clone();
        host.sysctls.insert("vm.swappiness".into(), "1".into());
        let host_text = host.to_yaml().unwrap();
        let (eff, why) = choose(r, host.clone(), &host_text);
        assert!(matches!(why, Choice::Ignored(_)));
        assert_eq!(eff, host);

        // A stored document that no longer parses is ignored.
        std::fs::write(r.join(STORED), "apiVersion: nope\n").unwrap();
        assert!(matches!(
            choose(r, base.clone(), &base_text).1,
            Choice::Ignored(_)
        ));
        // Its reason (printed on the console) quotes no key, even when the
        // damage is in a key: a line of the key left where a field belongs.
        let (ca, _) = ironclad_host::pki::Ca::generate("t").unwrap();
        let mut keyed = new.clone();
        keyed.pki.api_key = ca
            .issue_node_api("cp1", "10.5.0.10".parse().unwrap())
            .unwrap()
            .key_pem;
        let stored = keyed.to_yaml().unwrap();
        let key_line = keyed
            .pki
            .api_key
            .lines()
            .nth(2)
            .expect("a PEM key has several lines")
            .to_string();
        let damaged = stored.replace("  apiKey: |\n", &format!("  {key_line}: |\n"));
        assert_ne!(damaged, stored);
        std::fs::write(r.join(STORED), damaged).unwrap();
        let (eff, why) = choose(r, base.clone(), &base_text);
        assert_eq!(eff, base);
        let Choice::Ignored(reason) = why else {
            panic!("{why:?}")
        };
        assert!(reason.contains("line "), "{reason}");
        assert!(!reason.contains(&key_line[..16]), "{reason}");
    }

    #[test]
    fn other_cluster_or_node_is_refused() {
        let base = config(false);
        let mut other = base.clone();
        other.node.name = "w9".parse().unwrap();
        assert!(matches!(
            check(&base, &other),
            Err(ApplyError::OtherNode { .. })
        ));
        let mut other = base.clone();
        other.cluster.name = "zzz".parse().unwrap();
        assert!(matches!(
            check(&base, &other),
            Err(ApplyError::OtherCluster { .. })
        ));
    }
}
