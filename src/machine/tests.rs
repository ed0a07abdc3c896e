use super::*;
use crate::pki::CaKind;
use crate::spec::{default_cluster, parse_cluster};
use std::collections::HashSet;
use std::process::Command;

const HA: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: ha}
spec:
  network: {cidr: 10.6.0.0/24, egress: true}
  controlPlanes: {count: 3}
  workers: {count: 2}
  runtimes: {gvisor: false, userNamespaces: false}
";

fn openssl_verify(ca_pem: &str, leaf_pem: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let leaf = dir.path().join("leaf.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&leaf)
        .output()
        .expect("openssl is installed")
        .status
        .success()
}

/// Every private key of the bundle that must never reach a node.
fn bundle_private_keys(secrets: &Secrets) -> Vec<String> {
    let mut keys: Vec<String> = CaKind::ALL
        .iter()
        .map(|k| secrets.ca(*k).key_pem())
        .collect();
    keys.push(secrets.service_account.key_pem().to_string());
    keys.push(secrets.bootstrap_token.expose().to_string());
    keys
}

#[test]
fn control_plane_and_worker_get_what_they_need_and_no_more() {
    let cluster = default_cluster();
    let secrets = Secrets::generate(cluster.name.as_str()).unwrap();
    let cp = cluster.control_planes().next().unwrap();
    let worker = cluster.workers().next().unwrap();

    let cp_cfg = render(&cluster, cp, &secrets).unwrap();
    let w_cfg = render(&cluster, worker, &secrets).unwrap();
    for cfg in [&cp_cfg, &w_cfg] {
        let yaml = cfg.to_yaml().unwrap();
        // Round trip through the strict parser.
        assert_eq!(&MachineConfig::from_yaml(&yaml).unwrap(), cfg);
        for secret in bundle_private_keys(&secrets) {
            assert!(!yaml.contains(secret.trim()), "a bundle secret leaked");
        }
        assert!(yaml.starts_with("apiVersion: ironclad.dev/v1alpha1\nkind: MachineConfig\n"));
        assert_eq!(cfg.pki.os_ca, secrets.os_ca.cert_pem());
        assert!(openssl_verify(secrets.os_ca.cert_pem(), &cfg.pki.api_cert));
        assert!(
            secrets
                .os_ca
                .issued(&cfg.pki.api_cert, Some(&cfg.pki.api_key))
        );
        assert_eq!(cfg.cluster.members.len(), cluster.nodes.len());
        assert_eq!(cfg.containerd.runtimes, ["runc", "crun", "runsc"]);
        assert!(cfg.containerd.user_namespaces);
    }

    assert_eq!(cp_cfg.node.role, Role::ControlPlane);
    let etcd = cp_cfg.pki.etcd.as_ref().unwrap();
    assert_eq!(etcd.ca, secrets.etcd_ca.cert_pem());
    for (cert, key) in [
        (&etcd.server_cert, &etcd.server_key),
        (&etcd.peer_cert, &etcd.peer_key),
        (&etcd.client_cert, &etcd.client_key),
    ] {
        assert!(openssl_verify(&etcd.ca, cert));
        assert!(secrets.etcd_ca.issued(cert, Some(key)));
    }
    let settings = cp_cfg.etcd.as_ref().unwrap();
    assert_eq!(settings.member_name, cp.name.as_str());
    assert_eq!(settings.bootstrap_node, cp.name.as_str());

    assert_eq!(w_cfg.node.role, Role::Worker);
    assert!(w_cfg.pki.etcd.is_none() && w_cfg.etcd.is_none());
    let w_yaml = w_cfg.to_yaml().unwrap();
    assert!(!w_yaml.contains("etcd"), "{w_yaml}");
    assert!(!w_yaml.contains(secrets.etcd_ca.cert_pem().trim()));
}

#[test]
fn ha_cluster_renders_members_macs_and_runtimes() {
    let cluster = parse_cluster(HA, "ha.yaml").unwrap();
    let secrets = Secrets::generate("ha").unwrap();
    let configs: Vec<MachineConfig> = cluster
        .nodes
        .iter()
        .map(|n| render(&cluster, n, &secrets).unwrap())
        .collect();
    assert_eq!(configs.len(), 5);
    let mut macs = HashSet::new();
    for (i, cfg) in configs.iter().enumerate() {
        let node = &cluster.nodes[i];
        assert_eq!(cfg.node.name, node.name.as_str());
        assert_eq!(cfg.node.address, node.address);
        assert_eq!(cfg.cluster.cidr.to_string(), "10.6.0.0/24");
        assert!(cfg.cluster.egress);
        assert_eq!(cfg.containerd.runtimes, ["runc", "crun"]);
        assert!(!cfg.containerd.user_namespaces);
        assert_eq!(cfg.etcd.is_some(), node.role == Role::ControlPlane);
        if let Some(e) = &cfg.etcd {
            assert_eq!(e.bootstrap_node, "ha-cp-1");
        }
        assert!(macs.insert(cfg.node.cluster_mac.clone()));
        assert!(macs.insert(cfg.node.user_mac.clone()));
        // Re-rendering keeps the MACs (the certificates are fresh).
        let again = render(&cluster, node, &secrets).unwrap();
        assert_eq!(again.node, cfg.node);
        assert_ne!(again.pki.api_key, cfg.pki.api_key);
    }
    assert_eq!(
        configs[0]
            .cluster
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.role, m.address.to_string()))
            .collect::<Vec<_>>(),
        [
            ("ha-cp-1", Role::ControlPlane, "10.6.0.2".to_string()),
            ("ha-cp-2", Role::ControlPlane, "10.6.0.3".to_string()),
            ("ha-cp-3", Role::ControlPlane, "10.6.0.4".to_string()),
            ("ha-worker-1", Role::Worker, "10.6.0.5".to_string()),
            ("ha-worker-2", Role::Worker, "10.6.0.6".to_string()),
        ]
    );
}

#[test]
fn node_outside_the_cluster_is_refused() {
    let cluster = default_cluster();
    let other = parse_cluster(HA, "ha.yaml").unwrap();
    let secrets = Secrets::generate("x").unwrap();
    let err = render(&cluster, &other.nodes[0], &secrets).unwrap_err();
    assert!(matches!(err, MachineConfigError::UnknownNode(..)), "{err}");
}

#[test]
fn macs_are_local_unicast_distinct_and_stable() {
    let mut seen = HashSet::new();
    for i in 0..300 {
        let m = node_macs("dev", i).unwrap();
        for mac in [&m.cluster, &m.user] {
            let bytes: Vec<u8> = mac
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            assert_eq!(bytes.len(), 6, "{mac}");
            assert_eq!(bytes[0] & 0b11, 0b10, "{mac} must be local unicast");
            assert!(seen.insert(mac.clone()), "{mac} repeated");
        }
        assert_eq!(node_macs("dev", i).unwrap(), m);
    }
    assert_ne!(node_macs("dev", 0).unwrap(), node_macs("ha", 0).unwrap());
    assert_eq!(node_macs("dev", 1).unwrap().cluster[..2], *"02");
    assert!(matches!(
        node_macs("dev", 70_000),
        Err(MachineConfigError::IndexTooLarge(_))
    ));
}

#[test]
fn strict_parse_refuses_unknown_fields_and_wrong_kind() {
    let cluster = default_cluster();
    let secrets = Secrets::generate("x").unwrap();
    let cfg = render(&cluster, &cluster.nodes[1], &secrets).unwrap();
    let yaml = cfg.to_yaml().unwrap();
    let extra = yaml.replace("kind: MachineConfig\n", "kind: MachineConfig\nbogus: 1\n");
    assert!(matches!(
        MachineConfig::from_yaml(&extra),
        Err(MachineConfigError::Parse(_))
    ));
    let kind = yaml.replace("kind: MachineConfig", "kind: Cluster");
    assert!(matches!(
        MachineConfig::from_yaml(&kind),
        Err(MachineConfigError::Kind(_))
    ));
}

#[test]
fn document_shape() {
    let cluster = default_cluster();
    let secrets = Secrets::generate("x").unwrap();
    let worker = cluster.workers().next().unwrap();
    let yaml = render(&cluster, worker, &secrets)
        .unwrap()
        .to_yaml()
        .unwrap();
    let top: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.starts_with([' ', '-']) && l.contains(':'))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        top,
        [
            "apiVersion",
            "kind",
            "cluster",
            "node",
            "pki",
            "containerd",
            "sysctls"
        ]
    );
    for key in [
        "  name: ",
        "  cidr: 10.5.0.0/24",
        "  egress: false",
        "  members:",
        "  clusterMac: 02:",
        "  userMac: 06:",
        "  osCa: |",
        "  apiCert: |",
        "  apiKey: |",
        "  runtimes:",
        "  userNamespaces: true",
    ] {
        assert!(yaml.contains(key), "{key:?} missing from\n{yaml}");
    }
}
