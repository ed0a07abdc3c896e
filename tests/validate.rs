//! Runs the real `ironclad validate` on the example cluster files (exit 0) and
//! on bad files (exit 2, a diagnostic naming the file, line and column).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HEAD: &str = "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\n";

fn validate(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .arg("validate")
        .arg("-f")
        .arg(file)
        .args(extra)
        .output()
        .expect("run ironclad")
}

fn clusters() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("clusters/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_clusters_are_valid() {
    let files = clusters();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let out = validate(&file, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {:?}\n{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("valid cluster"), "{stdout}");
    }
}

/// The file may also be given without `-f` (as a new user types it); both
/// at once, or neither, is bad input.
#[test]
fn the_file_may_be_positional() {
    let file = &clusters()[0];
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_ironclad"))
            .arg("validate")
            .args(args)
            .output()
            .expect("run ironclad")
    };
    let out = run(&[file.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid cluster"));
    assert_eq!(run(&[]).status.code(), Some(2));
    let both = run(&[file.as_os_str(), "-f".as_ref(), file.as_os_str()]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn json_output_is_the_resolved_cluster() {
    let ha = Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/ha.yaml");
    let out = validate(&ha, &["--output", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["name"], "ha");
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 5);
    assert_eq!(nodes[0]["name"], "ha-cp-1");
    assert_eq!(nodes[0]["role"], "control-plane");
    assert_eq!(nodes[0]["address"], "10.6.0.2");
    assert_eq!(nodes[4]["name"], "ha-worker-2");
    assert_eq!(nodes[4]["memory"], "768MiB");
}

/// (file name, contents, expected `line:col` and a phrase of the message)
fn bad_files() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "syntax.yaml",
            format!("{HEAD}spec:\n  workers: {{count: 1\n  image: x\n"),
            "5:8",
            "invalid YAML",
        ),
        (
            "unknown.yaml",
            format!("{HEAD}spec:\n  workers:\n    memroy: 1GiB\n"),
            "5:5",
            "did you mean `memory`?",
        ),
        (
            "type.yaml",
            format!("{HEAD}spec:\n  controlPlanes:\n    count: three\n"),
            "5:12",
            "must be an integer",
        ),
        (
            "size.yaml",
            format!("{HEAD}spec:\n  workers:\n    memory: 12XB\n"),
            "5:13",
            "unknown size unit",
        ),
        (
            "memory.yaml",
            format!("{HEAD}spec:\n  workers:\n    memory: 64MiB\n"),
            "5:13",
            "minimum of 256MiB",
        ),
        (
            "cidr.yaml",
            format!("{HEAD}spec:\n  network:\n    cidr: 10.5.0.0/40\n"),
            "5:11",
            "not an IPv4 CIDR",
        ),
        (
            "small-cidr.yaml",
            format!("{HEAD}spec:\n  network: {{cidr: 10.5.0.0/30}}\n  workers: {{count: 2}}\n"),
            "4:19",
            "has room for 1 node addresses",
        ),
        (
            "dup-name.yaml",
            format!("{HEAD}spec:\n  workers:\n    nodes:\n      - name: w\n      - name: w\n"),
            "7:15",
            "duplicate node name",
        ),
        (
            "dns.yaml",
            format!("{HEAD}metadata:\n  name: My_Cluster\n"),
            "4:9",
            "DNS-1123",
        ),
        (
            "zero-cp.yaml",
            format!("{HEAD}spec:\n  controlPlanes:\n    count: 0\n"),
            "5:12",
            "at least one control plane",
        ),
        (
            "cpus.yaml",
            format!("{HEAD}spec:\n  workers: {{cpus: 0}}\n"),
            "4:19",
            "cpus must be between 1 and",
        ),
        (
            "version.yaml",
            "apiVersion: ironclad.dev/v2\nkind: Cluster\n".to_string(),
            "1:13",
            "unsupported apiVersion",
        ),
        (
            "kind.yaml",
            "apiVersion: ironclad.dev/v1alpha1\nkind: Pod\n".to_string(),
            "2:7",
            "unsupported kind",
        ),
        (
            "kubernetes.yaml",
            format!("{HEAD}spec:\n  kubernetes:\n    enabled: true\n"),
            "5:14",
            "the node image has no Kubernetes binaries",
        ),
        (
            "yes.yaml",
            format!("{HEAD}spec:\n  network:\n    egress: yes\n"),
            "5:13",
            "YAML 1.2 reads `yes` as a string, not a boolean: write `true` (or `false`)",
        ),
        (
            "check.yaml",
            format!("{HEAD}spec:\n  matrix:\n    checks: [CONF-01, BRK-99]\n"),
            "5:23",
            "unknown matrix check \"BRK-99\"",
        ),
        (
            "destructive.yaml",
            format!("{HEAD}spec:\n  matrix:\n    checks: [RT-06]\n"),
            "5:14",
            "add `destructive: true`",
        ),
    ]
}

/// Each YAML 1.1 boolean word is refused with the YAML 1.2 reason and the
/// boolean to write instead; a quoted boolean is told to drop its quotes.
#[test]
fn yaml_1_1_booleans_get_the_yaml_1_2_hint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("b.yaml");
    for (word, means) in [
        ("yes", "true"),
        ("No", "false"),
        ("ON", "true"),
        ("off", "false"),
        ("y", "true"),
        ("n", "false"),
    ] {
        std::fs::write(
            &path,
            format!("{HEAD}spec:\n  runtimes: {{crun: {word}}}\n"),
        )
        .unwrap();
        let out = validate(&path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{word}: {stderr}");
        let hint = format!("YAML 1.2 reads `{word}` as a string, not a boolean: write `{means}`");
        assert!(stderr.contains(&hint), "{word}: {stderr}");
        assert!(!stderr.contains("without quotes"), "{word}: {stderr}");
    }
    for quoted in ["\"true\"", "'false'"] {
        std::fs::write(
            &path,
            format!("{HEAD}spec:\n  runtimes: {{crun: {quoted}}}\n"),
        )
        .unwrap();
        let stderr = String::from_utf8_lossy(&validate(&path, &[]).stderr).into_owned();
        assert!(
            stderr.contains("write the value without quotes"),
            "{stderr}"
        );
    }
    // The YAML 1.2 spellings are booleans.
    for b in ["true", "True", "FALSE"] {
        std::fs::write(&path, format!("{HEAD}spec:\n  runtimes: {{crun: {b}}}\n")).unwrap();
        assert!(validate(&path, &[]).status.success(), "{b}");
    }
}

#[test]
fn bad_files_exit_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, contents, line_col, phrase) in bad_files() {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write bad file");
        let out = validate(&path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let at = format!("{}:{line_col}", path.display());
        assert!(stderr.contains(&at), "{name}: expected {at} in\n{stderr}");
        assert!(
            stderr.contains(phrase),
            "{name}: expected {phrase:?} in\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "colour codes without a terminal: {stderr}"
        );
    }
}

#[test]
fn several_problems_are_reported_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("many.yaml");
    std::fs::write(
        &path,
        format!(
            "{HEAD}spec:\n  workers:\n    memory: 12XB\n    cpu: 2\n  network: {{cidr: nope}}\n"
        ),
    )
    .expect("write");
    let out = validate(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for line_col in ["5:13", "6:5", "7:19"] {
        let at = format!("{}:{line_col}", path.display());
        assert!(stderr.contains(&at), "expected {at} in\n{stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");

    let out = validate(&path, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    let lines: Vec<_> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["line"].as_u64())
        .collect();
    assert_eq!(lines, [Some(5), Some(6), Some(7)]);
}

#[test]
fn missing_and_binary_files_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.yaml");
    let out = validate(&missing, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("absent.yaml"), "{stderr}");

    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0x61, 0x3a, 0x20, 0xff, 0xfe, 0x00]).expect("write");
    let out = validate(&binary, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}

/// A file far beyond any cluster file is refused by its size, before it is
/// read: quickly, and with a short message.
#[test]
fn a_huge_file_is_refused_unread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.yaml");
    let mut text = format!("{HEAD}metadata:\n  name: ");
    text.push_str(&"a".repeat(20 << 20));
    text.push('\n');
    std::fs::write(&path, text).expect("write");
    let started = std::time::Instant::now();
    let out = validate(&path, &[]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("too large"), "{stderr}");
    assert!(
        out.stdout.len() + out.stderr.len() < 64 << 10,
        "{} bytes of output",
        out.stdout.len() + out.stderr.len()
    );
    // Generous: the refusal itself takes milliseconds.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");

    let out = validate(&path, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too large")
    );
}

/// A file under the size limit with 40 000 unknown keys: every one is found,
/// the first few are shown, the rest counted, and it does not take long.
#[test]
fn many_problems_are_capped_and_quick() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.yaml");
    let mut text = format!("{HEAD}spec:\n");
    for i in 0..40_000 {
        text.push_str(&format!("  k{i}: 1\n"));
    }
    assert!(text.len() < 1 << 20, "{} bytes", text.len());
    std::fs::write(&path, &text).expect("write");
    let started = std::time::Instant::now();
    let out = validate(&path, &[]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("40000 problems") && stderr.contains("39980 more"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:4:3", path.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("`k20`"), "only the first 20 are shown");
    assert!(stderr.len() < 64 << 10, "{} bytes on stderr", stderr.len());
    // Generous (it takes well under a second): the old report was quadratic.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");

    let out = validate(&path, &["--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["total"], 40_000);
    assert_eq!(v["omitted"], 39_980);
    assert_eq!(v["problems"].as_array().expect("problems").len(), 20);
}

/// Huge values are never quoted whole: not in the message, not in the
/// excerpt of the file, wherever on a long line the problem sits.
#[test]
fn huge_values_are_not_quoted_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let long = "x".repeat(900_000);
    let cases = [
        // A bad name of 900 KB.
        format!("{HEAD}metadata:\n  name: {long}\n"),
        // A bad CIDR after a long run of spaces, on one line.
        format!("{HEAD}spec: {{network: {{cidr: \"{long}\"}}}}\n"),
        // An unknown key at the end of a 900 KB line.
        format!("{HEAD}spec: {{image: \"{long}\", colour: 1}}\n"),
        // A syntax error far into a long line.
        format!("{HEAD}spec: {{image: {long}\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let path = dir.path().join(format!("long-{i}.yaml"));
        std::fs::write(&path, text).expect("write");
        let out = validate(&path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(
            stderr.len() < 4 << 10,
            "case {i}: {} bytes: {stderr}",
            stderr.len()
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "case {i}: {stderr}"
        );
        let out = validate(&path, &["--output", "json"]);
        assert!(
            out.stdout.len() < 4 << 10,
            "case {i}: {} bytes of JSON",
            out.stdout.len()
        );
    }
    // The column is the file's, even though the excerpt is a window of the line.
    let stderr = {
        let path = dir.path().join("long-2.yaml");
        String::from_utf8_lossy(&validate(&path, &[]).stderr).into_owned()
    };
    let col = "spec: {image: \"".len() + long.len() + "\", ".len() + 1;
    assert!(stderr.contains(&format!(":3:{col}]")), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}
