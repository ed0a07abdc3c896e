//! Parsing the cluster file: YAML to the raw document, raw document to a
//! validated [`Cluster`], every problem a diagnostic pointing at file, line and
//! column. (Placeholder: filled by the spec work.)

use super::Cluster;
use std::path::Path;

/// A problem with a cluster file, rendered by miette with the offending span.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parses and validates a cluster file's text. `file_name` is used in diagnostics.
pub fn parse_cluster(_src: &str, _file_name: &str) -> Result<Cluster, SpecError> {
    unimplemented!("spec parser")
}

/// Reads and parses a cluster file.
pub fn parse_cluster_file(path: &Path) -> Result<Cluster, SpecError> {
    let src = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_cluster(&src, &path.display().to_string())
}
