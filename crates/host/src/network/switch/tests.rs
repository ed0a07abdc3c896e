//! Switch tests over real unix sockets: clients speak the frame protocol the way
//! QEMU does. Waits poll with a deadline; nothing sleeps a fixed time.

use super::*;
use crate::network::control::ControlClient;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, last])
}

fn eth(dst: MacAddr, src: MacAddr, tag: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f.extend_from_slice(tag);
    f
}

struct Harness {
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start(nodes: &[&str], seed: Option<u64>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = SwitchConfig {
            dir: dir.path().to_path_buf(),
            nodes: nodes.iter().map(|n| n.parse().unwrap()).collect(),
            seed,
        };
        let switch = Switch::bind(&config).await.unwrap();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(switch.serve(async {
            let _ = rx.await;
        }));
        Harness {
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn port(&self, node: &str) -> PathBuf {
        port_socket(self.dir.path(), &node.parse().unwrap())
    }

    async fn connect(&self, node: &str) -> UnixStream {
        UnixStream::connect(self.port(node)).await.unwrap()
    }

    async fn ctl(&self) -> ControlClient {
        ControlClient::connect(&control_socket(self.dir.path()))
            .await
            .unwrap()
    }

    async fn status(&self) -> Status {
        match self.ctl().await.request(&Request::Status {}).await.unwrap() {
            Response::Status { status } => status,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn ok(&self, req: Request) {
        assert_eq!(self.ctl().await.request(&req).await.unwrap(), Response::Ok);
    }

    /// Polls the status until `pred` holds.
    async fn wait_status(&self, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_connected(&self, nodes: &[&str], connects: u64) {
        self.wait_status("ports connected", |s| {
            nodes.iter().all(|n| {
                s.ports
                    .iter()
                    .any(|p| p.node == *n && p.connected && p.counters.connects >= connects)
            })
        })
        .await;
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
        assert!(!control_socket(self.dir.path()).exists());
    }
}

fn counters<'a>(s: &'a Status, node: &str) -> &'a Counters {
    &s.ports.iter().find(|p| p.node == node).unwrap().counters
}

async fn send(s: &mut UnixStream, frame: &[u8]) {
    write_frame(s, frame).await.unwrap();
}

async fn recv(s: &mut UnixStream) -> Vec<u8> {
    tokio::time::timeout(WAIT, read_frame(s))
        .await
        .expect("no frame within the deadline")
        .unwrap()
        .expect("stream closed")
}

#[tokio::test]
async fn broadcast_reaches_all_others_and_unicast_reaches_one() {
    let h = Harness::start(&["a", "b", "c"], Some(1)).await;
    let (mut a, mut b, mut c) = (
        h.connect("a").await,
        h.connect("b").await,
        h.connect("c").await,
    );
    h.wait_connected(&["a", "b", "c"], 1).await;

    let hello = eth(MacAddr::BROADCAST, mac(1), b"hello");
    send(&mut a, &hello).await;
    assert_eq!(recv(&mut b).await, hello);
    assert_eq!(recv(&mut c).await, hello);

    // b answers a: a's MAC is learned, so only a gets it.
    let reply = eth(mac(1), mac(2), b"reply");
    send(&mut b, &reply).await;
    assert_eq!(recv(&mut a).await, reply);

    // a to b, unicast now that b's MAC is known; then a marker broadcast.
    let uni = eth(mac(2), mac(1), b"unicast");
    send(&mut a, &uni).await;
    let marker = eth(MacAddr::BROADCAST, mac(1), b"marker");
    send(&mut a, &marker).await;
    assert_eq!(recv(&mut b).await, uni);
    assert_eq!(recv(&mut b).await, marker);
    // c's next frame is the marker: the unicast never went to c.
    assert_eq!(recv(&mut c).await, marker);

    let s = h.status().await;
    assert_eq!(counters(&s, "a").tx_frames, 1);
    assert_eq!(counters(&s, "c").tx_frames, 2);
    assert!(s.macs.contains(&MacEntry {
        mac: mac(1),
        node: "a".into()
    }));
    assert!(s.macs.contains(&MacEntry {
        mac: mac(2),
        node: "b".into()
    }));
    h.stop().await;
}

#[tokio::test]
async fn unknown_unicast_is_flooded_and_runts_are_counted() {
    let h = Harness::start(&["a", "b"], Some(1)).await;
    let (mut a, mut b) = (h.connect("a").await, h.connect("b").await);
    h.wait_connected(&["a", "b"], 1).await;
    let f = eth(mac(9), mac(1), b"who");
    send(&mut a, &f).await;
    assert_eq!(recv(&mut b).await, f);
    send(&mut a, &[1, 2, 3]).await;
    h.wait_status("runt counted", |s| counters(s, "a").runts == 1)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn partition_isolates_and_heal_restores() {
    let h = Harness::start(&["a", "b", "c"], Some(1)).await;
    let (mut a, mut b, mut c) = (
        h.connect("a").await,
        h.connect("b").await,
        h.connect("c").await,
    );
    h.wait_connected(&["a", "b", "c"], 1).await;

    h.ok(Request::Partition { node: "a".into() }).await;
    send(&mut a, &eth(MacAddr::BROADCAST, mac(1), b"lost")).await;
    let from_b = eth(MacAddr::BROADCAST, mac(2), b"b-only");
    send(&mut b, &from_b).await;
    // c sees b's frame first: a's never arrives.
    assert_eq!(recv(&mut c).await, from_b);
    let s = h
        .wait_status("partition drops", |s| {
            counters(s, "a").dropped_partition == 1
        })
        .await;
    assert_eq!(counters(&s, "b").dropped_partition, 1);
    assert_eq!(counters(&s, "c").dropped_partition, 1);
    assert_eq!(s.faults.partitioned, vec!["a".to_string()]);

    h.ok(Request::Heal {
        node: Some("a".into()),
        all: false,
    })
    .await;
    let back = eth(MacAddr::BROADCAST, mac(1), b"back");
    send(&mut a, &back).await;
    assert_eq!(recv(&mut b).await, back);
    assert_eq!(recv(&mut c).await, back);
    // a's first frame is from after the heal: b's broadcast during the partition
    // was dropped, not queued.
    let after = eth(MacAddr::BROADCAST, mac(2), b"after");
    send(&mut b, &after).await;
    assert_eq!(recv(&mut a).await, after);
    assert!(h.status().await.faults.partitioned.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn drop_all_drops_and_heal_all_restores() {
    let h = Harness::start(&["a", "b"], Some(7)).await;
    let (mut a, mut b) = (h.connect("a").await, h.connect("b").await);
    h.wait_connected(&["a", "b"], 1).await;
    h.ok(Request::Drop {
        percent: 100,
        node: Some("b".into()),
    })
    .await;
    for i in 0..5u8 {
        send(&mut a, &eth(MacAddr::BROADCAST, mac(1), &[i])).await;
    }
    h.wait_status("drops counted", |s| counters(s, "b").dropped_fault == 5)
        .await;
    h.ok(Request::Heal {
        node: None,
        all: true,
    })
    .await;
    let ok = eth(MacAddr::BROADCAST, mac(1), b"ok");
    send(&mut a, &ok).await;
    assert_eq!(recv(&mut b).await, ok);
    let s = h.status().await;
    assert_eq!(counters(&s, "b").tx_frames, 1);
    assert_eq!(s.faults, Faults::default());
    h.stop().await;
}

#[tokio::test]
async fn delay_delays_within_bounds() {
    let h = Harness::start(&["a", "b"], Some(1)).await;
    let (mut a, mut b) = (h.connect("a").await, h.connect("b").await);
    h.wait_connected(&["a", "b"], 1).await;
    h.ok(Request::Delay {
        ms: 1000,
        node: Some("b".into()),
    })
    .await;
    let f = eth(MacAddr::BROADCAST, mac(1), b"slow");
    let start = Instant::now();
    send(&mut a, &f).await;
    assert_eq!(recv(&mut b).await, f);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_millis(1000) + WAIT / 2, "{took:?}");

    h.ok(Request::Delay {
        ms: 0,
        node: Some("b".into()),
    })
    .await;
    let start = Instant::now();
    send(&mut a, &f).await;
    assert_eq!(recv(&mut b).await, f);
    assert!(start.elapsed() < Duration::from_millis(1000));
    h.stop().await;
}

#[tokio::test]
async fn a_port_reconnects_after_a_node_restart() {
    let h = Harness::start(&["a", "b"], Some(1)).await;
    let mut a = h.connect("a").await;
    let b = h.connect("b").await;
    h.wait_connected(&["a", "b"], 1).await;
    // b's MAC is learned, then b goes away: its MACs are forgotten.
    let mut b = b;
    send(&mut b, &eth(MacAddr::BROADCAST, mac(2), b"b1")).await;
    recv(&mut a).await;
    drop(b);
    h.wait_status("b disconnected", |s| {
        s.ports.iter().any(|p| p.node == "b" && !p.connected)
            && s.macs.iter().all(|m| m.node != "b")
    })
    .await;
    let mut b = h.connect("b").await;
    h.wait_connected(&["b"], 2).await;
    let f = eth(mac(2), mac(1), b"again");
    send(&mut a, &f).await;
    assert_eq!(recv(&mut b).await, f);

    // A second connection on a live port replaces the first.
    let mut b2 = h.connect("b").await;
    h.wait_connected(&["b"], 3).await;
    send(&mut a, &f).await;
    assert_eq!(recv(&mut b2).await, f);
    assert!(
        tokio::time::timeout(WAIT, read_frame(&mut b))
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the replaced connection is closed"
    );
    h.stop().await;
}

#[tokio::test]
async fn control_errors_are_typed_and_the_switch_keeps_serving() {
    let h = Harness::start(&["a"], Some(1)).await;
    let mut ctl = h.ctl().await;
    let code = |r: Response| match r {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        code(ctl.raw("{not json").await.unwrap()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(ctl.raw(r#"{"op":"reboot"}"#).await.unwrap()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(ctl.raw(r#"{"op":"partition","node":"zz"}"#).await.unwrap()),
        ErrorCode::UnknownNode
    );
    assert_eq!(
        code(ctl.raw(r#"{"op":"drop","percent":101}"#).await.unwrap()),
        ErrorCode::BadValue
    );
    assert_eq!(
        code(ctl.raw(r#"{"op":"delay","ms":999999}"#).await.unwrap()),
        ErrorCode::BadValue
    );
    assert_eq!(
        code(ctl.raw(r#"{"op":"heal"}"#).await.unwrap()),
        ErrorCode::BadValue
    );
    // The same connection still answers.
    assert!(matches!(
        ctl.request(&Request::Status {}).await.unwrap(),
        Response::Status { .. }
    ));
    // An over-long line gets its own code and closes that connection only.
    let long = "x".repeat(MAX_REQUEST_LINE + 10);
    assert_eq!(code(ctl.raw(&long).await.unwrap()), ErrorCode::LineTooLong);
    let s = h.status().await;
    assert_eq!(s.seed, 1);
    h.stop().await;
}

#[tokio::test]
async fn refuses_to_replace_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sw-a.sock"), b"data").unwrap();
    let config = SwitchConfig {
        dir: dir.path().to_path_buf(),
        nodes: vec!["a".parse().unwrap()],
        seed: None,
    };
    assert!(matches!(
        Switch::bind(&config).await,
        Err(SwitchError::NotASocket { .. })
    ));
    let dup = SwitchConfig {
        nodes: vec!["b".parse().unwrap(), "b".parse().unwrap()],
        ..config
    };
    assert!(matches!(
        Switch::bind(&dup).await,
        Err(SwitchError::DuplicateNode(_))
    ));
}

/// Same seed, same traffic → same drop decisions; the share is about right.
#[test]
fn seeded_drops_are_reproducible() {
    let nodes: Vec<NodeName> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
    let run = |seed: u64| {
        let mut st = State::new(&nodes, seed);
        st.faults.drop_percent = 50;
        (0..400).map(|_| st.decide("a", "b")).collect::<Vec<_>>()
    };
    let first = run(42);
    assert_eq!(first, run(42));
    assert_ne!(first, run(43));
    let dropped = first.iter().filter(|d| **d == Decision::DropFault).count();
    assert!((120..=280).contains(&dropped), "{dropped}");
}

/// A `seed` request restarts the decisions: a switch that drew other
/// decisions first, reseeded with 42, decides as one that started from 42,
/// and its status reports the new seed.
#[test]
fn a_seed_request_restarts_the_drop_decisions() {
    let nodes: Vec<NodeName> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
    let decisions = |st: &mut State| (0..200).map(|_| st.decide("a", "b")).collect::<Vec<_>>();
    let mut fresh = State::new(&nodes, 42);
    fresh.faults.drop_percent = 30;
    let want = decisions(&mut fresh);

    let mut st = State::new(&nodes, 7);
    st.faults.drop_percent = 30;
    let before = decisions(&mut st);
    assert_ne!(before, want);
    assert_eq!(st.apply(Request::Seed { seed: 42 }), Response::Ok);
    assert_eq!(decisions(&mut st), want);
    assert_eq!(st.status().seed, 42);
    // Its JSON on the control socket.
    let req: Request =
        serde_json::from_str(r#"{"op":"seed","seed":18446744073709551615}"#).unwrap();
    assert_eq!(req, Request::Seed { seed: u64::MAX });
}

#[test]
fn the_mac_table_is_bounded() {
    let nodes: Vec<NodeName> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
    let mut st = State::new(&nodes, 0);
    for i in 0..(MAX_MACS as u32 + 100) {
        let b = i.to_be_bytes();
        let src = MacAddr([0x02, 0, b[0], b[1], b[2], b[3]]);
        st.targets("a", &eth(MacAddr::BROADCAST, src, b"x"));
    }
    assert_eq!(st.macs.len(), MAX_MACS);
    // A known address still moves when it shows up on another port.
    st.targets(
        "b",
        &eth(MacAddr::BROADCAST, MacAddr([0x02, 0, 0, 0, 0, 0]), b"x"),
    );
    assert_eq!(
        st.macs
            .get(&MacAddr([0x02, 0, 0, 0, 0, 0]))
            .map(String::as_str),
        Some("b")
    );
}

#[test]
fn faults_combine_by_maximum() {
    let nodes: Vec<NodeName> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
    let mut st = State::new(&nodes, 0);
    st.faults.delay_ms = 10;
    st.faults.delay_ms_by_node.insert("b".into(), 50);
    assert_eq!(
        st.decide("a", "b"),
        Decision::Deliver(Duration::from_millis(50))
    );
    st.faults.drop_percent_by_node.insert("a".into(), 100);
    assert_eq!(st.decide("b", "a"), Decision::DropFault);
    st.faults.partitioned.push("b".into());
    assert_eq!(st.decide("a", "b"), Decision::DropPartition);
}
