//! Test infrastructure shared by every ironclad test that needs more than
//! pure logic: a dev-dependency only, never linked into `ironclad` or
//! `machined`.
//!
//! - [`process`]: one guard for a child process (QEMU above all) that is
//!   killed and reaped when the test ends, also when it panics or is killed,
//!   and the scan for processes a test left behind.
//! - [`wait`]: one deadline-bound wait for a condition (sync and async); a
//!   test never sleeps a fixed time.
//! - [`apid`]: a real node API (mTLS on 127.0.0.1) over the in-memory
//!   controller, with a freshly generated PKI and host clients of any role.
//! - [`state`]: a stopped cluster's state dir, for commands that read it.

pub mod apid;
pub mod process;
pub mod secrets;
pub mod state;
pub mod wait;
