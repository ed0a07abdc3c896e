//! The host's one async runtime.
//!
//! The host's operations are synchronous at their surface (the command line
//! runs one after another) and asynchronous where they talk to nodes, to the
//! supervisor's socket or to QMP. All of that runs on one multi-threaded
//! tokio runtime per process, built once: by the command line at its edge
//! ([`init`], so a failure is reported like any other), or at first use by a
//! library caller such as a test. Synchronous code reaches it with
//! [`block_on`] from any thread that is not itself running async code
//! (tokio refuses a nested `block_on`, and so would a runtime of its own).

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Worker threads: the host's async work is I/O waits on a few sockets.
const WORKERS: usize = 2;

/// The process's runtime, built on the first call.
pub fn init() -> std::io::Result<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("ironclad-host")
        .enable_all()
        .build()?;
    // Another thread may have won the race; its runtime is the one kept.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `f` to completion on the process's runtime.
pub fn block_on<F: Future>(f: F) -> std::io::Result<F::Output> {
    Ok(init()?.block_on(f))
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_runtime_serves_every_thread() {
        let a = super::init().unwrap() as *const _;
        let b = std::thread::spawn(|| super::init().unwrap() as *const _ as usize)
            .join()
            .unwrap();
        assert_eq!(a as usize, b);
        let v = std::thread::spawn(|| super::block_on(async { 7 }).unwrap())
            .join()
            .unwrap();
        assert_eq!(v, 7);
    }
}
