//! Node networking, static only: `lo` up; the cluster NIC (found by its MAC)
//! gets the node's address with the cluster CIDR's prefix; the user-mode NIC
//! (QEMU slirp, found by MAC) gets 10.0.2.15/24, and a default route via
//! 10.0.2.2 only when the cluster allows egress. No DHCP.
//!
//! It also owns the node's policy routing rules, the one firewall the node
//! has (pods kept off the node API and etcd, the host's loopback out of
//! reach); see [`rules`].
//!
//! | module | owns |
//! |---|---|
//! | [`links`] | finding the NICs by MAC, the address plan ([`NetStep`]) and applying it through [`crate::sys::Sys`] |
//! | [`rules`] | the node's rules ([`Rule`], [`node_rules`]) and their installation ahead of `lookup local` ([`install_rules`]) |
//! | [`rtnl`] | rtnetlink: rule messages and the [`rtnl::Netlink`] socket |

pub mod links;
pub mod rtnl;
pub mod rules;
#[cfg(test)]
pub(crate) mod tests;

pub use links::{NetStep, configure, iface_by_mac, plan, wait_iface};
pub use rules::{
    HOST_LOOPBACK_PRIORITY, HOSTFWD_REPLY_PRIORITY, LOCAL_RULE_PRIORITY, POD_BLOCK_PRIORITY,
    POD_BRIDGE, Rule, RuleAction, RuleTable, TABLE_LOCAL, TABLE_MAIN, install_rules, node_rules,
};

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface with MAC {0} (is the NIC attached with that mac=?)")]
    NoInterface(String),
    #[error("{0}: {1}")]
    Step(String, std::io::Error),
}
