//! `ironclad version`, `completion` and `man`: the real binary.

use std::process::{Command, Output};

fn ironclad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(args)
        .output()
        .expect("run ironclad")
}

#[test]
fn version_reports_what_a_bug_report_needs() {
    let o = ironclad(&["version", "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ironclad"], env!("CARGO_PKG_VERSION"));
    let commit = v["commit"].as_str().unwrap();
    // Built from this checkout: the commit is git's (40 hex digits).
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    // machined sits beside the test's ironclad: its hash and image key.
    assert_eq!(
        v["machined"]["sha256"].as_str().map(str::len),
        Some(64),
        "{v}"
    );
    assert_eq!(
        v["machined"]["image_key"].as_str().map(str::len),
        Some(64),
        "{v}"
    );
    assert!(v["qemu"]["version"].as_str().is_some() || v["qemu"]["error"].as_str().is_some());
    assert!(
        matches!(v["accelerator"]["auto"].as_str(), Some("kvm" | "tcg")),
        "{v}"
    );
    assert!(!v["host"]["kernel"].as_str().unwrap().is_empty());

    let o = ironclad(&["version"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for field in [
        "ironclad ",
        "machined ",
        "image ",
        "qemu ",
        "accel ",
        "host ",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

#[test]
fn completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let o = ironclad(&["completion", shell]);
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        for word in ["create", "destroy", "matrix", "--output"] {
            assert!(text.contains(word), "{shell}: {word}");
        }
    }
    let o = ironclad(&["completion", "nosh"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn man_pages_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let o = ironclad(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for page in [
        "ironclad.1",
        "ironclad-create.1",
        "ironclad-image-build.1",
        "ironclad-gen-config.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    assert!(
        !dir.path().join("ironclad-__supervise.1").exists(),
        "hidden commands have none"
    );
    let o = ironclad(&["man"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH ironclad"));
}
