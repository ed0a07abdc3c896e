//! Boot progress on the serial console: one line per phase,
//! `machined: <phase> t=<uptime seconds>` (the format is the contract's,
//! [`ironclad_contract::console`]), written to stdout (which stage 1 points at
//! `/dev/console`). Owns the uptime clock (CLOCK_BOOTTIME) and nothing else.

pub use ironclad_contract::console::{Fact, Phase};

use std::io::Write;

/// Seconds since the kernel booted (CLOCK_BOOTTIME), or 0 if the clock fails.
pub fn uptime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Prints a phase line with the current uptime.
pub fn phase(phase: Phase) {
    say(&ironclad_contract::console::phase_line(&phase, uptime()));
}

/// Prints one line on the console (stdout), ignoring errors: the console is best effort.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Makes `/dev/console` the process's stdin, stdout and stderr (PID 1 may start
/// without any of them when the initramfs has no `/dev/console` node).
pub fn attach(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; f stays open during the call.
        if unsafe { libc::dup2(f.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_positive() {
        assert!(uptime() > 0.0);
    }
}
