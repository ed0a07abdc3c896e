//! The workspace's declared `rust-version` is not older than what its locked
//! dependencies declare they need: a `cargo update` that pulls in a crate
//! needing a newer Rust fails here instead of on a user's older toolchain.
//! (What the project's own code needs, e.g. let-chains from 1.88, is written
//! beside `rust-version` in Cargo.toml; checking it would need that toolchain.)

use serde_json::Value;
use std::process::Command;

/// `1.89`, `1.85.0` → comparable tuples (a missing patch is 0).
fn version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((major, minor, patch))
}

#[test]
fn versions_compare_numerically() {
    assert!(version("1.89").unwrap() > version("1.85.0").unwrap());
    assert!(version("1.100").unwrap() > version("1.99.9").unwrap());
    assert_eq!(version("1.89"), version("1.89.0"));
    assert_eq!(version("x.1"), None);
}

#[test]
fn declared_rust_version_covers_every_locked_dependency() {
    #[expect(
        clippy::disallowed_methods,
        reason = "cargo tells its tests which cargo runs them"
    )]
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "ironclad")
        .expect("the ironclad package");
    let declared = version(ours["rust_version"].as_str().expect("rust-version is set"))
        .expect("rust-version parses");
    let too_new: Vec<String> = packages
        .iter()
        .filter(|p| !members.contains(&p["id"].as_str().unwrap_or_default()))
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (version(needs)? > declared)
                .then(|| format!("{} {} needs {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "rust-version {declared:?} in Cargo.toml is older than what these need: {too_new:?}"
    );
}
