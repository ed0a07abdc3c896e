//! Which checks a matrix run runs, and whether destructive ones may: the
//! command line's choice over the cluster file's `spec.matrix`, over the
//! defaults (every non-destructive check). `ironclad matrix` reads the
//! cluster file from the copy `create` keeps in the cluster's state dir;
//! `ironclad create --matrix` uses the file it was given.
//!
//! Precedence, field by field:
//! - checks: `--check ID...` when given, else `spec.matrix.checks` (`[all]`:
//!   every check);
//! - destructive: `--destructive` / `--no-destructive` when given, else
//!   `spec.matrix.destructive`.
//!
//! This module does not check the ids against the catalog: the spec parser
//! did for the file, and [`super::select`] does for the result.

use crate::cluster::paths::ClusterPaths;
use crate::spec::{ClusterName, MatrixSettings, SpecError};
use std::path::Path;

/// Where the run's checks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksFrom {
    /// `--check` on the command line.
    CommandLine,
    /// `spec.matrix.checks` of the cluster file.
    ClusterFile,
}

/// The resolved choice: what [`super::run::run`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The ids to run; empty for every check (destructive ones too when
    /// `destructive`).
    pub checks: Vec<String>,
    pub destructive: bool,
    pub checks_from: ChecksFrom,
}

impl Choice {
    /// One line for the progress output: which checks and from where.
    pub fn describe(&self) -> String {
        let what = if self.checks.is_empty() {
            "every check".to_string()
        } else {
            self.checks.join(", ")
        };
        let from = match self.checks_from {
            ChecksFrom::CommandLine => "--check",
            ChecksFrom::ClusterFile => "the cluster file's spec.matrix",
        };
        let destructive = if self.destructive {
            ", destructive checks allowed"
        } else {
            ""
        };
        format!("{what} (from {from}){destructive}")
    }
}

/// The command line over the file: `checks` (the `--check` ids, empty when
/// none were given) and `destructive` (`None` when neither `--destructive`
/// nor `--no-destructive` was given) override `file`'s settings.
pub fn resolve(file: &MatrixSettings, checks: &[String], destructive: Option<bool>) -> Choice {
    let (checks, checks_from) = if checks.is_empty() {
        (
            file.ids().map(<[String]>::to_vec).unwrap_or_default(),
            ChecksFrom::ClusterFile,
        )
    } else {
        (checks.to_vec(), ChecksFrom::CommandLine)
    };
    Choice {
        checks,
        destructive: destructive.unwrap_or(file.destructive),
        checks_from,
    }
}

/// The matrix settings of cluster `name`, from the copy of its cluster file
/// in the state dir. A cluster made without a file has the default cluster's
/// copy (every check); a state dir without the copy (or no cluster at all:
/// loading the cluster says so) gives the defaults too. A copy that no longer
/// validates is an error: its settings cannot be trusted.
pub fn stored(root: &Path, name: &ClusterName) -> Result<MatrixSettings, Box<SpecError>> {
    stored_at(&ClusterPaths::new(root, name).cluster_yaml())
}

/// The matrix settings of the cluster file at `path` (the defaults when
/// there is none).
pub fn stored_at(path: &Path) -> Result<MatrixSettings, Box<SpecError>> {
    if !path.is_file() {
        return Ok(MatrixSettings::default());
    }
    crate::spec::parse_cluster_file(path)
        .map(|c| c.matrix)
        .map_err(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(checks: &[&str], destructive: bool) -> MatrixSettings {
        MatrixSettings {
            checks: checks.iter().map(|s| s.to_string()).collect(),
            destructive,
        }
    }
    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_file_decides_when_the_command_line_is_silent() {
        let c = resolve(&file(&["RT-01", "BRK-04"], false), &[], None);
        assert_eq!(c.checks, ids(&["RT-01", "BRK-04"]));
        assert!(!c.destructive);
        assert_eq!(c.checks_from, ChecksFrom::ClusterFile);
        let c = resolve(&file(&["RT-06"], true), &[], None);
        assert_eq!((c.checks, c.destructive), (ids(&["RT-06"]), true));
        // `[all]` is every check: the empty list of `select`.
        let c = resolve(&MatrixSettings::default(), &[], None);
        assert!(c.checks.is_empty() && !c.destructive);
        assert_eq!(
            c.describe(),
            "every check (from the cluster file's spec.matrix)"
        );
        let c = resolve(&file(&["all"], true), &[], None);
        assert!(c.checks.is_empty() && c.destructive);
    }

    #[test]
    fn the_command_line_overrides_each_field() {
        let f = file(&["RT-01"], true);
        let c = resolve(&f, &ids(&["CONF-01"]), None);
        assert_eq!(c.checks, ids(&["CONF-01"]));
        assert_eq!(c.checks_from, ChecksFrom::CommandLine);
        // The file's destructive still holds when the flags are silent.
        assert!(c.destructive);
        assert!(!resolve(&f, &[], Some(false)).destructive);
        assert_eq!(resolve(&f, &[], Some(false)).checks, ids(&["RT-01"]));
        assert!(resolve(&file(&["all"], false), &[], Some(true)).destructive);
        assert_eq!(
            resolve(&f, &ids(&["CONF-01"]), Some(false)).describe(),
            "CONF-01 (from --check)"
        );
    }

    #[test]
    fn stored_settings_come_from_the_state_dirs_copy() {
        let dir = tempfile::tempdir().unwrap();
        let name: ClusterName = "mx".parse().unwrap();
        // No copy: the defaults.
        assert_eq!(
            stored(dir.path(), &name).unwrap(),
            MatrixSettings::default()
        );
        let paths = ClusterPaths::new(dir.path(), &name);
        paths.claim(&name).unwrap();
        std::fs::write(
            paths.cluster_yaml(),
            format!(
                "apiVersion: {}\nkind: Cluster\nmetadata: {{name: mx}}\nspec:\n  matrix: {{checks: [conf-01, RT-02]}}\n",
                crate::API_VERSION
            ),
        )
        .unwrap();
        assert_eq!(
            stored(dir.path(), &name).unwrap().checks,
            ids(&["CONF-01", "RT-02"])
        );
        // A copy that does not validate is an error, with the file's problem.
        std::fs::write(paths.cluster_yaml(), "kind: Cluster\n").unwrap();
        let e = stored(dir.path(), &name).unwrap_err();
        assert!(e.to_string().contains("apiVersion"), "{e}");
    }
}
