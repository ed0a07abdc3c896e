//! The host-side node API client: reqwest over rustls with the cluster's admin
//! client certificate, trusting only the cluster's OS CA.
