//! The rootless cluster network: a user-space L2 switch that QEMU's
//! `-netdev stream` connects to over unix sockets, with fault injection.
//!
//! Owns: the frame encoding QEMU speaks on a stream netdev ([`frame`]), the
//! switch (one listening socket per node, `<dir>/sw-<node>.sock`; MAC learning,
//! flooding of broadcast and unknown destinations, unicast forwarding, ports
//! that reconnect when a node restarts), and the control protocol on
//! `<dir>/switch-ctl.sock` ([`control`]: partition, heal, drop, delay, status).
//! Drops are decided by a seeded RNG so a bug report can replay them.
//!
//! Does not own: addresses (static, from the cluster CIDR, set by machined),
//! the QEMU side of the link (see `qemu::cmdline`), or the process the switch
//! runs in (the cluster supervisor embeds [`Switch::run`]). Nothing here needs
//! root, a bridge or iptables, and no frame leaves the host's processes.

pub mod control;
pub mod frame;
mod mac;
mod switch;

pub use control::{ControlClient, ControlClientError, ErrorCode, Request, Response, Status};
pub use mac::{MacAddr, MacError};
pub use switch::{Switch, SwitchConfig, SwitchError, control_socket, port_socket};
