//! apid over real TLS on loopback: a generated PKI, the server on
//! 127.0.0.1:0 with the in-memory controller, and the host client.

use super::memory::MemoryController;
use super::{Apid, server_tls_config};
use crate::api::{ErrorCode, InitialMember, Role, ServiceState, paths};
use futures::StreamExt;
use ironclad_host::client::{ClientError, NodeClient};
use ironclad_host::pki::{Secrets, issue_client_cert};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const NODE: &str = "dev-cp-1";

struct Fixture {
    secrets: Secrets,
    addr: SocketAddr,
    ctl: Arc<MemoryController>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start() -> Fixture {
    let secrets = Secrets::generate("dev").unwrap();
    let server_cert = secrets
        .os_ca
        .issue_server(NODE, &[NODE], &[Ipv4Addr::new(10, 5, 0, 2)], false)
        .unwrap();
    let tls = server_tls_config(
        secrets.os_ca.cert_pem(),
        &server_cert.cert_pem,
        &server_cert.key_pem,
    )
    .unwrap();
    let apid = Apid::bind_with("127.0.0.1:0".parse().unwrap(), tls)
        .await
        .unwrap();
    let addr = apid.local_addr().unwrap();
    let ctl = Arc::new(MemoryController::new(NODE, &["etcd", "containerd"]));
    let c = ctl.clone();
    let server = tokio::spawn(async move {
        let _ = apid.serve(c).await;
    });
    Fixture {
        secrets,
        addr,
        ctl,
        server,
    }
}

impl Fixture {
    fn client(&self, role: Role) -> NodeClient {
        let cert = issue_client_cert(&self.secrets.os_ca, role, "test").unwrap();
        NodeClient::new(
            NODE,
            self.addr,
            self.secrets.os_ca.cert_pem(),
            &cert.cert_pem,
            &cert.key_pem,
        )
        .unwrap()
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
    assert_eq!(
        code(admin.service_start("Bad.Name").await),
        ErrorCode::BadRequest
    );

    for i in 0..5 {
        f.ctl.log("etcd", &format!("line {i}"));
    }
    let tail = admin.logs("etcd", Some(2)).await.unwrap().lines;
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1].line, "line 4");
    f.ctl.kernel("virtio_net loaded");
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
    let cluster = ironclad_host::spec::parse_cluster(
        include_str!("../../../../clusters/dev.yaml"),
        "dev.yaml",
    )
    .unwrap();
    let node = cluster.node(NODE).unwrap();
    let cfg = ironclad_host::machine::render(&cluster, node, &f.secrets).unwrap();
    admin.apply_config(&cfg.to_yaml().unwrap()).await.unwrap();
    assert_eq!(f.ctl.applied_configs(), 1);
    assert_eq!(
        code(admin.apply_config("not: a machine config").await),
        ErrorCode::BadRequest
    );

    admin.reboot().await.unwrap();
    assert_eq!(f.ctl.power_request(), Some("reboot"));
    admin.shutdown().await.unwrap();
    assert_eq!(f.ctl.power_request(), Some("shutdown"));
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
    assert_eq!(
        reader.etcd_get("k").await.unwrap().value.as_deref(),
        Some("v")
    );

    let forbidden = ErrorCode::Forbidden;
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
    assert_eq!(f.ctl.power_request(), None);
    assert_eq!(
        admin.etcd_get("k").await.unwrap().value.as_deref(),
        Some("v")
    );
    assert_eq!(admin.etcd_members().await.unwrap().members.len(), 1);
}

/// A client config without a client certificate.
fn no_cert_client(f: &Fixture) -> NodeClient {
    let verifier =
        ironclad_host::client::NodeVerifier::new(NODE, f.secrets.os_ca.cert_pem()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_no_client_auth();
    NodeClient::with_tls(NODE, f.addr, tls).unwrap()
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
        f.addr,
        f.secrets.os_ca.cert_pem(),
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
    assert_eq!(f.ctl.power_request(), None);

    // A client that trusts another CA refuses the node.
    let admin_other = issue_client_cert(&f.secrets.os_ca, Role::Admin, "a").unwrap();
    let wrong_trust = NodeClient::new(
        NODE,
        f.addr,
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
    let cert = f.secrets.os_ca.issue_client("norole", None).unwrap();
    let c = NodeClient::new(
        NODE,
        f.addr,
        f.secrets.os_ca.cert_pem(),
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
    let big = vec![b' '; crate::api::MAX_BODY_BYTES + 1];
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
    s: &mut futures::stream::BoxStream<'static, Result<crate::api::LogLine, ClientError>>,
) -> crate::api::LogLine {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a line within 10 s")
        .expect("stream open")
        .unwrap()
}

#[tokio::test]
async fn follow_streams_ndjson_lines_as_they_come() {
    let f = start().await;
    f.ctl.log("etcd", "before 1");
    f.ctl.log("etcd", "before 2");
    let reader = f.client(Role::Reader);
    let mut stream = reader.follow_logs("etcd", Some(1)).await.unwrap();
    let first = next_line(&mut stream).await;
    assert_eq!(first.line, "before 2");
    // The follower is subscribed once the past lines are out; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.ctl.followers("etcd") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no follower");
        tokio::task::yield_now().await;
    }
    for i in 0..3 {
        f.ctl.log("etcd", &format!("live {i}"));
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
    let admin = issue_client_cert(&f.secrets.os_ca, Role::Admin, "admin").unwrap();
    ironclad_host::pki::write_client_cert(dir.path(), "admin", &admin).unwrap();
    let cfg = ironclad_host::clientconfig::ClientConfig {
        api_version: ironclad_contract::API_VERSION.to_string(),
        kind: ironclad_host::clientconfig::KIND.to_string(),
        cluster: "dev".parse().unwrap(),
        os_ca: f.secrets.os_ca.cert_pem().to_string(),
        cert: "admin.crt".into(),
        key: "admin.key".into(),
        nodes: vec![ironclad_host::clientconfig::ClientNode {
            name: NODE.parse().unwrap(),
            role: ironclad_host::spec::Role::ControlPlane,
            address: Ipv4Addr::new(10, 5, 0, 2),
            endpoint: Some(f.addr),
        }],
    };
    let path = dir.path().join(ironclad_host::clientconfig::FILE_NAME);
    cfg.save(&path).unwrap();
    let c = NodeClient::from_client_config(&path, NODE).unwrap();
    assert_eq!(c.base_url(), format!("https://{}", f.addr));
    c.reboot().await.unwrap();
    assert_eq!(f.ctl.power_request(), Some("reboot"));
    assert!(matches!(
        NodeClient::from_client_config(&path, "ghost"),
        Err(ClientError::Setup(_))
    ));
}

#[tokio::test]
async fn chunked_oversized_body_is_413() {
    let f = start().await;
    let admin = issue_client_cert(&f.secrets.os_ca, Role::Admin, "admin").unwrap();
    let tls = ironclad_host::client::node_tls_config(
        NODE,
        f.secrets.os_ca.cert_pem(),
        &admin.cert_pem,
        &admin.key_pem,
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    // A streamed body has no Content-Length: the limit is found while reading.
    let chunks = (0..5).map(|_| Ok::<_, std::io::Error>(vec![b' '; 256 * 1024]));
    let resp = http
        .post(format!("https://{}{}", f.addr, paths::ETCD_JOIN))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: crate::api::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::PayloadTooLarge);
}

#[tokio::test]
async fn stalled_and_garbage_connections_do_not_block_others() {
    use tokio::io::AsyncWriteExt;
    let f = start().await;
    // One connection that never speaks, one that sends plain HTTP.
    let _idle = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(f.addr).await.unwrap();
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
