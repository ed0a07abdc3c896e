//! Parsing the cluster file: YAML to a positioned tree ([`super::raw`]), the tree
//! to a validated [`Cluster`]. Every problem becomes a [`Problem`] pointing at its
//! file, line and column; all problems found are reported together.
//!
//! The format (`apiVersion` and `kind` are required, everything else has a default):
//!
//! ```yaml
//! apiVersion: ironclad.dev/v1alpha1
//! kind: Cluster
//! metadata: {name: dev}                 # default "ironclad"
//! spec:
//!   image: trixie                       # recipe under images/ or a path
//!   network: {cidr: 10.5.0.0/24, egress: false}
//!   controlPlanes: {count: 1, cpus: 1, memory: 1GiB, disk: 4GiB}
//!   workers:                            # or an explicit list; unset fields take the group's
//!     nodes: [{name: w-a, memory: 2GiB}, {name: w-b}]
//!   runtimes: {runc: true, crun: true, gvisor: true, userNamespaces: true}
//!   kubernetes: {enabled: false}
//!   matrix: {checks: [all], destructive: false}
//!
//! This module owns the entry points ([`parse_cluster`], [`parse_cluster_file`],
//! [`default_cluster`]) and turning what was found into a [`SpecError`]. The
//! walk is split by concern: `draft` (what the file says, with defaults for
//! what it leaves out), `reader` (typed reads of one mapping's fields, each
//! bad value a problem at its position), `sections` (the document's sections,
//! key by key) and `assemble` (names, addresses and the cross-field rules).

mod assemble;
mod draft;
mod reader;
mod sections;

use super::Cluster;
use super::clip_to;
use super::error::Excerpt;
pub use super::error::{
    EXCERPT_LINE_BYTES, FirstUse, MAX_REPORTED_PROBLEMS, Problem, ProblemKind, SpecError,
    SyntaxError, TypeHint,
};
use super::raw::{self, Pos};
use assemble::assemble;
use draft::Draft;
use reader::Checker;
use std::path::Path;

/// The `kind` of a cluster file.
pub const KIND: &str = "Cluster";
/// The largest cluster file read: a real one is a few hundred bytes, and a
/// larger file is refused before it is parsed.
pub const MAX_CLUSTER_FILE_BYTES: u64 = 1 << 20;
/// The image recipe when the file does not name one.
pub const DEFAULT_IMAGE: &str = "trixie";
/// The cluster network when the file does not give one.
pub const DEFAULT_CIDR: &str = "10.5.0.0/24";

/// The built-in cluster `ironclad create` uses without a file: `ironclad`, one
/// control plane (1 cpu, 1 GiB) and one worker (1 cpu, 768 MiB), 4 GiB disks,
/// network 10.5.0.0/24 without egress, image `trixie`, all runtimes.
pub fn default_cluster() -> Cluster {
    let mut checker = Checker::default();
    let cluster = assemble(Draft::defaults(), &mut checker);
    debug_assert!(checker.problems.is_empty(), "{:?}", checker.problems);
    cluster
}

/// Parses and validates a cluster file's text. `file_name` is used in
/// diagnostics. Text over [`MAX_CLUSTER_FILE_BYTES`] is refused unparsed.
pub fn parse_cluster(src: &str, file_name: &str) -> Result<Cluster, SpecError> {
    if src.len() as u64 > MAX_CLUSTER_FILE_BYTES {
        return Err(SpecError::TooLarge {
            path: file_name.to_string(),
            size: src.len() as u64,
            max: MAX_CLUSTER_FILE_BYTES,
        });
    }
    let root = raw::parse_tree(src).map_err(|e| syntax_error(&e, src, file_name))?;
    let mut checker = Checker::default();
    let mut draft = Draft::defaults();
    checker.document(&root, &mut draft);
    let cluster = assemble(draft, &mut checker);
    match checker.problems.len() {
        0 => Ok(cluster),
        _ => Err(invalid(checker.problems, src, file_name)),
    }
}

/// A YAML syntax error as a diagnostic pointing at its position.
fn syntax_error(e: &serde_saphyr::Error, src: &str, file_name: &str) -> SpecError {
    let pos = e
        .location()
        .map(|l| raw::pos_of(&l, src))
        .unwrap_or_default();
    // The user-facing wording, without the developer hints and the
    // "at line N, column M" that the span already shows; cut, as it
    // may quote the input.
    let message = clip_to(
        &serde_saphyr::MessageFormatter::format_message(
            &serde_saphyr::DefaultMessageFormatter,
            e.without_snippet(),
        ),
        EXCERPT_LINE_BYTES,
    );
    let (excerpt, span) = Excerpt::around(file_name, src, pos);
    SpecError::Syntax(Box::new(SyntaxError {
        file: file_name.to_string(),
        line: pos.line.max(1),
        column: pos.column.max(1),
        src: excerpt,
        span,
        help: SyntaxError::help_for(&message),
        message,
    }))
}

/// The problems found (at least one), in file order; the first
/// [`MAX_REPORTED_PROBLEMS`] with an excerpt of the file.
fn invalid(mut found: Vec<(ProblemKind, Pos)>, src: &str, file_name: &str) -> SpecError {
    found.sort_by_key(|(_, pos)| (pos.line.max(1), pos.column.max(1)));
    let total = found.len();
    // Only the reported problems get an excerpt of the file.
    let mut problems: Vec<Problem> = found
        .into_iter()
        .take(MAX_REPORTED_PROBLEMS)
        .map(|(kind, pos)| Problem::new(kind, pos, file_name, src))
        .collect();
    match total {
        1 => SpecError::Invalid(Box::new(problems.remove(0))),
        _ => SpecError::many(file_name.to_string(), problems, total),
    }
}

/// Reads and parses a cluster file. A file over [`MAX_CLUSTER_FILE_BYTES`]
/// is refused by its size, before its contents are read (and a stream that
/// does not say its size, once that many bytes were read).
pub fn parse_cluster_file(path: &Path) -> Result<Cluster, SpecError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read_err = |source| SpecError::Read {
        path: shown.clone(),
        source,
    };
    let too_large = |size| SpecError::TooLarge {
        path: shown.clone(),
        size,
        max: MAX_CLUSTER_FILE_BYTES,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_CLUSTER_FILE_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CLUSTER_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CLUSTER_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    let src = String::from_utf8(bytes).map_err(|e| SpecError::NotUtf8 {
        path: shown.clone(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    parse_cluster(&src, &shown)
}

#[cfg(test)]
mod tests;
