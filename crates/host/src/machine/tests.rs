use super::*;
use crate::pki::CaKind;
use crate::spec::{default_cluster, parse_cluster};
use std::collections::HashSet;
use std::process::Command;

const HA: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: ha}
spec:
  network: {cidr: 10.6.0.0/24, egress: true}
  controlPlanes: {count: 3}
  workers: {count: 2}
  runtimes: {gvisor: false, userNamespaces: false}
";

fn openssl_verify(ca_pem: &str, leaf_pem: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let leaf = dir.path().join("leaf.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&leaf)
        .output()
        .expect("openssl is installed")
        .status
        .success()
}

/// Every private key of the bundle that must never reach a node.
fn bundle_private_keys(secrets: &Secrets) -> Vec<String> {
    let mut keys: Vec<String> = CaKind::ALL
        .iter()
        .map(|k| secrets.ca(*k).key_pem())
        .collect();
    keys.push(secrets.service_account.key_pem().to_string());
    keys.push(secrets.bootstrap_token.expose().to_string());
    keys
}

/// The default cluster and a fresh secrets bundle made for it.
fn default_cluster_and_secrets() -> (Cluster, Secrets) {
    let cluster = default_cluster();
    let secrets = Secrets::generate(cluster.name.as_str()).unwrap();
    (cluster, secrets)
}

/// The machine config of the default cluster's first node of `role`,
/// rendered with fresh secrets.
fn rendered(role: Role) -> MachineConfig {
    let (cluster, secrets) = default_cluster_and_secrets();
    let node = cluster.nodes.iter().find(|n| n.role == role).unwrap();
    render(&cluster, node, &secrets).unwrap()
}

#[test]
fn control_plane_and_worker_get_what_they_need_and_no_more() {
    let (cluster, secrets) = default_cluster_and_secrets();
    let cp = cluster.control_planes().next().unwrap();
    let worker = cluster.workers().next().unwrap();

    let cp_cfg = render(&cluster, cp, &secrets).unwrap();
    let w_cfg = render(&cluster, worker, &secrets).unwrap();
    for cfg in [&cp_cfg, &w_cfg] {
        let yaml = cfg.to_yaml().unwrap();
        // Round trip through the strict parser.
        assert_eq!(&MachineConfig::from_yaml(&yaml).unwrap(), cfg);
        for secret in bundle_private_keys(&secrets) {
            assert!(!yaml.contains(secret.trim()), "a bundle secret leaked");
        }
        assert!(yaml.starts_with("apiVersion: ironclad.dev/v1alpha1\nkind: MachineConfig\n"));
        assert_eq!(cfg.pki.os_ca, secrets.os_ca.cert_pem());
        assert!(openssl_verify(secrets.os_ca.cert_pem(), &cfg.pki.api_cert));
        assert!(
            secrets
                .os_ca
                .issued(&cfg.pki.api_cert, Some(&cfg.pki.api_key))
        );
        assert_eq!(cfg.cluster.members.len(), cluster.nodes.len());
        assert_eq!(cfg.containerd.runtimes, ["runc", "crun", "runsc"]);
        assert!(cfg.containerd.user_namespaces);
    }

    assert_eq!(cp_cfg.node.role, Role::ControlPlane);
    let etcd = cp_cfg.pki.etcd.as_ref().unwrap();
    assert_eq!(etcd.ca, secrets.etcd_ca.cert_pem());
    for (cert, key) in [
        (&etcd.server_cert, &etcd.server_key),
        (&etcd.peer_cert, &etcd.peer_key),
        (&etcd.client_cert, &etcd.client_key),
    ] {
        assert!(openssl_verify(&etcd.ca, cert));
        assert!(secrets.etcd_ca.issued(cert, Some(key)));
    }
    let settings = cp_cfg.etcd.as_ref().unwrap();
    assert_eq!(settings.member_name, cp.name.as_str());
    assert_eq!(settings.bootstrap_node, cp.name.as_str());

    assert_eq!(w_cfg.node.role, Role::Worker);
    assert!(w_cfg.pki.etcd.is_none() && w_cfg.etcd.is_none());
    let w_yaml = w_cfg.to_yaml().unwrap();
    assert!(!w_yaml.contains("etcd"), "{w_yaml}");
    assert!(!w_yaml.contains(secrets.etcd_ca.cert_pem().trim()));
}

#[test]
fn ha_cluster_renders_members_macs_and_runtimes() {
    let cluster = parse_cluster(HA, "ha.yaml").unwrap();
    let secrets = Secrets::generate("ha").unwrap();
    let configs: Vec<MachineConfig> = cluster
        .nodes
        .iter()
        .map(|n| render(&cluster, n, &secrets).unwrap())
        .collect();
    assert_eq!(configs.len(), 5);
    let mut macs = HashSet::new();
    for (i, cfg) in configs.iter().enumerate() {
        let node = &cluster.nodes[i];
        assert_eq!(cfg.node.name, node.name.as_str());
        assert_eq!(cfg.node.address, node.address);
        assert_eq!(cfg.cluster.cidr.to_string(), "10.6.0.0/24");
        assert!(cfg.cluster.egress);
        assert_eq!(cfg.containerd.runtimes, ["runc", "crun"]);
        assert!(!cfg.containerd.user_namespaces);
        assert_eq!(cfg.etcd.is_some(), node.role == Role::ControlPlane);
        if let Some(e) = &cfg.etcd {
            assert_eq!(e.bootstrap_node, "ha-cp-1");
        }
        assert!(macs.insert(cfg.node.cluster_mac.clone()));
        assert!(macs.insert(cfg.node.user_mac.clone()));
        // Re-rendering keeps the MACs (the certificates are fresh).
        let again = render(&cluster, node, &secrets).unwrap();
        assert_eq!(again.node, cfg.node);
        assert_ne!(again.pki.api_key, cfg.pki.api_key);
    }
    assert_eq!(
        configs[0]
            .cluster
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.role, m.address.to_string()))
            .collect::<Vec<_>>(),
        [
            ("ha-cp-1", Role::ControlPlane, "10.6.0.2".to_string()),
            ("ha-cp-2", Role::ControlPlane, "10.6.0.3".to_string()),
            ("ha-cp-3", Role::ControlPlane, "10.6.0.4".to_string()),
            ("ha-worker-1", Role::Worker, "10.6.0.5".to_string()),
            ("ha-worker-2", Role::Worker, "10.6.0.6".to_string()),
        ]
    );
}

#[test]
fn node_outside_the_cluster_is_refused() {
    let cluster = default_cluster();
    let other = parse_cluster(HA, "ha.yaml").unwrap();
    let secrets = Secrets::generate("x").unwrap();
    let err = render(&cluster, &other.nodes[0], &secrets).unwrap_err();
    assert!(matches!(err, RenderError::UnknownNode(..)), "{err}");
}

#[test]
fn macs_are_local_unicast_distinct_and_stable() {
    let mut seen = HashSet::new();
    for i in 0..300 {
        let m = node_macs("dev", i).unwrap();
        for mac in [&m.cluster, &m.user] {
            let bytes: Vec<u8> = mac
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            assert_eq!(bytes.len(), 6, "{mac}");
            assert_eq!(bytes[0] & 0b11, 0b10, "{mac} must be local unicast");
            assert!(seen.insert(mac.clone()), "{mac} repeated");
        }
        assert_eq!(node_macs("dev", i).unwrap(), m);
    }
    assert_ne!(node_macs("dev", 0).unwrap(), node_macs("ha", 0).unwrap());
    assert_eq!(node_macs("dev", 1).unwrap().cluster[..2], *"02");
    assert!(matches!(
        node_macs("dev", 70_000),
        Err(RenderError::IndexTooLarge(_))
    ));
}

#[test]
fn strict_parse_refuses_unknown_fields_and_wrong_kind() {
    let cfg = rendered(Role::Worker);
    let yaml = cfg.to_yaml().unwrap();
    let extra = yaml.replace("kind: MachineConfig\n", "kind: MachineConfig\nbogus: 1\n");
    assert!(matches!(
        MachineConfig::from_yaml(&extra),
        Err(MachineConfigError::Parse(_))
    ));
    let kind = yaml.replace("kind: MachineConfig", "kind: Cluster");
    assert!(matches!(
        MachineConfig::from_yaml(&kind),
        Err(MachineConfigError::Kind(_))
    ));
}

#[test]
fn document_shape() {
    let yaml = rendered(Role::Worker).to_yaml().unwrap();
    let top: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.starts_with([' ', '-']) && l.contains(':'))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        top,
        [
            "apiVersion",
            "kind",
            "cluster",
            "node",
            "pki",
            "containerd",
            "sysctls"
        ]
    );
    for key in [
        "  name: ",
        "  cidr: 10.5.0.0/24",
        "  egress: false",
        "  members:",
        "  clusterMac: 02:",
        "  userMac: 06:",
        "  osCa: |",
        "  apiCert: |",
        "  apiKey: |",
        "  runtimes:",
        "  userNamespaces: true",
    ] {
        assert!(yaml.contains(key), "{key:?} missing from\n{yaml}");
    }
}

/// In-memory TLS between a rustls client and server (what apid and the CLI
/// use), with client certificates required and checked against `client_ca`.
mod tls {
    use rustls::client::ClientConfig;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::{ServerConfig, WebPkiClientVerifier};
    use rustls::{ClientConnection, RootCertStore, ServerConnection};
    use std::sync::Arc;

    type AnyError = Box<dyn std::error::Error>;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, AnyError> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
        Ok(Arc::new(roots))
    }

    fn identity(
        cert: &str,
        key: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AnyError> {
        Ok((
            vec![CertificateDer::from_pem_slice(cert.as_bytes())?],
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        ))
    }

    /// Runs a full handshake; `Ok` only if both sides accept each other.
    pub fn handshake(
        server: (&str, &str, &str),
        client: (&str, &str, &str),
        server_name: &str,
    ) -> Result<(), AnyError> {
        let (client_ca, server_cert, server_key) = server;
        let (server_ca, client_cert, client_key) = client;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider()).build()?;
        let (chain, key) = identity(server_cert, server_key)?;
        let scfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        let (chain, key) = identity(client_cert, client_key)?;
        let ccfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(server_ca)?)
            .with_client_auth_cert(chain, key)?;
        let mut c = ClientConnection::new(
            Arc::new(ccfg),
            ServerName::try_from(server_name.to_string())?,
        )?;
        let mut s = ServerConnection::new(Arc::new(scfg))?;
        for _ in 0..16 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf)?;
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd)?;
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf)?;
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd)?;
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() {
                return match s.peer_certificates() {
                    Some(certs) if !certs.is_empty() => Ok(()),
                    _ => Err("server saw no client certificate".into()),
                };
            }
        }
        Err("handshake did not finish".into())
    }
}

#[test]
fn rustls_accepts_the_rendered_certificates() {
    let (cluster, secrets) = default_cluster_and_secrets();
    let admin =
        crate::pki::issue_client_cert(&secrets.os_ca, crate::pki::ClientRole::Admin, "admin")
            .unwrap();
    let os_ca = secrets.os_ca.cert_pem();
    for node in &cluster.nodes {
        let cfg = render(&cluster, node, &secrets).unwrap();
        let server = (os_ca, cfg.pki.api_cert.as_str(), cfg.pki.api_key.as_str());
        let client = (
            cfg.pki.os_ca.as_str(),
            admin.cert_pem.as_str(),
            admin.key_pem.as_str(),
        );
        // The host checks the node's name (whatever port it dialled on
        // 127.0.0.1); peers may use the cluster address.
        for name in [node.name.as_str(), &node.address.to_string()] {
            tls::handshake(server, client, name).unwrap();
        }
        // No name every node would share: a loopback name or address, or
        // another node's name, is refused.
        let others: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.name != node.name)
            .flat_map(|n| [n.name.to_string(), n.address.to_string()])
            .collect();
        assert!(!others.is_empty());
        for name in ["127.0.0.1", "localhost", "10.9.9.9"]
            .into_iter()
            .chain(others.iter().map(String::as_str))
        {
            assert!(
                tls::handshake(server, client, name).is_err(),
                "{}'s API certificate accepted for {name}",
                node.name
            );
        }

        if let Some(e) = &cfg.pki.etcd {
            let server = (e.ca.as_str(), e.server_cert.as_str(), e.server_key.as_str());
            let client = (e.ca.as_str(), e.client_cert.as_str(), e.client_key.as_str());
            tls::handshake(server, client, "127.0.0.1").unwrap();
            // Peers authenticate each other with the peer certificate.
            let peer = (e.ca.as_str(), e.peer_cert.as_str(), e.peer_key.as_str());
            tls::handshake(peer, peer, &node.address.to_string()).unwrap();
            // An API client certificate is not an etcd client.
            let wrong = (
                e.ca.as_str(),
                admin.cert_pem.as_str(),
                admin.key_pem.as_str(),
            );
            assert!(tls::handshake(server, wrong, "127.0.0.1").is_err());
        }
    }
    // A client certificate from another cluster's OS CA is refused.
    let other = Secrets::generate("other").unwrap();
    let stranger =
        crate::pki::issue_client_cert(&other.os_ca, crate::pki::ClientRole::Admin, "admin")
            .unwrap();
    let cfg = render(&cluster, &cluster.nodes[0], &secrets).unwrap();
    assert!(
        tls::handshake(
            (os_ca, &cfg.pki.api_cert, &cfg.pki.api_key),
            (os_ca, &stranger.cert_pem, &stranger.key_pem),
            cluster.nodes[0].name.as_str()
        )
        .is_err()
    );
}

/// Every 16-character piece of the base64 of `cfg`'s private keys that is
/// secret: found in no certificate of `cfg` (a PKCS#8 key embeds its public
/// key, which the certificate carries too, and starts with a header every
/// P-256 key shares).
fn key_lines(cfg: &MachineConfig) -> Vec<String> {
    let mut keys = vec![cfg.pki.api_key.clone()];
    let mut public = vec![cfg.pki.os_ca.clone(), cfg.pki.api_cert.clone()];
    if let Some(e) = &cfg.pki.etcd {
        keys.extend([
            e.server_key.clone(),
            e.peer_key.clone(),
            e.client_key.clone(),
        ]);
        public.extend([
            e.ca.clone(),
            e.server_cert.clone(),
            e.peer_cert.clone(),
            e.client_cert.clone(),
        ]);
    }
    let public = public.concat().replace('\n', "");
    let header = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
    let mut out = Vec::new();
    for k in &keys {
        for line in k.lines().filter(|l| !l.starts_with("-----")) {
            let line = line.strip_prefix(header).unwrap_or(line);
            for w in line.as_bytes().windows(16) {
                let w = std::str::from_utf8(w).unwrap();
                if !public.contains(w) {
                    out.push(w.to_string());
                }
            }
        }
    }
    out
}

fn assert_no_key(what: &str, text: &str, pieces: &[String]) {
    assert!(
        !text.contains("PRIVATE KEY"),
        "{what} prints a key:\n{text}"
    );
    for p in pieces {
        assert!(!text.contains(p.as_str()), "{what} prints key bytes {p:?}");
    }
}

/// `err` is a parse error that gives its line and column (and `path`, when
/// given, in its text as well) and quotes none of `key_lines`, neither in
/// its message nor in its Debug form (what a log of it would print).
/// Returns its line.
fn assert_parse_error_placed_and_quotes_no_key(
    what: &str,
    err: &MachineConfigError,
    path: Option<&str>,
    key_lines: &[String],
) -> u64 {
    let MachineConfigError::Parse(p) = err else {
        panic!("{what}: not a parse error: {err}");
    };
    let text = err.to_string();
    assert_no_key(what, &text, key_lines);
    assert_no_key(what, &format!("{err:?}"), key_lines);
    let (Some(line), Some(_)) = (p.line, p.column) else {
        panic!("{what}: no line or column in {text:?}");
    };
    assert!(text.contains(&format!("line {line}")), "{what}: {text}");
    if let Some(path) = path {
        assert_eq!(p.path.as_deref(), Some(path), "{what}: {text}");
        assert!(
            text.contains(&format!(" at {path} (line ")),
            "{what}: {text}"
        );
    }
    line
}

#[test]
fn debug_redacts_every_private_key() {
    let cp = rendered(Role::ControlPlane);
    let lines = key_lines(&cp);
    assert!(lines.len() >= 4 * 8, "four keys, each with a secret part");
    let etcd = cp.pki.etcd.as_ref().unwrap();
    for (what, text) in [
        ("MachineConfig", format!("{cp:?}")),
        ("MachineConfig {:#?}", format!("{cp:#?}")),
        ("NodePki", format!("{:?}", cp.pki)),
        ("EtcdPki", format!("{etcd:?}")),
        (
            "Action::ApplyConfig",
            format!(
                "{:?}",
                crate::api::Action::ApplyConfig(Box::new(cp.clone()))
            ),
        ),
        (
            "ApplyConfigRequest",
            format!(
                "{:?}",
                crate::api::ApplyConfigRequest {
                    config: cp.to_yaml().unwrap()
                }
            ),
        ),
    ] {
        assert_no_key(what, &text, &lines);
        assert!(
            text.contains("[redacted]") || what == "ApplyConfigRequest",
            "{what}: {text}"
        );
    }
    // What is not secret is still shown (a useful Debug, not an empty one).
    assert!(format!("{cp:?}").contains("BEGIN CERTIFICATE"));
    assert!(format!("{cp:?}").contains(cp.node.name.as_str()));
}

/// A rendered document with `apiKey`'s block replaced by `replacement`
/// (the lines after `  apiKey: |` that are indented by four spaces).
fn with_api_key_block(yaml: &str, replacement: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in yaml.lines() {
        if line == "  apiKey: |" {
            out.push_str(replacement);
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("    ") {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn parse_errors_quote_no_document_text() {
    let cfg = rendered(Role::Worker);
    let yaml = cfg.to_yaml().unwrap();
    let key = cfg.pki.api_key.clone();
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let lines = key_lines(&cfg);

    // Malformed key fields, each of which makes the parser's own message
    // quote the key: its header lost (the body left as an unknown field),
    // the key as a number-looking scalar of the wrong type, as a map key.
    let broken_indent = {
        let mut seen = 0;
        yaml.lines()
            .map(|l| {
                if l.starts_with("    ") && body.iter().any(|b| l.trim() == *b) {
                    seen += 1;
                    if seen == 2 {
                        return format!(" {}\n", l.trim());
                    }
                }
                format!("{l}\n")
            })
            .collect::<String>()
    };
    let cases = [
        (
            "a key line left as a field",
            with_api_key_block(&yaml, &format!("  {}: x\n", body[0])),
            Some("pki.?"),
        ),
        (
            "the key where a list belongs",
            yaml.replace(
                "  runtimes:\n",
                &format!("  runtimes: {}\n  bogus:\n", body[1]),
            ),
            Some("containerd.runtimes"),
        ),
        (
            "the key where a boolean belongs",
            yaml.replace("  egress: false", &format!("  egress: {}", body[0])),
            Some("cluster.egress"),
        ),
        ("a broken indentation in the key block", broken_indent, None),
    ];
    for (what, doc, path) in cases {
        // The parser's own message quotes the document: what the fix is for.
        let raw = serde_saphyr::from_str::<MachineConfig>(&doc)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            lines.iter().any(|l| raw.contains(l.as_str())),
            "{what}: the raw parser error does not quote the key, the case tests nothing:\n{raw}"
        );

        let err = MachineConfig::from_yaml(&doc).unwrap_err();
        let line = assert_parse_error_placed_and_quotes_no_key(what, &err, path, &lines);
        assert!(line > 1, "{what}: {err}");
    }

    // A field of the schema that is missing is named; a wrong apiVersion is
    // shown only when it looks like one.
    let missing = with_api_key_block(&yaml, "");
    let err = MachineConfig::from_yaml(&missing).unwrap_err().to_string();
    assert!(err.contains("missing field"), "{err}");
    let version = yaml.replace(crate::API_VERSION, "ironclad.dev/v9");
    let err = MachineConfig::from_yaml(&version).unwrap_err().to_string();
    assert!(err.contains("\"ironclad.dev/v9\""), "{err}");
    let version = yaml.replace(crate::API_VERSION, body[0]);
    let err = MachineConfig::from_yaml(&version).unwrap_err();
    assert!(matches!(err, MachineConfigError::Version(_)), "{err}");
    assert_no_key("apiVersion", &err.to_string(), &lines);
}

#[test]
fn json_document_reads_like_the_yaml_and_its_errors_quote_no_document_text() {
    // The control plane: its document holds the etcd keys too.
    let cfg = rendered(Role::ControlPlane);
    let json = cfg.to_json().unwrap();
    let yaml = cfg.to_yaml().unwrap();
    assert_eq!(MachineConfig::from_json(&json).unwrap(), cfg);
    assert_eq!(MachineConfig::from_document(&json).unwrap(), cfg);
    assert_eq!(
        MachineConfig::from_document(&format!("\n  {json}\n")).unwrap(),
        cfg
    );
    assert_eq!(MachineConfig::from_document(&yaml).unwrap(), cfg);

    let key = cfg.pki.api_key.clone();
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let lines = key_lines(&cfg);
    let cases = [
        (
            "a key line as an unknown field",
            json.replacen("\"pki\":{", &format!("\"pki\":{{\"{}\":1,", body[0]), 1),
            Some("pki.?"),
            true,
        ),
        (
            "the key where a boolean belongs",
            json.replacen(
                "\"egress\":false",
                &format!("\"egress\":\"{}\"", body[1]),
                1,
            ),
            Some("cluster.egress"),
            true,
        ),
        (
            "key text after the document",
            format!("{json}\n{}", body[0]),
            None,
            false,
        ),
        (
            "a document cut short",
            json[..json.len() / 2].to_string(),
            None,
            false,
        ),
    ];
    for (what, doc, path, quoted) in cases {
        let raw = serde_json::from_str::<MachineConfig>(&doc)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!raw.is_empty(), "{what}: the document parsed");
        if quoted {
            assert!(
                lines.iter().any(|l| raw.contains(l.as_str())),
                "{what}: the raw parser error does not quote the key, the case tests nothing:\n{raw}"
            );
        }
        let err = MachineConfig::from_document(&doc).unwrap_err();
        assert_parse_error_placed_and_quotes_no_key(what, &err, path, &lines);
    }
    let kind = json.replacen("\"kind\":\"MachineConfig\"", "\"kind\":\"Cluster\"", 1);
    assert!(matches!(
        MachineConfig::from_document(&kind),
        Err(MachineConfigError::Kind(_))
    ));
}

#[test]
fn schema_keys_cover_every_field_of_the_document() {
    // Every key a rendered document has (but sysctl names) is in SCHEMA_KEYS,
    // so an error path names it instead of `?`.
    let mut cfg = rendered(Role::ControlPlane);
    cfg.sysctls.insert("vm.swappiness".into(), "1".into());
    fn walk(v: &serde_json::Value, under_sysctls: bool, missing: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if !under_sysctls && !SCHEMA_KEYS.contains(&k.as_str()) {
                        missing.push(k.clone());
                    }
                    walk(v, k == "sysctls", missing);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, false, missing)),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    walk(&serde_json::to_value(&cfg).unwrap(), false, &mut missing);
    assert!(missing.is_empty(), "add to SCHEMA_KEYS: {missing:?}");
}
