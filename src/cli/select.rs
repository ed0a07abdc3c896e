//! The rules every command uses to choose what it works on.
//!
//! The cluster: the NAME (or `--cluster`) given on the command line, else
//! `IRONCLAD_CLUSTER` (clap reads it into the same argument), else the only
//! cluster under the state root, else an error that lists the names.
//!
//! The client config of the commands that talk to node APIs (`node`,
//! `etcd`, `matrix`): the cluster's `client.yaml` in the state root, or the
//! file given with `--client-config FILE` (or `IRONCLAD_CLIENT_CONFIG`): any
//! `client.yaml`, such as the one `ironclad gen config --dir DIR` writes, with
//! the nodes reached at the endpoints it lists; the state root is then not
//! looked at. A client config and a cluster name together are refused (exit
//! 2), wherever each came from: both choose the cluster, and neither is
//! obviously meant to win.
//!
//! The node of the `node` commands: `--node`, else the only node of the
//! cluster, else an error that lists the nodes (see [`Selected::node`]).
//!
//! Every implicit choice is said on stderr.

use super::{Exit, Failure, Global};
use crate::client::{ClientError, NodeClient};
use crate::clientconfig::ClientConfig;
use crate::cluster::paths::{Found, list_clusters};
use crate::spec::{ClusterName, NodeName};
use std::path::{Path, PathBuf};

/// The environment variable that names the cluster when the command line
/// does not.
pub const CLUSTER_ENV: &str = "IRONCLAD_CLUSTER";

/// The environment variable that names a client config when the command
/// line does not (`--client-config`).
pub const CLIENT_CONFIG_ENV: &str = "IRONCLAD_CLIENT_CONFIG";

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
        [] => Err(Failure::bad_input(miette::miette!(
            code = "ironclad::cluster::none",
            "{}",
            no_clusters(root)
        ))),
        [one] => {
            super::progress::line(&format!("cluster {one} (the only one there is)"));
            Ok(one.clone())
        }
        many => {
            let many: Vec<&str> = many.iter().map(|n| n.as_str()).collect();
            Err(Failure::bad_input(miette::miette!(
                code = "ironclad::cluster::several",
                "several clusters under {} ({}): name one (NAME, --cluster or {CLUSTER_ENV})",
                root.display(),
                many.join(", ")
            )))
        }
    }
}

/// How a command that talks to node APIs was told which client config to
/// use: flattened into `node` and `etcd` commands (`matrix` has its NAME).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The cluster [default: the only cluster under the state dir].
    #[arg(long, value_name = "NAME", value_parser = super::cluster_name_arg, env = CLUSTER_ENV)]
    pub cluster: Option<ClusterName>,
    /// Use this client config (e.g. `DIR/client.yaml` of `ironclad gen
    /// config --dir DIR`) instead of a cluster's under the state dir; nodes
    /// are reached at the endpoints it lists. Not together with --cluster.
    #[arg(long, value_name = "FILE", env = CLIENT_CONFIG_ENV, value_parser = client_config_arg, value_hint = clap::ValueHint::FilePath)]
    pub client_config: Option<PathBuf>,
}

/// clap's parser for `--client-config` (and its variable): an empty value is
/// refused with a hint, since an exported empty variable looks like none.
pub fn client_config_arg(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err(format!(
            "it is empty (an empty {CLIENT_CONFIG_ENV} counts too: unset it)"
        ));
    }
    Ok(PathBuf::from(s))
}

/// The selected cluster: its name, `client.yaml` path and loaded config.
#[derive(Debug)]
pub struct Selected {
    pub name: ClusterName,
    pub client_yaml: PathBuf,
    pub config: ClientConfig,
    /// Whether the config came from `--client-config` (not the state root).
    pub given_file: bool,
}

/// Where a value came from, for messages: the environment variable when it
/// holds this very value, else the flag.
#[expect(
    clippy::disallowed_methods,
    reason = "the command line's edge: only to word a message, the value itself came through clap"
)]
fn origin(flag: &str, env: &str, value: &str) -> String {
    match std::env::var_os(env) {
        Some(v) if v == std::ffi::OsStr::new(value) => format!("{env}={value}"),
        _ => format!("{flag} {value}"),
    }
}

/// The client config to use: `client_config` when given (see the module
/// docs), else cluster `cluster` (or the only one) under the state root.
/// `name_flag` is how the command spells the cluster (`--cluster`, `NAME`).
pub fn client_config(
    g: &Global,
    cluster: Option<&ClusterName>,
    client_config: Option<&Path>,
    name_flag: &str,
) -> Result<Selected, Failure> {
    match (cluster, client_config) {
        (Some(name), Some(file)) => Err(Failure::msg(
            Exit::BadInput,
            format!(
                "{} and {} both choose the cluster: give one of them (a client config names its cluster itself)",
                origin(
                    "--client-config",
                    CLIENT_CONFIG_ENV,
                    &file.display().to_string()
                ),
                origin(name_flag, CLUSTER_ENV, name.as_str()),
            ),
        )),
        (None, Some(file)) => from_file(file),
        (cluster, None) => from_state(g, cluster),
    }
}

/// A client config named on the command line: every problem with it is bad
/// input.
fn from_file(file: &Path) -> Result<Selected, Failure> {
    let config = ClientConfig::load(file).map_err(|e| {
        let hint = if file.is_dir() {
            format!(
                " (a directory: the file is {})",
                file.join(crate::clientconfig::FILE_NAME).display()
            )
        } else {
            String::new()
        };
        Failure::msg(
            Exit::BadInput,
            format!(
                "--client-config {}: not a usable client config: {e}{hint}",
                file.display()
            ),
        )
    })?;
    Ok(Selected {
        name: config.cluster.clone(),
        client_yaml: file.to_path_buf(),
        config,
        given_file: true,
    })
}

/// The cluster named by `cluster`, or the only one under the state root.
fn from_state(g: &Global, cluster: Option<&ClusterName>) -> Result<Selected, Failure> {
    let root = g.state_root()?;
    let name = self::cluster(&root, cluster.cloned())?;
    let found = crate::cluster::paths::find(&root, &name).map_err(|e| {
        Failure::msg(
            Exit::Failed,
            format!(
                "cannot look for cluster {name:?} in {}: {e}",
                root.display()
            ),
        )
    })?;
    let paths = match found {
        Found::Cluster(paths) => paths,
        Found::Absent => {
            return Err(Failure::msg(
                Exit::BadInput,
                format!("no cluster named {name:?} under {}", root.display()),
            ));
        }
        Found::Foreign { path, why } => {
            return Err(Failure::msg(
                Exit::BadInput,
                Found::foreign_message(&path, &why),
            ));
        }
    };
    let client_yaml = paths.client_yaml();
    let config = ClientConfig::load(&client_yaml).map_err(|e| {
        Failure::msg(
            Exit::Failed,
            format!("cluster {name:?} has no usable client config: {e}"),
        )
    })?;
    Ok(Selected {
        name,
        client_yaml,
        config,
        given_file: false,
    })
}

impl Selected {
    /// The node names, for messages.
    fn names(&self) -> String {
        let names: Vec<&str> = self.config.nodes.iter().map(|n| n.name.as_str()).collect();
        names.join(", ")
    }

    /// Where the config is, for messages.
    fn place(&self) -> String {
        if self.given_file {
            format!(" in {}", self.client_yaml.display())
        } else {
            String::new()
        }
    }

    /// The node to talk to: `given`, or the cluster's only node (said on
    /// stderr). A cluster of several nodes needs `--node`: none of them is
    /// the obvious one, and `reboot` or `shutdown` of a guess would be a
    /// harm.
    pub fn node(&self, given: Option<&NodeName>) -> Result<NodeName, Failure> {
        if let Some(n) = given {
            return Ok(n.clone());
        }
        match self.config.nodes.as_slice() {
            [only] => {
                super::progress::line(&format!(
                    "node {} (the only node of cluster {})",
                    only.name, self.name
                ));
                Ok(only.name.clone())
            }
            [] => Err(Failure::msg(
                Exit::BadInput,
                format!("cluster {:?} has no nodes{}", self.name, self.place()),
            )),
            many => Err(Failure::msg(
                Exit::BadInput,
                format!(
                    "cluster {:?} has {} nodes ({}): name one with --node",
                    self.name,
                    many.len(),
                    self.names()
                ),
            )),
        }
    }

    /// A client for `node`; unknown nodes, and nodes the config gives no
    /// endpoint, are bad input.
    pub fn client(&self, node: &str) -> Result<NodeClient, Failure> {
        let Some(entry) = self.config.node(node) else {
            return Err(Failure::msg(
                Exit::BadInput,
                format!(
                    "cluster {:?} has no node {node:?}{} (nodes: {})",
                    self.name,
                    self.place(),
                    self.names()
                ),
            ));
        };
        if entry.endpoint.is_none() && self.given_file {
            return Err(Failure::msg(
                Exit::BadInput,
                format!(
                    "node {node:?} has no endpoint in {}: give it the address where its API answers (`endpoint: 127.0.0.1:PORT`; `ironclad create` writes them into the cluster's own client.yaml)",
                    self.client_yaml.display()
                ),
            ));
        }
        NodeClient::from_client_config(&self.client_yaml, node).map_err(|e| match e {
            // A certificate or key a given file points to that is not there
            // is the file's fault; in a state dir it is damage.
            ClientError::Read { .. } if self.given_file => Failure::msg(Exit::BadInput, e),
            e => super::node_cmd::client_failure(e),
        })
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

    fn selected(nodes: &[&str]) -> Selected {
        Selected {
            name: "dev".parse().unwrap(),
            client_yaml: "/x/client.yaml".into(),
            config: ClientConfig {
                api_version: ironclad_contract::API_VERSION.into(),
                kind: crate::clientconfig::KIND.into(),
                cluster: "dev".parse().unwrap(),
                os_ca: String::new(),
                cert: "admin.crt".into(),
                key: "admin.key".into(),
                nodes: nodes
                    .iter()
                    .map(|n| crate::clientconfig::ClientNode {
                        name: n.parse().unwrap(),
                        role: crate::spec::Role::ControlPlane,
                        address: std::net::Ipv4Addr::new(10, 5, 0, 2),
                        endpoint: None,
                    })
                    .collect(),
            },
            given_file: true,
        }
    }

    #[test]
    fn the_node_is_given_or_the_only_one() {
        let one = selected(&["dev-cp-1"]);
        assert_eq!(one.node(None).unwrap(), "dev-cp-1");
        let given: NodeName = "other".parse().unwrap();
        assert_eq!(one.node(Some(&given)).unwrap(), "other");
        let two = selected(&["dev-cp-1", "dev-cp-2"]);
        let e = two.node(None).unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
        let text = format!("{:?}", e.report);
        assert!(
            text.contains("(dev-cp-1, dev-cp-2): name one with --node"),
            "{text}"
        );
        let none = selected(&[]);
        assert!(
            format!("{:?}", none.node(None).unwrap_err().report)
                .contains("has no nodes in /x/client.yaml")
        );
        // A node the file gives no endpoint: bad input that says what to add.
        let e = one.client("dev-cp-1").unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
        assert!(format!("{:?}", e.report).contains("has no endpoint in /x/client.yaml"));
    }

    #[test]
    fn a_client_config_and_a_cluster_name_are_refused_together() {
        let g = Global { state_dir: None };
        let name: ClusterName = "dev".parse().unwrap();
        let e = client_config(
            &g,
            Some(&name),
            Some(Path::new("/x/client.yaml")),
            "--cluster",
        )
        .unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
        let text = format!("{:?}", e.report);
        assert!(text.contains("--client-config /x/client.yaml"), "{text}");
        assert!(
            text.contains("--cluster dev") || text.contains("IRONCLAD_CLUSTER=dev"),
            "{text}"
        );
    }
}
