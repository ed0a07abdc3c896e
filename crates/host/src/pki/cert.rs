//! Certificate authorities and leaf certificates: generating a CA, loading one
//! back from PEM (checking that the key belongs to the certificate), and issuing
//! the leaf profiles the cluster uses (node API server, etcd server/peer/client,
//! API client with a role). Every key is ECDSA P-256, which Go programs (etcd,
//! Kubernetes) and rustls all read. Every type here that holds a private key
//! ([`Ca`], [`IssuedCert`]) prints it as `[redacted]` in `Debug`.

use super::PkiError;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// Lifetime of a CA certificate.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Lifetime of a leaf certificate.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
/// Certificates start this long before "now", so that a guest clock slightly
/// behind the host's still accepts them.
const BACKDATE: Duration = Duration::minutes(5);

/// A certificate authority: its certificate (PEM) and what is needed to sign.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A freshly issued leaf: certificate and private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// Generates a new ECDSA P-256 key pair.
pub(crate) fn generate_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Crypto {
        what: "generate an ECDSA P-256 key".to_string(),
        source,
    })
}

/// Parses a PEM private key; `path` names the file in errors.
pub(crate) fn parse_key(pem: &str, path: &Path) -> Result<KeyPair, PkiError> {
    let key = KeyPair::from_pem(pem).map_err(|e| PkiError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not a PEM private key ({e})"),
    })?;
    if !key.is_compatible(&PKCS_ECDSA_P256_SHA256) {
        return Err(PkiError::Corrupt {
            path: path.to_path_buf(),
            reason: "the key is not ECDSA P-256".to_string(),
        });
    }
    Ok(key)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // A positive integer with no leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn base_params(
    common_name: &str,
    organization: Option<&str>,
    validity: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params
}

impl Ca {
    /// Generates a new self-signed CA with a new key.
    pub fn generate(common_name: &str) -> Result<(Ca, KeyPair), PkiError> {
        let key = generate_key()?;
        let ca = Self::self_sign(common_name, &key)?;
        Ok((ca, key))
    }

    /// Makes a self-signed CA certificate for an existing key.
    fn self_sign(common_name: &str, key: &KeyPair) -> Result<Ca, PkiError> {
        let mut params = base_params(common_name, None, CA_VALIDITY);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(key).map_err(|source| PkiError::Crypto {
            what: format!("self-sign CA {common_name:?}"),
            source,
        })?;
        let cert_pem = cert.pem();
        // Reload through the parser so that a generated CA and a loaded CA are the
        // same thing (same key identifier, same subject encoding).
        let key = KeyPair::from_pem(&key.serialize_pem()).map_err(|source| PkiError::Crypto {
            what: "copy a CA key".to_string(),
            source,
        })?;
        Self::from_parts(&cert_pem, key, Path::new(common_name))
    }

    /// Recreates a CA certificate for a key whose certificate was lost. Leaves
    /// signed earlier stay valid: the subject and the key identifier are the same.
    pub fn recertify(common_name: &str, key: &KeyPair) -> Result<Ca, PkiError> {
        Self::self_sign(common_name, key)
    }

    /// Loads a CA from its certificate and key. `cert_path` names the file in
    /// errors. Checks that it is a CA, is currently valid and matches the key.
    pub fn from_parts(cert_pem: &str, key: KeyPair, cert_path: &Path) -> Result<Ca, PkiError> {
        let der = pem_to_der(cert_pem, cert_path)?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Corrupt {
                path: cert_path.to_path_buf(),
                reason: format!("not an X.509 certificate ({e})"),
            })?;
        if !x509.is_ca() {
            return Err(PkiError::Corrupt {
                path: cert_path.to_path_buf(),
                reason: "the certificate is not a CA".to_string(),
            });
        }
        if !x509.validity().is_valid() {
            return Err(PkiError::Expired {
                path: cert_path.to_path_buf(),
            });
        }
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(PkiError::KeyMismatch {
                path: cert_path.to_path_buf(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&der.clone().into(), key).map_err(|e| PkiError::Corrupt {
                path: cert_path.to_path_buf(),
                reason: format!("unusable CA certificate ({e})"),
            })?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Only the secrets bundle writes it.
    pub(crate) fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let key = generate_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Crypto {
                what: "sign a certificate".to_string(),
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS server certificate for `name`, valid for the given host names and
    /// addresses, with `clientAuth` too when `client` is set (etcd servers and
    /// peers connect to each other with the same certificate).
    pub fn issue_server(
        &self,
        name: &str,
        dns: &[&str],
        ips: &[Ipv4Addr],
        client: bool,
    ) -> Result<IssuedCert, PkiError> {
        let mut params = base_params(name, None, LEAF_VALIDITY);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        for d in dns {
            let ia5 = (*d).try_into().map_err(|source| PkiError::Crypto {
                what: format!("use {d:?} as a DNS name"),
                source,
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(*ip)));
        }
        self.issue(params)
    }

    /// A node API (apid) server certificate for node `name` with cluster
    /// address `address`: serverAuth, SANs the node name (DNS) and the address
    /// (IP), nothing else. No loopback name or address: the host dials every
    /// node on `127.0.0.1`, so a SAN every node shares would let one node's
    /// key answer for any other; the host checks the node name instead.
    pub fn issue_node_api(&self, name: &str, address: Ipv4Addr) -> Result<IssuedCert, PkiError> {
        self.issue_server(name, &[name], &[address], false)
    }

    /// A TLS client certificate: common name `cn`, organization `org` (the role
    /// for API clients, e.g. `os:admin`).
    pub fn issue_client(&self, cn: &str, org: Option<&str>) -> Result<IssuedCert, PkiError> {
        let mut params = base_params(cn, org, LEAF_VALIDITY);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        self.issue(params)
    }

    /// Whether `cert_pem` was signed by this CA and is currently valid, and
    /// `key_pem` (when given) is its private key.
    pub fn issued(&self, cert_pem: &str, key_pem: Option<&str>) -> bool {
        let (Ok(ca_der), Ok(leaf_der)) = (
            pem_to_der(&self.cert_pem, Path::new("ca")),
            pem_to_der(cert_pem, Path::new("leaf")),
        ) else {
            return false;
        };
        let (Ok((_, ca)), Ok((_, leaf))) = (
            x509_parser::parse_x509_certificate(&ca_der),
            x509_parser::parse_x509_certificate(&leaf_der),
        ) else {
            return false;
        };
        if leaf.verify_signature(Some(ca.public_key())).is_err() || !leaf.validity().is_valid() {
            return false;
        }
        match key_pem {
            None => true,
            Some(k) => KeyPair::from_pem(k).is_ok_and(|key| {
                leaf.public_key().raw
                    == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
            }),
        }
    }
}

/// Decodes one PEM `CERTIFICATE` block.
pub(crate) fn pem_to_der(pem: &str, path: &Path) -> Result<Vec<u8>, PkiError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not PEM ({e})"),
        })?;
    if block.label != "CERTIFICATE" {
        return Err(PkiError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("PEM block is {:?}, expected CERTIFICATE", block.label),
        });
    }
    Ok(block.contents)
}
