//! `ironclad validate [-f] FILE [--output json]`: parses and checks a cluster
//! file. Valid: a one-line summary (or the resolved cluster as JSON), exit 0.
//! Invalid or unreadable: each problem as a diagnostic on stderr with
//! `FILE:LINE:COL`, exit 2; with `--output json` the problems are also printed
//! on stdout as `{"file": …, "valid": false, "total": N, "omitted": M,
//! "problems": [{"line", "column", "message", "help"}]}`. Both show at most
//! [`crate::spec::MAX_REPORTED_PROBLEMS`] problems (the first in the file)
//! and count the rest; a file over [`crate::spec::MAX_CLUSTER_FILE_BYTES`]
//! is refused unread.

use super::out::outln;
use super::{CliResult, Failure, Output};
use crate::spec::SpecError;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster file (or `-f FILE`, as `create` takes it).
    #[arg(
        value_name = "FILE",
        required_unless_present = "file_flag",
        conflicts_with = "file_flag"
    )]
    path: Option<PathBuf>,
    /// The cluster file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file_flag: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

pub fn run(args: Args) -> CliResult {
    // clap makes sure exactly one of the two is given.
    let file = args.path.or(args.file_flag).unwrap_or_default();
    let cluster = match crate::spec::parse_cluster_file(&file) {
        Ok(cluster) => cluster,
        Err(err) => {
            if args.output == Output::Json {
                outln!("{}", problems_json(&file.display().to_string(), &err));
            }
            return Err(Failure::bad_input(err));
        }
    };
    match args.output {
        Output::Text => outln!(
            "{}: valid cluster {:?} ({} control planes, {} workers)",
            file.display(),
            cluster.name.as_str(),
            cluster.control_planes().count(),
            cluster.workers().count()
        ),
        Output::Json => outln!("{}", super::out::json(&cluster)?),
    }
    Ok(())
}

/// The problems of `err` as one JSON document for scripts.
fn problems_json(file: &str, err: &SpecError) -> serde_json::Value {
    use miette::Diagnostic;
    let problems: Vec<serde_json::Value> = match err {
        SpecError::Syntax(e) => vec![serde_json::json!({
            "line": e.line, "column": e.column, "message": format!("invalid YAML: {}", e.message),
            "help": err.help().map(|h| h.to_string()),
        })],
        SpecError::Invalid(_) | SpecError::Many { .. } => err
            .problems()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "line": p.line(), "column": p.column(), "message": p.to_string(),
                    "help": p.help().map(|h| h.to_string()),
                })
            })
            .collect(),
        SpecError::Read { .. } | SpecError::NotUtf8 { .. } | SpecError::TooLarge { .. } => {
            vec![serde_json::json!({
                "line": null, "column": null, "message": err.to_string(),
                "help": err.help().map(|h| h.to_string()),
            })]
        }
    };
    let total = err.total_problems().max(problems.len());
    serde_json::json!({
        "file": file,
        "valid": false,
        "total": total,
        "omitted": total - problems.len(),
        "problems": problems,
    })
}
