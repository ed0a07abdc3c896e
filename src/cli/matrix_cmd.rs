//! `ironclad matrix [NAME] [--check ID...] [--output json] [--junit FILE]
//! [--destructive] [--strict] [--list]`: runs the conformance and breakout
//! matrix on a running cluster and prints a table (or JSON); `--junit` also
//! writes JUnit XML. Exit status 1 when a check failed, or with `--strict`
//! when one is EXPOSED. The work is in [`crate::matrix`].

use super::{CliResult, Exit, Failure, Global, Output};
use crate::matrix::{self, CATALOG, render};
use crate::spec::ClusterName;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster [default: the only cluster in the state dir].
    #[arg(value_name = "NAME", value_parser = super::cluster_name_arg, env = super::select::CLUSTER_ENV)]
    pub name: Option<ClusterName>,
    /// Run only these checks (repeatable; e.g. --check RT-01 --check BRK-04).
    #[arg(long = "check", value_name = "ID")]
    pub checks: Vec<String>,
    /// How to print the report.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Add the destructive checks (sysrq power-off, fork bomb): throw-away clusters only.
    #[arg(long)]
    pub destructive: bool,
    /// Fail (exit 1) also when a check is EXPOSED: an attack got through
    /// that the node has no defence against (a privileged container).
    #[arg(long)]
    pub strict: bool,
    /// List the checks and exit.
    #[arg(long)]
    pub list: bool,
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
        print!("{}", list());
        return Ok(());
    }
    // Bad check ids are bad input, before anything is contacted.
    matrix::select(&args.checks, args.destructive).map_err(|e| Failure::msg(Exit::BadInput, e))?;
    let root = global.state_root()?;
    let name = cluster_name(&root, args.name.clone())?;
    let report = super::block_on(async {
        let ctx = matrix::run::load(&root, &name)?;
        matrix::run::run(&ctx, &args.checks, args.destructive, &say).await
    })?;
    let report = report.map_err(|e| match e {
        matrix::run::MatrixError::Select(_) | matrix::run::MatrixError::NoCluster { .. } => {
            Failure::msg(Exit::BadInput, e)
        }
        other => Failure::msg(Exit::Failed, other),
    })?;
    print_report(&report, args.output, args.junit.as_deref(), args.strict)
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
        Output::Text => print!("{}", render::table(report)),
        Output::Json => print!("{}", render::json(report)),
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

/// For `ironclad create --matrix`: the whole non-destructive matrix on the
/// cluster that was just created, printed as a table.
pub fn run_after_create(
    root: &Path,
    name: &ClusterName,
    output: Output,
    junit: Option<&Path>,
    strict: bool,
) -> CliResult {
    let report = super::block_on(async {
        let ctx = matrix::run::load(root, name)?;
        matrix::run::run(&ctx, &[], false, &say).await
    })?
    .map_err(|e| Failure::msg(Exit::Failed, e))?;
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
