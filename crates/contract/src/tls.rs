//! The one place TLS is configured for ironclad's mTLS connections (rustls with
//! the ring provider, safe default protocol versions): the node API's server
//! side ([`server_config`]: client certificates required and verified against
//! the cluster's OS CA), and clients that authenticate with a certificate and
//! verify the server against one CA ([`client_config`], and the pieces,
//! [`roots`] and [`identity`], for a client with its own server verifier).
//!
//! Errors name what could not be read (a certificate, a key) and never quote
//! PEM text: a key's parse error says only what is wrong with it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A PEM blob did not parse (`what`: "CA certificate", "client key", ...).
    #[error("invalid {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The crypto provider every ironclad TLS configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding the CA certificates of `ca_pem` (at least one).
pub fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        what: "CA certificate",
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| pem(e.to_string()))?;
        roots.add(ca).map_err(|e| pem(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem("no certificate found".into()));
    }
    Ok(roots)
}

/// A certificate chain and its key, parsed (`whose`: "client", "server").
pub fn identity(
    whose: &'static str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_what, key_what) = match whose {
        "server" => ("server certificate", "server key"),
        _ => ("client certificate", "client key"),
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: cert_what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: cert_what,
            reason: "no certificate found".into(),
        });
    }
    // The PEM error names what is wrong, never the key's text.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: key_what,
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

/// A client config: trust `ca_pem` only, authenticate with `cert_pem` +
/// `key_pem`, verify the server by the host name or address dialled. machined
/// uses it for its own etcd (`https://127.0.0.1:2379`, which etcd's server
/// certificate names); the host's node API client verifies the node's name
/// instead of the address and builds its config from [`roots`] and
/// [`identity`].
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = roots(ca_pem)?;
    let (certs, key) = identity("client", cert_pem, key_pem)?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The node API's server config: `cert_pem`/`key_pem` as the server's
/// identity, client certificates required and verified against `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let roots = roots(ca_pem)?;
    let (certs, key) = identity("server", cert_pem, key_pem)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_quoting_it() {
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        assert!(matches!(roots("not pem"), Err(TlsError::Pem { .. })));
        let e = identity("client", "not pem", secret).unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        let e = client_config("", "", secret).unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        let e = server_config("x", "y", secret).unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
    }
}
