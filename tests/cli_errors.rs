//! The command line's failures as diagnostics: each common failure prints a
//! stable code (`ironclad::lifecycle::not_found`, `ironclad::api::tls`, ...)
//! and a help line on stderr, with its fixed exit status. Real processes, a
//! real state dir, real TLS against a loopback apid; no VM.

use ironclad_contract::api::Role;
use ironclad_host::clientconfig::{ClientConfig, ClientNode, KIND};
use ironclad_testkit::apid::{MemoryNode, TestPki};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};

fn ironclad(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// Asserts exit status `code`, the diagnostic code and a phrase of the help
/// line on stderr.
fn assert_diagnostic(out: &Output, exit: i32, code: &str, help: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit), "{stderr}");
    assert!(stderr.contains(code), "expected {code} in\n{stderr}");
    let help_at = stderr
        .find("help: ")
        .unwrap_or_else(|| panic!("no help in\n{stderr}"));
    // miette wraps long help lines: compare without the line breaks.
    let help_text: String = stderr[help_at..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(help_text.contains(help), "expected {help:?} in\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn lifecycle_failures_name_their_code_and_what_to_do() {
    let state = tempfile::tempdir().unwrap();
    for cmd in ["start", "stop", "status"] {
        let out = ironclad(state.path(), &[cmd, "nope"]);
        assert_diagnostic(
            &out,
            2,
            "ironclad::lifecycle::not_found",
            "`ironclad list` shows the clusters",
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster named \"nope\""));
    }

    // create of a name that is taken: refused before any image or VM.
    let name: ironclad_host::spec::ClusterName = "taken".parse().unwrap();
    ironclad_host::cluster::paths::ClusterPaths::new(state.path(), &name)
        .claim(&name)
        .unwrap();
    let file = state.path().join("taken.yaml");
    std::fs::write(
        &file,
        "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata: {name: taken}\n",
    )
    .unwrap();
    let out = ironclad(state.path(), &["create", "-f", file.to_str().unwrap()]);
    assert_diagnostic(
        &out,
        2,
        "ironclad::lifecycle::already_exists",
        "remove it first with `ironclad destroy taken`",
    );

    let out = ironclad(state.path(), &["console", "ghost", "--cluster", "taken"]);
    assert_diagnostic(
        &out,
        2,
        "ironclad::lifecycle::no_such_node",
        "lists its nodes",
    );
}

/// A state dir for cluster `api` whose client.yaml trusts `client_pki`'s CA
/// and holds its admin certificate, with node `api-cp-1` at `endpoint`.
fn client_state(client_pki: &TestPki, endpoint: SocketAddr) -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    let name: ironclad_host::spec::ClusterName = "api".parse().unwrap();
    let paths = ironclad_host::cluster::paths::ClusterPaths::new(state.path(), &name);
    paths.claim(&name).unwrap();
    let dir = paths.dir();
    let admin = client_pki.client_cert(Role::Admin, "admin");
    std::fs::write(dir.join("admin.crt"), &admin.cert_pem).unwrap();
    std::fs::write(dir.join("admin.key"), &admin.key_pem).unwrap();
    ClientConfig {
        api_version: ironclad_contract::API_VERSION.into(),
        kind: KIND.into(),
        cluster: name.clone(),
        os_ca: client_pki.os_ca_pem().into(),
        cert: "admin.crt".into(),
        key: "admin.key".into(),
        nodes: vec![ClientNode {
            name: "api-cp-1".parse().unwrap(),
            role: ironclad_host::spec::Role::ControlPlane,
            address: Ipv4Addr::new(10, 5, 0, 2),
            endpoint: Some(endpoint),
        }],
    }
    .save(&dir.join("client.yaml"))
    .unwrap();
    state
}

#[test]
fn node_api_failures_name_their_code_and_what_to_do() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pki = TestPki::new("api");
    let node = rt.block_on(MemoryNode::serve(&pki, "api-cp-1", &["etcd", "containerd"]));

    // A node that answers: the node's own refusal keeps its wire code.
    let state = client_state(&pki, node.addr);
    let out = ironclad(
        state.path(),
        &["node", "logs", "no-such-service", "--node", "api-cp-1"],
    );
    assert_diagnostic(&out, 2, "ironclad::api::not_found", "check the name");

    // Nothing listens: connection refused, and what to check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let state = client_state(&pki, closed);
    let out = ironclad(state.path(), &["node", "services", "--node", "api-cp-1"]);
    assert_diagnostic(
        &out,
        1,
        "ironclad::api::connection_refused",
        "is the cluster running?",
    );

    // Another cluster's CA and certificate: the TLS handshake fails.
    let other = TestPki::new("api");
    let state = client_state(&other, node.addr);
    let out = ironclad(state.path(), &["node", "services", "--node", "api-cp-1"]);
    assert_diagnostic(&out, 1, "ironclad::api::tls", "another cluster's CA");
    drop(node);
}

/// A translation cache outside 16..=1024 MiB is refused before anything is
/// made, for `create` and `repro` alike (usage error, exit 2).
#[test]
fn a_translation_cache_out_of_range_is_refused() {
    let state = tempfile::tempdir().unwrap();
    for args in [
        &["create", "--tcg-cache", "8"][..],
        &["create", "--tcg-cache", "4096"],
        &["create", "--tcg-cache", "lots"],
        &["repro", "bundle.tar.gz", "--tcg-cache", "0"],
    ] {
        let out = ironclad(state.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--tcg-cache"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(
        std::fs::read_dir(state.path()).unwrap().next().is_none(),
        "nothing is made in the state dir"
    );
}
