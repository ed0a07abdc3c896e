//! A generated configuration directory: what `ironclad gen config --dir DIR`
//! writes, and the PKI part of a cluster's state directory.
//!
//! ```text
//! DIR/                      0700
//!   secrets/                0700  the bundle of crate::pki (CAs, SA keys, token)
//!   nodes/<node>.yaml       0600  one machine config per node (contains keys)
//!   admin.crt, admin.key    0644 / 0600  API client certificate, role os:admin
//!   client.yaml             0644  kind: ClientConfig (crate::clientconfig)
//! ```
//!
//! Running it again on the same directory keeps every secret of the bundle and
//! generates only what is missing (see [`crate::pki::Secrets::ensure`]). The
//! admin certificate is kept while it is still valid and signed by the current
//! OS CA. Machine configs and the client config are derived from the cluster
//! file and are rendered again on every run (with fresh leaf certificates);
//! API endpoints already recorded in `client.yaml` are kept for nodes that
//! still exist.
//!
//! The directory must be private to the user running ironclad
//! ([`check_private_output`]): one that another user owns, or that its group
//! or others may write to, is refused before anything is written, since
//! whoever can write there can swap the files the keys go into. (Its parents
//! are not checked: a private directory inside `/tmp` is fine.)
//!
//! It owns the layout and the orchestration; key generation is [`crate::pki`]'s,
//! rendering is [`crate::machine`]'s.

use crate::clientconfig::{self, ClientConfig, ClientConfigError, ClientNode};
use crate::fsutil;
use crate::machine::{self, MachineConfigError, RenderError};
use crate::pki::{self, ClientRole, PkiError, Secrets};
use crate::spec::{Cluster, Role};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Subdirectory holding the secrets bundle.
pub const SECRETS_DIR: &str = "secrets";
/// Subdirectory holding the machine configs.
pub const NODES_DIR: &str = "nodes";
/// File stem of the admin client certificate (`admin.crt`, `admin.key`).
pub const ADMIN_STEM: &str = "admin";
/// Common name of the admin client certificate.
pub const ADMIN_CN: &str = "admin";

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenReport {
    pub cluster: String,
    pub dir: PathBuf,
    pub secrets: pki::EnsureReport,
    pub nodes: Vec<GeneratedNode>,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// Whether an existing admin certificate was kept.
    pub admin_kept: bool,
    pub client_config: PathBuf,
    /// Machine configs in `nodes/` of nodes the cluster no longer has. They are
    /// left in place (never deleted behind the user's back) and listed here.
    pub stale_nodes: Vec<PathBuf>,
}

/// One machine config written.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedNode {
    pub name: String,
    pub role: Role,
    pub address: Ipv4Addr,
    pub config: PathBuf,
}

/// Why a config directory could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDirError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Document(#[from] MachineConfigError),
    #[error(transparent)]
    ClientConfig(#[from] ClientConfigError),
    #[error(
        "{path} is not a safe place for secrets: {why}; use a directory only you can write to (`chmod go-w`, or a new path: it is created with mode 0700)"
    )]
    UnsafeDir { path: PathBuf, why: String },
}

impl ConfigDirError {
    /// Whether the user can fix it by giving other input (a writable directory,
    /// an intact secrets directory) rather than it being a failure of the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            // The output directory is the user's choice: any failure to create it
            // (a file in the way, /proc, no permission) is theirs to fix.
            ConfigDirError::Io {
                action: "create directory",
                ..
            } => true,
            ConfigDirError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::AlreadyExists
            ),
            ConfigDirError::Pki(e) => e.is_bad_input(),
            ConfigDirError::UnsafeDir { .. } => true,
            ConfigDirError::Render(_) | ConfigDirError::Document(_) => false,
            ConfigDirError::ClientConfig(ClientConfigError::Write { source, .. }) => matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ),
            ConfigDirError::ClientConfig(_) => false,
        }
    }
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ConfigDirError + 'a {
    move |source| ConfigDirError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses `dir` as a place for secrets unless it is a directory owned by
/// the user running ironclad that neither its group nor others may write
/// to. Symbolic links are followed: the directory checked is the one the
/// files would land in.
pub fn check_private_output(dir: &Path) -> Result<(), ConfigDirError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir).map_err(io_err("inspect", dir))?;
    let unsafe_dir = |why: String| {
        Err(ConfigDirError::UnsafeDir {
            path: dir.to_path_buf(),
            why,
        })
    };
    if !meta.is_dir() {
        return unsafe_dir("it is not a directory".into());
    }
    // SAFETY: geteuid(2) has no arguments, touches no memory and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return unsafe_dir(format!(
            "it belongs to uid {}, not to you (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return unsafe_dir(format!(
            "its group or others may write to it (mode {mode:04o})"
        ));
    }
    Ok(())
}

/// The machine config path of node `name` under `dir`.
pub fn node_config_path(dir: &Path, name: &crate::spec::NodeName) -> PathBuf {
    dir.join(NODES_DIR).join(format!("{name}.yaml"))
}

/// Where the fw_cfg copy of node `name`'s machine config goes under `dir`
/// ([`write_fw_cfg_document`]).
pub fn node_fw_cfg_path(dir: &Path, name: &crate::spec::NodeName) -> PathBuf {
    dir.join(NODES_DIR).join(format!("{name}.fw_cfg.json"))
}

/// Renders the machine config at `yaml` as the JSON document its node reads
/// through fw_cfg, into `json` (mode 0600, written atomically). machined
/// parses JSON in about a tenth of the time YAML takes under TCG
/// ([`ironclad_contract::machine::MachineConfig::from_document`]); the YAML
/// file stays the one people read and edit, and is rendered again at every
/// start of the node. A YAML file that does not parse is refused here, by
/// position and field path only (it holds keys).
pub fn write_fw_cfg_document(yaml: &Path, json: &Path) -> Result<(), ConfigDirError> {
    let text = std::fs::read_to_string(yaml).map_err(io_err("read", yaml))?;
    let cfg = ironclad_contract::machine::MachineConfig::from_yaml(&text)?;
    fsutil::write_secret(json, cfg.to_json()?.as_bytes()).map_err(io_err("write", json))
}

/// Generates (or completes) the configuration directory `dir` for `cluster`.
/// `dir` itself is created with mode 0700 when it does not exist; an existing
/// directory keeps its mode (it may be `.`), the private parts live in 0700
/// subdirectories and 0600 files.
pub fn generate(cluster: &Cluster, dir: &Path) -> Result<GenReport, ConfigDirError> {
    if !dir.is_dir() {
        fsutil::create_private_dir(dir).map_err(io_err("create directory", dir))?;
    }
    check_private_output(dir)?;
    let (secrets, secrets_report) = Secrets::ensure(&dir.join(SECRETS_DIR), cluster.name.as_str())?;

    let nodes_dir = dir.join(NODES_DIR);
    fsutil::create_private_dir(&nodes_dir).map_err(io_err("create directory", &nodes_dir))?;
    let mut nodes = Vec::with_capacity(cluster.nodes.len());
    for node in &cluster.nodes {
        let cfg = machine::render(cluster, node, &secrets)?;
        let path = node_config_path(dir, &node.name);
        fsutil::write_secret(&path, cfg.to_yaml()?.as_bytes()).map_err(io_err("write", &path))?;
        nodes.push(GeneratedNode {
            name: node.name.to_string(),
            role: node.role,
            address: node.address,
            config: path,
        });
    }

    let admin_cert = dir.join(format!("{ADMIN_STEM}.crt"));
    let admin_key = dir.join(format!("{ADMIN_STEM}.key"));
    let admin_kept = match (
        std::fs::read_to_string(&admin_cert),
        std::fs::read_to_string(&admin_key),
    ) {
        (Ok(c), Ok(k)) => secrets.os_ca.issued(&c, Some(&k)),
        _ => false,
    };
    if !admin_kept {
        let issued = pki::issue_client_cert(&secrets.os_ca, ClientRole::Admin, ADMIN_CN)?;
        pki::write_client_cert(dir, ADMIN_STEM, &issued)?;
    }

    let client_path = dir.join(clientconfig::FILE_NAME);
    let previous = ClientConfig::load(&client_path).ok();
    let client = ClientConfig {
        api_version: crate::API_VERSION.to_string(),
        kind: clientconfig::KIND.to_string(),
        cluster: cluster.name.clone(),
        os_ca: secrets.os_ca.cert_pem().to_string(),
        cert: PathBuf::from(format!("{ADMIN_STEM}.crt")),
        key: PathBuf::from(format!("{ADMIN_STEM}.key")),
        nodes: cluster
            .nodes
            .iter()
            .map(|n| ClientNode {
                name: n.name.clone(),
                role: n.role,
                address: n.address,
                endpoint: previous
                    .as_ref()
                    .and_then(|p| p.node(n.name.as_str()))
                    .and_then(|p| p.endpoint),
            })
            .collect(),
    };
    client.save(&client_path)?;

    let mut stale_nodes: Vec<PathBuf> = std::fs::read_dir(&nodes_dir)
        .map_err(io_err("list", &nodes_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !nodes.iter().any(|n| &n.config == p)
        })
        .collect();
    stale_nodes.sort();

    Ok(GenReport {
        cluster: cluster.name.to_string(),
        dir: dir.to_path_buf(),
        secrets: secrets_report,
        nodes,
        admin_cert,
        admin_key,
        admin_kept,
        client_config: client_path,
        stale_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::MachineConfig;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A temporary directory, its `out` subdirectory with the default cluster
    /// generated into it, that cluster and the report.
    fn generated_default() -> (tempfile::TempDir, PathBuf, Cluster, GenReport) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let cluster = crate::spec::default_cluster();
        let report = generate(&cluster, &dir).unwrap();
        (tmp, dir, cluster, report)
    }

    #[test]
    fn fw_cfg_document_is_the_yaml_config_as_private_json() {
        let (tmp, dir, cluster, report) = generated_default();
        let node = &cluster.nodes[0];
        let yaml = node_config_path(&dir, &node.name);
        let json = node_fw_cfg_path(&dir, &node.name);
        write_fw_cfg_document(&yaml, &json).unwrap();
        assert_eq!(mode(&json), 0o600);
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(text.starts_with('{'), "{text:.40}");
        let want = MachineConfig::from_yaml(&std::fs::read_to_string(&yaml).unwrap()).unwrap();
        assert_eq!(MachineConfig::from_document(&text).unwrap(), want);
        assert_eq!(report.nodes[0].config, yaml);
        // An edit of the YAML file is what the node gets at its next start.
        let edited = std::fs::read_to_string(&yaml)
            .unwrap()
            .replace("egress: false", "egress: true");
        std::fs::write(&yaml, edited).unwrap();
        write_fw_cfg_document(&yaml, &json).unwrap();
        let got = MachineConfig::from_document(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(got.cluster.egress);
        // A broken one is refused on the host, by position only, and the
        // last good copy is left as it was.
        let before = std::fs::read_to_string(&json).unwrap();
        std::fs::write(&yaml, "apiVersion: [\n").unwrap();
        let err = write_fw_cfg_document(&yaml, &json).unwrap_err();
        assert!(matches!(err, ConfigDirError::Document(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&json).unwrap(), before);
        let gone = tmp.path().join("none.yaml");
        let err = write_fw_cfg_document(&gone, &json).unwrap_err().to_string();
        assert!(
            err.contains("cannot read") && err.contains("none.yaml"),
            "{err}"
        );
    }

    #[test]
    fn generates_layout_and_completes_on_rerun() {
        let (_tmp, dir, cluster, report) = generated_default();
        assert!(!report.admin_kept);
        assert_eq!(report.nodes.len(), cluster.nodes.len());
        for d in [&dir, &dir.join(SECRETS_DIR), &dir.join(NODES_DIR)] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        for n in &report.nodes {
            assert_eq!(mode(&n.config), 0o600);
            let cfg =
                MachineConfig::from_yaml(&std::fs::read_to_string(&n.config).unwrap()).unwrap();
            assert_eq!(cfg.node.name, n.name);
        }
        assert_eq!(mode(&report.admin_key), 0o600);
        let client = ClientConfig::load(&report.client_config).unwrap();
        assert_eq!(client.cluster, cluster.name.as_str());
        assert_eq!(client.nodes.len(), cluster.nodes.len());
        assert!(
            client
                .cert_path(&report.client_config)
                .ends_with("out/admin.crt")
        );

        // An endpoint recorded by `create` survives a re-run, and so does the admin cert.
        let mut with_endpoint = client.clone();
        with_endpoint.nodes[0].endpoint = Some("127.0.0.1:50001".parse().unwrap());
        with_endpoint.save(&report.client_config).unwrap();
        let admin_before = std::fs::read(&report.admin_cert).unwrap();
        let ca_before = std::fs::read(dir.join("secrets/os-ca.crt")).unwrap();
        std::fs::remove_file(dir.join("secrets/sa.pub")).unwrap();
        let again = generate(&cluster, &dir).unwrap();
        assert!(again.admin_kept);
        assert_eq!(again.secrets.created, [dir.join("secrets/sa.pub")]);
        assert_eq!(std::fs::read(&report.admin_cert).unwrap(), admin_before);
        assert_eq!(
            std::fs::read(dir.join("secrets/os-ca.crt")).unwrap(),
            ca_before
        );
        let client = ClientConfig::load(&report.client_config).unwrap();
        assert_eq!(client.nodes[0].endpoint.unwrap().port(), 50001);
        assert!(again.stale_nodes.is_empty());

        // A node that left the cluster: its old config is reported, not deleted.
        let mut smaller = cluster.clone();
        let gone = smaller.nodes.pop().unwrap();
        let third = generate(&smaller, &dir).unwrap();
        let gone_path = node_config_path(&dir, &gone.name);
        assert_eq!(third.stale_nodes, std::slice::from_ref(&gone_path));
        assert!(gone_path.exists());
    }

    #[test]
    fn dirs_others_may_write_to_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = crate::spec::default_cluster();
        for mode in [0o770, 0o757, 0o1777] {
            let dir = tmp.path().join(format!("shared-{mode:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = generate(&cluster, &dir).unwrap_err();
            assert!(
                matches!(err, ConfigDirError::UnsafeDir { .. }) && err.is_bad_input(),
                "{err:?}"
            );
            assert!(err.to_string().contains("may write"), "{err}");
            assert_eq!(
                std::fs::read_dir(&dir).unwrap().count(),
                0,
                "nothing written into {}",
                dir.display()
            );
        }
        // A symbolic link is judged by the directory it leads to.
        let shared = tmp.path().join("shared-770");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        assert!(matches!(
            generate(&cluster, &link),
            Err(ConfigDirError::UnsafeDir { .. })
        ));
        // Read-only for others is fine.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        generate(&cluster, &open).unwrap();
    }

    #[test]
    fn a_dir_of_another_user_is_refused() {
        // SAFETY: geteuid(2) touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can make a directory owned by someone else
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_private_output(&dir).unwrap_err();
        assert!(err.to_string().contains("uid 65534"), "{err}");
    }

    #[test]
    fn unwritable_dir_is_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = generate(&crate::spec::default_cluster(), &file.join("out")).unwrap_err();
        assert!(err.is_bad_input(), "{err:?}");
        assert!(err.to_string().contains("a-file"), "{err}");
    }
}
