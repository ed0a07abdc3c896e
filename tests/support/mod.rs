//! Helpers shared by the VM test binaries (each includes this module).

use std::path::{Path, PathBuf};

/// This build's machined: a workspace test run builds it beside `ironclad`
/// (`crates/node/tests/machined_bin.rs` makes it a target of every run).
pub fn machined_binary() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_ironclad")).with_file_name("machined");
    assert!(
        p.is_file(),
        "{} is missing: build the whole workspace (cargo build --release) first",
        p.display()
    );
    p
}
