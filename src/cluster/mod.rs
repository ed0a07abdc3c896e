//! A cluster on the host: its state dir, create/start/stop/destroy, and the
//! detached supervisor process that owns the switch and the QEMU processes.

pub mod etcd;
pub mod paths;
