//! Unit tests of the etcd layer's pure parts: error mapping (codes and the
//! exact messages of the node API), input checks, and the config file of each
//! [`Start`] (golden files). tests/etcd.rs runs the real etcd.

use super::gateway::gateway_error;
use super::ops::check_key;
use super::*;
use crate::api::{ErrorCode, InitialMember};
use crate::machine::EtcdSettings;

fn m(n: &str, u: &str) -> InitialMember {
    InitialMember {
        name: n.into(),
        peer_url: u.into(),
    }
}

/// The etcd of control plane `cp1` (10.5.0.10) of cluster `dev`, root `root`;
/// the cluster has three control planes.
fn etcd(root: &str, options: EtcdOptions) -> Etcd {
    etcd_of(root, options, 3)
}

/// [`etcd`] in a cluster of `control_planes` control planes (at least 1).
fn etcd_of(root: &str, options: EtcdOptions, control_planes: u8) -> Etcd {
    let mut cfg = crate::net::tests::config(false);
    let first = cfg.cluster.members[0].clone();
    for i in 1..control_planes {
        let mut m = first.clone();
        m.name = format!("cp{}", i + 1).parse().unwrap();
        m.address = Ipv4Addr::new(10, 5, 0, 10 + i);
        cfg.cluster.members.push(m);
    }
    cfg.etcd = Some(EtcdSettings {
        member_name: "cp1".parse().unwrap(),
        bootstrap_node: "cp1".parse().unwrap(),
    });
    Etcd::with_options(&cfg, Path::new(root), options).unwrap()
}

#[test]
fn etcd_errors_map_to_typed_codes() {
    let e = map_etcd_error(
        500,
        br#"{"error":"etcdserver: can only promote a learner member which is in sync with leader","code":9,"message":"etcdserver: can only promote a learner member which is in sync with leader"}"#,
    );
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("in sync"));
    let e = map_etcd_error(
        404,
        br#"{"error":"etcdserver: member not found","code":5,"message":"etcdserver: member not found"}"#,
    );
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = map_etcd_error(
        400,
        br#"{"code":9,"message":"etcdserver: Peer URLs already exists"}"#,
    );
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(e.message, "etcd: etcdserver: Peer URLs already exists");
    let e = map_etcd_error(
        400,
        br#"{"code":3,"message":"etcdserver: key is not provided"}"#,
    );
    assert_eq!(e.code, ErrorCode::BadRequest);
    // Garbage never panics.
    let e = map_etcd_error(502, b"\xff\xfe not json");
    assert_eq!(e.code, ErrorCode::Internal);
    let e = map_etcd_error(503, b"");
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert_eq!(e.message, "etcd: etcd answered with HTTP status 503");
    // `error` stands in for an empty `message`.
    let e = gateway_error(500, br#"{"error":"etcdserver: no leader","message":""}"#);
    assert!(
        matches!(&e, EtcdError::Gateway { status: 500, grpc_code: None, message } if message == "etcdserver: no leader")
    );
    assert_eq!(e.code(), ErrorCode::Unavailable);
}

/// The node API's codes and messages, exactly as before the typed errors.
#[test]
fn api_errors_keep_their_codes_and_messages() {
    let cases: Vec<(EtcdError, ErrorCode, &str)> = vec![
        (
            EtcdError::AlreadyHasData { op: "join" },
            ErrorCode::Conflict,
            "cannot join: etcd on this node already has data (bootstrapped or joined before)",
        ),
        (
            EtcdError::AlreadySupervised {
                op: "bootstrap",
                state: "running",
            },
            ErrorCode::Conflict,
            "cannot bootstrap: etcd is already running",
        ),
        (
            EtcdError::FailedToStart {
                error: "exited with status 1".into(),
                last_output: Some("bad flag".into()),
            },
            ErrorCode::Unavailable,
            "etcd failed to start: exited with status 1; its last output: bad flag",
        ),
        (
            EtcdError::FailedToStart {
                error: "exited with status 1".into(),
                last_output: None,
            },
            ErrorCode::Unavailable,
            "etcd failed to start: exited with status 1",
        ),
        (
            EtcdError::Setup(SetupError::NoCertificates),
            ErrorCode::Internal,
            "the machine config has no etcd certificates",
        ),
        (
            EtcdError::NotAnswering("connection refused".into()),
            ErrorCode::Unavailable,
            "etcd on this node is not answering: connection refused",
        ),
        (
            EtcdError::InvalidMemberName("a,b".into()),
            ErrorCode::BadRequest,
            "invalid member name \"a,b\"",
        ),
        (
            EtcdError::KeyTooLong,
            ErrorCode::BadRequest,
            "the key is longer than 4096 bytes",
        ),
        (
            EtcdError::NoSuchMember(0xab),
            ErrorCode::NotFound,
            "no member ab",
        ),
        (
            EtcdError::NoMemberAdded,
            ErrorCode::Internal,
            "etcd added no member (empty answer)",
        ),
        (
            EtcdError::Unhealthy {
                status: 503,
                reason: Some("RAFT NO LEADER".into()),
            },
            ErrorCode::Unavailable,
            "etcd reports unhealthy (status 503): RAFT NO LEADER",
        ),
        (
            EtcdError::Unhealthy {
                status: 503,
                reason: Some(String::new()),
            },
            ErrorCode::Unavailable,
            "etcd reports unhealthy (status 503)",
        ),
    ];
    for (e, code, message) in cases {
        let api = ApiError::from(e);
        assert_eq!((api.code, api.message.as_str()), (code, message));
    }
}

/// The input checks' messages, exactly as before the typed errors.
#[test]
fn input_errors_keep_their_messages() {
    let e = check_peer_url("http://10.5.0.2:2380").unwrap_err();
    assert_eq!(
        ApiError::from(e).message,
        "peer URL \"http://10.5.0.2:2380\" is not https; expected https://<IPv4>:<port>"
    );
    let e = validate_initial_cluster(
        &[m("cp-2", "https://10.5.0.9:2380")],
        "cp-2",
        "https://10.5.0.3:2380",
    )
    .unwrap_err();
    assert_eq!(
        ApiError::from(e).message,
        "the initial cluster lists \"cp-2\" with \"https://10.5.0.9:2380\", but its peer URL is \"https://10.5.0.3:2380\""
    );
    assert_eq!(
        ApiError::from(check_key("").unwrap_err()).message,
        "the key is empty"
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_input_never_panics(body in proptest::collection::vec(0u8.., 0..300), s in ".{0,80}") {
        let _ = map_etcd_error(500, &body);
        let _ = check_peer_url(&s);
        let _ = check_key(&s);
        let _ = validate_initial_cluster(&[m(&s, &s)], &s, &s);
    }
}

#[test]
fn peer_urls_are_checked() {
    assert!(check_peer_url("https://10.5.0.2:2380").is_ok());
    for (bad, fault) in [
        ("http://10.5.0.2:2380", PeerUrlFault::NotHttps),
        ("https://10.5.0.2", PeerUrlFault::NoPort),
        ("https://node:2380", PeerUrlFault::NotIpv4),
        ("https://10.5.0.2:0", PeerUrlFault::BadPort),
        ("https://10.5.0.2:2380/x", PeerUrlFault::BadPort),
        ("", PeerUrlFault::NotHttps),
    ] {
        let e = check_peer_url(bad).unwrap_err();
        assert!(
            matches!(&e, EtcdError::InvalidPeerUrl { url, fault: f } if url == bad && *f == fault),
            "{bad}: {e:?}"
        );
        assert_eq!(e.code(), ErrorCode::BadRequest, "{bad}");
    }
}

#[test]
fn initial_cluster_must_list_this_member() {
    let me = "https://10.5.0.3:2380";
    let ok = vec![m("cp-1", "https://10.5.0.2:2380"), m("cp-2", me)];
    let cluster = InitialCluster::new(ok.clone(), "cp-2", me).unwrap();
    assert_eq!(cluster.members(), &ok[..]);
    for bad in [
        vec![],
        vec![m("cp-1", "https://10.5.0.2:2380")],
        vec![m("cp-2", "https://10.5.0.9:2380")],
        vec![m("cp-2", me), m("cp-2", me)],
        vec![m("cp,2", me)],
        vec![m("cp-2", me), m("cp-1", me)],
    ] {
        let e = InitialCluster::new(bad, "cp-2", me).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    }
}

#[test]
fn only_a_bootstrap_starts_a_new_cluster() {
    let join = Start::Join {
        initial_cluster: InitialCluster::new(
            vec![m("cp1", "https://10.5.0.10:2380")],
            "cp1",
            "https://10.5.0.10:2380",
        )
        .unwrap(),
    };
    assert_eq!(Start::Bootstrap.cluster_state(), ClusterState::New);
    assert_eq!(join.cluster_state(), ClusterState::Existing);
    assert_eq!(Start::Existing.cluster_state(), ClusterState::Existing);
}

/// The config file of each way to start: the golden files are what the node
/// renders (the bootstrap's and the join's). A later boot's differs from the
/// bootstrap's only in the cluster state.
#[test]
fn config_file_per_start_matches_golden() {
    let e = etcd("/", EtcdOptions::default());
    let bootstrap = include_str!("etcd-config-bootstrap.json");
    let join = include_str!("etcd-config-join.json");
    let hint = "update crates/node/src/etcd/etcd-config-*.json if intended";
    assert_eq!(
        e.render_config(&Start::Bootstrap).unwrap(),
        bootstrap,
        "{hint}"
    );
    assert_eq!(
        e.render_config(&Start::Existing).unwrap(),
        bootstrap.replace(
            r#""initial-cluster-state": "new""#,
            r#""initial-cluster-state": "existing""#
        ),
        "{hint}"
    );
    let initial_cluster = InitialCluster::new(
        vec![m("cp0", "https://10.5.0.9:2380"), m("cp1", &e.peer_url())],
        "cp1",
        &e.peer_url(),
    )
    .unwrap();
    assert_eq!(
        e.render_config(&Start::Join { initial_cluster }).unwrap(),
        join,
        "{hint}"
    );
}

/// The only control plane of a cluster elects itself sooner; with several,
/// etcd's defaults stay (the golden files above).
#[test]
fn a_lone_member_gets_the_short_election_timeout() {
    let alone = etcd_of("/", EtcdOptions::default(), 1);
    let cfg: serde_json::Value =
        serde_json::from_str(&alone.render_config(&Start::Bootstrap).unwrap()).unwrap();
    assert_eq!(cfg["heartbeat-interval"], 50);
    assert_eq!(cfg["election-timeout"], 250);
    // etcd refuses an election timeout under five heartbeats.
    let t = RaftTiming::ALONE;
    assert!(t.election_ms >= 5 * t.heartbeat_ms);
    for n in [0, 2, 3, 5] {
        assert_eq!(RaftTiming::for_control_planes(n), RaftTiming::SHARED, "{n}");
    }
    let shared = etcd_of("/", EtcdOptions::default(), 2);
    let cfg: serde_json::Value =
        serde_json::from_str(&shared.render_config(&Start::Existing).unwrap()).unwrap();
    assert_eq!(cfg["heartbeat-interval"], 100);
    assert_eq!(cfg["election-timeout"], 1000);
}

#[test]
fn without_the_loopback_listener_etcd_is_reached_on_its_address() {
    let e = etcd(
        "/r",
        EtcdOptions {
            program: None,
            loopback_client: false,
        },
    );
    assert_eq!(e.local_url(), "https://10.5.0.10:2379");
    let v: serde_json::Value =
        serde_json::from_str(&e.render_config(&Start::Bootstrap).unwrap()).unwrap();
    assert_eq!(v["listen-client-urls"], "https://10.5.0.10:2379");
    assert_eq!(v["listen-metrics-urls"], "http://10.5.0.10:2381");
    assert_eq!(e.health_url(), "http://10.5.0.10:2381");
    assert_eq!(v["data-dir"], "/r/var/lib/etcd");
    assert_eq!(
        etcd("/", EtcdOptions::default()).local_url(),
        "https://127.0.0.1:2379"
    );
    assert_eq!(
        etcd("/", EtcdOptions::default()).health_url(),
        "http://127.0.0.1:2381"
    );
}

/// Without certificates etcd's files cannot be written and its gateway
/// cannot be reached: both say so, as an internal error.
#[tokio::test]
async fn missing_certificates_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = etcd(dir.path().to_str().unwrap(), EtcdOptions::default());
    let err = e.write_files(&Start::Bootstrap).unwrap_err();
    assert!(
        matches!(err, EtcdError::Setup(SetupError::NoCertificates)),
        "{err:?}"
    );
    let err = ApiError::from(e.members().await.unwrap_err());
    assert_eq!(err.code, ErrorCode::Internal);
    assert_eq!(err.message, "the machine config has no etcd certificates");
    assert_eq!(
        (e.probe())().await.unwrap_err(),
        "the machine config has no etcd certificates"
    );
}
