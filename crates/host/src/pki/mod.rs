//! The cluster PKI: CAs, per-node leaf certificates, client certificates,
//! service-account keys and the bootstrap token, stored 0600 in a 0700 dir.
//!
//! The secrets bundle lives in one directory (`<state>/secrets/`):
//!
//! | file | what |
//! |------|------|
//! | `os-ca.crt`, `os-ca.key` | OS CA: node API server certs and API client certs (role in O) |
//! | `etcd-ca.crt`, `etcd-ca.key` | etcd CA: etcd server, peer and client certs |
//! | `kubernetes-ca.crt`, `kubernetes-ca.key` | Kubernetes cluster CA |
//! | `front-proxy-ca.crt`, `front-proxy-ca.key` | front-proxy (aggregation layer) CA |
//! | `sa.key`, `sa.pub` | service-account token signing key pair |
//! | `bootstrap-token` | kubeadm-format token `[a-z0-9]{6}.[a-z0-9]{16}` |
//!
//! Every key is ECDSA P-256 (Go programs read them); CAs live 10 years, leaves 1
//! year. Keys and the token are written 0600, certificates 0644, the directory
//! 0700, each file atomically through [`crate::fsutil`].
//!
//! [`Secrets::ensure`] loads what exists and generates only what is missing: an
//! existing CA is never replaced; a CA whose certificate was lost but whose key
//! is present gets a new certificate for the same key and subject (earlier leaves
//! stay valid); a certificate whose key is lost is an error, because completing
//! it would mean silently replacing the CA. Files are written key first, so an
//! interrupted run leaves a state the next run can complete.
//!
//! This module does not decide which node gets which certificate: that is
//! [`crate::machine`]'s rendering. It never prints or logs key material.

mod cert;

pub use cert::{CA_VALIDITY, Ca, IssuedCert, LEAF_VALIDITY};

use crate::fsutil;
use rand::Rng;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The four certificate authorities of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Node API (apid) servers and API clients.
    Os,
    /// etcd servers, peers and clients.
    Etcd,
    /// The Kubernetes cluster CA.
    Kubernetes,
    /// The front-proxy (aggregation layer) CA.
    FrontProxy,
}

impl CaKind {
    pub const ALL: [CaKind; 4] = [
        CaKind::Os,
        CaKind::Etcd,
        CaKind::Kubernetes,
        CaKind::FrontProxy,
    ];

    /// File name stem in the secrets directory (`<stem>.crt`, `<stem>.key`).
    pub fn stem(self) -> &'static str {
        match self {
            CaKind::Os => "os-ca",
            CaKind::Etcd => "etcd-ca",
            CaKind::Kubernetes => "kubernetes-ca",
            CaKind::FrontProxy => "front-proxy-ca",
        }
    }

    pub fn cert_file(self) -> String {
        format!("{}.crt", self.stem())
    }

    pub fn key_file(self) -> String {
        format!("{}.key", self.stem())
    }

    fn common_name(self, cluster: &str) -> String {
        format!("{cluster} {}", self.stem())
    }
}

/// File name of the service-account private key.
pub const SA_KEY_FILE: &str = "sa.key";
/// File name of the service-account public key.
pub const SA_PUB_FILE: &str = "sa.pub";
/// File name of the bootstrap token.
pub const TOKEN_FILE: &str = "bootstrap-token";

pub use ironclad_contract::role::ClientRole;

/// A kubeadm-format bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

impl BootstrapToken {
    const ALPHABET: &'static [u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

    /// A new random token.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(Self::ALPHABET[rng.random_range(0..Self::ALPHABET.len())]))
                .collect()
        };
        let id = pick(6);
        let secret = pick(16);
        BootstrapToken(format!("{id}.{secret}"))
    }

    /// The public token id (the part before the dot).
    pub fn id(&self) -> &str {
        self.0.split_once('.').map_or("", |(id, _)| id)
    }

    /// The whole token. Secret: never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for BootstrapToken {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let ok = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match s.split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(BootstrapToken(s.to_string())),
            _ => Err(()),
        }
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.[redacted])", self.id())
    }
}

/// The service-account signing key pair.
#[derive(Clone)]
pub struct ServiceAccountKey {
    key_pem: String,
    pub pub_pem: String,
}

impl ServiceAccountKey {
    /// The private key, PEM. Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("pub_pem", &self.pub_pem)
            .finish_non_exhaustive()
    }
}

/// The whole secrets bundle of a cluster, in memory.
#[derive(Debug)]
pub struct Secrets {
    pub os_ca: Ca,
    pub etcd_ca: Ca,
    pub kubernetes_ca: Ca,
    pub front_proxy_ca: Ca,
    pub service_account: ServiceAccountKey,
    pub bootstrap_token: BootstrapToken,
}

/// What [`Secrets::ensure`] did with each file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnsureReport {
    /// Files written by this run.
    pub created: Vec<PathBuf>,
    /// Files that existed and were kept as they were.
    pub kept: Vec<PathBuf>,
}

/// Why the PKI could not be loaded, generated or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secrets directory {path} does not exist")]
    MissingDir { path: PathBuf },
    #[error("{path} is missing from the secrets directory")]
    Missing { path: PathBuf },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("CA certificate {path} has expired or is not yet valid")]
    Expired { path: PathBuf },
    #[error("{path} does not belong to the private key next to it")]
    KeyMismatch { path: PathBuf },
    #[error(
        "{present} exists but {missing} is missing; refusing to replace it silently: restore {missing}, or remove {present} (and everything it signed) to start anew"
    )]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error(transparent)]
    UnknownRole(#[from] ironclad_contract::role::UnknownRole),
    #[error("cannot {what}: {source}")]
    Crypto {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

impl PkiError {
    /// Whether the error comes from what the user gave (a path, a file, a name)
    /// rather than from a failure of the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PkiError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::NotFound
                    | io::ErrorKind::AlreadyExists
            ),
            PkiError::MissingDir { .. }
            | PkiError::Missing { .. }
            | PkiError::Corrupt { .. }
            | PkiError::Expired { .. }
            | PkiError::KeyMismatch { .. }
            | PkiError::Incomplete { .. }
            | PkiError::UnknownRole(_) => true,
            PkiError::Crypto { .. } => false,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(io_err("check", path))
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    String::from_utf8(bytes).map_err(|_| PkiError::Corrupt {
        path: path.to_path_buf(),
        reason: "not text (PEM expected)".to_string(),
    })
}

fn write_secret(path: &Path, data: &str, report: &mut EnsureReport) -> Result<(), PkiError> {
    fsutil::write_secret(path, data.as_bytes()).map_err(io_err("write", path))?;
    report.created.push(path.to_path_buf());
    Ok(())
}

fn write_public(path: &Path, data: &str, report: &mut EnsureReport) -> Result<(), PkiError> {
    fsutil::write_public(path, data.as_bytes()).map_err(io_err("write", path))?;
    report.created.push(path.to_path_buf());
    Ok(())
}

/// Loads one CA from `dir` (both files must exist).
pub fn load_ca(dir: &Path, kind: CaKind) -> Result<Ca, PkiError> {
    if !exists(dir)? {
        return Err(PkiError::MissingDir {
            path: dir.to_path_buf(),
        });
    }
    let cert_path = dir.join(kind.cert_file());
    let key_path = dir.join(kind.key_file());
    for p in [&cert_path, &key_path] {
        if !exists(p)? {
            return Err(PkiError::Missing { path: p.clone() });
        }
    }
    let key = cert::parse_key(&read_text(&key_path)?, &key_path)?;
    Ca::from_parts(&read_text(&cert_path)?, key, &cert_path)
}

fn ensure_ca(
    dir: &Path,
    kind: CaKind,
    cluster: &str,
    report: &mut EnsureReport,
) -> Result<Ca, PkiError> {
    let cert_path = dir.join(kind.cert_file());
    let key_path = dir.join(kind.key_file());
    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => {
            let ca = load_ca(dir, kind)?;
            report.kept.push(key_path);
            report.kept.push(cert_path);
            Ok(ca)
        }
        (false, true) => {
            let key = cert::parse_key(&read_text(&key_path)?, &key_path)?;
            let ca = Ca::recertify(&kind.common_name(cluster), &key)?;
            report.kept.push(key_path);
            write_public(&cert_path, ca.cert_pem(), report)?;
            Ok(ca)
        }
        (true, false) => Err(PkiError::Incomplete {
            present: cert_path,
            missing: key_path,
        }),
        (false, false) => {
            let (ca, _key) = Ca::generate(&kind.common_name(cluster))?;
            // Key first: a crash between the two writes leaves a completable state.
            write_secret(&key_path, &ca.key_pem(), report)?;
            write_public(&cert_path, ca.cert_pem(), report)?;
            Ok(ca)
        }
    }
}

fn ensure_sa(dir: &Path, report: &mut EnsureReport) -> Result<ServiceAccountKey, PkiError> {
    let key_path = dir.join(SA_KEY_FILE);
    let pub_path = dir.join(SA_PUB_FILE);
    let key = if exists(&key_path)? {
        let key = cert::parse_key(&read_text(&key_path)?, &key_path)?;
        report.kept.push(key_path);
        key
    } else if exists(&pub_path)? {
        return Err(PkiError::Incomplete {
            present: pub_path,
            missing: key_path,
        });
    } else {
        let key = cert::generate_key()?;
        write_secret(&key_path, &key.serialize_pem(), report)?;
        key
    };
    let pub_pem = key.public_key_pem();
    if exists(&pub_path)? {
        if read_text(&pub_path)?.trim() != pub_pem.trim() {
            return Err(PkiError::KeyMismatch { path: pub_path });
        }
        report.kept.push(pub_path);
    } else {
        write_public(&pub_path, &pub_pem, report)?;
    }
    Ok(ServiceAccountKey {
        key_pem: key.serialize_pem(),
        pub_pem,
    })
}

fn load_sa(dir: &Path) -> Result<ServiceAccountKey, PkiError> {
    let key_path = dir.join(SA_KEY_FILE);
    if !exists(&key_path)? {
        return Err(PkiError::Missing { path: key_path });
    }
    let key = cert::parse_key(&read_text(&key_path)?, &key_path)?;
    Ok(ServiceAccountKey {
        key_pem: key.serialize_pem(),
        pub_pem: key.public_key_pem(),
    })
}

fn load_token(path: &Path) -> Result<BootstrapToken, PkiError> {
    read_text(path)?
        .trim_end()
        .parse()
        .map_err(|()| PkiError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}".to_string(),
        })
}

fn ensure_token(dir: &Path, report: &mut EnsureReport) -> Result<BootstrapToken, PkiError> {
    let path = dir.join(TOKEN_FILE);
    if exists(&path)? {
        let token = load_token(&path)?;
        report.kept.push(path);
        Ok(token)
    } else {
        let token = BootstrapToken::generate();
        write_secret(&path, &format!("{}\n", token.expose()), report)?;
        Ok(token)
    }
}

impl Secrets {
    /// Loads the bundle in `dir`, generating whatever is missing (see the module
    /// doc for what "missing" allows). Creates `dir` (mode 0700) if needed.
    /// `cluster` names the CAs it creates.
    pub fn ensure(dir: &Path, cluster: &str) -> Result<(Secrets, EnsureReport), PkiError> {
        fsutil::create_private_dir(dir).map_err(io_err("create directory", dir))?;
        let mut report = EnsureReport::default();
        let os_ca = ensure_ca(dir, CaKind::Os, cluster, &mut report)?;
        let etcd_ca = ensure_ca(dir, CaKind::Etcd, cluster, &mut report)?;
        let kubernetes_ca = ensure_ca(dir, CaKind::Kubernetes, cluster, &mut report)?;
        let front_proxy_ca = ensure_ca(dir, CaKind::FrontProxy, cluster, &mut report)?;
        let service_account = ensure_sa(dir, &mut report)?;
        let bootstrap_token = ensure_token(dir, &mut report)?;
        Ok((
            Secrets {
                os_ca,
                etcd_ca,
                kubernetes_ca,
                front_proxy_ca,
                service_account,
                bootstrap_token,
            },
            report,
        ))
    }

    /// Loads a complete bundle from `dir` without writing anything.
    pub fn load(dir: &Path) -> Result<Secrets, PkiError> {
        if !exists(dir)? {
            return Err(PkiError::MissingDir {
                path: dir.to_path_buf(),
            });
        }
        let token_path = dir.join(TOKEN_FILE);
        if !exists(&token_path)? {
            return Err(PkiError::Missing { path: token_path });
        }
        Ok(Secrets {
            os_ca: load_ca(dir, CaKind::Os)?,
            etcd_ca: load_ca(dir, CaKind::Etcd)?,
            kubernetes_ca: load_ca(dir, CaKind::Kubernetes)?,
            front_proxy_ca: load_ca(dir, CaKind::FrontProxy)?,
            service_account: load_sa(dir)?,
            bootstrap_token: load_token(&token_path)?,
        })
    }

    /// A new bundle in memory only (tests, dry runs).
    pub fn generate(cluster: &str) -> Result<Secrets, PkiError> {
        let ca = |kind: CaKind| Ca::generate(&kind.common_name(cluster)).map(|(ca, _)| ca);
        let sa = cert::generate_key()?;
        Ok(Secrets {
            os_ca: ca(CaKind::Os)?,
            etcd_ca: ca(CaKind::Etcd)?,
            kubernetes_ca: ca(CaKind::Kubernetes)?,
            front_proxy_ca: ca(CaKind::FrontProxy)?,
            service_account: ServiceAccountKey {
                key_pem: sa.serialize_pem(),
                pub_pem: sa.public_key_pem(),
            },
            bootstrap_token: BootstrapToken::generate(),
        })
    }

    /// The CA of the given kind.
    pub fn ca(&self, kind: CaKind) -> &Ca {
        match kind {
            CaKind::Os => &self.os_ca,
            CaKind::Etcd => &self.etcd_ca,
            CaKind::Kubernetes => &self.kubernetes_ca,
            CaKind::FrontProxy => &self.front_proxy_ca,
        }
    }
}

/// Issues an API client certificate for `role` with common name `cn`.
pub fn issue_client_cert(os_ca: &Ca, role: ClientRole, cn: &str) -> Result<IssuedCert, PkiError> {
    os_ca.issue_client(cn, Some(role.organization()))
}

/// Writes a client certificate and key as `<dir>/<stem>.crt` and `<stem>.key`
/// (key 0600, written first). Returns the two paths.
pub fn write_client_cert(
    dir: &Path,
    stem: &str,
    cert: &IssuedCert,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    let mut report = EnsureReport::default();
    write_secret(&key_path, &cert.key_pem, &mut report)?;
    write_public(&cert_path, &cert.cert_pem, &mut report)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests;
