//! `ironclad support [NAME] [--file FILE]`: a bug-report bundle of one
//! cluster (see [`crate::support`] for what it holds and how secrets are kept
//! out of it).

use super::out::outln;
use super::{CliResult, Exit, Failure, Global, Output};
use crate::spec::ClusterName;
use crate::support::{self, SupportError};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster [default: see `ironclad status --help`].
    #[arg(value_name = "NAME", value_parser = super::cluster_name_arg, env = super::select::CLUSTER_ENV)]
    pub name: Option<ClusterName>,
    /// Where to write the bundle [default: support-<name>-<UTC time>.tar.gz
    /// in the working directory]. An existing file is never overwritten.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How long to wait for each node API call, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub node_timeout: u64,
    /// Output format (`json`: the file, its size, what is missing).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// The result, as printed with `--output json`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Written<'a> {
    cluster: &'a ClusterName,
    file: &'a Path,
    bytes: u64,
    files: usize,
    missing: &'a [support::Missing],
    redacted: usize,
}

pub fn run(g: &Global, a: Args) -> CliResult {
    let root = g.state_root()?;
    let name = super::select::cluster(&root, a.name)?;
    let file = a.file.unwrap_or_else(|| {
        PathBuf::from(support::default_file_name(
            &name,
            time::OffsetDateTime::now_utc(),
        ))
    });
    let s = write(
        &root,
        &name,
        &file,
        Duration::from_secs(a.node_timeout.max(1)),
    )?;
    let written = Written {
        cluster: &name,
        file: &file,
        bytes: s.bytes,
        files: s.files,
        missing: &s.missing,
        redacted: s.redacted,
    };
    match a.output {
        Output::Json => outln!("{}", super::out::json(&written)?),
        Output::Text => {
            for m in written.missing {
                outln!("  not collected: {}: {}", m.what, m.why);
            }
            outln!(
                "wrote {} ({} files, {}){}",
                file.display(),
                written.files,
                human_bytes(written.bytes),
                if written.redacted > 0 {
                    format!(", {} secret(s) redacted", written.redacted)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

/// What was written.
pub struct Summary {
    pub bytes: u64,
    pub files: usize,
    pub missing: Vec<support::Missing>,
    pub redacted: usize,
}

/// Collects and writes the bundle of cluster `name` to `file`, with
/// progress on stderr. Also used by `create` and `matrix` when they fail.
pub fn write(
    root: &Path,
    name: &ClusterName,
    file: &Path,
    node_timeout: Duration,
) -> Result<Summary, Failure> {
    // Said before anything is collected (written without replacing anyway).
    if file.symlink_metadata().is_ok() {
        return Err(failure(SupportError::Exists(file.to_path_buf())));
    }
    let version = serde_json::to_value(ironclad_host::version::VersionReport::collect(
        super::about::COMMIT,
    ))
    .unwrap_or_default();
    let req = support::Request {
        root,
        name,
        version,
        node_timeout,
    };
    let say = |s: &str| super::progress::line(&format!("support: {s}"));
    let bundle = support::collect(&req, &say).map_err(failure)?;
    let bytes = support::write_tar_gz(&bundle, name, file).map_err(failure)?;
    Ok(Summary {
        bytes,
        files: bundle.entries.len(),
        missing: bundle.missing,
        redacted: bundle.redacted.iter().map(|r| r.count).sum(),
    })
}

/// The environment variable CI services set; when it is set, a failing
/// `create` or `matrix` writes a bundle without being asked.
pub const CI_ENV: &str = "CI";

/// `--support-on-failure FILE` of `create` and `matrix`.
#[derive(Debug, Clone, clap::Args)]
pub struct OnFailure {
    /// When the command fails, write a support bundle to FILE before it
    /// exits [default when the CI environment variable is set:
    /// support-<name>-<UTC time>.tar.gz in the working directory].
    #[arg(long, value_name = "FILE")]
    pub support_on_failure: Option<PathBuf>,
}

impl OnFailure {
    /// Where to write the bundle when the command fails, if anywhere.
    #[expect(
        clippy::disallowed_methods,
        reason = "CI services announce themselves only through this variable, and a flag cannot be added to every CI job"
    )]
    fn file(&self, name: &ClusterName) -> Option<PathBuf> {
        self.support_on_failure.clone().or_else(|| {
            std::env::var_os(CI_ENV)
                .is_some_and(|v| {
                    let v = v.to_string_lossy().to_ascii_lowercase();
                    !matches!(v.trim(), "" | "false" | "0" | "no" | "off")
                })
                .then(|| {
                    PathBuf::from(support::default_file_name(
                        name,
                        time::OffsetDateTime::now_utc(),
                    ))
                })
        })
    }

    /// `failure` of a command on cluster `name`, with a note saying how to
    /// make a bundle, or where it was written (when asked for, or on CI).
    pub fn attach(&self, root: &Path, name: &ClusterName, mut failure: Failure) -> Failure {
        let is_cluster = matches!(
            crate::cluster::paths::find(root, name),
            Ok(crate::cluster::paths::Found::Cluster(_))
        );
        if !is_cluster || failure.exit == Exit::BadInput || failure.exit == Exit::Interrupted {
            return failure;
        }
        let note = match self.file(name) {
            None => format!(
                "To report this: `ironclad support {name}` writes a bundle of the cluster's logs and state (no secrets) to attach."
            ),
            Some(file) => match write(root, name, &file, Duration::from_secs(5)) {
                Ok(s) => format!(
                    "Support bundle: {} ({}); attach it to a bug report.",
                    file.display(),
                    human_bytes(s.bytes)
                ),
                Err(e) => format!("No support bundle: {:?}", e.report),
            },
        };
        failure.note = Some(note);
        failure
    }
}

fn failure(e: SupportError) -> Failure {
    let exit = match e {
        SupportError::NoCluster { .. } | SupportError::Foreign(_) | SupportError::Exists(_) => {
            Exit::BadInput
        }
        SupportError::Io { .. } => Exit::Failed,
    };
    Failure::new(exit, e)
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
