//! The node's policy routing rules ([`node_rules`], installed through
//! rtnetlink by [`install_rules`]; the image has no iptables or nft), the
//! one firewall the node has:
//!
//! - Pods cannot open TCP connections to the node API (50000) or etcd
//!   (2379, 2380, and 2381, its metrics listener, which listens on 127.0.0.1
//!   only) through their bridge: a rule on `iif cni0` answers them
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

use super::NetError;
use crate::machine;
use std::net::Ipv4Addr;

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
    pub(super) fn new(priority: u32, action: RuleAction) -> Rule {
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
        (machine::ETCD_CLIENT_PORT, machine::ETCD_METRICS_PORT),
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
