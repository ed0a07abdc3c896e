//! The cluster PKI: CAs, per-node leaf certificates, client certificates,
//! service-account keys and the bootstrap token, stored 0600 in a 0700 dir.
