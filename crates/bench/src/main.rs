//! `ironclad-bench`: ironclad's benchmarks (`ci/bench` builds and runs it).
//! A developer tool beside the shipped CLI, built on the host library so that
//! it measures what `ironclad create` runs: the library's accelerator choice,
//! the node's QEMU command line and kernel command line, its state disk, its
//! machine config, the image cache, the console phase protocol and the node
//! API client. What is genuinely outside (mmdebstrap for the Debian baseline,
//! Debian's busybox for the bare-kernel limit, the `ironclad` CLI whose
//! `create` and `image build` are timed) runs as commands.
//!
//! | module | owns |
//! |---|---|
//! | [`options`] | the command line |
//! | [`bench`] | one invocation: paths, accelerator, samples, cleanup |
//! | [`vm`] | one VM run: QEMU, the serial log, the wanted lines |
//! | [`boot`] | the `limit`, `node` and `baseline` boot groups |
//! | [`baseline`] | building the cached Debian baseline VM |
//! | [`lifecycle`] | `etcd` and `ha`: clusters created with the CLI |
//! | [`scale`] | `scale`: create time, total and per-node RSS and timeline of 1+1, 3+2, 3+7 |
//! | [`dev`] | `dev`: clusters/dev.yaml's create, idle RSS per node and matrix |
//! | [`image`] | `image` (build times) and `sizes` |
//! | [`report`] | statistics, ratios, the JSON report and the table |
//!
//! Exit status: 0 (report written, even with failed figures), 1 (failed),
//! 2 (bad input), 3 (a host tool is missing), 130 (interrupted).

mod baseline;
mod bench;
mod boot;
mod dev;
mod image;
mod lifecycle;
mod options;
mod report;
mod scale;
mod vm;

use clap::Parser;
use std::process::ExitCode;

/// Why an invocation ended early.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options or paths.
    #[error("{0}")]
    BadInput(String),
    /// A host tool is missing.
    #[error("{0}")]
    MissingTool(String),
    /// Something needed by every later figure failed.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    fn exit(&self) -> u8 {
        match self {
            BenchError::Failed(_) => 1,
            BenchError::BadInput(_) => 2,
            BenchError::MissingTool(_) => 3,
            BenchError::Interrupted => 130,
        }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let opts = match options::Options::try_parse() {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match bench::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ci/bench: {e}");
            ExitCode::from(e.exit())
        }
    }
}
