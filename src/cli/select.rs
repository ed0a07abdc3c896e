//! The one rule every command uses to choose its cluster: the NAME (or
//! `--cluster`) given on the command line, else `IRONCLAD_CLUSTER` (clap
//! reads it into the same argument), else the only cluster under the state
//! root, else an error that lists the names. An implicit choice is said on
//! stderr.

use super::{Exit, Failure};
use crate::cluster::paths::list_clusters;
use crate::spec::ClusterName;
use std::path::Path;

/// The environment variable that names the cluster when the command line
/// does not.
pub const CLUSTER_ENV: &str = "IRONCLAD_CLUSTER";

/// The one wording of "there is no cluster".
pub fn no_clusters(root: &Path) -> String {
    format!(
        "no clusters under {} (create one with `ironclad create`)",
        root.display()
    )
}

/// The cluster to work on (see the module docs). Whether it exists is the
/// caller's business: `destroy` of an absent cluster is not an error.
pub fn cluster(root: &Path, given: Option<ClusterName>) -> Result<ClusterName, Failure> {
    if let Some(name) = given {
        return Ok(name);
    }
    let names = list_clusters(root).map_err(|e| {
        Failure::msg(
            Exit::Failed,
            format!("cannot list the clusters in {}: {e}", root.display()),
        )
    })?;
    match names.as_slice() {
        [] => Err(Failure::msg(Exit::BadInput, no_clusters(root))),
        [one] => {
            super::progress::line(&format!("cluster {one} (the only one there is)"));
            Ok(one.clone())
        }
        many => {
            let many: Vec<&str> = many.iter().map(|n| n.as_str()).collect();
            Err(Failure::msg(
                Exit::BadInput,
                format!(
                    "several clusters under {} ({}): name one (NAME, --cluster or {CLUSTER_ENV})",
                    root.display(),
                    many.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The choice itself is tested through `matrix`'s use of it
    /// (`matrix_cmd::tests`) and the CLI tests; here the wordings.
    #[test]
    fn none_and_several_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = cluster(dir.path(), None).unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
        assert!(format!("{:?}", e.report).contains("no clusters under"));
        for n in ["dev", "x"] {
            let n: ClusterName = n.parse().unwrap();
            crate::cluster::paths::ClusterPaths::new(dir.path(), &n)
                .claim(&n)
                .unwrap();
        }
        let text = format!("{:?}", cluster(dir.path(), None).unwrap_err().report);
        assert!(text.contains("(dev, x): name one"), "{text}");
        assert!(text.contains(CLUSTER_ENV), "{text}");
    }
}
