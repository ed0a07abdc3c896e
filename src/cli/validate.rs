//! `ironclad validate -f FILE`.

use super::{CliResult, Failure, Output};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub fn run(args: Args) -> CliResult {
    let cluster = crate::spec::parse_cluster_file(&args.file).map_err(Failure::bad_input)?;
    match args.output {
        Output::Text => println!(
            "{}: valid cluster {:?} ({} nodes)",
            args.file.display(),
            cluster.name.as_str(),
            cluster.nodes.len()
        ),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&cluster)
                .map_err(|e| Failure::failed(miette::miette!("{e}")))?
        ),
    }
    Ok(())
}
