//! Node networking, static only: `lo` up; the cluster NIC (found by its MAC)
//! gets the node's address with the cluster CIDR's prefix; the user-mode NIC
//! (QEMU slirp, found by MAC) gets 10.0.2.15/24, and a default route via
//! 10.0.2.2 only when the cluster allows egress. No DHCP.

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
}
