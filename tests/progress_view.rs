//! How `create` reports progress: plain stamped lines when stderr is not a
//! terminal (what CI logs and the other tests read), a live view drawn in
//! place on a terminal (a pty from `script`). The create stops at its image
//! stage (the cluster file names a recipe file that does not exist), so no
//! VM is needed; the node lines of the view are covered by the unit tests of
//! `cli::progress::live`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const CLUSTER: &str = "apiVersion: ironclad.dev/v1alpha1
kind: Cluster
metadata: {name: pv}
spec:
  image: ./absent.yaml
  controlPlanes: {count: 1}
  workers: {count: 0}
";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
    dir
}

fn env(cmd: &mut Command, dir: &Path) {
    cmd.current_dir(dir)
        .env("IRONCLAD_STATE_DIR", dir.join("state"))
        .env("IRONCLAD_CACHE_DIR", dir.join("cache"))
        .env_remove("RUST_LOG")
        .env("TERM", "xterm")
        .stdin(Stdio::null());
}

/// `HH:MM:SS.mmmZ [  0.0s] ` then the message.
fn plain_message(line: &str) -> Option<&str> {
    let (clock, rest) = line.split_once(' ')?;
    let b = clock.as_bytes();
    let clock_ok = b.len() == 13
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b[12] == b'Z'
        && clock
            .chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 2 | 5 | 8 | 12) || c.is_ascii_digit());
    let rest = rest.strip_prefix('[')?;
    let (secs, message) = rest.split_once("s] ")?;
    (clock_ok && secs.trim().parse::<f64>().is_ok()).then_some(message)
}

#[test]
fn without_a_terminal_progress_is_plain_stamped_lines() {
    let dir = setup();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironclad"));
    cmd.args(["create", "-f", "c.yaml"]);
    env(&mut cmd, dir.path());
    let out: Output = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no terminal control in a log: {err:?}"
    );
    let messages: Vec<&str> = err.lines().filter_map(plain_message).collect();
    assert!(
        messages.contains(&"image ./absent.yaml: building or reusing"),
        "{err}"
    );
    assert!(err.contains("cannot read recipe ./absent.yaml"), "{err}");
}

#[test]
fn on_a_terminal_create_draws_its_stage_in_place_and_leaves_it() {
    let dir = setup();
    let bin = env!("CARGO_BIN_EXE_ironclad");
    // script(1) runs the command on a pty and copies what it draws to stdout.
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c"])
        .arg(format!("'{bin}' create -f c.yaml"))
        .arg("/dev/null");
    env(&mut cmd, dir.path());
    let out = cmd.output().expect("script(1) from util-linux");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{screen:?}");
    // Drawn in place (carriage return, erase line), without the wall clock of
    // plain lines; the stage line left as it ended (x: not ready) with its
    // text, then the error.
    assert!(screen.contains("\r\x1b[2K"), "{screen:?}");
    assert!(
        !screen.lines().any(|l| plain_message(l).is_some()),
        "{screen:?}"
    );
    let last_frame = screen.rsplit("\r\x1b[2K").next().unwrap();
    assert!(last_frame.starts_with("x image "), "{screen:?}");
    assert!(
        last_frame.contains("image ./absent.yaml: building or reusing"),
        "{screen:?}"
    );
    assert!(last_frame.contains("cannot read recipe"), "{screen:?}");
    // The cursor is never hidden.
    assert!(!screen.contains("\x1b[?25l"), "{screen:?}");
}
