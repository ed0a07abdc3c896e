//! A small CRI client: the calls a kubelet makes to containerd (gRPC over its
//! unix socket, CRI `runtime.v1` from the `k8s-cri` crate), shaped for the
//! matrix's attacker workloads.
//!
//! It owns: connecting, the runtime version, checking that an offline image is
//! present (never pulling), the pod variants of MATRIX.md as sandbox and
//! container configs ([`Variant`]), starting a long-running toolbox container,
//! `ExecSync` probes with timeouts, one-shot containers run to completion, and
//! cleanup (stop + remove of a sandbox, and of every sandbox this module ever
//! labelled). It does not decide verdicts (that is [`crate::matrix`]).
//!
//! Every sandbox it creates carries the label [`LABEL`], so leftovers of a run
//! that was killed half way are found and removed by [`Cri::remove_labelled`].
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | [`Variant`], [`PodOptions`] and the sandbox and container configs they make |
//! | [`client`] | [`Cri`]: connect, version, image presence, pods, exec, run to completion, cleanup |
//! | `inflight` | [`InFlight`]: the calls (and a caller's own waits) in flight, for a run that must say where it got stuck |
//! | this module | the constants both share and [`CriError`] |

pub mod client;
pub mod config;
mod inflight;
#[cfg(test)]
mod tests;

pub use client::{Completion, Cri, ExecOutput, Job, Pod};
pub use config::{PodOptions, Variant, container_config, sandbox_config};
pub use inflight::{InFlight, Tracked};

use std::path::PathBuf;
use std::time::Duration;

/// The label on every sandbox this module creates.
pub const LABEL: &str = "ironclad.dev/matrix";
/// The pod namespace (CRI metadata) of matrix pods.
pub const POD_NAMESPACE: &str = "ironclad-matrix";
/// The runtime handler of gVisor in machined's containerd config.
pub const GVISOR_HANDLER: &str = "runsc";
/// The first host uid/gid of the user-namespaced variant's mapping (0 → this).
pub const USERNS_HOST_BASE: u32 = 65536 * 16;
/// The size of that mapping.
pub const USERNS_LENGTH: u32 = 65536;
/// The uid/gid the restricted variant runs as.
pub const RESTRICTED_UID: i64 = 65534;

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to containerd at {path}: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error("CRI {call} failed: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("CRI {call} did not answer within {}s", .timeout.as_secs())]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    #[error("CRI {call}: {reason}")]
    Unexpected { call: &'static str, reason: String },
}
