//! `ironclad gen config` and `gen client-cert` end to end: the real binary on the
//! example cluster files, every chain checked with `openssl verify`, file modes,
//! what each node config holds and does not hold, and re-runs into the same dir.

use ironclad_host::machine::MachineConfig;
use ironclad_host::spec::Role;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CA_FILES: [&str; 8] = [
    "os-ca.crt",
    "os-ca.key",
    "etcd-ca.crt",
    "etcd-ca.key",
    "kubernetes-ca.crt",
    "kubernetes-ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ironclad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(args)
        .output()
        .expect("run ironclad")
}

fn gen_config(cluster_file: &Path, out: &Path) -> serde_json::Value {
    let out = ironclad(&[
        "gen",
        "config",
        "-f",
        cluster_file.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "gen config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `openssl verify -CAfile ca -purpose purpose` on a PEM leaf.
fn verify(ca: &Path, leaf_pem: &str, purpose: &str) {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.crt");
    fs::write(&leaf, leaf_pem).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg("-purpose")
        .arg(purpose)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl verify against {} ({purpose}) failed: {}{}",
        ca.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The base64 body of a PEM file, without armour and line breaks.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn check_generated(out: &Path, expected_nodes: &[(&str, Role)]) {
    let secrets = out.join("secrets");
    for d in [out, &secrets, &out.join("nodes")] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for entry in fs::read_dir(&secrets).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let want = if name.ends_with(".key") || name == "bootstrap-token" {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode(&p), want, "{name}");
    }
    let token = fs::read_to_string(secrets.join("bootstrap-token")).unwrap();
    let (id, secret) = token.trim_end().split_once('.').unwrap();
    assert!(id.len() == 6 && secret.len() == 16, "{token:?}");
    assert_eq!(mode(&out.join("admin.key")), 0o600);

    let os_ca = secrets.join("os-ca.crt");
    let etcd_ca = secrets.join("etcd-ca.crt");
    verify(
        &os_ca,
        &fs::read_to_string(out.join("admin.crt")).unwrap(),
        "sslclient",
    );

    // Every private key of the bundle, as it would appear inside a YAML block.
    let secret_bodies: Vec<(String, String)> = fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .map(|p| {
            (
                p.display().to_string(),
                pem_body(&fs::read_to_string(&p).unwrap()),
            )
        })
        .collect();
    assert_eq!(secret_bodies.len(), 5);

    for (name, role) in expected_nodes {
        let path = out.join("nodes").join(format!("{name}.yaml"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        let text = fs::read_to_string(&path).unwrap();
        let flat: String = text.split_whitespace().collect();
        for (key_file, body) in &secret_bodies {
            assert!(
                !flat.contains(body.as_str()),
                "{} contains the key of {key_file}",
                path.display()
            );
        }
        assert!(!text.contains(token.trim_end()), "token in {name}");
        let cfg = MachineConfig::from_yaml(&text).unwrap();
        assert_eq!(cfg.node.name, *name);
        assert_eq!(cfg.node.role, *role);
        assert_eq!(cfg.pki.os_ca, fs::read_to_string(&os_ca).unwrap());
        verify(&os_ca, &cfg.pki.api_cert, "sslserver");
        match role {
            Role::Worker => {
                assert!(cfg.pki.etcd.is_none() && cfg.etcd.is_none());
                assert!(!text.contains("etcd"), "{name} has etcd material");
            }
            Role::ControlPlane => {
                let e = cfg
                    .pki
                    .etcd
                    .as_ref()
                    .expect("etcd certs on a control plane");
                assert_eq!(e.ca, fs::read_to_string(&etcd_ca).unwrap());
                verify(&etcd_ca, &e.server_cert, "sslserver");
                verify(&etcd_ca, &e.peer_cert, "sslserver");
                verify(&etcd_ca, &e.peer_cert, "sslclient");
                verify(&etcd_ca, &e.client_cert, "sslclient");
                assert!(cfg.etcd.is_some());
            }
        }
    }
    let node_files = fs::read_dir(out.join("nodes")).unwrap().count();
    assert_eq!(node_files, expected_nodes.len());
}

#[test]
fn dev_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dev");
    let report = gen_config(&repo().join("clusters/dev.yaml"), &out);
    assert_eq!(report["cluster"], "dev");
    assert_eq!(report["secrets"]["created"].as_array().unwrap().len(), 11);
    check_generated(
        &out,
        &[
            ("dev-cp-1", Role::ControlPlane),
            ("dev-worker-1", Role::Worker),
        ],
    );
    let client = fs::read_to_string(out.join("client.yaml")).unwrap();
    assert!(client.contains("kind: ClientConfig"), "{client}");
    assert!(client.contains("cert: admin.crt"), "{client}");
}

#[test]
fn ha_cluster_rerun_keeps_cas_and_completes_what_was_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ha");
    let file = repo().join("clusters/ha.yaml");
    gen_config(&file, &out);
    let nodes = [
        ("ha-cp-1", Role::ControlPlane),
        ("ha-cp-2", Role::ControlPlane),
        ("ha-cp-3", Role::ControlPlane),
        ("ha-worker-1", Role::Worker),
        ("ha-worker-2", Role::Worker),
    ];
    check_generated(&out, &nodes);
    let secrets = out.join("secrets");
    let before = snapshot(&secrets);

    // A plain re-run changes no secret.
    let report = gen_config(&file, &out);
    assert!(report["secrets"]["created"].as_array().unwrap().is_empty());
    assert_eq!(report["adminKept"], true);
    assert_eq!(snapshot(&secrets), before);

    // Delete pieces: each is regenerated, the CAs stay byte for byte.
    for p in [
        secrets.join("sa.pub"),
        secrets.join("bootstrap-token"),
        secrets.join("front-proxy-ca.crt"),
        out.join("nodes/ha-worker-2.yaml"),
        out.join("admin.key"),
    ] {
        fs::remove_file(&p).unwrap();
    }
    let report = gen_config(&file, &out);
    assert_eq!(report["adminKept"], false);
    let after = snapshot(&secrets);
    for f in CA_FILES {
        if f != "front-proxy-ca.crt" {
            assert_eq!(after[f], before[f], "{f} changed");
        }
    }
    assert_eq!(after["sa.key"], before["sa.key"]);
    assert_eq!(after["sa.pub"], before["sa.pub"]);
    assert_ne!(after["bootstrap-token"], before["bootstrap-token"]);
    // The CA certificate was re-made for the same key: same public key.
    let pubkey = |pem: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.crt");
        fs::write(&p, pem).unwrap();
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(o.status.success());
        o.stdout
    };
    assert_eq!(
        pubkey(&after["front-proxy-ca.crt"]),
        pubkey(&before["front-proxy-ca.crt"])
    );
    check_generated(&out, &nodes);

    // A certificate without its key is refused, not replaced.
    fs::remove_file(secrets.join("etcd-ca.key")).unwrap();
    let o = ironclad(&[
        "gen",
        "config",
        "-f",
        file.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("etcd-ca.key"), "{err}");
    assert_eq!(
        fs::read(secrets.join("etcd-ca.crt")).unwrap(),
        before["etcd-ca.crt"]
    );
}

#[test]
fn client_cert_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("default");
    // No -f: the built-in default cluster.
    let o = ironclad(&["gen", "config", "--dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let secrets = out.join("secrets");
    let minted = tmp.path().join("minted");
    let o = ironclad(&[
        "gen",
        "client-cert",
        "--role",
        "reader",
        "--secrets",
        secrets.to_str().unwrap(),
        "--dir",
        minted.to_str().unwrap(),
        "--name",
        "alice",
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["organization"], "os:reader");
    let cert = fs::read_to_string(minted.join("alice.crt")).unwrap();
    verify(&secrets.join("os-ca.crt"), &cert, "sslclient");
    assert_eq!(mode(&minted.join("alice.key")), 0o600);
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(minted.join("alice.crt"))
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout);
    assert!(
        subject.contains("O = os:reader") && subject.contains("CN = alice"),
        "{subject}"
    );

    let bad = |args: &[&str], needle: &str| {
        let o = ironclad(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    let s = secrets.to_str().unwrap();
    let m = minted.to_str().unwrap();
    bad(
        &[
            "gen",
            "client-cert",
            "--role",
            "root",
            "--secrets",
            s,
            "--dir",
            m,
        ],
        "unknown client role",
    );
    let missing = tmp.path().join("nope");
    bad(
        &[
            "gen",
            "client-cert",
            "--role",
            "admin",
            "--secrets",
            missing.to_str().unwrap(),
            "--dir",
            m,
        ],
        "does not exist",
    );
    bad(
        &[
            "gen",
            "client-cert",
            "--role",
            "admin",
            "--secrets",
            s,
            "--dir",
            m,
            "--name",
            "../x",
        ],
        "--name",
    );
    let blocker = tmp.path().join("a-file");
    fs::write(&blocker, b"x").unwrap();
    let under_file = blocker.join("out");
    bad(
        &["gen", "config", "--dir", under_file.to_str().unwrap()],
        "a-file",
    );
    // A directory nobody can create, even root.
    bad(
        &["gen", "config", "--dir", "/proc/ironclad-gen-test"],
        "/proc/ironclad-gen-test",
    );
    let unwritable = tmp.path().join("ro");
    fs::create_dir(&unwritable).unwrap();
    fs::set_permissions(&unwritable, fs::Permissions::from_mode(0o500)).unwrap();
    // root ignores directory permissions; only check when they apply.
    if fs::write(unwritable.join("probe"), b"").is_err() {
        bad(
            &[
                "gen",
                "client-cert",
                "--role",
                "admin",
                "--secrets",
                s,
                "--dir",
                unwritable.to_str().unwrap(),
            ],
            "ro",
        );
    }
}

/// `-o` is the output format in every command; `gen`'s directory is
/// `--dir`/`-d`. The old spellings are refused with the new one.
#[test]
fn the_old_directory_spellings_are_refused_with_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = ironclad(&["gen", "config", "-o", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--dir/-d"), "{err}");
    let o = ironclad(&["gen", "config", "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--out is now --dir"), "{err}");
    assert!(!out.exists(), "nothing was written");
    let o = ironclad(&["gen", "config", "-d", out.to_str().unwrap(), "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.is_object(), "{v}");
}
