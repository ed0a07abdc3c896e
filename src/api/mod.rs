//! The node API contract shared by apid (server, in machined) and the host
//! client: paths, request and response types, roles and typed error codes.
