//! A real node API for tests: apid with mTLS on `127.0.0.1:0` over the
//! in-memory controller ([`MemoryController`]), its certificates from a
//! freshly generated cluster PKI, and host clients of any role.
//!
//! ```no_run
//! # async fn demo() {
//! use ironclad_testkit::apid::{MemoryNode, TestPki};
//! let pki = TestPki::new("dev");
//! let node = MemoryNode::serve(&pki, "dev-cp-1", &["etcd"]).await;
//! let client = pki.client("dev-cp-1", node.addr, ironclad_host::client::Role::Admin);
//! # let _ = client;
//! # }
//! ```

use ironclad_host::client::{NodeClient, Role};
use ironclad_host::pki::{IssuedCert, Secrets, issue_client_cert};
use ironclad_node::apid::memory::MemoryController;
use ironclad_node::apid::{Apid, Gate, Limits, server_tls_config};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The cluster address a test node's API certificate names.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 5, 0, 2);

/// A generated cluster PKI (every CA of `gen config`).
pub struct TestPki {
    /// The cluster's secrets; `os_ca` signs API certificates.
    pub secrets: Secrets,
}

impl TestPki {
    /// Generates the secrets of cluster `cluster`.
    pub fn new(cluster: &str) -> TestPki {
        let secrets = Secrets::generate(cluster).expect("generate a cluster PKI");
        TestPki { secrets }
    }

    /// The API server certificate a node named `node` gets (its name and
    /// [`NODE_IP`]).
    pub fn server_cert(&self, node: &str) -> IssuedCert {
        self.secrets
            .os_ca
            .issue_server(node, &[node], &[NODE_IP], false)
            .expect("issue an API certificate")
    }

    /// apid's TLS config for `node`: its server certificate, client
    /// certificates verified against the OS CA.
    pub fn server_tls(&self, node: &str) -> rustls::ServerConfig {
        let cert = self.server_cert(node);
        server_tls_config(self.os_ca_pem(), &cert.cert_pem, &cert.key_pem)
            .expect("build apid's TLS config")
    }

    /// A client certificate of `role`.
    pub fn client_cert(&self, role: Role, cn: &str) -> IssuedCert {
        issue_client_cert(&self.secrets.os_ca, role, cn).expect("issue a client certificate")
    }

    /// A host client of `role` for `node` at `addr`.
    pub fn client(&self, node: &str, addr: SocketAddr, role: Role) -> NodeClient {
        let cert = self.client_cert(role, "test");
        NodeClient::new(node, addr, self.os_ca_pem(), &cert.cert_pem, &cert.key_pem)
            .expect("build a node client")
    }

    /// Writes the client side of cluster `cluster` into its state dir `dir`
    /// as `create` leaves it: an admin certificate and key (`admin.crt`,
    /// `admin.key`) and `client.yaml` naming `nodes` (name, role, the
    /// loopback address their apid answers on), with cluster addresses
    /// 10.5.0.2, .3, ... in order.
    pub fn write_client_config(
        &self,
        dir: &std::path::Path,
        cluster: &ironclad_host::spec::ClusterName,
        nodes: &[(&str, ironclad_host::spec::Role, SocketAddr)],
    ) {
        use ironclad_host::clientconfig::{ClientConfig, ClientNode, KIND};
        let admin = self.client_cert(Role::Admin, "admin");
        std::fs::write(dir.join("admin.crt"), &admin.cert_pem).expect("write admin.crt");
        std::fs::write(dir.join("admin.key"), &admin.key_pem).expect("write admin.key");
        let nodes = nodes
            .iter()
            .zip(2u8..)
            .map(|(&(name, role, endpoint), host)| ClientNode {
                name: name.parse().expect("a valid node name"),
                role,
                address: Ipv4Addr::new(10, 5, 0, host),
                endpoint: Some(endpoint),
            })
            .collect();
        ClientConfig {
            api_version: ironclad_contract::API_VERSION.into(),
            kind: KIND.into(),
            cluster: cluster.clone(),
            os_ca: self.os_ca_pem().into(),
            cert: "admin.crt".into(),
            key: "admin.key".into(),
            nodes,
        }
        .save(&dir.join("client.yaml"))
        .expect("write client.yaml");
    }

    /// The TLS config of a client of `role` named `cn` that accepts only
    /// `node`'s certificate, for clients other than [`NodeClient`] (raw TLS,
    /// a plain HTTP client).
    pub fn client_tls(&self, node: &str, role: Role, cn: &str) -> rustls::ClientConfig {
        let cert = self.client_cert(role, cn);
        ironclad_host::client::node_tls_config(
            node,
            self.os_ca_pem(),
            &cert.cert_pem,
            &cert.key_pem,
        )
        .expect("build a client TLS config")
    }

    /// The OS CA certificate (PEM).
    pub fn os_ca_pem(&self) -> &str {
        self.secrets.os_ca.cert_pem()
    }
}

/// apid on `127.0.0.1:0` over a [`MemoryController`]; the server task is
/// aborted when this is dropped.
pub struct MemoryNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The controller behind it (its services, its record of requests).
    pub ctl: Arc<MemoryController>,
    /// Its admission gate (connection counters).
    pub gate: Arc<Gate>,
    task: tokio::task::JoinHandle<()>,
}

impl MemoryNode {
    /// Node `node` of `pki`'s cluster, running `services`, default limits.
    pub async fn serve(pki: &TestPki, node: &str, services: &[&str]) -> MemoryNode {
        Self::serve_tls(node, services, pki.server_tls(node), Limits::default()).await
    }

    /// Node `node` with a ready TLS config (a machine config's certificate,
    /// say) and connection `limits`.
    pub async fn serve_tls(
        node: &str,
        services: &[&str],
        tls: rustls::ServerConfig,
        limits: Limits,
    ) -> MemoryNode {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let apid = Apid::bind_with(loopback, tls)
            .await
            .expect("bind apid on loopback")
            .with_limits(limits);
        let addr = apid.local_addr().expect("apid's address");
        let gate = apid.gate();
        let ctl = Arc::new(MemoryController::new(node, services));
        let served = ctl.clone();
        let task = tokio::spawn(async move {
            let _ = apid.serve(served).await;
        });
        MemoryNode {
            addr,
            ctl,
            gate,
            task,
        }
    }
}

impl Drop for MemoryNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}
