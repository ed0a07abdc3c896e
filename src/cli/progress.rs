//! What the CLI says while it works, and how much: progress lines on stderr
//! (stdout carries results), each with the time since the command started,
//! and with the wall-clock time too when stderr is not a terminal (a CI log
//! is read afterwards); `-q` silences them. Diagnostics (`-v`, `-vv`,
//! `RUST_LOG`) go through `tracing`, the events of the libraries underneath
//! (reqwest, rustls, hyper, tonic, qapi) included.
//!
//! On a terminal (and without `-q` or `-v`, and unless `TERM=dumb`),
//! `create`, `start` and `image build` draw a live view instead ([`live`]):
//! what [`lifecycle_progress`] and [`image_progress`] hand out. Anywhere else
//! they print exactly the plain lines ([`Lines`]).

mod live;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static QUIET: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();
static TERMINAL: OnceLock<bool> = OnceLock::new();
/// Whether progress may be drawn as a live view (set by [`init`]).
static LIVE: AtomicBool = AtomicBool::new(false);

/// How much the user asked to hear (`-v`, `-q`; global flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Verbosity {
    /// More diagnostics on stderr: -v for ironclad's own, -vv for the
    /// libraries' too (TLS, HTTP, QMP), -vvv for everything. `RUST_LOG`
    /// overrides.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress lines; only results and errors.
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl Verbosity {
    /// The `tracing` filter these flags mean when `RUST_LOG` is not set.
    pub fn filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "warn,ironclad=info,ironclad_host=info",
            (false, 2) => "debug",
            (false, _) => "trace",
        }
    }
}

/// Sets up progress and diagnostics for this process; call once, first.
pub fn init(v: &Verbosity) {
    QUIET.store(v.quiet, Ordering::Relaxed);
    START.get_or_init(Instant::now);
    LIVE.store(
        !v.quiet && v.verbose == 0 && std::io::stderr().is_terminal() && !dumb_terminal(),
        Ordering::Relaxed,
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(v.filter()));
    // Fails only when a subscriber is already set (then that one is kept).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AboveTheView)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[expect(
    clippy::disallowed_methods,
    reason = "the terminal's kind, read at the command line's edge"
)]
fn dumb_terminal() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// stderr for `tracing`: each event is written in one piece, above the live
/// view when one is drawn.
struct AboveTheView;

impl std::io::Write for AboveTheView {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        live::above(|| std::io::stderr().write(buf))
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        live::above(|| std::io::stderr().write_all(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One progress line, unless `-q` (above the live view when one is drawn).
pub fn line(message: &str) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    live::above(|| eprintln!("{}", stamped(message)));
}

/// Where `create` and `start` report: the live view on a terminal, else
/// plain lines. The view takes stderr until the value is dropped, and its
/// lines stay printed then.
pub fn lifecycle_progress() -> Box<dyn ironclad_host::cluster::lifecycle::Progress> {
    if LIVE.load(Ordering::Relaxed) {
        Box::new(live::Live::stderr())
    } else {
        Box::new(Lines)
    }
}

/// Where `image build` reports: its steps as lines, on a terminal with a
/// spinner below them carrying the step running and its heartbeat.
pub fn image_progress() -> Box<dyn ironclad_host::image::Progress> {
    if LIVE.load(Ordering::Relaxed) {
        Box::new(live::ImageLive::stderr())
    } else {
        Box::new(Lines)
    }
}

fn stamped(message: &str) -> String {
    let elapsed = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    if *TERMINAL.get_or_init(|| std::io::stderr().is_terminal()) {
        format!("[{elapsed:6.1}s] {message}")
    } else {
        format!("{} [{elapsed:6.1}s] {message}", wall_clock())
    }
}

/// The UTC time of day, to the millisecond.
fn wall_clock() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// Progress of the lifecycle (per node and phase) and of the image build
/// (`image: ...`), as lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lines;

impl ironclad_host::cluster::lifecycle::Progress for Lines {
    fn line(&self, message: &str) {
        line(message);
    }
}

impl ironclad_host::image::Progress for Lines {
    fn phase(&self, message: &str) {
        line(&format!("image: {message}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        v: Verbosity,
    }

    #[test]
    fn flags_choose_the_filter() {
        let f = |args: &[&str]| T::try_parse_from(args).map(|t| t.v.filter());
        assert_eq!(f(&["t"]).unwrap(), "warn");
        assert_eq!(
            f(&["t", "-v"]).unwrap(),
            "warn,ironclad=info,ironclad_host=info"
        );
        assert_eq!(f(&["t", "-vv"]).unwrap(), "debug");
        assert_eq!(f(&["t", "-vvvv"]).unwrap(), "trace");
        assert_eq!(f(&["t", "-q"]).unwrap(), "error");
        assert!(f(&["t", "-q", "-v"]).is_err(), "-q and -v conflict");
    }

    #[test]
    fn lines_carry_the_elapsed_time() {
        let s = stamped("cp-1: booting");
        assert!(s.ends_with("s] cp-1: booting"), "{s}");
    }
}
