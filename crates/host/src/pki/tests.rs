use super::*;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::X509Certificate;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> Vec<u8> {
    cert::pem_to_der(pem, Path::new("test")).unwrap()
}

fn with_cert<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let d = der(pem);
    let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
    f(&x)
}

/// `openssl verify -CAfile ca leaf`, the reference every chain must pass.
fn openssl_verify(ca_pem: &str, leaf_pem: &str, purpose: Option<&str>) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let leaf = dir.path().join("leaf.crt");
    fs::write(&ca, ca_pem).unwrap();
    fs::write(&leaf, leaf_pem).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(&ca);
    if let Some(p) = purpose {
        cmd.arg("-purpose").arg(p);
    }
    let out = cmd.arg(&leaf).output().expect("openssl is installed");
    out.status.success()
}

#[test]
fn ensure_creates_everything_with_modes_then_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    let (secrets, report) = Secrets::ensure(&dir, "dev").unwrap();
    assert!(report.kept.is_empty());
    assert_eq!(report.created.len(), 11);
    assert_eq!(mode(&dir), 0o700);
    for kind in CaKind::ALL {
        assert_eq!(mode(&dir.join(kind.key_file())), 0o600, "{kind:?}");
        assert_eq!(mode(&dir.join(kind.cert_file())), 0o644, "{kind:?}");
    }
    assert_eq!(mode(&dir.join(SA_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(TOKEN_FILE)), 0o600);
    let token = fs::read_to_string(dir.join(TOKEN_FILE)).unwrap();
    assert!(
        token.trim_end().parse::<BootstrapToken>().is_ok(),
        "{token:?}"
    );
    assert_eq!(
        fs::read_to_string(dir.join(SA_PUB_FILE)).unwrap(),
        secrets.service_account.pub_pem
    );

    let before: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    let (again, report) = Secrets::ensure(&dir, "dev").unwrap();
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(report.kept.len(), 11);
    assert_eq!(again.os_ca.cert_pem(), secrets.os_ca.cert_pem());
    assert_eq!(again.bootstrap_token, secrets.bootstrap_token);
    let after: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(before, after);
    // A complete bundle loads read-only too.
    let loaded = Secrets::load(&dir).unwrap();
    assert_eq!(loaded.etcd_ca.cert_pem(), secrets.etcd_ca.cert_pem());
}

#[test]
fn lost_ca_cert_is_recreated_for_the_same_key_and_old_leaves_still_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    let (secrets, _) = Secrets::ensure(&dir, "dev").unwrap();
    fs::write(dir.join(TOKEN_FILE), "ABCDEF.0123456789abcdef\n").unwrap();
    let err = Secrets::ensure(&dir, "dev").unwrap_err();
    assert!(err.to_string().contains("bootstrap-token"), "{err}");
    let leaf = issue_client_cert(&secrets.os_ca, ClientRole::Admin, "admin").unwrap();
    let key_before = fs::read(dir.join("os-ca.key")).unwrap();
    fs::remove_file(dir.join("os-ca.crt")).unwrap();
    fs::remove_file(dir.join(TOKEN_FILE)).unwrap();
    let (again, report) = Secrets::ensure(&dir, "dev").unwrap();
    assert_eq!(
        report.created,
        vec![dir.join("os-ca.crt"), dir.join(TOKEN_FILE)]
    );
    assert_eq!(fs::read(dir.join("os-ca.key")).unwrap(), key_before);
    assert_ne!(again.bootstrap_token, secrets.bootstrap_token);
    assert!(openssl_verify(
        again.os_ca.cert_pem(),
        &leaf.cert_pem,
        Some("sslclient")
    ));
}

#[test]
fn cert_without_key_is_refused_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    Secrets::ensure(&dir, "dev").unwrap();
    let cert_before = fs::read(dir.join("etcd-ca.crt")).unwrap();
    fs::remove_file(dir.join("etcd-ca.key")).unwrap();
    let err = Secrets::ensure(&dir, "dev").unwrap_err();
    assert!(matches!(err, PkiError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains("etcd-ca.key"), "{err}");
    assert!(err.is_bad_input());
    assert_eq!(fs::read(dir.join("etcd-ca.crt")).unwrap(), cert_before);
    assert!(!dir.join("etcd-ca.key").exists());

    fs::remove_file(dir.join(SA_KEY_FILE)).unwrap();
    fs::write(dir.join("etcd-ca.key"), b"").unwrap();
    assert!(matches!(
        Secrets::ensure(&dir, "dev"),
        Err(PkiError::Corrupt { .. })
    ));
}

#[test]
fn corrupt_or_mismatched_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secrets");
    Secrets::ensure(&dir, "dev").unwrap();

    let key = dir.join("kubernetes-ca.key");
    let good = fs::read(&key).unwrap();
    fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
    let err = Secrets::ensure(&dir, "dev").unwrap_err();
    assert!(matches!(err, PkiError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("kubernetes-ca.key"), "{err}");
    fs::write(&key, &good).unwrap();

    let crt = dir.join("front-proxy-ca.crt");
    fs::write(&crt, [0xffu8, 0xfe, 0x00]).unwrap();
    let err = Secrets::ensure(&dir, "dev").unwrap_err();
    assert!(err.to_string().contains("front-proxy-ca.crt"), "{err}");
    fs::remove_file(&crt).unwrap();
    Secrets::ensure(&dir, "dev").unwrap();

    // The OS CA's key swapped for the etcd CA's.
    fs::copy(dir.join("etcd-ca.key"), dir.join("os-ca.key")).unwrap();
    let err = Secrets::ensure(&dir, "dev").unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("os-ca.crt"), "{err}");

    let err = Secrets::load(&dir).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
}

#[test]
fn missing_dir_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Secrets::load(&tmp.path().join("nope")).unwrap_err();
    assert!(matches!(err, PkiError::MissingDir { .. }), "{err}");
    let err = load_ca(&tmp.path().join("nope"), CaKind::Os).unwrap_err();
    assert!(err.is_bad_input());
    let err = load_ca(tmp.path(), CaKind::Os).unwrap_err();
    assert!(matches!(err, PkiError::Missing { .. }), "{err}");
}

#[test]
fn ca_profile() {
    let secrets = Secrets::generate("dev").unwrap();
    for kind in CaKind::ALL {
        with_cert(secrets.ca(kind).cert_pem(), |x| {
            assert!(x.is_ca());
            let bc = x.basic_constraints().unwrap().unwrap().value;
            assert_eq!(bc.path_len_constraint, Some(0));
            let ku = x.key_usage().unwrap().unwrap().value;
            assert!(ku.key_cert_sign() && ku.crl_sign());
            let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
            assert!((3649 * 86400..=3651 * 86400).contains(&life), "{life}");
            assert_eq!(
                x.subject()
                    .iter_common_name()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap(),
                format!("dev {}", kind.stem())
            );
            // ECDSA P-256 (OID 1.2.840.10045.3.1.7 as the curve parameter).
            assert_eq!(
                x.public_key().algorithm.algorithm.to_id_string(),
                "1.2.840.10045.2.1"
            );
        });
    }
    assert!(
        secrets
            .service_account
            .pub_pem
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
}

#[test]
fn server_leaf_has_sans_ekus_and_verifies() {
    let secrets = Secrets::generate("dev").unwrap();
    let ip = Ipv4Addr::new(10, 5, 0, 2);
    let leaf = secrets
        .etcd_ca
        .issue_server(
            "dev-cp-1",
            &["dev-cp-1", "localhost"],
            &[ip, Ipv4Addr::LOCALHOST],
            true,
        )
        .unwrap();
    assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    with_cert(&leaf.cert_pem, |x| {
        assert!(!x.is_ca());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let sans = x.subject_alternative_name().unwrap().unwrap().value;
        let mut dns = vec![];
        let mut ips = vec![];
        for n in &sans.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(b.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["dev-cp-1", "localhost"]);
        assert_eq!(ips, [vec![10, 5, 0, 2], vec![127, 0, 0, 1]]);
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert!((364 * 86400..=366 * 86400).contains(&life), "{life}");
        assert!(x.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));
    });
    assert!(openssl_verify(
        secrets.etcd_ca.cert_pem(),
        &leaf.cert_pem,
        Some("sslserver")
    ));
    assert!(openssl_verify(
        secrets.etcd_ca.cert_pem(),
        &leaf.cert_pem,
        Some("sslclient")
    ));
    // Signed by the etcd CA, not by the OS CA.
    assert!(!openssl_verify(
        secrets.os_ca.cert_pem(),
        &leaf.cert_pem,
        None
    ));
    assert!(secrets.etcd_ca.issued(&leaf.cert_pem, Some(&leaf.key_pem)));
    assert!(!secrets.os_ca.issued(&leaf.cert_pem, None));

    let api_only = secrets
        .os_ca
        .issue_server("dev-cp-1", &["dev-cp-1"], &[ip], false)
        .unwrap();
    with_cert(&api_only.cert_pem, |x| {
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
    });
}

#[test]
fn node_api_leaf_names_only_its_node() {
    let secrets = Secrets::generate("dev").unwrap();
    let leaf = secrets
        .os_ca
        .issue_node_api("dev-worker-1", Ipv4Addr::new(10, 5, 0, 3))
        .unwrap();
    with_cert(&leaf.cert_pem, |x| {
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans = &x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            sans,
            &[
                GeneralName::DNSName("dev-worker-1"),
                GeneralName::IPAddress(&[10, 5, 0, 3]),
            ],
            "the node's name and cluster address, no loopback"
        );
    });
    assert!(openssl_verify(
        secrets.os_ca.cert_pem(),
        &leaf.cert_pem,
        Some("sslserver")
    ));
}

/// Every 16-character piece of `key_pem`'s base64 that is secret (in no
/// certificate of `public`: a PKCS#8 key embeds its public key, and starts
/// with a header every P-256 key shares).
fn secret_pieces(key_pem: &str, public: &[&str]) -> Vec<String> {
    let public = public.concat().replace('\n', "");
    let header = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
    let mut out = Vec::new();
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        let line = line.strip_prefix(header).unwrap_or(line);
        for w in line.as_bytes().windows(16) {
            let w = std::str::from_utf8(w).unwrap();
            if !public.contains(w) {
                out.push(w.to_string());
            }
        }
    }
    assert!(
        out.len() >= 8,
        "a key has a secret part: {} of\n{key_pem}",
        out.len()
    );
    out
}

#[test]
fn debug_redacts_every_private_key() {
    let secrets = Secrets::generate("dev").unwrap();
    let leaf = secrets
        .os_ca
        .issue_node_api("dev-cp-1", Ipv4Addr::new(10, 5, 0, 2))
        .unwrap();
    let mut pieces = Vec::new();
    let cas: Vec<&str> = CaKind::ALL
        .iter()
        .map(|k| secrets.ca(*k).cert_pem())
        .collect();
    for kind in CaKind::ALL {
        pieces.extend(secret_pieces(&secrets.ca(kind).key_pem(), &cas));
    }
    pieces.extend(secret_pieces(
        secrets.service_account.key_pem(),
        &[&secrets.service_account.pub_pem],
    ));
    pieces.extend(secret_pieces(&leaf.key_pem, &[&leaf.cert_pem]));
    let token = secrets.bootstrap_token.expose().to_string();
    let secret_half = token.split_once('.').unwrap().1.to_string();
    for (what, text) in [
        ("Secrets", format!("{secrets:?}")),
        ("Secrets {:#?}", format!("{secrets:#?}")),
        ("Ca", format!("{:?}", secrets.os_ca)),
        (
            "ServiceAccountKey",
            format!("{:?}", secrets.service_account),
        ),
        ("BootstrapToken", format!("{:?}", secrets.bootstrap_token)),
        ("IssuedCert", format!("{leaf:?}")),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "{what}: {text}");
        for p in &pieces {
            assert!(!text.contains(p.as_str()), "{what} prints key bytes {p:?}");
        }
        assert!(!text.contains(&secret_half), "{what} prints the token");
    }
    // Not empty either: the public parts are there.
    assert!(format!("{secrets:?}").contains("BEGIN CERTIFICATE"));
    assert!(format!("{leaf:?}").contains("[redacted]"));
}

#[test]
fn client_leaf_carries_role_and_cn() {
    let secrets = Secrets::generate("dev").unwrap();
    let leaf = issue_client_cert(&secrets.os_ca, ClientRole::Reader, "alice").unwrap();
    with_cert(&leaf.cert_pem, |x| {
        let org = x.subject().iter_organization().next().unwrap();
        assert_eq!(
            ClientRole::from_organization(org.as_str().unwrap()),
            Some(ClientRole::Reader)
        );
        let cn = x.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "alice");
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    });
    assert!(openssl_verify(
        secrets.os_ca.cert_pem(),
        &leaf.cert_pem,
        Some("sslclient")
    ));
    assert!(!openssl_verify(
        secrets.os_ca.cert_pem(),
        &leaf.cert_pem,
        Some("sslserver")
    ));
    let other = issue_client_cert(&secrets.os_ca, ClientRole::Admin, "bob").unwrap();
    assert!(!secrets.os_ca.issued(&leaf.cert_pem, Some(&other.key_pem)));
}

#[test]
fn roles_and_tokens_parse() {
    assert_eq!("admin".parse::<ClientRole>().unwrap(), ClientRole::Admin);
    assert_eq!(
        "os:reader".parse::<ClientRole>().unwrap(),
        ClientRole::Reader
    );
    assert!(matches!(
        "root".parse::<ClientRole>(),
        Err(ironclad_contract::role::UnknownRole(_))
    ));
    for _ in 0..50 {
        let t = BootstrapToken::generate();
        assert_eq!(t.expose().parse::<BootstrapToken>().unwrap(), t);
        assert_eq!(t.id().len(), 6);
        assert!(!format!("{t:?}").contains(&t.expose()[7..]));
    }
    for bad in [
        "abcdef0123456789abcdef",
        "abcde.0123456789abcdef",
        "abcdef.0123456789abcdeF",
        "abcdef.0123456789abcde",
        "abcdef.0123456789abcdef.",
        "",
    ] {
        assert!(bad.parse::<BootstrapToken>().is_err(), "{bad}");
    }
}
