//! The node's interfaces, static only: `lo` up; the cluster NIC (found by
//! its MAC) gets the node's address with the cluster CIDR's prefix; the
//! user-mode NIC (QEMU slirp, found by MAC) gets 10.0.2.15/24, and a default
//! route via 10.0.2.2 only when the cluster allows egress. No DHCP.

use super::NetError;
use crate::machine::{self, MachineConfig};
use crate::sys::Sys;
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
