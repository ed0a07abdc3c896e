//! The names of the services machined supervises, as the node API lists them
//! and the host asks for them (`ironclad node logs etcd`, converge's etcd
//! checks, the matrix's CONF-02).

/// etcd (control planes only).
pub const ETCD: &str = "etcd";
/// containerd (every node).
pub const CONTAINERD: &str = "containerd";
