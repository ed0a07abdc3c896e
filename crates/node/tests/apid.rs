//! apid over real TLS on loopback: a generated PKI, the server on
//! 127.0.0.1:0 with the in-memory controller (the shared fixture of
//! `ironclad-testkit`), and the host client.

use futures::StreamExt;
use ironclad_contract::api::{ErrorCode, InitialMember, Role, ServiceState, paths};
use ironclad_host::client::{ClientError, NodeClient};
use ironclad_host::pki::{Secrets, issue_client_cert};
use ironclad_node::apid::Limits;
use ironclad_testkit::apid::{MemoryNode, TestPki};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const NODE: &str = "dev-cp-1";

/// A node's apid on loopback with its cluster's PKI.
struct Fixture {
    pki: TestPki,
    node: MemoryNode,
}

async fn start() -> Fixture {
    start_with(Limits::default()).await
}

async fn start_with(limits: Limits) -> Fixture {
    let pki = TestPki::new("dev");
    let tls = pki.server_tls(NODE);
    let node = MemoryNode::serve_tls(NODE, &["etcd", "containerd"], tls, limits).await;
    Fixture { pki, node }
}

impl Fixture {
    fn client(&self, role: Role) -> NodeClient {
        self.pki.client(NODE, self.node.addr, role)
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Api(e)) => e.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn admin_uses_every_endpoint() {
    let f = start().await;
    let admin = f.client(Role::Admin);
    let v = admin.version().await.unwrap();
    assert_eq!((v.node.as_str(), v.api.as_str()), (NODE, "v1"));
    assert!(admin.health().await.unwrap().healthy);
    let names: Vec<_> = admin
        .services()
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["containerd", "etcd"]);
    assert_eq!(
        admin.service_stop("etcd").await.unwrap().state,
        ServiceState::Stopped
    );
    assert_eq!(
        admin.service_start("etcd").await.unwrap().state,
        ServiceState::Running
    );
    assert_eq!(admin.service_restart("etcd").await.unwrap().restarts, 1);
    assert_eq!(code(admin.service_start("nope").await), ErrorCode::NotFound);
    // Path names follow ServiceName's rule (a DNS-1123 label).
    for bad in ["Bad.Name", "x_y", "-etcd", "a..b", "a%2Fb"] {
        assert_eq!(
            code(admin.service_start(bad).await),
            ErrorCode::BadRequest,
            "{bad}"
        );
    }

    for i in 0..5 {
        f.node.ctl.log("etcd", &format!("line {i}"));
    }
    let tail = admin.logs("etcd", Some(2)).await.unwrap().lines;
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1].line, "line 4");
    f.node.ctl.kernel("virtio_net loaded");
    assert_eq!(
        admin.dmesg(None).await.unwrap().lines[0].line,
        "virtio_net loaded"
    );

    // etcd before bootstrap is unavailable, bootstrap twice is a conflict.
    assert_eq!(code(admin.etcd_members().await), ErrorCode::Unavailable);
    assert!(admin.bootstrap().await.unwrap().accepted);
    assert_eq!(code(admin.bootstrap().await), ErrorCode::Conflict);
    assert!(admin.health().await.unwrap().etcd_bootstrapped);
    let learner = admin
        .etcd_add_learner("dev-cp-2", "https://10.5.0.3:2380")
        .await
        .unwrap();
    assert!(learner.is_learner);
    assert_eq!(admin.etcd_members().await.unwrap().members.len(), 2);
    assert!(!admin.etcd_promote(learner.id).await.unwrap().is_learner);
    assert_eq!(
        code(admin.etcd_promote(learner.id).await),
        ErrorCode::Conflict
    );
    admin.etcd_remove(learner.id).await.unwrap();
    assert_eq!(
        code(admin.etcd_remove(learner.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(admin.etcd_members().await.unwrap().members.len(), 1);
    admin.etcd_put("a/b", "v 1&x=2").await.unwrap();
    let kv = admin.etcd_get("a/b").await.unwrap();
    assert_eq!(kv.value.as_deref(), Some("v 1&x=2"));
    assert_eq!(admin.etcd_get("missing").await.unwrap().value, None);
    // This node already runs etcd: joining is refused.
    let join = vec![InitialMember {
        name: NODE.to_string(),
        peer_url: "https://127.0.0.1:2380".to_string(),
    }];
    assert_eq!(code(admin.etcd_join(join).await), ErrorCode::Conflict);

    // apply-config: a real rendered document for this node is accepted.
    let cluster =
        ironclad_host::spec::parse_cluster(include_str!("../../../clusters/dev.yaml"), "dev.yaml")
            .unwrap();
    let node = cluster.node(NODE).unwrap();
    let cfg = ironclad_host::machine::render(&cluster, node, &f.pki.secrets).unwrap();
    admin.apply_config(&cfg.to_yaml().unwrap()).await.unwrap();
    assert_eq!(f.node.ctl.applied_configs(), 1);
    assert_eq!(
        code(admin.apply_config("not: a machine config").await),
        ErrorCode::BadRequest
    );

    admin.reboot().await.unwrap();
    assert_eq!(f.node.ctl.power_request(), Some("reboot"));
    admin.shutdown().await.unwrap();
    assert_eq!(f.node.ctl.power_request(), Some("shutdown"));
}

#[tokio::test]
async fn join_on_a_fresh_node() {
    let f = start().await;
    let admin = f.client(Role::Admin);
    let other = vec![InitialMember {
        name: "dev-cp-9".to_string(),
        peer_url: "https://10.5.0.9:2380".to_string(),
    }];
    assert_eq!(code(admin.etcd_join(other).await), ErrorCode::BadRequest);
    let me = vec![InitialMember {
        name: NODE.to_string(),
        peer_url: "https://127.0.0.1:2380".to_string(),
    }];
    admin.etcd_join(me).await.unwrap();
    assert!(admin.health().await.unwrap().etcd_bootstrapped);
}

#[tokio::test]
async fn reader_reads_and_is_forbidden_to_change() {
    let f = start().await;
    let admin = f.client(Role::Admin);
    admin.bootstrap().await.unwrap();
    admin.etcd_put("k", "v").await.unwrap();
    let reader = f.client(Role::Reader);
    reader.version().await.unwrap();
    reader.health().await.unwrap();
    reader.services().await.unwrap();
    reader.logs("etcd", None).await.unwrap();
    reader.dmesg(Some(10)).await.unwrap();
    reader.etcd_members().await.unwrap();

    let forbidden = ErrorCode::Forbidden;
    // A key may hold anything: reading one is for admins.
    assert_eq!(code(reader.etcd_get("k").await), forbidden);
    assert_eq!(code(reader.service_start("etcd").await), forbidden);
    assert_eq!(code(reader.service_stop("etcd").await), forbidden);
    assert_eq!(code(reader.service_restart("etcd").await), forbidden);
    assert_eq!(code(reader.bootstrap().await), forbidden);
    assert_eq!(
        code(reader.etcd_add_learner("x", "https://1.2.3.4:2380").await),
        forbidden
    );
    assert_eq!(code(reader.etcd_promote(1).await), forbidden);
    assert_eq!(code(reader.etcd_remove(1).await), forbidden);
    assert_eq!(code(reader.etcd_join(Vec::new()).await), forbidden);
    assert_eq!(code(reader.etcd_put("k", "w").await), forbidden);
    assert_eq!(code(reader.apply_config("x").await), forbidden);
    assert_eq!(code(reader.reboot().await), forbidden);
    assert_eq!(code(reader.shutdown().await), forbidden);
    // Nothing changed.
    assert_eq!(f.node.ctl.power_request(), None);
    assert_eq!(
        admin.etcd_get("k").await.unwrap().value.as_deref(),
        Some("v")
    );
    assert_eq!(admin.etcd_members().await.unwrap().members.len(), 1);
}

/// A client config without a client certificate.
fn no_cert_client(f: &Fixture) -> NodeClient {
    let verifier =
        ironclad_host::client::NodeVerifier::new(NODE, f.pki.secrets.os_ca.cert_pem()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_no_client_auth();
    NodeClient::with_tls(NODE, f.node.addr, tls).unwrap()
}

#[tokio::test]
async fn handshake_fails_without_cert_or_with_a_foreign_one() {
    let f = start().await;
    let anonymous = no_cert_client(&f);
    let err = anonymous.version().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Connect { .. } | ClientError::Transport { .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), None);

    let other = Secrets::generate("other").unwrap();
    let stranger = issue_client_cert(&other.os_ca, Role::Admin, "stranger").unwrap();
    let foreign = NodeClient::new(
        NODE,
        f.node.addr,
        f.pki.secrets.os_ca.cert_pem(),
        &stranger.cert_pem,
        &stranger.key_pem,
    )
    .unwrap();
    let err = foreign.reboot().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Connect { .. } | ClientError::Transport { .. }
        ),
        "{err:?}"
    );
    assert_eq!(f.node.ctl.power_request(), None);

    // A client that trusts another CA refuses the node.
    let admin_other = issue_client_cert(&f.pki.secrets.os_ca, Role::Admin, "a").unwrap();
    let wrong_trust = NodeClient::new(
        NODE,
        f.node.addr,
        other.os_ca.cert_pem(),
        &admin_other.cert_pem,
        &admin_other.key_pem,
    )
    .unwrap();
    assert!(wrong_trust.version().await.is_err());

    // The failed handshakes did not hurt the server.
    f.client(Role::Admin).version().await.unwrap();
}

#[tokio::test]
async fn cert_without_role_is_unauthenticated() {
    let f = start().await;
    let cert = f.pki.secrets.os_ca.issue_client("norole", None).unwrap();
    let c = NodeClient::new(
        NODE,
        f.node.addr,
        f.pki.secrets.os_ca.cert_pem(),
        &cert.cert_pem,
        &cert.key_pem,
    )
    .unwrap();
    assert_eq!(code(c.version().await), ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn bad_bodies_paths_and_methods_are_typed_and_the_server_keeps_serving() {
    let f = start().await;
    let admin = f.client(Role::Admin);
    let big = vec![b' '; ironclad_contract::api::MAX_BODY_BYTES + 1];
    assert_eq!(
        code(admin.post_raw(paths::ETCD_JOIN, big).await),
        ErrorCode::PayloadTooLarge
    );
    assert_eq!(
        code(
            admin
                .post_raw(paths::ETCD_JOIN, b"{not json".to_vec())
                .await
        ),
        ErrorCode::BadRequest
    );
    // Unknown fields are refused.
    assert_eq!(
        code(
            admin
                .post_raw(
                    paths::ETCD_JOIN,
                    br#"{"initial_cluster":[],"x":1}"#.to_vec()
                )
                .await
        ),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(admin.post_raw("/v1/nope", b"{}".to_vec()).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(admin.post_raw("/v2/version", b"{}".to_vec()).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(admin.post_raw(paths::VERSION, b"{}".to_vec()).await),
        ErrorCode::MethodNotAllowed
    );
    assert_eq!(
        code(admin.logs("etcd", Some(1_000_000)).await),
        ErrorCode::BadRequest
    );
    admin.version().await.unwrap();
}

async fn next_line(
    s: &mut futures::stream::BoxStream<
        'static,
        Result<ironclad_contract::api::LogLine, ClientError>,
    >,
) -> ironclad_contract::api::LogLine {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a line within 10 s")
        .expect("stream open")
        .unwrap()
}

#[tokio::test]
async fn follow_streams_ndjson_lines_as_they_come() {
    let f = start().await;
    f.node.ctl.log("etcd", "before 1");
    f.node.ctl.log("etcd", "before 2");
    let reader = f.client(Role::Reader);
    let mut stream = reader.follow_logs("etcd", Some(1)).await.unwrap();
    let first = next_line(&mut stream).await;
    assert_eq!(first.line, "before 2");
    // The follower is subscribed once the past lines are out; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.node.ctl.followers("etcd") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no follower");
        tokio::task::yield_now().await;
    }
    for i in 0..3 {
        f.node.ctl.log("etcd", &format!("live {i}"));
        let l = next_line(&mut stream).await;
        assert_eq!(l.line, format!("live {i}"));
    }
    assert_eq!(
        code(reader.follow_logs("nope", None).await.map(|_| ())),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn client_from_client_config_file() {
    let f = start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = issue_client_cert(&f.pki.secrets.os_ca, Role::Admin, "admin").unwrap();
    ironclad_host::pki::write_client_cert(dir.path(), "admin", &admin).unwrap();
    let cfg = ironclad_host::clientconfig::ClientConfig {
        api_version: ironclad_contract::API_VERSION.to_string(),
        kind: ironclad_host::clientconfig::KIND.to_string(),
        cluster: "dev".parse().unwrap(),
        os_ca: f.pki.secrets.os_ca.cert_pem().to_string(),
        cert: "admin.crt".into(),
        key: "admin.key".into(),
        nodes: vec![ironclad_host::clientconfig::ClientNode {
            name: NODE.parse().unwrap(),
            role: ironclad_host::spec::Role::ControlPlane,
            address: Ipv4Addr::new(10, 5, 0, 2),
            endpoint: Some(f.node.addr),
        }],
    };
    let path = dir.path().join(ironclad_host::clientconfig::FILE_NAME);
    cfg.save(&path).unwrap();
    let c = NodeClient::from_client_config(&path, NODE).unwrap();
    assert_eq!(c.base_url(), format!("https://{}", f.node.addr));
    c.reboot().await.unwrap();
    assert_eq!(f.node.ctl.power_request(), Some("reboot"));
    assert!(matches!(
        NodeClient::from_client_config(&path, "ghost"),
        Err(ClientError::Setup(_))
    ));
}

#[tokio::test]
async fn chunked_oversized_body_is_413() {
    let f = start().await;
    let tls = f.pki.client_tls(NODE, Role::Admin, "admin");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    // A streamed body has no Content-Length: the limit is found while reading.
    let chunks = (0..5).map(|_| Ok::<_, std::io::Error>(vec![b' '; 256 * 1024]));
    let resp = http
        .post(format!("https://{}{}", f.node.addr, paths::ETCD_JOIN))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: ironclad_contract::api::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::PayloadTooLarge);
}

#[tokio::test]
async fn stalled_and_garbage_connections_do_not_block_others() {
    use tokio::io::AsyncWriteExt;
    let f = start().await;
    // One connection that never speaks, one that sends plain HTTP.
    let _idle = tokio::net::TcpStream::connect(f.node.addr).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(f.node.addr).await.unwrap();
    garbage
        .write_all(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), f.client(Role::Reader).version())
        .await
        .expect("served while other connections stall")
        .unwrap();
    assert_eq!(v.node, NODE);
}

/// Sets this process's soft limit on open files to `want` (within the hard
/// limit); returns the limit now in force.
fn set_nofile_soft(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = want.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// A real TLS ClientHello for the fixture's server name.
fn client_hello(f: &Fixture) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_slice(
                f.pki.secrets.os_ca.cert_pem().as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(NODE).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Environment of [`flood_helper`]: the server's address.
const FLOOD_ADDR_ENV: &str = "IRONCLAD_TEST_FLOOD_ADDR";
/// Environment of [`flood_helper`]: the ClientHello to send, in hex.
const FLOOD_HELLO_ENV: &str = "IRONCLAD_TEST_FLOOD_HELLO";
/// Idle connections of the flood (they never send a byte).
const FLOOD_IDLE: usize = 1500;
/// How long an admin's call may take under the flood in this test: under the
/// handshake timeout (5 s), so one that waited for a slot to time out fails.
const ADMIN_BOUND: Duration = Duration::from_secs(3);
/// Connections of the flood that send a ClientHello and then nothing.
const FLOOD_STUCK: usize = 100;

/// The attacker of [`connection_flood_does_not_lock_the_admin_out`], run by
/// it in a child process (this test binary, `--exact --ignored`) so that the
/// flood's sockets count against the child's open-file limit, not the
/// server's. Opens the connections, prints `FLOOD-READY`, and keeps them
/// open until its stdin closes: a connection the server closes is opened
/// again (and sends its ClientHello again), as an attacker would.
#[test]
#[ignore = "the flood of connection_flood_does_not_lock_the_admin_out, run in its child process"]
#[expect(
    clippy::disallowed_methods,
    reason = "the parent test passes its server to the child this way"
)]
fn flood_helper() {
    use std::io::{BufRead, Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let addr: SocketAddr = std::env::var(FLOOD_ADDR_ENV)
        .expect("run by connection_flood_does_not_lock_the_admin_out")
        .parse()
        .unwrap();
    let hello = hex::decode(std::env::var(FLOOD_HELLO_ENV).unwrap()).unwrap();
    let want = (FLOOD_IDLE + FLOOD_STUCK + 64) as u64;
    assert!(
        set_nofile_soft(want) >= want,
        "hard limit on open files too low"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
            line.clear();
        }
        s.store(true, Ordering::SeqCst);
    });
    let open = |stuck: bool| -> Option<std::net::TcpStream> {
        let mut c = std::net::TcpStream::connect(addr).ok()?;
        if stuck {
            c.write_all(&hello).ok()?;
        }
        c.set_nonblocking(true).ok()?;
        Some(c)
    };
    let mut conns: Vec<(bool, Option<std::net::TcpStream>)> = (0..FLOOD_IDLE + FLOOD_STUCK)
        .map(|i| {
            let stuck = i >= FLOOD_IDLE;
            (stuck, open(stuck))
        })
        .collect();
    let held = conns.iter().filter(|c| c.1.is_some()).count();
    println!("FLOOD-READY {held}");
    std::io::stdout().flush().unwrap();
    let mut reopened = 0u64;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        for (stuck, c) in conns.iter_mut() {
            let alive = match c {
                None => false,
                // Drain what the server sent (its handshake flight); EOF or
                // an error means it closed the connection.
                Some(s) => loop {
                    match s.read(&mut buf) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                        Err(_) => break false,
                    }
                },
            };
            if !alive {
                *c = open(*stuck);
                reopened += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("FLOOD-DONE reopened={reopened}");
}

/// 1,500 idle TCP connections and 100 handshakes stuck after their
/// ClientHello, held open by another process (reopened as soon as the
/// server closes one): the admin's `version` still answers within a
/// second, and once they are gone the node serves as before. The server runs with 1,024 open files, what PID 1 had on a node:
/// fewer than the flood's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_does_not_lock_the_admin_out() {
    use tokio::io::AsyncBufReadExt;
    set_nofile_soft(1024);
    let f = start().await;
    // One client (and so one new connection) per call under the flood.
    let admins: Vec<NodeClient> = (0..20).map(|_| f.client(Role::Admin)).collect();
    let admin = f.client(Role::Admin);
    // The helper's test name: this module's path without the crate's name.
    let helper = "flood_helper";
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--ignored", "--nocapture"])
        .env(FLOOD_ADDR_ENV, f.node.addr.to_string())
        .env(FLOOD_HELLO_ENV, hex::encode(client_hello(&f)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(l) = out.next_line().await.unwrap() {
            if l.starts_with("FLOOD-READY") {
                return l;
            }
        }
        panic!("the flood helper ended before it was ready");
    })
    .await
    .expect("the flood opened within 120 s");
    eprintln!("{ready}");

    // While the flood goes on, a new admin connection every 100 ms, 20
    // times: each first call answers, well before the handshake timeout (an
    // admin who had to wait for a flood connection to time out would take
    // 5 s). The target, under a second, is measured (38 ms in a release
    // build on 2 cores) and printed; the bound here leaves room for a loaded
    // CI machine and a debug build. On failure, the
    // calls go on until one answers (at most 30 s) to say how long the
    // admin was kept out. The admin is another program: its calls run on
    // their own thread and runtime, not among the server's tasks.
    let calls = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            for admin in &admins {
                let t = std::time::Instant::now();
                let mut failed = Vec::new();
                let node = loop {
                    match tokio::time::timeout(Duration::from_secs(30), admin.version()).await {
                        Ok(Ok(v)) => break Some(v.node),
                        Ok(Err(e)) if t.elapsed() < Duration::from_secs(30) => {
                            failed.push(format!("{e:?}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => break None,
                    }
                };
                out.push((t.elapsed(), failed, node));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out
        })
    });
    let calls = tokio::task::spawn_blocking(move || calls.join().unwrap())
        .await
        .unwrap();
    let worst = calls.iter().map(|c| c.0).max().unwrap_or_default();
    eprintln!(
        "version under a flood of {FLOOD_IDLE} idle and {FLOOD_STUCK} stuck connections: slowest of {} new admin connections {:.0} ms; {:?}",
        calls.len(),
        worst.as_secs_f64() * 1000.0,
        f.node.gate.stats()
    );
    // The server held no more than its bounds, whatever the flood.
    let stats = f.node.gate.stats();
    let limits = f.node.gate.limits();
    assert!(stats.opened <= limits.max_silent, "{stats:?}");
    assert!(stats.handshaking <= limits.max_handshakes, "{stats:?}");
    assert!(stats.evicted > 0, "{stats:?}");
    for (i, (took, failed, node)) in calls.iter().enumerate() {
        assert_eq!(node.as_deref(), Some(NODE), "call {i}: {failed:?}");
        assert!(
            failed.is_empty() && *took < ADMIN_BOUND,
            "call {i} under the flood answered after {took:?}, {} attempts refused before (the last: {:?})",
            failed.len(),
            failed.last()
        );
    }

    // The flood goes away: normal service.
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the flood helper exits")
        .unwrap();
    assert!(status.success(), "flood helper: {status}");
    while let Ok(Some(l)) = out.next_line().await {
        if l.starts_with("FLOOD-DONE") {
            eprintln!("{l}");
        }
    }
    // Every connection of the flood is gone from the server too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = f.node.gate.stats();
        if s.opened + s.handshaking == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "handshakes left: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let readers: Vec<NodeClient> = (0..20).map(|_| f.client(Role::Reader)).collect();
    let calls = readers.iter().map(|r| r.version());
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().node, NODE);
    }
    admin.service_restart("etcd").await.unwrap();
    assert_eq!(f.node.gate.stats().refused, 0);
}

/// An admin's raw TLS connection (no HTTP client in between).
async fn raw_admin(f: &Fixture) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = f.pki.client_tls(NODE, Role::Admin, "raw");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(f.node.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(NODE).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// How long until the server closes `s` (reads until EOF or an error).
async fn closed_after(mut s: impl tokio::io::AsyncRead + Unpin) -> Duration {
    use tokio::io::AsyncReadExt;
    let t = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after 20 s"),
        }
    }
}

#[tokio::test]
async fn silent_handshakes_and_idle_connections_are_closed_in_time() {
    use tokio::io::AsyncWriteExt;
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let f = start_with(limits).await;
    // Connected, and never a byte: closed at the handshake timeout.
    let silent = tokio::net::TcpStream::connect(f.node.addr).await.unwrap();
    let took = closed_after(silent).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Half a ClientHello: the same.
    let mut half = tokio::net::TcpStream::connect(f.node.addr).await.unwrap();
    let hello = client_hello(&f);
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let took = closed_after(half).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Authenticated, a request answered, then idle: closed at the idle
    // timeout (hyper's header read timeout runs between requests).
    let mut tls = raw_admin(&f).await;
    tls.write_all(b"GET /v1/version HTTP/1.1\r\nHost: node\r\n\r\n")
        .await
        .unwrap();
    let took = closed_after(tls).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Headers that never end: the same.
    let mut slow = raw_admin(&f).await;
    slow.write_all(b"GET /v1/version HTTP/1.1\r\nHost: no")
        .await
        .unwrap();
    let took = closed_after(slow).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let s = f.node.gate.stats();
    assert_eq!((s.opened, s.handshaking, s.serving), (0, 0, 0), "{s:?}");
    f.client(Role::Admin).version().await.unwrap();
}

#[tokio::test]
async fn authenticated_connections_are_bounded() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let f = start_with(limits).await;
    // Three clients, each keeping its connection: the third pushes the
    // oldest idle one out.
    let clients: Vec<NodeClient> = (0..3).map(|_| f.client(Role::Reader)).collect();
    for c in &clients {
        c.version().await.unwrap();
    }
    let s = f.node.gate.stats();
    assert_eq!((s.serving, s.evicted, s.refused), (2, 1, 0), "{s:?}");
}
