//! A cluster's state dir as `create` and then `stop` leave it, without the
//! VMs: for tests of commands that read the state (status, stop, destroy,
//! net) against the real binary.

use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_host::cluster::state::{ClusterState, ImageFiles, KIND, NodeRecord, NodeState};
use ironclad_host::qemu::Accel;
use ironclad_host::spec::{ClusterName, Role};
use std::net::Ipv4Addr;
use std::path::Path;

/// Cluster `name` under the state root `root` with the nodes `nodes` (the
/// first a control plane, the others workers; cluster addresses 10.5.0.2,
/// .3, ...; host API ports from 50001), created and stopped: a claimed state
/// dir and its `cluster.json`. The image paths do not exist.
pub fn stopped_cluster(root: &Path, name: &str, nodes: &[&str]) -> ClusterPaths {
    let cluster: ClusterName = name.parse().expect("a valid cluster name");
    let paths = ClusterPaths::new(root, &cluster);
    paths
        .claim(&cluster)
        .expect("claim the cluster's state dir");
    let nodes = nodes
        .iter()
        .zip(0u8..)
        .map(|(n, i)| NodeRecord {
            name: n.parse().expect("a valid node name"),
            role: if i == 0 {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            address: Ipv4Addr::new(10, 5, 0, 2 + i),
            cluster_mac: format!("02:00:00:00:00:{i:02x}"),
            user_mac: format!("06:00:00:00:00:{i:02x}"),
            api_port: 50001 + u16::from(i),
            cpus: 1,
            memory_mib: 1024,
            disk_bytes: 1 << 30,
            state: NodeState::Stopped,
            pid: None,
            started_at_ms: None,
            last_exit: None,
        })
        .collect();
    ClusterState {
        api_version: ironclad_contract::API_VERSION.into(),
        kind: KIND.into(),
        name: cluster,
        created_at_ms: 1,
        accel: Accel::Tcg,
        tcg_cache_mib: 64,
        cidr: "10.5.0.0/24".parse().expect("a CIDR"),
        egress: false,
        image: ImageFiles {
            key: "none".into(),
            kernel: "/nonexistent/vmlinux".into(),
            initrd: "/nonexistent/initramfs".into(),
            rootfs: "/nonexistent/rootfs.squashfs".into(),
        },
        nodes,
    }
    .save(&paths.cluster_json())
    .expect("write cluster.json");
    paths
}
