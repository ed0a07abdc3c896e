//! The `machined` binary outside a node. Besides what it checks, this test
//! makes `cargo test`/`cargo nextest run` of the workspace build `machined`
//! beside `ironclad` (a package's binaries are built for its integration
//! tests), so the image tests in the root package never pack a stale one.

use std::process::Command;

#[test]
fn refuses_to_run_unless_it_is_pid_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_machined"))
        .output()
        .expect("run machined");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as PID 1"), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");
}
