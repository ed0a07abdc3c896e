//! A bundle of a cluster that does not run: a real PKI and real machine
//! configs in its state dir, a secret leaked into a log. No VM: the bundle
//! of a running cluster is tested end to end (`tests/e2e`).

use super::*;
use crate::spec::parse_cluster_file;

fn read_bundle(file: &Path) -> Vec<(String, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap());
    let mut ar = tar::Archive::new(gz);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((e.path().unwrap().display().to_string(), data));
    }
    out
}

#[test]
fn a_stopped_clusters_bundle_has_its_files_and_no_secret() {
    let root = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cluster = parse_cluster_file(&repo.join("clusters/dev.yaml")).unwrap();
    let name = cluster.name.clone();
    let paths = ClusterPaths::new(root.path(), &name);
    paths.claim(&name).unwrap();
    crate::configdir::generate(&cluster, paths.dir()).unwrap();
    std::fs::copy(repo.join("clusters/dev.yaml"), paths.cluster_yaml()).unwrap();
    // A log that leaked the OS CA's key and the bootstrap token.
    let secrets = paths.dir().join("secrets");
    let ca_key = std::fs::read_to_string(secrets.join("os-ca.key")).unwrap();
    let token = std::fs::read_to_string(secrets.join(crate::pki::TOKEN_FILE)).unwrap();
    std::fs::create_dir_all(paths.logs_dir()).unwrap();
    // And the admin key's body without its markers (only the needles can
    // find that).
    let admin = std::fs::read_to_string(paths.dir().join("admin.key")).unwrap();
    let admin_body: String = admin
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(admin_body.len() > 100);
    std::fs::write(
        paths.supervisor_log(),
        format!("started\n{ca_key}token={}\n{admin_body}", token.trim()),
    )
    .unwrap();

    let lines = ironclad_testkit::secrets::strings_in(paths.dir());
    assert!(
        lines.len() > 20,
        "the state dir holds keys: {}",
        lines.len()
    );
    let req = Request {
        root: root.path(),
        name: &name,
        version: serde_json::json!({"ironclad": "test"}),
        node_timeout: Duration::from_secs(1),
    };
    let said = std::sync::Mutex::new(Vec::new());
    let b = collect(&req, &|s: &str| said.lock().unwrap().push(s.to_string())).unwrap();
    assert!(!said.lock().unwrap().is_empty());
    let file = root.path().join("bundle.tar.gz");
    write_tar_gz(&b, &name, &file).unwrap();

    let entries = read_bundle(&file);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "support-dev/version.json",
        "support-dev/cluster.yaml",
        "support-dev/host/supervisor.log",
        "support-dev/bundle.json",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    for (n, data) in &entries {
        let text = String::from_utf8_lossy(data);
        assert!(!text.contains("PRIVATE KEY"), "{n} holds a PEM private key");
        for l in &lines {
            assert!(!text.contains(l.as_str()), "{n} holds a key line");
        }
        assert!(!text.contains(token.trim()), "{n} holds the token");
    }
    let index: serde_json::Value = serde_json::from_slice(
        &entries
            .iter()
            .find(|(n, _)| n.ends_with("bundle.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    // What is missing says why: no cluster.json, so no node was asked.
    let missing = index["missing"].as_array().unwrap();
    assert!(missing.iter().any(|m| m["what"] == "nodes/"), "{index:#}");
    assert!(
        missing
            .iter()
            .all(|m| !m["why"].as_str().unwrap().is_empty())
    );
    let redacted = index["redacted"].as_array().unwrap();
    assert_eq!(redacted.len(), 1, "{index:#}");
    assert_eq!(redacted[0]["path"], "host/supervisor.log");
    let log = &entries
        .iter()
        .find(|(n, _)| n.ends_with("host/supervisor.log"))
        .unwrap()
        .1;
    assert!(String::from_utf8_lossy(log).starts_with("started\n[REDACTED]"));
}

#[test]
fn no_cluster_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let name: ClusterName = "nope".parse().unwrap();
    let req = Request {
        root: root.path(),
        name: &name,
        version: serde_json::Value::Null,
        node_timeout: Duration::from_secs(1),
    };
    let e = collect(&req, &|_| {}).err().unwrap();
    assert!(matches!(e, SupportError::NoCluster { .. }), "{e}");
}
