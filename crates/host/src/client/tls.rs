//! The TLS side of the client: the rustls config for one node's API (the
//! cluster's OS CA only, the admin's client certificate), the verifier that
//! accepts only a certificate naming that node whatever address was dialled,
//! and finding the names a refused certificate carried in a failed
//! connection's error chain.

use super::ClientError;
use ironclad_contract::tls;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    tls::provider()
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, ClientError> {
    Ok(tls::roots(ca_pem)?)
}

fn identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    Ok(tls::identity("client", cert_pem, key_pem)?)
}

/// The rustls client config for the API of the node called `node`: trust
/// `ca_pem` only, authenticate with `cert_pem` + `key_pem`, and accept only a
/// certificate that names `node` ([`NodeVerifier`]).
pub fn node_tls_config(
    node: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig, ClientError> {
    let verifier = NodeVerifier::new(node, ca_pem)?;
    let (certs, key) = identity(cert_pem, key_pem)?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(certs, key)
        .map_err(|e| ClientError::Setup(e.to_string()))
}

/// Verifies a node API's certificate as the node's, not as the address the
/// host dialled: the chain must lead to the OS CA (webpki, as usual) and the
/// certificate must carry the node's name as a DNS SAN. The dialled address
/// (`127.0.0.1`, a hostfwd port any local process could hold) is ignored.
#[derive(Debug)]
pub struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    node: ServerName<'static>,
}

impl NodeVerifier {
    /// A verifier for `node` trusting only the CAs of `ca_pem`.
    pub fn new(node: &str, ca_pem: &str) -> Result<Self, ClientError> {
        let node = ServerName::try_from(node.to_string())
            .ok()
            .filter(|n| matches!(n, ServerName::DnsName(_)))
            .ok_or_else(|| {
                ClientError::Setup(format!(
                    "node name {node:?} is not a DNS name a certificate can be checked against"
                ))
            })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
                .build()
                .map_err(|e| ClientError::Setup(format!("certificate verifier: {e}")))?;
        Ok(NodeVerifier { inner, node })
    }
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.node, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The names a refused certificate carried, when the error chain of a failed
/// connection says that the server's certificate does not name the node.
pub fn wrong_name_in(err: &(dyn std::error::Error + 'static)) -> Option<Vec<String>> {
    match rustls_error_in(err)? {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => Some(Vec::new()),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => Some(presented.iter().map(|p| plain_name(p)).collect()),
        _ => None,
    }
}

/// A name as rustls reports it (`DnsName("dev-cp-1")`, `IpAddress(10.5.0.2)`)
/// without the wrapping.
fn plain_name(reported: &str) -> String {
    reported
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .or_else(|| {
            reported
                .strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
        })
        .unwrap_or(reported)
        .to_string()
}

/// The first rustls error in `err`'s chain. An `io::Error`'s `source()` skips
/// the error it wraps (and reqwest's connector nests one in another), so
/// each is opened with `get_ref()` too.
pub(crate) fn rustls_error_in<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    if let Some(t) = err.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(t) = rustls_error_in(inner) {
            return Some(t);
        }
    }
    rustls_error_in(err.source()?)
}
