//! Node networking, static only: `lo` up; the cluster NIC (found by its MAC)
//! gets the node's address with the cluster CIDR's prefix; the user-mode NIC
//! (QEMU slirp, found by MAC) gets 10.0.2.15/24, and a default route via
//! 10.0.2.2 only when the cluster allows egress. No DHCP.
//!
//! It also owns the node's policy routing rules ([`node_rules`], installed
//! through rtnetlink by [`install_rules`]; the image has no iptables or
//! nft), the one firewall the node has:
//!
//! - Pods cannot open TCP connections to the node API (50000) or etcd
//!   (2379, 2380) through their bridge: a rule on `iif cni0` answers them
//!   "prohibited" (ICMP; the pod's attempt fails with "No route to host" or,
//!   as the ICMP for a first SYN comes back while connect(2) still holds the
//!   socket and later ones are rate-limited, mostly times out), whatever
//!   address they aim at (the gateway, the node's own addresses, another
//!   node's).
//! - Nothing on the node (nor a pod routed through it) reaches 10.0.2.2,
//!   which QEMU's user-mode network maps to the host's 127.0.0.1 when
//!   egress is on; local processes get EACCES. The one exception: replies
//!   of the node API (TCP from 10.0.2.15 port 50000), since QEMU's hostfwd
//!   delivers the host's API connections from 10.0.2.2. DNS (10.0.2.3) and
//!   the default route via 10.0.2.2 are not affected: the rule matches the
//!   destination address 10.0.2.2 only.
//!
//! These rules must come before the kernel's `lookup local` rule (priority
//! 0, which delivers to the node's own addresses), so that rule is moved to
//! [`LOCAL_RULE_PRIORITY`], as for VRFs.

use super::sys::Sys;
use crate::machine::{self, MachineConfig};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// One step of the network plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetStep {
    Up(String),
    Addr(String, Ipv4Addr, u8),
    DefaultRoute(Ipv4Addr),
}

/// Finds the interface whose MAC is `mac` (case-insensitive) under `<root>/sys/class/net`.
pub fn iface_by_mac(root: &Path, mac: &str) -> Option<String> {
    let want = mac.trim().to_ascii_lowercase();
    let mut names: Vec<String> = std::fs::read_dir(root.join("sys/class/net"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().find(|n| {
        std::fs::read_to_string(root.join("sys/class/net").join(n).join("address"))
            .map(|a| a.trim().to_ascii_lowercase() == want)
            .unwrap_or(false)
    })
}

/// Waits for the interface with `mac` to appear.
pub fn wait_iface(root: &Path, mac: &str, timeout: Duration) -> Result<String, NetError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(n) = iface_by_mac(root, mac) {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            return Err(NetError::NoInterface(mac.to_string()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The steps for `cfg`, given the resolved interface names.
pub fn plan(cfg: &MachineConfig, cluster_if: &str, user_if: &str) -> Vec<NetStep> {
    let mut steps = vec![
        NetStep::Up("lo".into()),
        NetStep::Addr(
            cluster_if.into(),
            cfg.node.address,
            cfg.cluster.cidr.prefix_len(),
        ),
        NetStep::Up(cluster_if.into()),
        NetStep::Addr(
            user_if.into(),
            machine::USER_NET_GUEST,
            machine::USER_NET_PREFIX,
        ),
        NetStep::Up(user_if.into()),
    ];
    if cfg.cluster.egress {
        steps.push(NetStep::DefaultRoute(machine::USER_NET_GATEWAY));
    }
    steps
}

/// Resolves the NICs of `cfg` and applies the plan.
pub fn configure(
    sys: &dyn Sys,
    root: &Path,
    cfg: &MachineConfig,
    timeout: Duration,
) -> Result<(), NetError> {
    let cluster_if = wait_iface(root, &cfg.node.cluster_mac, timeout)?;
    let user_if = wait_iface(root, &cfg.node.user_mac, timeout)?;
    for step in plan(cfg, &cluster_if, &user_if) {
        let res = match &step {
            NetStep::Up(i) => sys.link_up(i),
            NetStep::Addr(i, a, p) => sys.set_ipv4(i, *a, *p),
            NetStep::DefaultRoute(g) => sys.add_default_route(*g),
        };
        res.map_err(|e| NetError::Step(format!("{step:?}"), e))?;
    }
    Ok(())
}

/// The bridge the CNI config gives pods (`containerd::render_cni`).
pub const POD_BRIDGE: &str = "cni0";
/// Where the kernel's `lookup local` rule moves (from 0).
pub const LOCAL_RULE_PRIORITY: u32 = 1000;
/// The first of the pods' blocking rules.
pub const POD_BLOCK_PRIORITY: u32 = 100;
/// The node API's replies to the host (hostfwd), allowed.
pub const HOSTFWD_REPLY_PRIORITY: u32 = 200;
/// Everything else to 10.0.2.2, prohibited.
pub const HOST_LOOPBACK_PRIORITY: u32 = 201;

/// The kernel's main and local routing tables.
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;

/// What a rule does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// Look the route up in this table.
    Lookup(u32),
    /// Go on at the rule with this priority.
    Goto(u32),
    /// Refuse: EACCES for local senders, ICMP "administratively
    /// prohibited" (EHOSTUNREACH) for forwarded ones.
    Prohibit,
}

/// One IPv4 policy routing rule (`ip rule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    /// Incoming interface (`lo` for the node's own traffic).
    pub iif: Option<String>,
    /// Source address (a /32).
    pub from: Option<Ipv4Addr>,
    /// Destination address (a /32).
    pub to: Option<Ipv4Addr>,
    /// IP protocol (6 = TCP).
    pub ip_proto: Option<u8>,
    /// Source port range.
    pub sport: Option<(u16, u16)>,
    /// Destination port range.
    pub dport: Option<(u16, u16)>,
    pub action: RuleAction,
}

impl Rule {
    fn new(priority: u32, action: RuleAction) -> Rule {
        Rule {
            priority,
            iif: None,
            from: None,
            to: None,
            ip_proto: None,
            sport: None,
            dport: None,
            action,
        }
    }

    /// The kernel's `lookup local` rule at `priority`.
    pub fn local(priority: u32) -> Rule {
        Rule::new(priority, RuleAction::Lookup(TABLE_LOCAL))
    }
}

impl std::fmt::Display for Rule {
    /// As `ip rule` shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: from ", self.priority)?;
        match self.from {
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("all")?,
        }
        if let Some(a) = self.to {
            write!(f, " to {a}")?;
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(p) = self.ip_proto {
            match p {
                6 => f.write_str(" ipproto tcp")?,
                p => write!(f, " ipproto {p}")?,
            }
        }
        let range = |f: &mut std::fmt::Formatter<'_>, what: &str, (a, b): (u16, u16)| {
            if a == b {
                write!(f, " {what} {a}")
            } else {
                write!(f, " {what} {a}-{b}")
            }
        };
        if let Some(r) = self.sport {
            range(f, "sport", r)?;
        }
        if let Some(r) = self.dport {
            range(f, "dport", r)?;
        }
        match self.action {
            RuleAction::Lookup(TABLE_LOCAL) => f.write_str(" lookup local"),
            RuleAction::Lookup(TABLE_MAIN) => f.write_str(" lookup main"),
            RuleAction::Lookup(t) => write!(f, " lookup {t}"),
            RuleAction::Goto(p) => write!(f, " goto {p}"),
            RuleAction::Prohibit => f.write_str(" prohibit"),
        }
    }
}

const IPPROTO_TCP: u8 = 6;

/// The node's rules, in the order they are added (see the module doc).
pub fn node_rules() -> Vec<Rule> {
    let tcp = |priority, action| Rule {
        ip_proto: Some(IPPROTO_TCP),
        ..Rule::new(priority, action)
    };
    let api = machine::API_PORT;
    let mut rules = Vec::new();
    for (i, ports) in [
        (api, api),
        (machine::ETCD_CLIENT_PORT, machine::ETCD_PEER_PORT),
    ]
    .into_iter()
    .enumerate()
    {
        rules.push(Rule {
            iif: Some(POD_BRIDGE.to_string()),
            dport: Some(ports),
            ..tcp(POD_BLOCK_PRIORITY + i as u32, RuleAction::Prohibit)
        });
    }
    rules.push(Rule {
        iif: Some("lo".to_string()),
        from: Some(machine::USER_NET_GUEST),
        to: Some(machine::USER_NET_GATEWAY),
        sport: Some((api, api)),
        ..tcp(
            HOSTFWD_REPLY_PRIORITY,
            RuleAction::Goto(LOCAL_RULE_PRIORITY),
        )
    });
    rules.push(Rule {
        to: Some(machine::USER_NET_GATEWAY),
        ..Rule::new(HOST_LOOPBACK_PRIORITY, RuleAction::Prohibit)
    });
    rules
}

/// Adds and deletes policy routing rules: [`Netlink`] for real, a
/// recording fake in tests.
pub trait RuleTable {
    /// Adds `rule`; an identical rule already there is not an error.
    fn add(&mut self, rule: &Rule) -> std::io::Result<()>;
    /// Deletes `rule`; a rule already gone is not an error.
    fn delete(&mut self, rule: &Rule) -> std::io::Result<()>;
}

/// Installs `rules` ahead of the local table: first `lookup local` at
/// [`LOCAL_RULE_PRIORITY`], then `rules` (their goto targets exist by
/// then), then the kernel's own `lookup local` at 0 goes. Running it again
/// changes nothing.
pub fn install_rules(table: &mut dyn RuleTable, rules: &[Rule]) -> Result<(), NetError> {
    let step = |what: &Rule, verb: &str, e: std::io::Error| {
        NetError::Step(format!("{verb} rule \"{what}\""), e)
    };
    let local = Rule::local(LOCAL_RULE_PRIORITY);
    table.add(&local).map_err(|e| step(&local, "add", e))?;
    for r in rules {
        table.add(r).map_err(|e| step(r, "add", e))?;
    }
    let kernel_local = Rule::local(0);
    table
        .delete(&kernel_local)
        .map_err(|e| step(&kernel_local, "delete", e))
}

/// rtnetlink (`NETLINK_ROUTE`) for IPv4 rules.
pub mod rtnl {
    use super::{Rule, RuleAction, RuleTable};
    use std::io;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // linux/rtnetlink.h, linux/netlink.h, linux/fib_rules.h
    pub const RTM_NEWRULE: u16 = 32;
    pub const RTM_DELRULE: u16 = 33;
    pub const RTM_GETRULE: u16 = 34;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_MULTI: u16 = 0x2;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_DUMP: u16 = 0x300;
    const NLM_F_EXCL: u16 = 0x200;
    const NLM_F_CREATE: u16 = 0x400;
    const FRA_DST: u16 = 1;
    const FRA_SRC: u16 = 2;
    const FRA_IIFNAME: u16 = 3;
    const FRA_GOTO: u16 = 4;
    const FRA_PRIORITY: u16 = 6;
    const FRA_TABLE: u16 = 15;
    const FRA_IP_PROTO: u16 = 22;
    const FRA_SPORT_RANGE: u16 = 23;
    const FRA_DPORT_RANGE: u16 = 24;
    const FR_ACT_TO_TBL: u8 = 1;
    const FR_ACT_GOTO: u8 = 2;
    const FR_ACT_PROHIBIT: u8 = 8;
    const NLMSG_HDRLEN: usize = 16;
    const FIB_RULE_HDRLEN: usize = 12;

    fn align4(n: usize) -> usize {
        (n + 3) & !3
    }

    fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(align4(buf.len()), 0);
    }

    fn range(r: (u16, u16)) -> [u8; 4] {
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&r.0.to_ne_bytes());
        b[2..].copy_from_slice(&r.1.to_ne_bytes());
        b
    }

    /// One netlink request of `kind` (RTM_NEWRULE, RTM_DELRULE) for `rule`.
    pub fn encode(kind: u16, seq: u32, rule: &Rule) -> Vec<u8> {
        let flags = match kind {
            RTM_NEWRULE => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            _ => NLM_F_REQUEST | NLM_F_ACK,
        };
        let (action, table) = match rule.action {
            RuleAction::Lookup(t) => (FR_ACT_TO_TBL, t),
            RuleAction::Goto(_) => (FR_ACT_GOTO, 0),
            RuleAction::Prohibit => (FR_ACT_PROHIBIT, 0),
        };
        let mut b = vec![0u8; NLMSG_HDRLEN];
        // struct fib_rule_hdr
        b.push(libc::AF_INET as u8);
        b.push(if rule.to.is_some() { 32 } else { 0 });
        b.push(if rule.from.is_some() { 32 } else { 0 });
        b.push(0); // tos
        b.push(if table < 256 { table as u8 } else { 0 });
        b.extend_from_slice(&[0, 0, action]);
        b.extend_from_slice(&0u32.to_ne_bytes()); // flags
        attr(&mut b, FRA_PRIORITY, &rule.priority.to_ne_bytes());
        if table != 0 {
            attr(&mut b, FRA_TABLE, &table.to_ne_bytes());
        }
        if let RuleAction::Goto(target) = rule.action {
            attr(&mut b, FRA_GOTO, &target.to_ne_bytes());
        }
        if let Some(a) = rule.to {
            attr(&mut b, FRA_DST, &a.octets());
        }
        if let Some(a) = rule.from {
            attr(&mut b, FRA_SRC, &a.octets());
        }
        if let Some(i) = &rule.iif {
            let mut name = i.as_bytes().to_vec();
            name.push(0);
            attr(&mut b, FRA_IIFNAME, &name);
        }
        if let Some(p) = rule.ip_proto {
            attr(&mut b, FRA_IP_PROTO, &[p]);
        }
        if let Some(r) = rule.sport {
            attr(&mut b, FRA_SPORT_RANGE, &range(r));
        }
        if let Some(r) = rule.dport {
            attr(&mut b, FRA_DPORT_RANGE, &range(r));
        }
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[4..6].copy_from_slice(&kind.to_ne_bytes());
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        b
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// Decodes an IPv4 rule message's body (after the netlink header), as
    /// a dump returns it; `None` for what is not one of the rules
    /// machined writes (other actions, masks other than /32).
    pub fn decode(body: &[u8]) -> Option<Rule> {
        let hdr = body.get(..FIB_RULE_HDRLEN)?;
        let (dst_len, src_len, table8, action) = (hdr[1], hdr[2], hdr[4], hdr[7]);
        let mut rule = Rule::new(0, RuleAction::Prohibit);
        let mut table = u32::from(table8);
        let mut goto = None;
        let mut at = FIB_RULE_HDRLEN;
        while at + 4 <= body.len() {
            let len = usize::from(u16_at(body, at)?);
            let kind = u16_at(body, at + 2)?;
            if len < 4 || at + len > body.len() {
                break;
            }
            let p = &body[at + 4..at + len];
            let ip = || p.get(..4).map(|o| Ipv4Addr::new(o[0], o[1], o[2], o[3]));
            let rng = || Some((u16_at(p, 0)?, u16_at(p, 2)?));
            match kind {
                FRA_PRIORITY => rule.priority = u32_at(p, 0)?,
                FRA_TABLE => table = u32_at(p, 0)?,
                FRA_GOTO => goto = u32_at(p, 0),
                FRA_DST => rule.to = ip(),
                FRA_SRC => rule.from = ip(),
                FRA_IIFNAME => {
                    let name = p.split(|c| *c == 0).next().unwrap_or_default();
                    rule.iif = Some(String::from_utf8_lossy(name).into_owned());
                }
                FRA_IP_PROTO => rule.ip_proto = p.first().copied(),
                FRA_SPORT_RANGE => rule.sport = rng(),
                FRA_DPORT_RANGE => rule.dport = rng(),
                _ => {}
            }
            at += align4(len);
        }
        if (rule.to.is_some() && dst_len != 32) || (rule.from.is_some() && src_len != 32) {
            return None;
        }
        rule.action = match action {
            FR_ACT_TO_TBL => RuleAction::Lookup(table),
            FR_ACT_GOTO => RuleAction::Goto(goto?),
            FR_ACT_PROHIBIT => RuleAction::Prohibit,
            _ => return None,
        };
        Some(rule)
    }

    /// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub struct Netlink {
        fd: OwnedFd,
        seq: u32,
    }

    impl Netlink {
        pub fn open() -> io::Result<Netlink> {
            // SAFETY: plain socket(2); the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Netlink { fd, seq: 0 })
        }

        fn send(&mut self, msg: &[u8]) -> io::Result<()> {
            // SAFETY: sockaddr_nl is plain data; all-zero is the kernel's address.
            let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // SAFETY: msg and to are valid for the call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const to).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }

        /// The messages of one datagram: (type, flags, body).
        fn recv(&mut self) -> io::Result<Vec<(u16, u16, Vec<u8>)>> {
            let mut buf = vec![0u8; 64 * 1024];
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let buf = &buf[..n as usize];
            let mut out = Vec::new();
            let mut at = 0;
            while at + NLMSG_HDRLEN <= buf.len() {
                let bad = || io::Error::new(io::ErrorKind::InvalidData, "short netlink message");
                let len = u32_at(buf, at).ok_or_else(bad)? as usize;
                let kind = u16_at(buf, at + 4).ok_or_else(bad)?;
                let flags = u16_at(buf, at + 6).ok_or_else(bad)?;
                if len < NLMSG_HDRLEN || at + len > buf.len() {
                    return Err(bad());
                }
                out.push((kind, flags, buf[at + NLMSG_HDRLEN..at + len].to_vec()));
                at += align4(len);
            }
            Ok(out)
        }

        /// Sends one request and waits for its acknowledgement.
        fn request(&mut self, kind: u16, rule: &Rule) -> io::Result<()> {
            self.seq += 1;
            self.send(&encode(kind, self.seq, rule))?;
            loop {
                for (t, _, body) in self.recv()? {
                    if t == NLMSG_ERROR {
                        let err = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        return if err == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                }
            }
        }

        /// Every IPv4 rule the kernel has, in priority order (what
        /// [`decode`] understands).
        pub fn rules(&mut self) -> io::Result<Vec<Rule>> {
            self.seq += 1;
            let mut msg = vec![0u8; NLMSG_HDRLEN];
            msg.push(libc::AF_INET as u8);
            msg.resize(NLMSG_HDRLEN + FIB_RULE_HDRLEN, 0);
            let len = msg.len() as u32;
            msg[0..4].copy_from_slice(&len.to_ne_bytes());
            msg[4..6].copy_from_slice(&RTM_GETRULE.to_ne_bytes());
            msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
            msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
            self.send(&msg)?;
            let mut rules = Vec::new();
            loop {
                for (t, flags, body) in self.recv()? {
                    match t {
                        NLMSG_DONE => return Ok(rules),
                        NLMSG_ERROR => {
                            let err = body
                                .get(..4)
                                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                                .unwrap_or(-libc::EIO);
                            return Err(io::Error::from_raw_os_error(-err));
                        }
                        _ => rules.extend(decode(&body)),
                    }
                    if flags & NLM_F_MULTI == 0 {
                        return Ok(rules);
                    }
                }
            }
        }
    }

    impl RuleTable for Netlink {
        fn add(&mut self, rule: &Rule) -> io::Result<()> {
            match self.request(RTM_NEWRULE, rule) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                r => r,
            }
        }

        fn delete(&mut self, rule: &Rule) -> io::Result<()> {
            match self.request(RTM_DELRULE, rule) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r,
            }
        }
    }
}

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface with MAC {0} (is the NIC attached with that mac=?)")]
    NoInterface(String),
    #[error("{0}: {1}")]
    Step(String, std::io::Error),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sys::{Call, FakeSys};

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
                "101: from all iif cni0 ipproto tcp dport 2379-2380 prohibit",
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
        let cni: serde_json::Value =
            serde_json::from_str(&crate::containerd::render_cni()).unwrap();
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
}
