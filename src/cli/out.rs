//! Results on stdout, written so that a reader that went away is not a crash.
//!
//! `println!` panics (exit 101) when stdout is a pipe whose reader has
//! closed (`ironclad list | head -0`, `ironclad status -o json | true`):
//! Rust ignores SIGPIPE, so the write fails with `EPIPE` and the macro
//! panics on it. Every command prints its results through [`outln!`] and
//! [`out!`] (or [`bytes`]) instead; `clippy::print_stdout` is denied for the
//! whole `cli` module so a new `println!` does not slip back in.
//!
//! When the reader is gone the command ends at once, quietly, with status 0,
//! as `completion` and `man` always did: nobody is left to read what it had
//! to say, and whatever it did before printing (a put, a stop) stands. A
//! follow (`node logs -f | head -3`) ends this way too. Any other write
//! error (a full disk behind `> file`) is said on stderr and ends the
//! command with status 1. Ending the process here, rather than handing an
//! error back up, keeps every printing line a plain statement; the write
//! is the last thing a command does with its result, so nothing is cut
//! short that would have run otherwise.
//!
//! Progress and diagnostics go to stderr ([`super::progress`]), not here.

use std::io::Write;

/// `v` as pretty JSON, the one rendering of every `--output json` document
/// (a value that cannot be rendered is a failure, exit 1).
pub fn json(v: &impl serde::Serialize) -> Result<String, super::Failure> {
    serde_json::to_string_pretty(v)
        .map_err(|e| super::Failure::failed(miette::miette!("cannot render JSON: {e}")))
}

/// Writes `args` to stdout (see the module docs for a closed stdout).
pub fn fmt(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    finish(out.write_fmt(args).and_then(|()| out.flush()));
}

/// Writes `bytes` to stdout (see the module docs for a closed stdout).
pub fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    finish(out.write_all(bytes).and_then(|()| out.flush()));
}

fn finish(r: std::io::Result<()>) {
    match r {
        Ok(()) => {}
        Err(e) => std::process::exit(exit_code(&e)),
    }
}

/// The status a failed write to stdout ends the command with: 0 for a
/// reader that went away, 1 (said on stderr) for anything else.
fn exit_code(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        0
    } else {
        // stderr may be gone as well; nothing more to do then.
        let _ = writeln!(std::io::stderr(), "Error: cannot write to stdout: {e}");
        super::Exit::Failed as i32
    }
}

/// `print!` that survives a closed stdout (see [`crate::cli::out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::fmt(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed stdout (see [`crate::cli::out`]).
macro_rules! outln {
    () => {
        $crate::cli::out::bytes(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::out::fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_reader_is_success_anything_else_failure() {
        assert_eq!(exit_code(&std::io::ErrorKind::BrokenPipe.into()), 0);
        assert_eq!(exit_code(&std::io::Error::from_raw_os_error(28)), 1);
    }
}
