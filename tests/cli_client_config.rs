//! The everyday command line around node APIs, end to end with the real
//! binary: `--client-config FILE` / `IRONCLAD_CLIENT_CONFIG` on a directory
//! of `ironclad gen config --dir DIR` (no state root involved), `--node`
//! left out where one node is the obvious target, `-o json` of the commands
//! that act (`etcd put`, `node reboot`), and refusals of bad input with
//! exit 2. Each node is a real apid (mTLS on 127.0.0.1) serving its machine
//! config's API certificate, over the in-memory controller.

use ironclad_contract::api::ServiceList;
use ironclad_host::client::NodeClient;
use ironclad_host::clientconfig::ClientConfig;
use ironclad_host::machine::MachineConfig;
use ironclad_node::apid::{Limits, server_tls_config};
use ironclad_testkit::apid::MemoryNode;
use std::path::{Path, PathBuf};

const SOLO: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: solo}
spec:
  controlPlanes: {count: 1}
  workers: {count: 0}
";
const SOLO_CP: &str = "solo-cp-1";

const PAIR: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: pair}
spec:
  controlPlanes: {count: 1}
  workers: {count: 1}
";
const PAIR_CP: &str = "pair-cp-1";
const PAIR_WORKER: &str = "pair-worker-1";

/// `gen config --dir` output with every node's apid running and, unless
/// told otherwise, its endpoint recorded in `client.yaml`.
struct Generated {
    dir: tempfile::TempDir,
    /// An empty state root: nothing may come from there.
    state: tempfile::TempDir,
    nodes: Vec<(String, MemoryNode)>,
}

impl Generated {
    async fn new(cluster_file: &str, point: bool) -> Generated {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster-file.yaml");
        std::fs::write(&file, cluster_file).unwrap();
        let out_dir = dir.path().join("gen");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ironclad"))
            .args(["gen", "config", "-f"])
            .arg(&file)
            .arg("--dir")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "gen config: {out:?}");
        let mut nodes = Vec::new();
        for entry in std::fs::read_dir(out_dir.join("nodes")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let cfg = MachineConfig::from_yaml(&text).unwrap();
            let tls =
                server_tls_config(&cfg.pki.os_ca, &cfg.pki.api_cert, &cfg.pki.api_key).unwrap();
            let node = MemoryNode::serve_tls(
                &cfg.node.name,
                &["etcd", "containerd"],
                tls,
                Limits::default(),
            )
            .await;
            nodes.push((cfg.node.name.to_string(), node));
        }
        let g = Generated {
            dir,
            state: tempfile::tempdir().unwrap(),
            nodes,
        };
        if point {
            let mut cfg = ClientConfig::load(&g.client_yaml()).unwrap();
            for n in &mut cfg.nodes {
                n.endpoint = Some(g.node(n.name.as_str()).addr);
            }
            cfg.save(&g.client_yaml()).unwrap();
        }
        g
    }

    fn client_yaml(&self) -> PathBuf {
        self.dir.path().join("gen/client.yaml")
    }

    fn node(&self, name: &str) -> &MemoryNode {
        &self.nodes.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn client(&self, name: &str) -> NodeClient {
        NodeClient::from_client_config(&self.client_yaml(), name).unwrap()
    }

    /// `ironclad --state-dir <empty> ARGS` with `env`.
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        run_in(self.state.path(), args, env).await
    }

    /// The same with `--client-config <client.yaml>` appended.
    async fn with_config(&self, args: &[&str]) -> Ran {
        let file = self.client_yaml();
        let mut all = args.to_vec();
        all.extend(["--client-config", file.to_str().unwrap()]);
        self.run(&all, &[]).await
    }
}

#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run_in(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ironclad"));
    c.arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("IRONCLAD_STATE_DIR")
        .env_remove("IRONCLAD_CLUSTER")
        .env_remove("IRONCLAD_CLIENT_CONFIG")
        .kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().await.unwrap();
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!ran.stderr.contains("panicked"), "{ran:?}");
    ran
}

#[tokio::test]
async fn a_generated_client_config_reaches_its_node_without_a_state_root() {
    let g = Generated::new(SOLO, true).await;
    // The state root is empty: without --client-config there is no cluster.
    let r = g.run(&["node", "services"], &[]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no clusters under"), "{r:?}");

    // With it, and without --node: the only node, said on stderr.
    let r = g.with_config(&["node", "services", "-o", "json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let list: ServiceList = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list.services.len(), 2);
    assert!(
        r.stderr
            .contains(&format!("node {SOLO_CP} (the only node of cluster solo)")),
        "{r:?}"
    );

    // The environment variable does the same.
    g.node(SOLO_CP).ctl.kernel("Linux version 6.12 (solo)");
    let file = g.client_yaml();
    let r = g
        .run(
            &["node", "dmesg"],
            &[("IRONCLAD_CLIENT_CONFIG", file.to_str().unwrap())],
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Linux version 6.12 (solo)"), "{r:?}");

    // etcd put -o json: which cluster and node wrote which key.
    g.client(SOLO_CP).bootstrap().await.unwrap();
    let r = g
        .with_config(&["etcd", "put", "greeting", "hello", "-o", "json"])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let done: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(done["cluster"], "solo", "{done}");
    assert_eq!(done["node"], SOLO_CP, "{done}");
    assert_eq!(done["key"], "greeting", "{done}");
    assert_eq!(done["result"], "written", "{done}");
    assert!(done.get("value").is_none(), "{done}");
    assert!(
        r.stderr.contains(&format!("etcd: through {SOLO_CP}")),
        "{r:?}"
    );
    let kv = g.client(SOLO_CP).etcd_get("greeting").await.unwrap();
    assert_eq!(kv.value.as_deref(), Some("hello"));
    // Text output of put stays empty on stdout.
    let r = g.with_config(&["etcd", "put", "k", "v"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");

    // A one-node cluster's node may be rebooted without --node.
    let r = g.with_config(&["node", "reboot", "-o", "json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let done: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        done,
        serde_json::json!({"cluster": "solo", "node": SOLO_CP, "action": "reboot", "result": "requested"})
    );
    assert_eq!(g.node(SOLO_CP).ctl.power_request(), Some("reboot"));
}

#[tokio::test]
async fn several_nodes_need_node_and_etcd_says_which_control_plane() {
    let g = Generated::new(PAIR, true).await;
    let r = g.with_config(&["node", "services"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!("({PAIR_CP}, {PAIR_WORKER})"))
            && r.stderr.contains("name one with --node"),
        "{r:?}"
    );
    // Powering a node off by guess: refused, and nothing was asked of either.
    for cmd in ["reboot", "shutdown"] {
        let r = g.with_config(&["node", cmd]).await;
        assert_eq!(r.code, 2, "{r:?}");
    }
    for (_, n) in &g.nodes {
        assert_eq!(n.ctl.power_request(), None);
    }
    let r = g
        .with_config(&["node", "shutdown", "--node", PAIR_WORKER, "-o", "json"])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let done: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(done["node"], PAIR_WORKER, "{done}");
    assert_eq!(done["action"], "shutdown", "{done}");
    assert_eq!(g.node(PAIR_WORKER).ctl.power_request(), Some("shutdown"));
    assert_eq!(g.node(PAIR_CP).ctl.power_request(), None);

    // etcd goes to the control plane without --node, and says so.
    g.client(PAIR_CP).bootstrap().await.unwrap();
    let r = g.with_config(&["etcd", "members", "-o", "json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "etcd: through {PAIR_CP} (the first control plane that answered)"
        )),
        "{r:?}"
    );
}

#[tokio::test]
async fn the_matrix_runs_on_a_client_config() {
    let g = Generated::new(PAIR, true).await;
    g.client(PAIR_CP).bootstrap().await.unwrap();
    let r = g
        .with_config(&["matrix", "--check", "CONF-01", "-o", "json"])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["cluster"], "pair", "{report}");
    let results = report["results"].as_array().unwrap();
    for node in [PAIR_CP, PAIR_WORKER] {
        assert!(
            results
                .iter()
                .any(|x| x["id"] == "CONF-01" && x["node"] == node && x["verdict"] == "PASS"),
            "{report}"
        );
    }
    // No cluster file beside a bare client.yaml: said, not hidden.
    assert!(report["cluster_file"].is_null(), "{report}");
    assert!(
        r.stderr.contains("the report names no cluster file"),
        "{r:?}"
    );

    // A name and a client config together: refused.
    let r = g.with_config(&["matrix", "pair"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("both choose the cluster"), "{r:?}");
}

#[tokio::test]
async fn the_matrix_refuses_a_client_config_without_endpoints() {
    let g = Generated::new(PAIR, false).await;
    let r = g.with_config(&["matrix", "--check", "CONF-01"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("gives no endpoint for") && r.stderr.contains(PAIR_WORKER),
        "{r:?}"
    );
}

#[tokio::test]
async fn bad_client_configs_are_bad_input() {
    let g = Generated::new(SOLO, false).await;
    // gen config records no endpoints: the node cannot be reached, and the
    // message says what to add where.
    let r = g.with_config(&["node", "services"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("has no endpoint in"), "{r:?}");

    // --cluster, or IRONCLAD_CLUSTER, together with a client config.
    let r = g
        .with_config(&["node", "services", "--cluster", "solo"])
        .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("both choose the cluster"), "{r:?}");
    let file = g.client_yaml();
    let r = g
        .run(
            &["etcd", "members"],
            &[
                ("IRONCLAD_CLUSTER", "solo"),
                ("IRONCLAD_CLIENT_CONFIG", file.to_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("IRONCLAD_CLUSTER=solo") && r.stderr.contains("IRONCLAD_CLIENT_CONFIG="),
        "{r:?}"
    );

    // An empty variable is not "none": it is refused, with the way out.
    let r = g
        .run(&["node", "services"], &[("IRONCLAD_CLIENT_CONFIG", "")])
        .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("it is empty"), "{r:?}");

    // Missing, a directory, not YAML, another kind, unknown fields.
    let bad = g.dir.path().join("bad.yaml");
    let missing = g.dir.path().join("missing.yaml");
    let gen_dir = g.dir.path().join("gen");
    let cases: Vec<(&Path, Option<String>, &str)> = vec![
        (&missing, None, "No such file"),
        (&gen_dir, None, "a directory: the file is"),
        (
            &bad,
            Some("{not: [yaml".into()),
            "not a usable client config",
        ),
        (
            &bad,
            Some(
                std::fs::read_to_string(&file)
                    .unwrap()
                    .replace("kind: ClientConfig", "kind: Cluster"),
            ),
            "expected \"ClientConfig\"",
        ),
        (
            &bad,
            Some(format!(
                "{}extra: 1\n",
                std::fs::read_to_string(&file).unwrap()
            )),
            "not a usable client config",
        ),
    ];
    for (path, text, says) in cases {
        if let Some(t) = text {
            std::fs::write(path, t).unwrap();
        }
        for args in [
            &["node", "services"][..],
            &["etcd", "put", "k", "v"],
            &["matrix"],
        ] {
            let mut all = args.to_vec();
            all.extend(["--client-config", path.to_str().unwrap()]);
            let r = g.run(&all, &[]).await;
            assert_eq!(r.code, 2, "{all:?}: {r:?}");
            assert!(r.stderr.contains(says), "{all:?}: {r:?}");
        }
    }

    // A client certificate that is not there.
    let mut cfg = ClientConfig::load(&file).unwrap();
    cfg.nodes[0].endpoint = Some(g.node(SOLO_CP).addr);
    cfg.cert = "nowhere.crt".into();
    cfg.save(&file).unwrap();
    let r = g.with_config(&["node", "services"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nowhere.crt"), "{r:?}");
}
