//! Unit tests of the network plan, the rules and their netlink encoding;
//! the real rules in a private network namespace when run as root. The
//! machine config and fake NICs here are shared by other modules' tests.

use super::*;
use crate::machine::{self, MachineConfig};
use crate::sys::{Call, FakeSys};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

pub(crate) fn config(egress: bool) -> MachineConfig {
    let yaml = format!(
        "apiVersion: ironclad.dev/v1alpha1
kind: MachineConfig
cluster:
  name: dev
  cidr: 10.5.0.0/24
  egress: {egress}
  members:
    - name: cp1
      role: control-plane
      address: 10.5.0.10
node:
  name: cp1
  role: control-plane
  address: 10.5.0.10
  clusterMac: 52:54:00:aa:00:0a
  userMac: 52:54:00:bb:00:0a
pki:
  osCa: ca
  apiCert: cert
  apiKey: key
containerd:
  runtimes: [runc, crun, runsc]
  userNamespaces: false
sysctls:
  net.ipv4.ip_forward: \"1\"
"
    );
    MachineConfig::from_yaml(&yaml).unwrap()
}

pub(crate) fn fake_nics(root: &Path) {
    for (n, mac) in [
        ("lo", "00:00:00:00:00:00"),
        ("eth0", "52:54:00:BB:00:0A"),
        ("eth1", "52:54:00:aa:00:0a"),
    ] {
        let d = root.join("sys/class/net").join(n);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
    }
}

#[test]
fn nics_by_mac_and_route_only_with_egress() {
    let dir = tempfile::tempdir().unwrap();
    fake_nics(dir.path());
    let sys = FakeSys::new();
    configure(&sys, dir.path(), &config(false), Duration::from_millis(20)).unwrap();
    assert_eq!(
        sys.calls(),
        vec![
            Call::LinkUp("lo".into()),
            Call::Ipv4("eth1".into(), Ipv4Addr::new(10, 5, 0, 10), 24),
            Call::LinkUp("eth1".into()),
            Call::Ipv4("eth0".into(), Ipv4Addr::new(10, 0, 2, 15), 24),
            Call::LinkUp("eth0".into()),
        ]
    );
    let sys = FakeSys::new();
    configure(&sys, dir.path(), &config(true), Duration::from_millis(20)).unwrap();
    assert_eq!(
        sys.calls().last(),
        Some(&Call::DefaultRoute(Ipv4Addr::new(10, 0, 2, 2)))
    );
}

#[test]
fn missing_nic_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sys = FakeSys::new();
    let e = configure(&sys, dir.path(), &config(false), Duration::from_millis(20)).unwrap_err();
    assert!(e.to_string().contains("52:54:00:aa:00:0a"), "{e}");
}

#[test]
fn node_rules_read_like_ip_rule() {
    let shown: Vec<String> = node_rules().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        [
            "100: from all iif cni0 ipproto tcp dport 50000 prohibit",
            "101: from all iif cni0 ipproto tcp dport 2379-2381 prohibit",
            "200: from 10.0.2.15 to 10.0.2.2 iif lo ipproto tcp sport 50000 goto 1000",
            "201: from all to 10.0.2.2 prohibit",
        ]
    );
    // Every goto lands on the moved local rule, after all of them.
    for r in node_rules() {
        assert!(r.priority < LOCAL_RULE_PRIORITY);
        if let RuleAction::Goto(t) = r.action {
            assert_eq!(t, LOCAL_RULE_PRIORITY);
        }
    }
}

#[test]
fn the_pods_bridge_is_the_cni_configs() {
    let cni: serde_json::Value = serde_json::from_str(&crate::containerd::render_cni()).unwrap();
    assert_eq!(cni["plugins"][0]["bridge"], POD_BRIDGE);
}

#[derive(Default)]
struct Recorder(Vec<String>);

impl RuleTable for Recorder {
    fn add(&mut self, rule: &Rule) -> std::io::Result<()> {
        self.0.push(format!("add {rule}"));
        Ok(())
    }
    fn delete(&mut self, rule: &Rule) -> std::io::Result<()> {
        self.0.push(format!("del {rule}"));
        if rule.priority == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

#[test]
fn local_moves_before_the_rules_and_goes_after_them() {
    let mut t = Recorder::default();
    let e = install_rules(&mut t, &node_rules()).unwrap_err();
    assert!(
        e.to_string()
            .contains("delete rule \"0: from all lookup local\""),
        "{e}"
    );
    assert_eq!(t.0.first().unwrap(), "add 1000: from all lookup local");
    assert_eq!(t.0.len(), node_rules().len() + 2);
    assert_eq!(t.0.last().unwrap(), "del 0: from all lookup local");
}

#[test]
fn rules_encode_and_decode() {
    for r in node_rules().into_iter().chain([Rule::local(1000)]) {
        let msg = rtnl::encode(rtnl::RTM_NEWRULE, 7, &r);
        let len = u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, msg.len());
        assert_eq!(len % 4, 0);
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), rtnl::RTM_NEWRULE);
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(rtnl::decode(&msg[16..]), Some(r));
    }
    // struct fib_rule_hdr of "to 10.0.2.2 prohibit": AF_INET, dst_len 32,
    // no table, action FR_ACT_PROHIBIT (8).
    let msg = rtnl::encode(rtnl::RTM_NEWRULE, 1, &node_rules()[3]);
    assert_eq!(&msg[16..24], &[libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 8]);
    assert_eq!(rtnl::decode(&[1, 2, 3]), None);
}

/// Runs `f` on a thread in a new network namespace; `None` when this
/// process may not make one (not root).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) of the calling thread's network namespace only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipped: cannot make a network namespace: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(f())
    })
    .join()
    .unwrap()
}

/// Connects from `from` (any address if `None`) to `to`, giving up after
/// `wait`.
fn connect(
    from: Option<Ipv4Addr>,
    to: std::net::SocketAddrV4,
    wait: Duration,
) -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let s = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    sockopt::set_socket_timeout(&s, sockopt::Timeout::Send, Some(wait))?;
    if let Some(a) = from {
        rustix::net::bind(&s, &std::net::SocketAddrV4::new(a, 0))?;
    }
    Ok(rustix::net::connect(&s, &to)?)
}

/// The real rules in a private network namespace (root only): installed
/// twice (no change the second time), read back in order, and what they
/// do with the node's own traffic, on a loopback alias standing in for
/// the user-mode NIC (10.0.2.0/24 local, so every address of it answers).
#[test]
fn real_rules_block_the_host_loopback_but_not_the_api_replies() {
    use crate::sys::{RealSys, Sys};
    use std::net::SocketAddrV4;
    let done = in_new_netns(|| {
        let sys = RealSys;
        sys.link_up("lo").unwrap();
        sys.set_ipv4("lo:1", machine::USER_NET_GUEST, 24).unwrap();
        let mut nl = rtnl::Netlink::open().unwrap();
        let before = nl.rules().unwrap();
        assert_eq!(before[0], Rule::local(0), "{before:?}");
        install_rules(&mut nl, &node_rules()).unwrap();
        install_rules(&mut nl, &node_rules()).unwrap();
        let after = nl.rules().unwrap();
        let mut want = node_rules();
        want.push(Rule::local(LOCAL_RULE_PRIORITY));
        assert_eq!(&after[..want.len()], &want[..], "{after:#?}");
        assert!(!after.contains(&Rule::local(0)));

        let gw = machine::USER_NET_GATEWAY;
        let dns = Ipv4Addr::new(10, 0, 2, 3);
        let any = std::net::TcpListener::bind("0.0.0.0:40000").unwrap();
        let wait = Duration::from_secs(2);
        // The host's loopback: refused on the spot (EACCES).
        let e = connect(None, SocketAddrV4::new(gw, 40000), wait).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
        // Another address of the subnet (the user-net DNS) still works.
        connect(None, SocketAddrV4::new(dns, 40000), wait).unwrap();
        drop(any);
        // A connection from 10.0.2.2 (as hostfwd delivers the host's) to
        // the API port is answered; to another port, the answer is
        // refused and the connection never completes.
        let api =
            std::net::TcpListener::bind((machine::USER_NET_GUEST, machine::API_PORT)).unwrap();
        let me = machine::USER_NET_GUEST;
        connect(Some(gw), SocketAddrV4::new(me, machine::API_PORT), wait).unwrap();
        let other = std::net::TcpListener::bind((me, 40001)).unwrap();
        let e = connect(
            Some(gw),
            SocketAddrV4::new(me, 40001),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::EINPROGRESS | libc::EAGAIN | libc::ETIMEDOUT)
            ),
            "{e}"
        );
        drop((api, other));
    });
    if done.is_none() {
        eprintln!("real_rules_...: skipped (needs root and network namespaces)");
    }
}
