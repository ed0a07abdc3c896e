//! etcd end to end on loopback, without VMs but with the real parts: the
//! cluster's PKI and machine configs, one real apid server per "node" on its
//! own loopback address, a real supervisor running the host's etcd binary
//! (Debian's `etcd-server`), and `cluster::etcd::converge` through real
//! `NodeClient`s.
//!
//! Each node's etcd listens on `<node address>:2379/2380` (127.0.x.y, all on
//! `lo`), so three members share the host without port clashes. Needs
//! `/usr/bin/etcd` (or `IRONCLAD_TEST_ETCD`); without it the tests fail with
//! a message saying so.

use ironclad_contract::api::{
    self, Action, ApiError, ErrorCode, LogLine, Reply, Role, ServiceList, ServiceOp,
};
use ironclad_host::client::{ClientError, NodeClient};
use ironclad_host::cluster::etcd::{ControlPlane, ConvergeOptions, Step, converge, member_by_peer};
use ironclad_host::machine::{self, MachineConfig};
use ironclad_host::pki::{Secrets, issue_client_cert};
use ironclad_host::spec::Role as NodeRole;
use ironclad_node::apid::{Apid, Controller};
use ironclad_node::controller::api_status;
use ironclad_node::etcd::{self, Etcd, EtcdOptions};
use ironclad_node::reaper::{ReapMode, Reaper};
use ironclad_node::supervisor::{self, Settings, SupervisorHandle};
use ironclad_testkit::wait;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const API_PORT: u16 = 50000;

#[expect(
    clippy::disallowed_methods,
    reason = "a test's override of the etcd binary"
)]
fn etcd_program() -> PathBuf {
    let p = std::env::var_os("IRONCLAD_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        p.exists(),
        "{} not found: install etcd-server (ci/install-deps) or set IRONCLAD_TEST_ETCD",
        p.display()
    );
    p
}

/// A loopback /24 for test number `n`: the second octet comes from the
/// process id, so two runs of these tests at once (nextest runs each test in
/// its own process; other worktrees) rarely share addresses.
fn loopback_net(n: u8) -> String {
    format!("127.{}.{n}.0/24", 1 + std::process::id() % 250)
}

/// The machine configs of a cluster `name` on `cidr` (3 control planes, 1 worker).
fn cluster(name: &str, cidr: &str) -> (Secrets, Vec<MachineConfig>) {
    let src = format!(
        "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  network: {{cidr: {cidr}}}\n  controlPlanes: {{count: 3}}\n  workers: {{count: 1}}\n"
    );
    let c = ironclad_host::spec::parse::parse_cluster(&src, "t.yaml").expect("cluster file");
    let secrets = Secrets::generate(name).unwrap();
    let cfgs = c
        .nodes
        .iter()
        .map(|n| machine::render(&c, n, &secrets).unwrap())
        .collect();
    (secrets, cfgs)
}

/// A controller with the real supervisor and the real etcd code.
struct TestController {
    etcd: Option<Etcd>,
    sup: SupervisorHandle,
}

impl Controller for TestController {
    async fn execute(&self, action: Action) -> Result<Reply, ApiError> {
        let internal =
            |e: supervisor::SupervisorError| ApiError::new(ErrorCode::Internal, e.to_string());
        match action {
            Action::ListServices => Ok(Reply::Services(ServiceList {
                services: self.sup.statuses().iter().map(api_status).collect(),
            })),
            Action::Service { name, op } => {
                let st = match op {
                    ServiceOp::Start => self.sup.start_service(&name).map_err(internal)?,
                    ServiceOp::Stop => self.sup.stop_service(&name).await.map_err(internal)?,
                    ServiceOp::Restart => {
                        self.sup.restart_service(&name).await.map_err(internal)?
                    }
                };
                Ok(Reply::Service(api_status(&st)))
            }
            a @ (Action::Bootstrap
            | Action::EtcdMembers
            | Action::EtcdAddLearner(_)
            | Action::EtcdPromote { .. }
            | Action::EtcdRemove { .. }
            | Action::EtcdJoin(_)
            | Action::EtcdPut(_)
            | Action::EtcdGet { .. }) => match &self.etcd {
                Some(e) => e.execute(a, &self.sup).await,
                None => Err(ApiError::new(ErrorCode::NotFound, "this node runs no etcd")),
            },
            other => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("{other:?} is not part of this test"),
            )),
        }
    }

    async fn follow_logs(
        &self,
        _service: String,
        _tail: Option<usize>,
    ) -> Result<futures::stream::BoxStream<'static, LogLine>, ApiError> {
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "not part of this test",
        ))
    }
}

/// One running "node": its root, supervisor and apid. Dropping it kills
/// etcd (the normal path is [`Node::shutdown`]).
struct Node {
    name: String,
    cfg: MachineConfig,
    root: PathBuf,
    sup: SupervisorHandle,
    server: tokio::task::JoinHandle<()>,
    client: NodeClient,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
        for s in self.sup.statuses() {
            if let Some(pid) = s.pid {
                // SAFETY: plain kill(2) of our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Node {
    /// Boots the node: supervisor with the etcd service (autostarts when the
    /// root has etcd data), apid on `<address>:50000`.
    async fn boot(cfg: &MachineConfig, root: &Path, reaper: &Reaper, secrets: &Secrets) -> Node {
        Self::boot_with(cfg, root, reaper, secrets, etcd_program()).await
    }

    async fn boot_with(
        cfg: &MachineConfig,
        root: &Path,
        reaper: &Reaper,
        secrets: &Secrets,
        program: PathBuf,
    ) -> Node {
        let options = EtcdOptions {
            program: Some(program),
            loopback_client: false,
        };
        let etcd = Etcd::with_options(cfg, root, options);
        let specs = etcd.iter().map(|e| e.service()).collect();
        let sup = supervisor::start(reaper.clone(), Settings::default(), specs).unwrap();
        let addr = SocketAddr::from((cfg.node.address, API_PORT));
        let apid = Apid::bind(&[addr], &cfg.pki).await.unwrap();
        let ctl = Arc::new(TestController {
            etcd,
            sup: sup.clone(),
        });
        let server = tokio::spawn(async move {
            let _ = apid.serve(ctl).await;
        });
        let cert = issue_client_cert(&secrets.os_ca, Role::Admin, "test").unwrap();
        let client = NodeClient::new(
            &cfg.node.name,
            addr,
            secrets.os_ca.cert_pem(),
            &cert.cert_pem,
            &cert.key_pem,
        )
        .unwrap();
        Node {
            name: cfg.node.name.to_string(),
            cfg: cfg.clone(),
            root: root.to_path_buf(),
            sup,
            server,
            client,
        }
    }

    async fn shutdown(self) {
        self.server.abort();
        self.sup.shutdown().await;
    }

    fn control_plane(&self) -> ControlPlane {
        ControlPlane {
            name: self.name.clone(),
            address: self.cfg.node.address,
            client: self.client.clone(),
        }
    }
}

fn reaper() -> Reaper {
    let r = Reaper::new(ReapMode::Own);
    tokio::spawn(r.clone().run());
    r
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Api(e)) => e.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it is `Ok(true)` or `within` passes.
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, ClientError>>,
{
    wait::until_ok(what, wait::deadline(within), || {
        let probe = f();
        async move {
            match probe.await {
                Ok(true) => Ok(()),
                Ok(false) => Err("not yet".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

#[test]
fn workers_run_no_etcd() {
    let (_, cfgs) = cluster("etw", "10.9.0.0/24");
    let worker = cfgs
        .iter()
        .find(|c| c.node.role == NodeRole::Worker)
        .unwrap();
    assert!(Etcd::new(worker, Path::new("/")).is_none());
    let cp = cfgs
        .iter()
        .find(|c| c.node.role == NodeRole::ControlPlane)
        .unwrap();
    let e = Etcd::new(cp, Path::new("/nonexistent-root")).unwrap();
    // Nothing bootstrapped: the service waits for bootstrap or join.
    assert!(!e.has_data());
    let spec = e.service();
    assert!(!spec.autostart);
    assert_eq!(spec.program, Path::new("/nonexistent-root/usr/bin/etcd"));
    // The rendered config: explicit IP URLs, mutual TLS, data on the state disk.
    let cfg = e.render_config(&etcd::Start::Bootstrap).unwrap();
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let ip = cp.node.address;
    assert_eq!(
        v["listen-client-urls"],
        format!("https://{ip}:2379,https://127.0.0.1:2379")
    );
    assert_eq!(v["listen-peer-urls"], format!("https://{ip}:2380"));
    assert_eq!(v["data-dir"], "/nonexistent-root/var/lib/etcd");
    assert_eq!(v["client-transport-security"]["client-cert-auth"], true);
    assert_eq!(v["peer-transport-security"]["client-cert-auth"], true);
    assert!(!cfg.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_control_planes_bootstrap_join_promote_and_survive_restarts() {
    let (secrets, cfgs) = cluster("etl", &loopback_net(1));
    let reaper = reaper();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cp_cfgs: Vec<&MachineConfig> = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::ControlPlane)
        .collect();
    assert_eq!(cp_cfgs.len(), 3);
    let mut nodes = Vec::new();
    for (cfg, dir) in cp_cfgs.iter().zip(&dirs) {
        nodes.push(Node::boot(cfg, dir.path(), &reaper, &secrets).await);
    }
    // Before bootstrap: etcd is stopped, members are not available.
    assert_eq!(
        code(nodes[0].client.etcd_members().await),
        ErrorCode::Unavailable
    );

    // Converge: bootstrap, two learners joined and promoted.
    let cps: Vec<ControlPlane> = nodes.iter().map(Node::control_plane).collect();
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut progress = |node: &str, step: &Step| {
        steps.push(format!("{node}: {step}"));
        eprintln!("{:?} {node}: {step}", started.elapsed());
    };
    let members = converge(&cps, ConvergeOptions::default(), &mut progress)
        .await
        .expect("converge");
    eprintln!("converge took {:?}: {steps:#?}", started.elapsed());
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| !m.is_learner));
    assert!(steps.iter().any(|s| s.ends_with("etcd bootstrapped")));
    assert_eq!(steps.iter().filter(|s| s.contains("promoted")).count(), 2);
    for n in &nodes {
        let m = member_by_peer(&members, &format!("https://{}:2380", n.cfg.node.address))
            .expect("every control plane is a member");
        assert_eq!(m.name, n.name);
    }

    // Converge again, the way the synchronous `ironclad create` calls it
    // (client.yaml, own runtime, own thread): nothing to do, same members.
    let state = tempfile::tempdir().unwrap();
    let refs: Vec<&Node> = nodes.iter().collect();
    write_client_yaml(state.path(), "etl", &cfgs, &secrets, &refs);
    let client_yaml =
        ironclad_host::cluster::paths::ClusterPaths::new(state.path(), &"etl".parse().unwrap())
            .client_yaml();
    let again = std::thread::spawn(move || {
        ironclad_host::cluster::etcd::converge_blocking(
            &client_yaml,
            ConvergeOptions::default(),
            &mut |_, _| {},
        )
    })
    .join()
    .unwrap()
    .expect("second converge");
    assert_eq!(again.members.len(), 3);
    let out = ironclad(state.path(), &["etcd", "members", "--output", "json"]).await;
    let m: api::EtcdMembers = serde_json::from_str(&out.1).unwrap();
    assert_eq!(m.members.len(), 3);

    // Bootstrap twice (on any member) is refused, and so is a second join.
    assert_eq!(code(nodes[0].client.bootstrap().await), ErrorCode::Conflict);
    assert_eq!(code(nodes[1].client.bootstrap().await), ErrorCode::Conflict);
    assert_eq!(
        code(nodes[2].client.etcd_join(vec![]).await),
        ErrorCode::BadRequest
    );

    // A key written through one node is read through the others.
    nodes[0].client.etcd_put("/test/a", "one").await.unwrap();
    for n in &nodes {
        let v = n.client.etcd_get("/test/a").await.unwrap();
        assert_eq!(v.value.as_deref(), Some("one"), "read through {}", n.name);
    }
    assert_eq!(
        nodes[1].client.etcd_get("/test/none").await.unwrap().value,
        None
    );
    // A reader sees the members, not the keys (a key may hold anything).
    let reader_cert = issue_client_cert(&secrets.os_ca, Role::Reader, "reader").unwrap();
    let reader = NodeClient::new(
        &nodes[1].cfg.node.name,
        SocketAddr::from((nodes[1].cfg.node.address, API_PORT)),
        secrets.os_ca.cert_pem(),
        &reader_cert.cert_pem,
        &reader_cert.key_pem,
    )
    .unwrap();
    assert_eq!(reader.etcd_members().await.unwrap().members.len(), 3);
    assert_eq!(code(reader.etcd_get("/test/a").await), ErrorCode::Forbidden);
    assert_eq!(
        code(nodes[1].client.etcd_put("", "x").await),
        ErrorCode::BadRequest
    );
    // Typed etcd errors: unknown member id, promote of a voting member.
    assert_eq!(
        code(nodes[0].client.etcd_promote(12345).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(nodes[0].client.etcd_remove(12345).await),
        ErrorCode::NotFound
    );
    // etcd answers "can only promote a learner member which is in sync with
    // leader" (`unavailable`) before it looks at the member's role when that
    // voter is not in sync at that instant (the last one promoted, while the
    // puts above replicate); once it is, the answer is `conflict`: only a
    // learner can be promoted.
    let voter = members.members[0].id;
    eventually(
        "etcd to refuse promoting a voting member",
        Duration::from_secs(20),
        || async {
            match code(nodes[0].client.etcd_promote(voter).await) {
                ErrorCode::Unavailable => Ok(false),
                other => {
                    assert_eq!(other, ErrorCode::Conflict);
                    Ok(true)
                }
            }
        },
    )
    .await;

    // Stop etcd on the third node: the other two still serve writes and reads.
    nodes[2].client.service_stop(etcd::SERVICE).await.unwrap();
    nodes[0].client.etcd_put("/test/b", "two").await.unwrap();
    assert_eq!(
        nodes[1]
            .client
            .etcd_get("/test/b")
            .await
            .unwrap()
            .value
            .as_deref(),
        Some("two")
    );
    assert_eq!(
        code(nodes[2].client.etcd_get("/test/b").await),
        ErrorCode::Unavailable
    );
    // Start it again: it catches up with its own data.
    nodes[2].client.service_start(etcd::SERVICE).await.unwrap();
    let n2 = &nodes[2];
    eventually(
        "stopped member catches up",
        Duration::from_secs(60),
        || async { Ok(n2.client.etcd_get("/test/b").await?.value.as_deref() == Some("two")) },
    )
    .await;

    // "Kill" the second node and boot it again from its disk: etcd autostarts
    // with its data and keeps the keys written before.
    let n1 = nodes.remove(1);
    let pid = n1.sup.status(etcd::SERVICE).and_then(|s| s.pid).unwrap();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (cfg1, root1) = (n1.cfg.clone(), n1.root.clone());
    n1.shutdown().await;
    // If the killed member led, writes wait for a new leader (etcd answers
    // "request timed out" meanwhile).
    let n0 = &nodes[0];
    eventually(
        "a write after the kill",
        Duration::from_secs(60),
        || async { n0.client.etcd_put("/test/c", "three").await.map(|_| true) },
    )
    .await;
    let booted = Instant::now();
    let n1 = Node::boot(&cfg1, &root1, &reaper, &secrets).await;
    eventually(
        "restarted node reads its data",
        Duration::from_secs(60),
        || async {
            let a = n1.client.etcd_get("/test/a").await?.value;
            let c = n1.client.etcd_get("/test/c").await?.value;
            Ok(a.as_deref() == Some("one") && c.as_deref() == Some("three"))
        },
    )
    .await;
    eprintln!("restarted member serving after {:?}", booted.elapsed());
    nodes.insert(1, n1);
    // Converge after the restart: nothing to join, all voting.
    let cps: Vec<ControlPlane> = nodes.iter().map(Node::control_plane).collect();
    let after = converge(&cps, ConvergeOptions::default(), &mut |_, _| {})
        .await
        .expect("converge after restart");
    assert_eq!(after.members.len(), 3);
    assert!(after.members.iter().all(|m| !m.is_learner));

    // The whole cluster stopped and started again (`ironclad stop`/`start`):
    // every node autostarts etcd from its disk, they find quorum together,
    // and the keys are all there.
    let disks: Vec<(MachineConfig, PathBuf)> = nodes
        .iter()
        .map(|n| (n.cfg.clone(), n.root.clone()))
        .collect();
    for n in nodes {
        n.shutdown().await;
    }
    let mut nodes = Vec::new();
    for (cfg, root) in &disks {
        nodes.push(Node::boot(cfg, root, &reaper, &secrets).await);
    }
    let cps: Vec<ControlPlane> = nodes.iter().map(Node::control_plane).collect();
    let whole = converge(&cps, ConvergeOptions::default(), &mut |n, s| {
        eprintln!("after full restart: {n}: {s}")
    })
    .await
    .expect("converge after a full restart");
    assert_eq!(whole.members.len(), 3);
    for n in &nodes {
        let c = n.client.etcd_get("/test/c").await.unwrap().value;
        assert_eq!(c.as_deref(), Some("three"), "read through {}", n.name);
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_bootstrap_is_fast_and_refused_twice() {
    let (secrets, cfgs) = cluster("ets", &loopback_net(2));
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::boot(&cfgs[0], dir.path(), &reaper, &secrets).await;
    let t = Instant::now();
    node.client.bootstrap().await.expect("bootstrap");
    eprintln!("bootstrap to healthy etcd: {:?}", t.elapsed());
    assert_eq!(code(node.client.bootstrap().await), ErrorCode::Conflict);
    let m = node.client.etcd_members().await.unwrap();
    assert_eq!(m.members.len(), 1);
    assert_eq!(m.members[0].name, node.name);
    // Files: keys 0600 on tmpfs side, data on the state side.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("run/ironclad/etcd/server.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(dir.path().join("var/lib/etcd/member").is_dir());
    // A learner for a node that does not exist can be added and removed again.
    let ghost_ip = std::net::Ipv4Addr::from(u32::from(node.cfg.node.address) & 0xffff_ff00 | 99);
    let ghost = format!("https://{ghost_ip}:2380");
    let l = node.client.etcd_add_learner("ghost", &ghost).await.unwrap();
    assert!(l.is_learner);
    assert_eq!(
        code(node.client.etcd_add_learner("ghost", &ghost).await),
        ErrorCode::Conflict
    );
    // converge's add is idempotent: asked again (an earlier answer lost),
    // the member with that peer URL is the one asked for...
    assert_eq!(
        ironclad_host::cluster::etcd::add_learner(&node.client, "ghost", &ghost)
            .await
            .unwrap(),
        l.id
    );
    // ...and any other refusal stays one (etcd admits one learner at a time).
    let ghost2_ip = std::net::Ipv4Addr::from(u32::from(ghost_ip) - 1);
    let ghost2 = format!("https://{ghost2_ip}:2380");
    assert_eq!(
        code(ironclad_host::cluster::etcd::add_learner(&node.client, "ghost2", &ghost2).await),
        ErrorCode::Conflict
    );
    assert_eq!(node.client.etcd_members().await.unwrap().members.len(), 2);
    assert_eq!(
        code(node.client.etcd_add_learner("ghost", "http://x").await),
        ErrorCode::BadRequest
    );
    // Not in sync (never started): promote says "retry later".
    assert_eq!(
        code(node.client.etcd_promote(l.id).await),
        ErrorCode::Unavailable
    );
    node.client.etcd_remove(l.id).await.unwrap();
    assert_eq!(node.client.etcd_members().await.unwrap().members.len(), 1);

    // The CLI against this node, through a state dir with its client.yaml.
    let state = tempfile::tempdir().unwrap();
    write_client_yaml(state.path(), "ets", &cfgs, &secrets, &[&node]);
    let out = ironclad(state.path(), &["etcd", "members", "--output", "json"]).await;
    assert_eq!(out.0, 0, "{out:?}");
    let m: api::EtcdMembers = serde_json::from_str(&out.1).unwrap();
    assert_eq!(m.members[0].name, node.name);
    let out = ironclad(state.path(), &["etcd", "members"]).await;
    assert!(
        out.1.contains("voter") && out.1.contains(&node.name),
        "{out:?}"
    );
    let out = ironclad(state.path(), &["etcd", "put", "/cli/k", "v1"]).await;
    assert_eq!(out.0, 0, "{out:?}");
    let out = ironclad(state.path(), &["etcd", "get", "/cli/k"]).await;
    assert_eq!((out.0, out.1.as_str()), (0, "v1\n"));
    let out = ironclad(
        state.path(),
        &["etcd", "get", "/cli/none", "--output", "json"],
    )
    .await;
    let kv: api::KvValue = serde_json::from_str(&out.1).unwrap();
    assert_eq!(kv.value, None);
    assert_eq!(
        ironclad(state.path(), &["etcd", "get", "/cli/none"])
            .await
            .0,
        1
    );
    let n = node.name.as_str();
    let out = ironclad(
        state.path(),
        &["node", "services", "--node", n, "--output", "json"],
    )
    .await;
    let list: api::ServiceList = serde_json::from_str(&out.1).unwrap();
    assert_eq!(list.services[0].state, api::ServiceState::Running);
    let out = ironclad(state.path(), &["node", "services", "--node", n]).await;
    assert!(
        out.1.contains("etcd") && out.1.contains("running"),
        "{out:?}"
    );
    // Bad input: unknown node, unknown cluster, bad key.
    let out = ironclad(state.path(), &["node", "services", "--node", "nope"]).await;
    assert_eq!(out.0, 2, "{out:?}");
    assert!(out.2.contains("no node"), "{out:?}");
    assert_eq!(
        ironclad(state.path(), &["etcd", "members", "--cluster", "other"])
            .await
            .0,
        2
    );
    assert_eq!(ironclad(state.path(), &["etcd", "put", "", "x"]).await.0, 2);
    let empty = tempfile::tempdir().unwrap();
    let out = ironclad(empty.path(), &["etcd", "members"]).await;
    assert_eq!(out.0, 2, "{out:?}");
    assert!(out.2.contains("no clusters"), "{out:?}");
    node.shutdown().await;
}

/// Writes `<state>/clusters/<name>/client.yaml` with an admin certificate,
/// every node of `cfgs`, and `node`'s API endpoint.
fn write_client_yaml(
    state: &Path,
    name: &str,
    cfgs: &[MachineConfig],
    secrets: &Secrets,
    running: &[&Node],
) {
    let name: ironclad_host::spec::ClusterName = name.parse().unwrap();
    let paths = ironclad_host::cluster::paths::ClusterPaths::new(state, &name);
    paths.claim(&name).unwrap();
    let cert = issue_client_cert(&secrets.os_ca, Role::Admin, "admin").unwrap();
    let (crt, key) = (paths.dir().join("admin.crt"), paths.dir().join("admin.key"));
    std::fs::write(&crt, &cert.cert_pem).unwrap();
    ironclad_contract::fsutil::write_secret(&key, cert.key_pem.as_bytes()).unwrap();
    let cc = ironclad_host::clientconfig::ClientConfig {
        api_version: ironclad_contract::API_VERSION.into(),
        kind: ironclad_host::clientconfig::KIND.into(),
        cluster: name.clone(),
        os_ca: secrets.os_ca.cert_pem().into(),
        cert: crt,
        key,
        nodes: cfgs
            .iter()
            .map(|c| ironclad_host::clientconfig::ClientNode {
                name: c.node.name.clone(),
                role: c.node.role,
                address: c.node.address,
                endpoint: running
                    .iter()
                    .any(|n| n.name == c.node.name)
                    .then(|| SocketAddr::from((c.node.address, API_PORT))),
            })
            .collect(),
    };
    cc.save(&paths.client_yaml()).unwrap();
}

/// Runs the `ironclad` binary with `--state-dir state`: (status, stdout, stderr).
async fn ironclad(state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("IRONCLAD_STATE_DIR")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_bootstrap_is_reported_and_can_be_retried() {
    let (secrets, cfgs) = cluster("etf", &loopback_net(3));
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    // An "etcd" that exits at once.
    let node = Node::boot_with(&cfgs[0], dir.path(), &reaper, &secrets, "/bin/false".into()).await;
    let t = Instant::now();
    let e = node.client.bootstrap().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
    assert!(e.to_string().contains("failed to start"), "{e}");
    // Not "already bootstrapped": the failed attempt left no data, so a retry
    // is accepted (and fails the same way).
    assert_eq!(code(node.client.bootstrap().await), ErrorCode::Unavailable);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn converge_never_bootstraps_a_second_cluster() {
    let (secrets, cfgs) = cluster("etx", &loopback_net(4));
    let reaper = reaper();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (cfg, dir) in cfgs.iter().take(3).zip(&dirs) {
        assert_eq!(cfg.node.role, NodeRole::ControlPlane);
        nodes.push(Node::boot(cfg, dir.path(), &reaper, &secrets).await);
    }
    // The second control plane was bootstrapped (say, by hand): the first
    // must join its cluster, not start another.
    nodes[1].client.bootstrap().await.unwrap();
    nodes[1].client.etcd_put("/x/k", "kept").await.unwrap();
    let cps: Vec<ControlPlane> = nodes.iter().map(Node::control_plane).collect();
    let mut steps = Vec::new();
    let members = converge(&cps, ConvergeOptions::default(), &mut |n, s| {
        steps.push(format!("{n}: {s}"))
    })
    .await
    .expect("converge");
    assert!(
        !steps.iter().any(|s| s.ends_with("etcd bootstrapped")),
        "{steps:?}"
    );
    assert_eq!(members.members.len(), 3);
    for n in &nodes {
        let v = n.client.etcd_get("/x/k").await.unwrap().value;
        assert_eq!(v.as_deref(), Some("kept"), "read through {}", n.name);
    }
    for n in nodes {
        n.shutdown().await;
    }
}
