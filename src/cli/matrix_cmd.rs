//! `ironclad matrix [NAME] [--check ID...] [--output json] [--junit FILE]
//! [--destructive|--no-destructive] [--list]`: runs the conformance and
//! breakout matrix on a running cluster and prints a table (or JSON);
//! `--junit` also writes JUnit XML. Exit status 1 when a check failed, or
//! with `--strict` when one is EXPOSED. Which
//! checks run: the flags, else the cluster file's `spec.matrix`
//! ([`crate::matrix::settings`]). The work is in [`crate::matrix`].
//!
//! `--client-config FILE` (or `IRONCLAD_CLIENT_CONFIG`) runs it on the
//! cluster a client config describes, without the state root (see
//! [`super::select`]); every node in it needs an endpoint. The report names
//! the cluster file when a `cluster.yaml` lies beside the client config (as
//! in a cluster's state dir), and says on stderr that it names none
//! otherwise; that file's `spec.matrix` is then the one honoured.

use super::out::out;
use super::{CliResult, Exit, Failure, Global, Output};
use crate::matrix::{self, CATALOG, render, settings};
use crate::spec::ClusterName;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster [default: the only cluster in the state dir].
    #[arg(value_name = "NAME", value_parser = super::cluster_name_arg, env = super::select::CLUSTER_ENV)]
    pub name: Option<ClusterName>,
    /// Run on the cluster of this client config (e.g. `DIR/client.yaml` of
    /// `ironclad gen config --dir DIR`, with the nodes' endpoints) instead of
    /// a cluster under the state dir. Not together with NAME.
    #[arg(long, value_name = "FILE", env = super::select::CLIENT_CONFIG_ENV, value_parser = super::select::client_config_arg, value_hint = clap::ValueHint::FilePath)]
    pub client_config: Option<PathBuf>,
    /// Run only these checks (repeatable; e.g. --check RT-01 --check BRK-04).
    /// Overrides the cluster file's `spec.matrix.checks`, which is used
    /// otherwise.
    #[arg(long = "check", value_name = "ID")]
    pub checks: Vec<String>,
    /// How to print the report.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Allow the destructive checks (sysrq power-off, fork bomb), and run
    /// them when every check runs: throw-away clusters only. Overrides the
    /// cluster file's `spec.matrix.destructive`, which is used otherwise.
    #[arg(long, overrides_with = "no_destructive")]
    pub destructive: bool,
    /// No destructive checks, whatever the cluster file's
    /// `spec.matrix.destructive` says.
    #[arg(long, overrides_with = "destructive")]
    pub no_destructive: bool,
    /// Fail (exit 1) also when a check is EXPOSED: an attack got through
    /// that the node has no defence against (a privileged container).
    #[arg(long)]
    pub strict: bool,
    /// List the checks and exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub support: super::support_cmd::OnFailure,
}

fn list() -> String {
    let mut s = String::new();
    for c in CATALOG {
        let d = if c.destructive { " (destructive)" } else { "" };
        s.push_str(&format!("{:9} {}{d}\n", c.id, c.title));
    }
    s
}

/// Picks the cluster: the given name, or the only one under the state root.
/// A name whose place holds something other than a cluster's directory is
/// refused (see [`crate::cluster::paths::find`]).
fn cluster_name(root: &Path, name: Option<ClusterName>) -> Result<ClusterName, Failure> {
    use crate::cluster::paths::{Found, find};
    if let Some(n) = name {
        return match find(root, &n) {
            Ok(Found::Foreign { path, why }) => Err(Failure::msg(
                Exit::BadInput,
                Found::foreign_message(&path, &why),
            )),
            // A missing cluster is reported by the matrix's own load.
            Ok(_) => Ok(n),
            Err(e) => Err(Failure::msg(
                Exit::Failed,
                format!("{}: {e}", root.display()),
            )),
        };
    }
    super::select::cluster(root, None)
}

pub fn run(args: Args, global: &Global) -> CliResult {
    if args.list {
        out!("{}", list());
        return Ok(());
    }
    let source = source(&args, global)?;
    let destructive = match (args.destructive, args.no_destructive) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let kept = match &source {
        Source::State { root, name } => settings::stored(root, name),
        Source::File { client_yaml } => settings::stored_at(&beside(client_yaml)),
    };
    let file = match kept {
        Ok(f) => f,
        // The file's settings do not matter when the flags decide both.
        Err(_) if !args.checks.is_empty() && destructive.is_some() => Default::default(),
        Err(e) => return Err(Failure::bad_input(*e)),
    };
    let choice = settings::resolve(&file, &args.checks, destructive);
    // Bad check ids are bad input, before anything is contacted.
    matrix::select(&choice.checks, choice.destructive)
        .map_err(|e| Failure::msg(Exit::BadInput, e))?;
    say(&choice.describe());
    let report = super::block_on(async {
        let ctx = match &source {
            Source::State { root, name } => matrix::run::load(root, name)?,
            Source::File { client_yaml } => {
                matrix::run::load_client(client_yaml, &beside(client_yaml))?
            }
        };
        matrix::run::run(&ctx, &choice.checks, choice.destructive, &say).await
    })?;
    let given_file = matches!(source, Source::File { .. });
    let report = report.map_err(|e| match e {
        matrix::run::MatrixError::Select(_) | matrix::run::MatrixError::NoCluster { .. } => {
            Failure::bad_input(e)
        }
        // The file was checked above; its certificate and key were not.
        matrix::run::MatrixError::Client(
            crate::client::ClientError::Read { .. } | crate::client::ClientError::Setup(_),
        ) if given_file => Failure::msg(Exit::BadInput, e),
        other => source.attach(&args, Failure::failed(other)),
    })?;
    if let Source::State { root, name } = &source {
        keep_report(root, name, &report, args.strict);
    }
    print_report(&report, args.output, args.junit.as_deref(), args.strict)
        .map_err(|f| source.attach(&args, f))
}

/// Keeps the report in the cluster's directory, where `ironclad support`
/// finds it; failing to is only said.
fn keep_report(root: &Path, name: &ClusterName, report: &matrix::Report, strict: bool) {
    let paths = crate::cluster::paths::ClusterPaths::new(root, name);
    let json = paths.matrix_report_json();
    let kept = json
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| crate::fsutil::write_public(&json, render::json(report).as_bytes()))
        .and_then(|()| {
            crate::fsutil::write_public(
                &paths.matrix_report_junit(),
                render::junit(report, strict).as_bytes(),
            )
        });
    if let Err(e) = kept {
        say(&format!(
            "cannot keep the report in {}: {e}",
            json.display()
        ));
    }
}

/// Where the matrix finds its cluster.
enum Source {
    /// Cluster `name` under the state root.
    State { root: PathBuf, name: ClusterName },
    /// A client config given on the command line (checked: readable, valid,
    /// every node with an endpoint).
    File { client_yaml: PathBuf },
}

impl Source {
    /// A failure of the matrix on this cluster, with how to make a support
    /// bundle (or the bundle written: `--support-on-failure`, `CI`). A
    /// cluster known only by its client config has no state to bundle.
    fn attach(&self, args: &Args, f: Failure) -> Failure {
        match self {
            Source::State { root, name } => args.support.attach(root, name, f),
            Source::File { .. } => f,
        }
    }
}

/// The cluster file beside a client config (a cluster's state dir has both).
fn beside(client_yaml: &Path) -> PathBuf {
    client_yaml.with_file_name("cluster.yaml")
}

/// The cluster to run on: `--client-config` (refused with NAME), or NAME, or
/// the only cluster under the state root.
fn source(args: &Args, global: &Global) -> Result<Source, Failure> {
    let Some(file) = &args.client_config else {
        let root = global.state_root()?;
        let name = cluster_name(&root, args.name.clone())?;
        return Ok(Source::State { root, name });
    };
    let sel = super::select::client_config(global, args.name.as_ref(), Some(file), "NAME")?;
    let missing: Vec<&str> = sel
        .config
        .nodes
        .iter()
        .filter(|n| n.endpoint.is_none())
        .map(|n| n.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Failure::msg(
            Exit::BadInput,
            format!(
                "the matrix runs on every node, and {} gives no endpoint for {}: add each node's API address (`endpoint: 127.0.0.1:PORT`)",
                file.display(),
                missing.join(", ")
            ),
        ));
    }
    if sel.config.nodes.is_empty() {
        return Err(Failure::msg(
            Exit::BadInput,
            format!("{} lists no nodes to run the matrix on", file.display()),
        ));
    }
    if !beside(file).is_file() {
        say(&format!(
            "no cluster.yaml beside {}: the report names no cluster file",
            file.display()
        ));
    }
    Ok(Source::File {
        client_yaml: sel.client_yaml,
    })
}

/// Progress on stderr (stdout carries the report).
fn say(line: &str) {
    super::progress::line(&format!("matrix: {line}"));
}

/// Prints (and writes JUnit for) a report; a failure when a check failed
/// (or, `strict`, is EXPOSED). `ironclad create --matrix` calls this with the
/// report of its run.
pub fn print_report(
    report: &matrix::Report,
    output: Output,
    junit: Option<&Path>,
    strict: bool,
) -> CliResult {
    match output {
        Output::Text => out!("{}", render::table(report)),
        Output::Json => out!("{}", render::json(report)),
    }
    if let Some(path) = junit {
        crate::fsutil::write_public(path, render::junit(report, strict).as_bytes())
            .map_err(|e| Failure::msg(Exit::Failed, format!("{}: {e}", path.display())))?;
    }
    match run_failure(report, strict) {
        Some(why) => Err(Failure::msg(Exit::Failed, why)),
        None => Ok(()),
    }
}

/// Why the run fails (exit 1), if it does: a check FAILed, or (`strict`)
/// one is EXPOSED.
fn run_failure(report: &matrix::Report, strict: bool) -> Option<String> {
    if matrix::exit_status(report, strict) == 0 {
        return None;
    }
    let n = report.counts();
    Some(if n.failed > 0 {
        format!("{} check(s) failed", n.failed)
    } else {
        format!(
            "{} check(s) exposed, and --strict makes that a failure",
            n.exposed
        )
    })
}

/// For `ironclad create --matrix`: the checks the cluster file's
/// `spec.matrix` names (every non-destructive one by default) on the cluster
/// that was just created.
pub fn run_after_create(
    root: &Path,
    name: &ClusterName,
    file: &crate::spec::MatrixSettings,
    output: Output,
    junit: Option<&Path>,
    strict: bool,
) -> CliResult {
    let choice = settings::resolve(file, &[], None);
    say(&choice.describe());
    let report = super::block_on(async {
        let ctx = matrix::run::load(root, name)?;
        matrix::run::run(&ctx, &choice.checks, choice.destructive, &say).await
    })?
    .map_err(Failure::failed)?;
    keep_report(root, name, &report, strict);
    print_report(&report, output, junit, strict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_names_every_check() {
        let l = list();
        assert!(l.contains("BRK-01"));
        assert!(l.contains("RT-06") && l.contains("(destructive)"));
    }

    #[test]
    fn strict_fails_the_run_on_exposed_checks() {
        use crate::matrix::{CheckResult, REPORT_API_VERSION, Report, Verdict};
        let report = |v: Vec<Verdict>| Report {
            api_version: REPORT_API_VERSION.into(),
            cluster: "dev".into(),
            cluster_file: None,
            image_manifest_sha256: None,
            destructive: false,
            results: v
                .into_iter()
                .map(|v| CheckResult::new("BRK-04", "n", v, vec![]))
                .collect(),
            duration_ms: 0,
            steps: Vec::new(),
        };
        let exposed = report(vec![Verdict::Pass, Verdict::exposed("priv", "userns")]);
        assert_eq!(run_failure(&exposed, false), None);
        assert_eq!(
            run_failure(&exposed, true).as_deref(),
            Some("1 check(s) exposed, and --strict makes that a failure")
        );
        let failed = report(vec![Verdict::Fail, Verdict::exposed("priv", "userns")]);
        assert_eq!(
            run_failure(&failed, false).as_deref(),
            Some("1 check(s) failed")
        );
        assert_eq!(
            run_failure(&failed, true).as_deref(),
            Some("1 check(s) failed")
        );
        // Through the printing path: the exit status (1) follows.
        let err = print_report(&exposed, Output::Json, None, true).unwrap_err();
        assert!(matches!(err.exit, Exit::Failed));
        assert!(print_report(&exposed, Output::Json, None, false).is_ok());
    }

    #[test]
    fn cluster_name_rules() {
        let dir = tempfile::tempdir().unwrap();
        let claim = |n: &str| {
            let n: ClusterName = n.parse().unwrap();
            crate::cluster::paths::ClusterPaths::new(dir.path(), &n)
                .claim(&n)
                .unwrap();
        };
        assert!(cluster_name(dir.path(), None).is_err());
        claim("dev");
        // A directory that is not a cluster's is not counted.
        std::fs::create_dir_all(dir.path().join("clusters/stray")).unwrap();
        assert_eq!(cluster_name(dir.path(), None).unwrap(), "dev");
        claim("ci");
        assert!(cluster_name(dir.path(), None).is_err());
        let x: ClusterName = "x".parse().unwrap();
        assert_eq!(cluster_name(dir.path(), Some(x)).unwrap(), "x");
    }
}
