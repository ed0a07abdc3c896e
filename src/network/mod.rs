//! The rootless cluster network: a user-space L2 switch that QEMU's
//! `-netdev stream` connects to over unix sockets, with fault injection.
