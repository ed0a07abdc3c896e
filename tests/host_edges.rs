//! The real `ironclad` binary against hostile input at the host's edges:
//! cluster and node names that are paths (`""`, `.`, `..`, `/abs`, `a/b`,
//! `../../x`, `-x`), things under `<state>/clusters/` that are not clusters
//! (a plain directory, a symbolic link planted to the outside, a `clusters`
//! that is itself a link), `destroy` of a cluster that does not exist, and
//! output directories for secrets that others may write to.
//!
//! Every case runs against a scratch state dir full of canary files; each
//! must survive, and each refusal must be exit 2 with the rule or the reason.

use ironclad_host::cluster::paths::ClusterPaths;
use ironclad_host::spec::ClusterName;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ironclad(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .env_remove("CI")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("IRONCLAD_STATE_DIR")
        .output()
        .expect("run ironclad")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch world: `<tmp>/state` is the state root; canaries everywhere a
/// hostile name could reach.
struct World {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    state: PathBuf,
    canaries: Vec<PathBuf>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().expect("temp dir");
        let top = tmp.path().join("top");
        let state = top.join("a").join("state");
        let clusters = state.join("clusters");
        let mut canaries = Vec::new();
        let mut canary = |dir: &Path| {
            std::fs::create_dir_all(dir).unwrap();
            let c = dir.join("canary");
            std::fs::write(&c, "alive").unwrap();
            canaries.push(c);
        };
        // The state root, clusters/ and the places `..` and `../../x` reach.
        canary(&state);
        canary(&clusters);
        canary(&top.join("a"));
        canary(&top.join("x"));
        // What `/abs/path`, `a/b` and `-x` would name.
        canary(&top.join("outside"));
        canary(&clusters.join("a").join("b"));
        canary(&clusters.join("-x"));
        // A directory without the marker, and a link planted to the outside.
        canary(&clusters.join("plain"));
        std::os::unix::fs::symlink(top.join("outside"), clusters.join("link")).unwrap();
        // A real cluster (made the way create makes it), which must survive
        // every refused command.
        let real: ClusterName = "real".parse().unwrap();
        let paths = ClusterPaths::new(&state, &real);
        paths.claim(&real).unwrap();
        canary(paths.dir());
        World {
            _tmp: tmp,
            top,
            state,
            canaries,
        }
    }

    fn abs(&self) -> String {
        self.top.join("outside").display().to_string()
    }

    /// The names that are not names.
    fn hostile(&self) -> Vec<String> {
        vec![
            String::new(),
            ".".into(),
            "..".into(),
            self.abs(),
            "a/b".into(),
            "../../x".into(),
            "-x".into(),
        ]
    }

    fn assert_canaries(&self, after: &str) {
        for c in &self.canaries {
            assert!(
                c.is_file(),
                "{} is gone after {after}",
                c.strip_prefix(&self.top).unwrap_or(c).display()
            );
        }
    }
}

fn assert_refused_with_rule(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DNS-1123") || stderr.contains("unexpected argument"),
        "{what}: no rule in {}",
        text(out)
    );
    assert!(!stderr.contains("panicked"), "{what}: {}", text(out));
}

#[test]
fn destroy_refuses_hostile_names_and_every_canary_survives() {
    let w = World::new();
    for name in w.hostile() {
        // `--` so that `-x` reaches the value parser, not the flag parser.
        let out = ironclad(&w.state, &["destroy", "--", &name]);
        assert_refused_with_rule(&out, &format!("destroy {name:?}"));
        w.assert_canaries(&format!("destroy -- {name:?}"));
    }
    // Without `--`, clap takes `-x` for an unknown flag: also exit 2.
    let out = ironclad(&w.state, &["destroy", "-x"]);
    assert_refused_with_rule(&out, "destroy -x");
    w.assert_canaries("destroy -x");
}

#[test]
fn destroy_removes_only_a_cluster_directory() {
    let w = World::new();
    for name in ["plain", "link"] {
        let out = ironclad(&w.state, &["destroy", name]);
        assert_eq!(out.status.code(), Some(2), "destroy {name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not a cluster directory") && stderr.contains("remove it by hand"),
            "destroy {name}: {}",
            text(&out)
        );
        w.assert_canaries(&format!("destroy {name}"));
    }
    assert!(
        std::fs::symlink_metadata(w.state.join("clusters/link"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link itself is left too"
    );

    // A `clusters` that is a link to another state dir's clusters: refused.
    let other = w.top.join("other-state");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(w.state.join("clusters"), other.join("clusters")).unwrap();
    let out = ironclad(&other, &["destroy", "real"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out)
    );
    let out = ironclad(&other, &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    w.assert_canaries("destroy through a linked clusters dir");

    // Twice in a teardown: a cluster that does not exist is a note, exit 0.
    let out = ironclad(&w.state, &["destroy", "ghost"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to destroy"),
        "{}",
        text(&out)
    );
    let empty = w.top.join("empty-state");
    let out = ironclad(&empty, &["destroy", "ghost"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Unnamed, with no cluster at all: the same note.
    let out = ironclad(&empty, &["destroy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to destroy"),
        "{}",
        text(&out)
    );

    // The real cluster goes, and only it.
    let real = w.state.join("clusters/real");
    let out = ironclad(&w.state, &["destroy", "real"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!real.exists());
    for c in &w.canaries {
        assert!(
            c.starts_with(&real) || c.is_file(),
            "{} is gone",
            c.display()
        );
    }
    let out = ironclad(&w.state, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no clusters"),
        "only real clusters are listed: {}",
        text(&out)
    );
}

/// Whether a command's `{}` is a cluster name (else a node name).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Cluster,
    Node,
}

/// Every other command that takes a cluster or node name, as argv with the
/// name in the place `{}`.
fn commands_with_names() -> Vec<(&'static str, Takes, Vec<&'static str>)> {
    use Takes::*;
    vec![
        ("status", Cluster, vec!["status", "--", "{}"]),
        ("stop", Cluster, vec!["stop", "--", "{}"]),
        ("stop --node", Node, vec!["stop", "real", "--node={}"]),
        ("start", Cluster, vec!["start", "--", "{}"]),
        ("start --node", Node, vec!["start", "real", "--node={}"]),
        ("console", Node, vec!["console", "--", "{}"]),
        (
            "console --cluster",
            Cluster,
            vec!["console", "n", "--cluster={}"],
        ),
        ("matrix", Cluster, vec!["matrix", "--", "{}"]),
        (
            "node --cluster",
            Cluster,
            vec!["node", "services", "--node", "n", "--cluster={}"],
        ),
        ("node --node", Node, vec!["node", "dmesg", "--node={}"]),
        (
            "etcd --cluster",
            Cluster,
            vec!["etcd", "members", "--cluster={}"],
        ),
        ("etcd --node", Node, vec!["etcd", "get", "k", "--node={}"]),
    ]
}

fn with_name(argv: &[&'static str], name: &str) -> Vec<String> {
    argv.iter().map(|a| a.replace("{}", name)).collect()
}

#[test]
fn every_command_refuses_hostile_names() {
    let w = World::new();
    for (what, _, argv) in commands_with_names() {
        for name in w.hostile() {
            let args = with_name(&argv, &name);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = ironclad(&w.state, &refs);
            assert_refused_with_rule(&out, &format!("{what} {name:?}"));
        }
    }
    w.assert_canaries("the other commands");
}

#[test]
fn every_command_refuses_what_is_not_a_cluster() {
    let w = World::new();
    for (what, takes, argv) in commands_with_names() {
        if takes != Takes::Cluster {
            continue;
        }
        for name in ["plain", "link"] {
            let args = with_name(&argv, name);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = ironclad(&w.state, &refs);
            assert_eq!(out.status.code(), Some(2), "{what} {name}: {}", text(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("not a cluster directory"),
                "{what} {name}: {}",
                text(&out)
            );
        }
    }
    w.assert_canaries("commands on things that are not clusters");
}

#[test]
fn secrets_are_not_written_where_others_may_write() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_ironclad");
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = Command::new(bin)
        .args(["gen", "config", "--dir"])
        .arg(&shared)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a safe place for secrets")
            && String::from_utf8_lossy(&out.stderr).contains("0775"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);

    // A private directory works; then a further client cert into a shared one is refused.
    let private = tmp.path().join("private");
    let out = Command::new(bin)
        .args(["gen", "config", "--dir"])
        .arg(&private)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o757)).unwrap();
    let out = Command::new(bin)
        .args(["gen", "client-cert", "--role", "reader", "--secrets"])
        .arg(private.join("secrets"))
        .arg("--dir")
        .arg(&shared)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a safe place for secrets"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}
