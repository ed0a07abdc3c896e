//! apid's address choice (the API itself is tested over real TLS in
//! `crates/node/tests/apid.rs`).

#[test]
fn apid_listens_on_the_nodes_own_addresses() {
    let cfg = crate::net::tests::config(false);
    let addrs: Vec<String> = super::node_addrs(&cfg)
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(addrs, ["10.0.2.15:50000", "10.5.0.10:50000"]);
}
