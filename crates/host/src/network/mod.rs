//! The rootless cluster network: a user-space L2 switch that QEMU's
//! `-netdev stream` connects to over unix sockets, with fault injection.
//!
//! Owns: the frame encoding QEMU speaks on a stream netdev ([`frame`]), the
//! switch (one listening socket per node, `<dir>/sw-<node>.sock`; MAC learning,
//! flooding of broadcast and unknown destinations, unicast forwarding, ports
//! that reconnect when a node restarts), and the control protocol on
//! `<dir>/switch-ctl.sock` ([`control`]: partition, heal, drop, delay, status).
//! Drops are decided by a seeded RNG so a bug report can replay them.
//! People set faults with `ironclad net` (docs/networking.md), which reaches
//! the control socket through the engine seam (`cluster::engine::Engine::fault`).
//!
//! Does not own: addresses (static, from the cluster CIDR, set by machined),
//! the QEMU side of the link (see `qemu::cmdline`), or the process the switch
//! runs in (the cluster supervisor embeds [`Switch::run`]). Nothing here needs
//! root, a bridge or iptables, and no frame leaves the host's processes.
//!
//! ```no_run
//! # async fn example(state_dir: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
//! use ironclad::network::{ControlClient, Request, Switch, SwitchConfig, control_socket};
//! let config = SwitchConfig {
//!     dir: state_dir.clone(),
//!     nodes: vec!["cp-1".parse()?, "w-1".parse()?],
//!     seed: Some(42), // replay the same drops
//! };
//! // Bind before starting QEMU: its stream netdev connects once, at start.
//! let switch = Switch::bind(&config).await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(switch.serve(async { let _ = stopped.await; }));
//! // ... start the VMs with qemu::ClusterNic { socket: port_socket(&dir, &node), .. } ...
//! let mut ctl = ControlClient::connect(&control_socket(&state_dir)).await?;
//! ctl.request(&Request::Partition { node: "w-1".into() }).await?;
//! let _ = stop.send(());
//! task.await?;
//! # Ok(()) }
//! ```

pub mod control;
pub mod frame;
mod mac;
mod switch;

pub use control::{
    ControlClient, ControlClientError, ErrorCode, NodeFaults, Request, Response, Status,
};
pub use mac::{MacAddr, MacError};
pub use switch::{Switch, SwitchConfig, SwitchError, control_socket, port_socket};
