//! The `ironclad` command line: argument parsing (clap) and printing. Each
//! subcommand lives in its own file and calls library code; nothing here does
//! real work. Errors become miette diagnostics with a fixed exit code per kind
//! (see [`Exit`]). Results go to stdout through [`out`] only (a closed
//! stdout must not panic), progress and diagnostics to stderr.
#![deny(clippy::print_stdout)]

mod about;
mod etcd_cmd;
mod gen_cmd;
mod image;
mod lifecycle;
pub mod matrix_cmd;
mod net_cmd;
mod node_cmd;
mod out;
mod progress;
mod repro_cmd;
mod select;
mod snapshot_cmd;
pub mod support_cmd;
mod validate;

use crate::spec::{ClusterName, NAME_RULE, NameError, NodeName};
use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Exit statuses, fixed per kind of failure so scripts can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The operation failed (a VM did not come up, a check failed, I/O error).
    Failed = 1,
    /// The input was bad: cluster file, flags, arguments.
    BadInput = 2,
    /// A host tool the operation needs is not installed.
    MissingDependency = 3,
    /// Ctrl-C (SIGINT) or SIGTERM ended the operation (128 + SIGINT).
    Interrupted = 130,
}

/// A failure on its way to the terminal: what to print and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub report: miette::Report,
    /// Printed after the report: what to do next (e.g. how to make a
    /// bug-report bundle).
    pub note: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, report: impl Into<miette::Report>) -> Self {
        Failure {
            exit,
            report: report.into(),
            note: None,
        }
    }
    pub fn bad_input(report: impl Into<miette::Report>) -> Self {
        Self::new(Exit::BadInput, report)
    }
    pub fn failed(report: impl Into<miette::Report>) -> Self {
        Self::new(Exit::Failed, report)
    }
    pub fn msg(exit: Exit, msg: impl std::fmt::Display) -> Self {
        Self::new(exit, miette::miette!("{msg}"))
    }
}

pub type CliResult = Result<(), Failure>;

/// Why a name from the command line was refused, with the rule.
fn name_refusal(e: &NameError) -> String {
    let what = match e {
        NameError::Empty => "it is empty".to_string(),
        NameError::TooLong { len, max } => {
            format!("it is {len} characters long, more than {max}")
        }
        NameError::NotDns1123 { .. } => "it is not a DNS-1123 label".to_string(),
    };
    format!("{what}; {NAME_RULE}")
}

/// clap's parser for every cluster-name argument: a bad name (`""`, `.`,
/// `..`, a path, a leading `-`) is refused by clap itself, with exit 2 and
/// the rule, before any file is looked at.
pub fn cluster_name_arg(s: &str) -> Result<ClusterName, String> {
    s.parse().map_err(|e| name_refusal(&e))
}

/// clap's parser for `--tcg-cache` (`create`, `repro`): MiB within
/// [`crate::cluster::state::TCG_CACHE_MIB_RANGE`], the range the state file
/// and `create` check too.
pub fn tcg_cache_arg(s: &str) -> Result<u32, String> {
    let range = crate::cluster::state::TCG_CACHE_MIB_RANGE;
    match s.parse::<u32>() {
        Ok(mib) if range.contains(&mib) => Ok(mib),
        _ => Err(format!(
            "{s:?} is not a size in MiB from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// clap's parser for every node-name argument (see [`cluster_name_arg`]).
pub fn node_name_arg(s: &str) -> Result<NodeName, String> {
    s.parse().map_err(|e| name_refusal(&e))
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "ironclad",
    version,
    about = "Declarative, rootless QEMU clusters on an immutable, shell-less node image",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(flatten)]
    verbosity: progress::Verbosity,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Where cluster state lives [default: $XDG_STATE_HOME/ironclad, or
    /// ~/.local/state/ironclad].
    #[arg(long, global = true, env = crate::cluster::paths::STATE_DIR_ENV, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
}

impl Global {
    /// The state root, or a bad-input failure when no location can be derived.
    pub fn state_root(&self) -> Result<std::path::PathBuf, Failure> {
        crate::cluster::paths::state_root(self.state_dir.as_deref()).ok_or_else(|| {
            Failure::msg(
                Exit::BadInput,
                "cannot tell where to keep cluster state: set --state-dir, IRONCLAD_STATE_DIR, XDG_STATE_HOME or HOME",
            )
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a cluster file and report every problem with its line and column.
    Validate(validate::Args),
    /// Generate secrets, machine configs and client certificates.
    #[command(subcommand)]
    Gen(gen_cmd::GenCommand),
    /// Build, list and inspect node images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// One node's API: services, logs, dmesg, reboot, shutdown.
    #[command(subcommand)]
    Node(node_cmd::NodeCommand),
    /// The cluster's etcd: members, put, get.
    #[command(subcommand)]
    Etcd(etcd_cmd::EtcdCommand),
    /// Network faults on a running cluster: partition, loss, delay, heal, status.
    #[command(subcommand)]
    Net(net_cmd::NetCommand),
    /// Create a cluster: image, secrets, disks, supervisor, boot all nodes, wait until ready.
    Create(lifecycle::CreateArgs),
    /// List the clusters.
    List(lifecycle::ListArgs),
    /// Show a cluster's nodes: state, pid, addresses, API port, uptime.
    Status(lifecycle::StatusArgs),
    /// Power a cluster (or one node) off gracefully; disks and state are kept.
    Stop(lifecycle::StopArgs),
    /// Boot a stopped cluster (or one node) again from its kept disks.
    Start(lifecycle::StartArgs),
    /// Stop everything of a cluster and remove its state dir (a cluster that
    /// does not exist is not an error).
    Destroy(lifecycle::DestroyArgs),
    /// Whole-cluster snapshots: save, list, restore, rm.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Follow a node's serial console log.
    Console(lifecycle::ConsoleArgs),
    /// Run a cluster's supervisor (started by create/start; not for people).
    #[command(name = "__supervise", hide = true)]
    Supervise(lifecycle::SuperviseArgs),
    /// Run the conformance and breakout matrix on a running cluster.
    Matrix(matrix_cmd::Args),
    /// Write a bug-report bundle of a cluster (logs, state, versions; no secrets).
    Support(support_cmd::Args),
    /// Make the cluster of a support bundle again on this host: the same
    /// cluster file, image (checked part by part) and network faults.
    Repro(repro_cmd::Args),
    /// What a bug report needs: versions, commit, machined and its image key,
    /// QEMU, the accelerator `auto` picks here and why, the host.
    Version(about::VersionArgs),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completion(about::CompletionArgs),
    /// Manual pages generated from the command definitions.
    Man(about::ManArgs),
}

/// Chooses how diagnostics look. On a terminal: miette's defaults. Otherwise
/// (CI logs, tests, pipes): the same graphical layout, which shows
/// `[file:line:col]` above each snippet, without colours or hyperlinks.
fn install_report_hook() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        return;
    }
    // Fails only if a hook is already set, in which case that one is kept.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(false)
                .terminal_links(false)
                .width(100)
                .build(),
        )
    }));
}

/// Entry point of the `ironclad` binary.
/// Runs `f` on the process's one async runtime (`ironclad_host::runtime`),
/// which the first command that needs it builds here, at the edge.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, Failure> {
    ironclad_host::runtime::block_on(f)
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the async runtime: {e}")))
}

pub fn main() -> ExitCode {
    install_report_hook();
    let cli = Cli::parse();
    progress::init(&cli.verbosity);
    tracing::debug!(command = ?cli.command, "ironclad {}", about::COMMIT);
    let global = cli.global;
    let result = match cli.command {
        Command::Matrix(args) => matrix_cmd::run(args, &global),
        Command::Validate(args) => validate::run(args),
        Command::Gen(cmd) => gen_cmd::run(cmd),
        Command::Image(cmd) => image::run(&global, cmd),
        Command::Node(cmd) => node_cmd::run(&global, cmd),
        Command::Etcd(cmd) => etcd_cmd::run(&global, cmd),
        Command::Net(cmd) => net_cmd::run(&global, cmd),
        Command::Create(a) => lifecycle::create(&global, a),
        Command::List(a) => lifecycle::list(&global, a),
        Command::Status(a) => lifecycle::status(&global, a),
        Command::Stop(a) => lifecycle::stop(&global, a),
        Command::Start(a) => lifecycle::start(&global, a),
        Command::Destroy(a) => lifecycle::destroy(&global, a),
        Command::Snapshot(cmd) => snapshot_cmd::run(&global, cmd),
        Command::Console(a) => lifecycle::console(&global, a),
        Command::Supervise(a) => lifecycle::supervise(a),
        Command::Support(a) => support_cmd::run(&global, a),
        Command::Repro(a) => repro_cmd::run(&global, a),
        Command::Version(a) => about::version(a),
        Command::Completion(a) => about::completion(a),
        Command::Man(a) => about::man(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{:?}", failure.report);
            if let Some(note) = &failure.note {
                eprintln!("{note}");
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    /// No two flags of one command share a short or a long name (clap only
    /// checks that in debug builds, and the tests run release builds): `-o`
    /// was once both `--accel` and `--output` on `create`, and `-o json`
    /// was refused as an accelerator.
    #[test]
    fn no_two_flags_of_a_command_share_a_name() {
        use clap::CommandFactory;
        fn check(cmd: &clap::Command, inherited: &[clap::Arg], path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            let mut args: Vec<clap::Arg> = inherited.to_vec();
            args.extend(cmd.get_arguments().cloned());
            let mut shorts = std::collections::BTreeMap::new();
            let mut longs = std::collections::BTreeMap::new();
            for a in &args {
                let id = a.get_id().to_string();
                if let Some(s) = a.get_short()
                    && let Some(other) = shorts.insert(s, id.clone())
                    && other != id
                {
                    panic!("{path}: -{s} is both --{other} and --{id}");
                }
                if let Some(l) = a.get_long()
                    && let Some(other) = longs.insert(l.to_string(), id.clone())
                    && other != id
                {
                    panic!("{path}: --{l} is both {other} and {id}");
                }
            }
            let globals: Vec<clap::Arg> =
                args.iter().filter(|a| a.is_global_set()).cloned().collect();
            for sub in cmd.get_subcommands() {
                check(sub, &globals, &path);
            }
        }
        check(&super::Cli::command(), &[], "");
    }
}
