//! The checks the host runs itself, through the node API and TLS: CONF-01
//! (version and role), CONF-02 (etcd membership, health and a write read
//! back everywhere), CONF-05 (clocks) and API-04 (anonymous and foreign-CA
//! TLS). [`super::host_runner`] dispatches to them.

use super::{CLUSTER_NODE, CheckId, CheckResult, HostContext, Target, Verdict};
use crate::client::ServerDate;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The largest clock offset (node vs host, and between nodes) CONF-05 accepts.
/// The `Date` header has one-second resolution, so this is 1 s of real skew
/// plus the header's granularity.
pub const MAX_CLOCK_OFFSET_SECS: f64 = 2.0;

/// CONF-01: every node answers `version` with this build's version, its own
/// name and API v1, and its role shows: control planes run etcd, workers not.
pub(super) async fn conf01(ctx: &HostContext) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for t in &ctx.targets {
        let role = if t.control_plane {
            "control-plane"
        } else {
            "worker"
        };
        let (v, h) = futures::join!(t.client.version(), t.client.health());
        let (verdict, ev) = match (v, h) {
            (Ok(v), Ok(h)) => {
                let ok = v.version == crate::VERSION
                    && v.node == t.name
                    && v.api == "v1"
                    && h.etcd_bootstrapped == t.control_plane;
                (
                    Verdict::pass_if(ok),
                    vec![
                        format!(
                            "version {} (host {}), api {}, node {}",
                            v.version,
                            crate::VERSION,
                            v.api,
                            v.node
                        ),
                        format!(
                            "role {role}: etcd running = {} (expected {})",
                            h.etcd_bootstrapped, t.control_plane
                        ),
                    ],
                )
            }
            (Err(e), _) | (_, Err(e)) => (Verdict::Fail, vec![e.to_string()]),
        };
        out.push(CheckResult::new(
            CheckId::Conf01.as_str(),
            &t.name,
            verdict,
            ev,
        ));
    }
    out
}

/// CONF-02: every control plane is a voting member, etcd is up on all of
/// them, and a key written through one is read back through every one.
pub(super) async fn conf02(ctx: &HostContext) -> CheckResult {
    let cps: Vec<&Target> = ctx.targets.iter().filter(|t| t.control_plane).collect();
    let Some(first) = cps.first() else {
        return CheckResult::new(
            CheckId::Conf02.as_str(),
            CLUSTER_NODE,
            Verdict::skip("no control plane"),
            vec![],
        );
    };
    let mut ev = Vec::new();
    let mut ok = true;
    match first.client.etcd_members().await {
        Ok(m) => {
            let voting = m.members.iter().filter(|m| !m.is_learner).count();
            for t in &cps {
                if !m.members.iter().any(|m| m.name == t.name && !m.is_learner) {
                    ok = false;
                    ev.push(format!("{} is not a voting member", t.name));
                }
            }
            ev.push(format!(
                "{} members, {voting} voting, {} control planes",
                m.members.len(),
                cps.len()
            ));
        }
        Err(e) => {
            ok = false;
            ev.push(format!("members via {}: {e}", first.name));
        }
    }
    // etcd's own service, not the node's overall health: `ready` does not
    // wait for containerd, and this runs while the nodes' checks start.
    for t in &cps {
        let etcd = t.client.services().await.map(|l| {
            l.services
                .into_iter()
                .find(|s| s.name == ironclad_contract::services::ETCD)
                .map(|s| s.state)
        });
        match etcd {
            Ok(Some(crate::api::ServiceState::Running)) => {}
            Ok(Some(state)) => {
                ok = false;
                ev.push(format!("{}: etcd {state:?}", t.name));
            }
            Ok(None) => {
                ok = false;
                ev.push(format!("{}: no etcd service", t.name));
            }
            Err(e) => {
                ok = false;
                ev.push(format!("{}: {e}", t.name));
            }
        }
    }
    let key = format!("/ironclad/matrix/conf-02/{}", rand::random::<u32>());
    let value = format!("{:016x}", rand::random::<u64>());
    match first.client.etcd_put(&key, &value).await {
        Ok(_) => {
            for t in &cps {
                match t.client.etcd_get(&key).await {
                    Ok(kv) if kv.value.as_deref() == Some(value.as_str()) => {
                        ev.push(format!(
                            "{}: read back the value written on {}",
                            t.name, first.name
                        ));
                    }
                    Ok(kv) => {
                        ok = false;
                        ev.push(format!("{}: read {:?}, wrote {value:?}", t.name, kv.value));
                    }
                    Err(e) => {
                        ok = false;
                        ev.push(format!("{}: get: {e}", t.name));
                    }
                }
            }
        }
        Err(e) => {
            ok = false;
            ev.push(format!("put via {}: {e}", first.name));
        }
    }
    CheckResult::new(
        CheckId::Conf02.as_str(),
        CLUSTER_NODE,
        Verdict::pass_if(ok),
        ev,
    )
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s.trim(), &fmt).ok()?;
    Some(t.assume_utc().into())
}

/// A node's clock offset from the host's in seconds (positive: node ahead),
/// against the middle of the request's round trip: the node's clock in
/// milliseconds when its answer has it, else the middle of the `Date`
/// header's one-second window (half a second either way).
pub fn clock_offset(d: &ServerDate) -> Option<f64> {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let mid = (secs(d.sent) + secs(d.received)) / 2.0;
    if let Some(ms) = d.node_ms {
        return Some(ms as f64 / 1000.0 - mid);
    }
    let node = parse_http_date(d.date.as_deref()?)?;
    Some(secs(node) + 0.5 - mid)
}

/// CONF-05: each node's clock against the host's, and so against each other.
pub(super) async fn conf05(ctx: &HostContext) -> CheckResult {
    let mut ev = Vec::new();
    let mut offsets = Vec::new();
    let mut ok = true;
    for t in &ctx.targets {
        match t.client.server_date().await.map(|d| (clock_offset(&d), d)) {
            Ok((Some(o), _)) => {
                ev.push(format!("{}: {o:+.2}s against the host", t.name));
                offsets.push(o);
            }
            Ok((None, d)) => {
                ok = false;
                ev.push(format!("{}: no usable Date header ({:?})", t.name, d.date));
            }
            Err(e) => {
                ok = false;
                ev.push(format!("{}: {e}", t.name));
            }
        }
    }
    let worst = offsets.iter().fold(0.0f64, |a, o| a.max(o.abs()));
    let spread = offsets.iter().cloned().fold(f64::NAN, f64::max)
        - offsets.iter().cloned().fold(f64::NAN, f64::min);
    if !offsets.is_empty() {
        ev.insert(
            0,
            format!("largest offset {worst:.2}s, spread between nodes {:.2}s (limit {MAX_CLOCK_OFFSET_SECS}s)", if spread.is_nan() { 0.0 } else { spread }),
        );
    }
    let spread = if spread.is_nan() { 0.0 } else { spread };
    ok &= worst <= MAX_CLOCK_OFFSET_SECS && spread <= MAX_CLOCK_OFFSET_SECS;
    CheckResult::new(
        CheckId::Conf05.as_str(),
        CLUSTER_NODE,
        Verdict::pass_if(ok && !offsets.is_empty()),
        ev,
    )
}

/// What an unauthenticated TLS client got from the node API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anonymous {
    /// The handshake or the first read failed: refused.
    Refused(String),
    /// An HTTP answer came back (its status line).
    Answered(String),
    /// The answer could not be judged: what answered is not the node (its
    /// certificate does not name it), or the check could not be set up.
    /// Never counts as kept out.
    Unverified(String),
}

/// Connects to node `node` at `endpoint` (verifying, as every host client
/// does, that the certificate which answers is `node`'s), with `identity`
/// (cert, key) or no client certificate, sends `GET /v1/version` and reports
/// what happened. Only the node's own refusal counts as [`Anonymous::Refused`]:
/// a certificate that is not the node's, or a setup failure, is
/// [`Anonymous::Unverified`].
pub async fn anonymous_request(
    node: &str,
    endpoint: SocketAddr,
    os_ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Anonymous {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match crate::client::NodeVerifier::new(node, os_ca_pem) {
        Ok(v) => Arc::new(v),
        Err(e) => return Anonymous::Unverified(e.to_string()),
    };
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.dangerous().with_custom_certificate_verifier(verifier),
        Err(e) => return Anonymous::Unverified(format!("client setup: {e}")),
    };
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .flatten()
                .collect();
            let Ok(key) = PrivateKeyDer::from_pem_slice(key.as_bytes()) else {
                return Anonymous::Unverified("client setup: bad key".into());
            };
            match builder.with_client_auth_cert(certs, key) {
                Ok(c) => c,
                Err(e) => return Anonymous::Unverified(format!("client setup: {e}")),
            }
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(endpoint.ip().into());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(endpoint)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            // This client refused the server: nothing was learnt about the node.
            Err(e) if client_refused_server(&e) => {
                return Ok(Err(format!("handshake: {e}")));
            }
            Err(e) => return Err(format!("handshake: {e}")),
        };
        tls.write_all(b"GET /v1/version HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        match tls.read_to_end(&mut buf).await {
            Ok(_) if !buf.is_empty() => Ok(Ok(String::from_utf8_lossy(&buf)
                .lines()
                .next()
                .unwrap_or("")
                .to_string())),
            Ok(_) => Err("closed without an answer".to_string()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(Ok(status))) => Anonymous::Answered(status),
        Ok(Ok(Err(e))) => Anonymous::Unverified(e),
        Ok(Err(e)) => Anonymous::Refused(e),
        Err(_) => Anonymous::Refused("no answer within 10s".into()),
    }
}

/// Whether a failed handshake is this client refusing the server's
/// certificate (as opposed to the server refusing the client).
fn client_refused_server(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|t| matches!(t, rustls::Error::InvalidCertificate(_)))
}

/// Whether an anonymous attempt was kept out: refused at TLS, or a 401/403.
pub fn kept_out(a: &Anonymous) -> bool {
    match a {
        Anonymous::Refused(_) => true,
        Anonymous::Unverified(_) => false,
        Anonymous::Answered(status) => {
            let code = status.split_whitespace().nth(1).unwrap_or("");
            code == "401" || code == "403"
        }
    }
}

/// API-04 from the host: no client certificate, and a certificate from a
/// foreign CA claiming `os:admin`, must both be refused by every node.
pub(super) async fn api04(ctx: &HostContext) -> Vec<CheckResult> {
    let foreign = crate::pki::Ca::generate("ironclad-matrix-foreign-ca").and_then(|(ca, _)| {
        ca.issue_client("intruder", Some(crate::api::Role::Admin.organization()))
    });
    let mut out = Vec::new();
    for t in &ctx.targets {
        let none = anonymous_request(&t.name, t.endpoint, &ctx.os_ca_pem, None).await;
        let mut ev = vec![format!("no client certificate: {none:?}")];
        let mut ok = kept_out(&none);
        match &foreign {
            Ok(cert) => {
                let f = anonymous_request(
                    &t.name,
                    t.endpoint,
                    &ctx.os_ca_pem,
                    Some((&cert.cert_pem, &cert.key_pem)),
                )
                .await;
                ok &= kept_out(&f);
                ev.push(format!("foreign CA (os:admin): {f:?}"));
            }
            Err(e) => {
                ok = false;
                ev.push(format!("cannot make a foreign CA: {e}"));
            }
        }
        out.push(CheckResult::new(
            CheckId::Api04.as_str(),
            &t.name,
            Verdict::pass_if(ok),
            ev,
        ));
    }
    out
}
