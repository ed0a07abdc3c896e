//! Ctrl-C (SIGINT) and SIGTERM during an operation that must clean up after
//! itself (`create`). While a [`Catch`] lives, the two signals set a flag
//! instead of ending the process; the operation's wait loops read it
//! ([`requested`]) and return [`crate::cluster::lifecycle::LifecycleError::Interrupted`],
//! and the caller undoes what it made. Dropping the `Catch` restores the
//! actions there were before, so a later Ctrl-C ends the process as usual.
//!
//! Children in the same process group (mmdebstrap, mksquashfs, qemu-img) get
//! a terminal's Ctrl-C themselves and end; the cluster's supervisor and its
//! QEMUs run in their own session and do not, which is why the caller must.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT or SIGTERM arrived while a [`Catch`] was in place.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The signals caught; the previous actions are restored on drop.
pub struct Catch {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

/// Catches SIGINT and SIGTERM until the returned value is dropped.
pub fn catch() -> std::io::Result<Catch> {
    REQUESTED.store(false, Ordering::SeqCst);
    let mut previous = Vec::new();
    for signal in SIGNALS {
        // SAFETY: sigaction(2) with a zeroed struct whose handler is a plain
        // `extern "C"` function doing one atomic store (async-signal-safe);
        // `old` receives the previous action, restored on drop.
        let old = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, &action, &mut old) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            old
        };
        previous.push((signal, old));
    }
    Ok(Catch { previous })
}

impl Drop for Catch {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores an action sigaction(2) returned for `signal`.
            unsafe {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_caught_signal_sets_the_flag_and_the_old_action_comes_back() {
        let catch = super::catch().unwrap();
        assert!(!super::requested());
        // SAFETY: raise(3) of SIGTERM to this process, which catches it now.
        unsafe {
            libc::raise(libc::SIGTERM);
        }
        assert!(super::requested());
        drop(catch);
        // SAFETY: reads the current action of SIGTERM without changing it.
        let now = unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut now);
            now
        };
        assert_ne!(
            now.sa_sigaction,
            super::on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t
        );
    }
}
