//! `ironclad node ...` end to end: the real binary, a state dir with a
//! client.yaml, and a real apid (mTLS on 127.0.0.1) over the in-memory
//! controller.

use ironclad_contract::api::{LogLine, Role, ServiceList};
use ironclad_host::clientconfig::{ClientConfig, ClientNode};
use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_host::pki::{Secrets, issue_client_cert};
use ironclad_testkit::apid::{MemoryNode, TestPki};
use ironclad_testkit::wait;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const NODE: &str = "dev-cp-1";

struct Fixture {
    state: tempfile::TempDir,
    node: MemoryNode,
}

async fn start() -> Fixture {
    let pki = TestPki::new("dev");
    let node = MemoryNode::serve(&pki, NODE, &["etcd", "containerd"]).await;
    let state = tempfile::tempdir().unwrap();
    write_cluster(state.path(), "dev", &pki.secrets, node.addr);
    Fixture { state, node }
}

fn write_cluster(state: &Path, name: &str, secrets: &Secrets, endpoint: SocketAddr) {
    let name: ironclad_host::spec::ClusterName = name.parse().unwrap();
    let paths = ClusterPaths::new(state, &name);
    paths.claim(&name).unwrap();
    let cert = issue_client_cert(&secrets.os_ca, Role::Admin, "admin").unwrap();
    std::fs::write(paths.dir().join("admin.crt"), &cert.cert_pem).unwrap();
    ironclad_contract::fsutil::write_secret(
        &paths.dir().join("admin.key"),
        cert.key_pem.as_bytes(),
    )
    .unwrap();
    ClientConfig {
        api_version: ironclad_contract::API_VERSION.into(),
        kind: ironclad_host::clientconfig::KIND.into(),
        cluster: name.clone(),
        os_ca: secrets.os_ca.cert_pem().into(),
        // Relative to client.yaml's directory.
        cert: "admin.crt".into(),
        key: "admin.key".into(),
        nodes: vec![ClientNode {
            name: NODE.parse().unwrap(),
            role: ironclad_host::spec::Role::ControlPlane,
            address: Ipv4Addr::new(10, 5, 0, 2),
            endpoint: Some(endpoint),
        }],
    }
    .save(&paths.client_yaml())
    .unwrap();
}

fn cmd(state: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ironclad"));
    c.arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("IRONCLAD_STATE_DIR")
        .kill_on_drop(true);
    c
}

async fn run(state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = cmd(state, args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn node_commands_through_the_api() {
    let f = start().await;
    let s = f.state.path();
    let out = run(s, &["node", "services", "--node", NODE, "--output", "json"]).await;
    assert_eq!(out.0, 0, "{out:?}");
    let list: ServiceList = serde_json::from_str(&out.1).unwrap();
    assert_eq!(list.services.len(), 2);

    f.node.ctl.log("containerd", "first");
    f.node.ctl.log("containerd", "second");
    let out = run(
        s,
        &["node", "logs", "containerd", "--node", NODE, "--tail", "1"],
    )
    .await;
    assert_eq!((out.0, out.1.as_str()), (0, "second\n"), "{out:?}");
    f.node.ctl.kernel("Linux version 6.12");
    let out = run(s, &["node", "dmesg", "--node", NODE]).await;
    assert!(out.1.contains("Linux version"), "{out:?}");

    // Bad input: unknown service (the node says not found), bad name, unknown node.
    assert_eq!(run(s, &["node", "logs", "nope", "--node", NODE]).await.0, 2);
    assert_eq!(run(s, &["node", "logs", "../x", "--node", NODE]).await.0, 2);
    assert_eq!(run(s, &["node", "dmesg", "--node", "other"]).await.0, 2);

    let out = run(s, &["node", "reboot", "--node", NODE]).await;
    assert_eq!(out.0, 0, "{out:?}");
    assert_eq!(f.node.ctl.power_request(), Some("reboot"));
}

#[tokio::test]
async fn logs_follow_streams_ndjson_until_interrupted() {
    let f = start().await;
    let mut child = cmd(
        f.state.path(),
        &[
            "node", "logs", "etcd", "--node", NODE, "-f", "--output", "json",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait::until_async(
        "the CLI to follow etcd's log",
        wait::deadline(Duration::from_secs(20)),
        || async { (f.node.ctl.followers("etcd") > 0).then_some(()) },
    )
    .await;
    f.node.ctl.log("etcd", "hello");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a line");
    let parsed: LogLine = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed.line, "hello");
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn cluster_selection_errors_are_bad_input() {
    let f = start().await;
    let s = f.state.path();
    // A second cluster: now --cluster is needed.
    let other = "other".parse().unwrap();
    ClusterPaths::new(s, &other).claim(&other).unwrap();
    let out = run(s, &["node", "services", "--node", NODE]).await;
    assert_eq!(out.0, 2, "{out:?}");
    assert!(out.2.contains("several clusters"), "{out:?}");
    let out = run(s, &["node", "services", "--node", NODE, "--cluster", "dev"]).await;
    assert_eq!(out.0, 0, "{out:?}");
    let out = run(
        s,
        &["node", "services", "--node", NODE, "--cluster", "../x"],
    )
    .await;
    assert_eq!(out.0, 2, "{out:?}");
    let out = run(
        s,
        &["node", "services", "--node", NODE, "--cluster", "gone"],
    )
    .await;
    assert_eq!(out.0, 2, "{out:?}");
}

/// A long request to a node that reboots under it ends with `Rebooted` once
/// the node's health shows another boot id, instead of waiting for the
/// request's own timeout; a request that answers is passed through.
#[tokio::test]
async fn a_request_to_a_node_that_reboots_ends_once_its_boot_id_changes() {
    use ironclad_host::client::ClientError;
    let pki = TestPki::new("dev");
    let node = MemoryNode::serve(&pki, NODE, &["etcd"]).await;
    let admin = pki.client(NODE, node.addr, Role::Admin);
    let every = Duration::from_millis(50);

    let v = admin
        .unless_rebooted("a version request", every, admin.version())
        .await
        .unwrap();
    assert_eq!(v.node, NODE);

    // A request whose answer never comes (what a guest that reset leaves
    // behind); the reboot is asked once the watch has its boot id.
    let (hung, watching) = wait::never_answered::<(), ClientError>();
    let watch = {
        let admin = admin.clone();
        tokio::spawn(async move { admin.unless_rebooted("a hung request", every, hung).await })
    };
    watching.await.unwrap();
    // Without a reboot the request goes on waiting.
    let still = tokio::time::timeout(every * 6, async {
        while !watch.is_finished() {
            tokio::time::sleep(every / 5).await;
        }
    })
    .await;
    assert!(still.is_err(), "the watch ended without a reboot");
    assert!(admin.reboot().await.unwrap().accepted);
    let e = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("the watch ends the request once the boot id changed")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Rebooted { node, what } if node == NODE && what == "a hung request"),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("rebooted during a hung request (its boot id changed)"),
        "{text}"
    );
    let help = miette::Diagnostic::help(&e).unwrap().to_string();
    assert!(help.contains(&format!("ironclad console {NODE}")), "{help}");
}
