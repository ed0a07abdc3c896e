//! `ironclad create|list|status|stop|start|destroy|console` and the hidden
//! `__supervise`. Parses flags, calls [`crate::cluster::lifecycle`], prints.

use super::out::{json, outln};
use super::{CliResult, Exit, Failure, Global, Output, cluster_name_arg, node_name_arg};
use crate::cluster::lifecycle::{
    self, ClusterStatus, Destroyed, LifecycleError, Progress, UpReport,
};
use crate::qemu::AccelChoice;
use crate::spec::{ClusterName, NodeName};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The cluster file. Without it, the built-in default cluster (1 control plane, 1 worker).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Accelerator: auto picks KVM when a standard guest kernel can run on it, else TCG.
    /// (No short flag: `-o` is `--output`, as in every other command.)
    #[arg(long, value_enum, default_value_t)]
    accel: AccelChoice,
    /// Under TCG, each node's translated-code cache in MiB (16 to 1024).
    /// A larger cache retranslates less: 256 made the dev cluster's matrix
    /// about a quarter faster on 2 cores, for about 150 MiB more host memory
    /// per node, which QEMU keeps once it has used it. Ignored under KVM.
    #[arg(long, value_name = "MIB", default_value_t = crate::cluster::state::TCG_CACHE_DEFAULT_MIB,
          value_parser = super::tcg_cache_arg)]
    tcg_cache: u32,
    /// Seconds to wait for every node to be ready.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Output format of the summary. With `--matrix --output json`, stdout
    /// holds the matrix report only.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
    /// Run the conformance and breakout matrix once the cluster is up: the
    /// checks of the cluster file's `spec.matrix` (default: every
    /// non-destructive check). The exit status is then the matrix's (1 when a
    /// check fails).
    #[arg(long)]
    matrix: bool,
    /// With `--matrix`: also write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE", requires = "matrix")]
    junit: Option<PathBuf>,
    /// With `--matrix`: an EXPOSED check (an attack the node has no defence
    /// against got through) fails the run too.
    #[arg(long, requires = "matrix")]
    strict: bool,
    /// On Ctrl-C (or SIGTERM) during create, keep the half-made cluster and
    /// whatever of it runs, instead of stopping and removing it.
    #[arg(long)]
    keep_on_interrupt: bool,
    #[command(flatten)]
    support: super::support_cmd::OnFailure,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The cluster (default: the only one there is).
    #[arg(value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    name: Option<ClusterName>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The cluster (default: the only one there is).
    #[arg(value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    name: Option<ClusterName>,
    /// Stop only this node.
    #[arg(long, value_name = "NODE", value_parser = node_name_arg)]
    node: Option<NodeName>,
    /// Seconds the guests get to power off before QEMU is told to quit.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Output format (`json`: the cluster, the nodes and what became of them).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The cluster (default: the only one there is).
    #[arg(value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    name: Option<ClusterName>,
    /// Start only this node (e.g. one that crashed).
    #[arg(long, value_name = "NODE", value_parser = node_name_arg)]
    node: Option<NodeName>,
    /// Seconds to wait for the nodes to be ready.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct DestroyArgs {
    /// The cluster (default: the only one there is). Only a directory that `create` made (it holds the
    /// `.ironclad-cluster` marker) is removed; a cluster that does not exist
    /// is a note and exit 0.
    #[arg(value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    name: Option<ClusterName>,
    /// Output format (`json`: the cluster and whether it was removed).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The node (names are unique across clusters; see --cluster otherwise).
    #[arg(value_name = "NODE", value_parser = node_name_arg)]
    node: NodeName,
    /// The cluster holding the node.
    #[arg(long, value_name = "NAME", value_parser = cluster_name_arg, env = super::select::CLUSTER_ENV)]
    cluster: Option<ClusterName>,
    /// Print what is there and exit instead of following.
    #[arg(long)]
    no_follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// The cluster's state dir.
    #[arg(long)]
    dir: PathBuf,
}

/// The failure as a diagnostic: its code and help line come with it
/// (`impl Diagnostic for LifecycleError`).
fn failure(e: LifecycleError) -> Failure {
    Failure::new(exit_of(&e), e)
}

/// The exit status of each lifecycle failure: every variant named, so a new
/// one cannot fall into a default by accident.
pub fn exit_of(e: &LifecycleError) -> Exit {
    use LifecycleError as E;
    match e {
        E::BadInput(_)
        | E::NotFound { .. }
        | E::AlreadyExists { .. }
        | E::CannotResume { .. }
        | E::NoSuchNode { .. } => Exit::BadInput,
        E::MissingTools { .. } => Exit::MissingDependency,
        E::Image(i) => super::image::exit_of(i),
        E::HalfMade { .. }
        | E::Io(_)
        | E::State(_)
        | E::Ports(_)
        | E::Configs(_)
        | E::Render(_)
        | E::ClientConfig(_)
        | E::Spawn(_)
        | E::Control(_)
        | E::Faults(_)
        | E::CreateDir { .. }
        | E::RemoveDir { .. }
        | E::ToolSpawn { .. }
        | E::ToolFailed { .. }
        | E::SupervisorExited { .. }
        | E::SupervisorSilent { .. }
        | E::SupervisorGone { .. }
        | E::SupervisorStuck { .. }
        | E::Survivors { .. }
        | E::NodeVanished(_)
        | E::NodeDown { .. }
        | E::NotReady { .. }
        | E::Etcd(_)
        | E::EtcdPanicked => Exit::Failed,
        E::Interrupted => Exit::Interrupted,
    }
}

fn print_up(what: &str, r: &UpReport, output: Output) -> CliResult {
    match output {
        Output::Json => outln!("{}", json(r)?),
        Output::Text => {
            outln!(
                "cluster {} {what} in {:.1} s ({}): {} nodes ready",
                r.cluster,
                r.seconds,
                r.accel,
                r.nodes.len()
            );
            outln!("  state    {}", r.dir.display());
            outln!("  client   {}", r.dir.join("client.yaml").display());
            outln!("  status   ironclad status {}", r.cluster);
        }
    }
    Ok(())
}

pub fn create(g: &Global, a: CreateArgs) -> CliResult {
    let root = g.state_root()?;
    let (cluster, source) = match &a.file {
        Some(f) => {
            let c = crate::spec::parse_cluster_file(f).map_err(Failure::bad_input)?;
            (c, std::fs::read_to_string(f).ok())
        }
        None => (crate::spec::default_cluster(), None),
    };
    let opts = lifecycle::CreateOptions {
        root,
        cluster: &cluster,
        source,
        accel: a.accel,
        tcg_cache_mib: a.tcg_cache,
        timeout: Duration::from_secs(a.timeout),
        cache_dir: None,
    };
    // Ctrl-C and SIGTERM, until create returns, are noticed by its wait
    // loops; what it made is then undone here (its supervisor and QEMUs run
    // in their own session and would not see a terminal's Ctrl-C).
    let catch = ironclad_host::interrupt::catch()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot catch Ctrl-C: {e}")))?;
    // The view (on a terminal) ends with this statement: before anything
    // below prints.
    let created = lifecycle::create(&opts, super::progress::lifecycle_progress().as_ref());
    drop(catch);
    let report = match created {
        Ok(r) => r,
        Err(e) if ironclad_host::interrupt::requested() => {
            return Err(interrupted(&opts.root, e, a.keep_on_interrupt));
        }
        Err(e) => return Err(a.support.attach(&opts.root, &cluster.name, failure(e))),
    };
    if !(a.matrix && a.output == Output::Json) {
        print_up("created", &report, a.output)?;
    }
    if a.output == Output::Text
        && let Ok(st) = lifecycle::status(&opts.root, &report.cluster)
    {
        print_status(&st);
    }
    if a.matrix {
        super::progress::line(&format!("matrix: running the checks on {}", report.cluster));
        super::matrix_cmd::run_after_create(
            &opts.root,
            &report.cluster,
            &cluster.matrix,
            a.output,
            a.junit.as_deref(),
            a.strict,
        )
        .map_err(|f| a.support.attach(&opts.root, &report.cluster, f))?;
    }
    Ok(())
}

/// After Ctrl-C during `create`: the half-made cluster (only one this create
/// claimed: `HalfMade` says so) is stopped and removed, or kept when asked.
pub(super) fn interrupted(root: &Path, e: LifecycleError, keep: bool) -> Failure {
    let LifecycleError::HalfMade {
        dir, name, resumed, ..
    } = e
    else {
        return Failure::msg(
            Exit::Interrupted,
            "interrupted before the cluster's directory was made: nothing to undo",
        );
    };
    if resumed {
        return Failure::msg(
            Exit::Interrupted,
            format!(
                "interrupted: the resumed cluster {name} existed before this create and is kept in {}, with whatever of it runs; `ironclad create` resumes it again, `ironclad destroy {name}` removes it",
                dir.display()
            ),
        );
    }
    if keep {
        return Failure::msg(
            Exit::Interrupted,
            format!(
                "interrupted: the half-made cluster {name} is kept in {} (--keep-on-interrupt), with whatever of it runs; `ironclad destroy {name}` stops and removes it",
                dir.display()
            ),
        );
    }
    match lifecycle::destroy(root, &name) {
        Ok(_) => Failure::msg(
            Exit::Interrupted,
            format!(
                "interrupted: stopped what create started for cluster {name} (its supervisor and nodes) and removed {} (--keep-on-interrupt keeps it)",
                dir.display()
            ),
        ),
        Err(d) => Failure::msg(
            Exit::Interrupted,
            format!(
                "interrupted, and cleaning up failed: {d}; the half-made cluster is in {}, remove it with `ironclad destroy {name}`",
                dir.display()
            ),
        ),
    }
}

pub fn list(g: &Global, a: ListArgs) -> CliResult {
    let root = g.state_root()?;
    let all = lifecycle::list(&root).map_err(failure)?;
    match a.output {
        Output::Json => outln!("{}", json(&all)?),
        Output::Text => {
            if all.is_empty() {
                outln!("{}", super::select::no_clusters(&root));
            }
            for c in &all {
                let ready = c.nodes.iter().filter(|n| n.state == "ready").count();
                let running = if c.supervisor.is_some() {
                    "running"
                } else {
                    "stopped"
                };
                outln!(
                    "{:<20} {:<8} {}/{} nodes ready",
                    c.name,
                    running,
                    ready,
                    c.nodes.len()
                );
            }
        }
    }
    Ok(())
}

fn print_status(c: &ClusterStatus) {
    let sup = c
        .supervisor
        .map_or("not running".to_string(), |p| format!("pid {p}"));
    // The translation cache is named when it is not the default.
    let cache = c
        .tcg_cache_mib
        .filter(|&m| m != crate::cluster::state::TCG_CACHE_DEFAULT_MIB)
        .map(|m| format!(", translation cache {m} MiB"))
        .unwrap_or_default();
    outln!(
        "cluster {} (supervisor {sup}{}{cache})",
        c.name,
        c.accel.map(|a| format!(", {a}")).unwrap_or_default()
    );
    if let Some(p) = &c.problem {
        outln!("  {p}");
    }
    if let Some(p) = &c.network_problem {
        outln!("  network faults unknown: {p}");
    }
    outln!(
        "{}",
        status_row([
            &"NODE", &"ROLE", &"STATE", &"PID", &"ADDRESS", &"API", &"UPTIME", &"NETWORK"
        ])
    );
    for n in &c.nodes {
        let pid = n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let address = n.address.to_string();
        let uptime = n
            .uptime_seconds
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{}",
            status_row([
                &n.name,
                &n.role.as_str(),
                &n.state,
                &pid,
                &address,
                &n.endpoint,
                &uptime,
                // The faults `ironclad net` set, "-" for none or when the
                // cluster does not run.
                &n.network.map_or("-".to_string(), |f| f.to_string()),
            ])
        );
    }
}

/// One line of `status`'s node table; the header is one too, so the column
/// widths are written once.
fn status_row(cells: [&dyn std::fmt::Display; 8]) -> String {
    let [name, role, state, pid, address, api, uptime, network] = cells;
    format!(
        "  {name:<18} {role:<13} {state:<8} {pid:<8} {address:<12} {api:<16} {uptime:>8}  {network}"
    )
}

pub fn status(g: &Global, a: StatusArgs) -> CliResult {
    let root = g.state_root()?;
    let name = super::select::cluster(&root, a.name)?;
    let st = lifecycle::status(&root, &name).map_err(failure)?;
    match a.output {
        Output::Json => outln!("{}", json(&st)?),
        Output::Text => print_status(&st),
    }
    Ok(())
}

/// What `stop -o json` prints.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopDone {
    pub cluster: ClusterName,
    /// The nodes asked to stop: `--node`, or every node of the cluster.
    pub nodes: Vec<NodeName>,
    /// `stopped`, or `not-running` when there was nothing to stop.
    pub result: &'static str,
    /// Disks and state are always kept (`destroy` removes them).
    pub state_kept: bool,
}

pub fn stop(g: &Global, a: StopArgs) -> CliResult {
    let root = g.state_root()?;
    let name = super::select::cluster(&root, a.name)?;
    // Before the stop: which nodes there are and whether anything runs.
    let before = lifecycle::status(&root, &name).map_err(failure)?;
    on_nodes(&root, &name, a.node.as_ref(), a.timeout, lifecycle::stop)?;
    match a.output {
        Output::Json => {
            let nodes = match &a.node {
                Some(n) => vec![n.clone()],
                None => before.nodes.iter().map(|n| n.name.clone()).collect(),
            };
            let done = StopDone {
                cluster: name,
                nodes,
                result: if before.supervisor.is_some() {
                    "stopped"
                } else {
                    "not-running"
                },
                state_kept: true,
            };
            outln!("{}", json(&done)?);
        }
        Output::Text => match a.node {
            Some(n) => outln!("node {n} of cluster {name} stopped"),
            None => outln!("cluster {name} stopped (state kept)"),
        },
    }
    Ok(())
}

pub fn start(g: &Global, a: StartArgs) -> CliResult {
    let root = g.state_root()?;
    let name = super::select::cluster(&root, a.name)?;
    // Ctrl-C and SIGTERM end the wait (its loops notice them), so that the
    // progress view is left drawn and the terminal sane; what was started
    // keeps running, as it did when the signal ended the process.
    let catch = ironclad_host::interrupt::catch()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot catch Ctrl-C: {e}")))?;
    let started = lifecycle::start(
        &root,
        &name,
        a.node.as_ref(),
        Duration::from_secs(a.timeout),
        super::progress::lifecycle_progress().as_ref(),
    );
    drop(catch);
    let r = started.map_err(|e| match e {
        LifecycleError::Interrupted => Failure::msg(
            Exit::Interrupted,
            format!(
                "interrupted: what start started keeps running; `ironclad stop {name}` stops it"
            ),
        ),
        e => failure(e),
    })?;
    print_up("started", &r, a.output)
}

/// Runs `op` (`start` or `stop`: the same arguments) on cluster `name`, or
/// only its node `node`, with `timeout` seconds and progress on stderr.
fn on_nodes<T>(
    root: &Path,
    name: &ClusterName,
    node: Option<&NodeName>,
    timeout: u64,
    op: impl FnOnce(
        &Path,
        &ClusterName,
        Option<&NodeName>,
        Duration,
        &dyn Progress,
    ) -> Result<T, LifecycleError>,
) -> Result<T, Failure> {
    op(
        root,
        name,
        node,
        Duration::from_secs(timeout),
        &super::progress::Lines,
    )
    .map_err(failure)
}

/// Exit 0 when the cluster is gone afterwards (also when there was none, as
/// `kind delete cluster` does, so teardown steps can run twice); exit 2 when
/// the name's place holds something that is not a cluster's directory.
pub fn destroy(g: &Global, a: DestroyArgs) -> CliResult {
    let t = std::time::Instant::now();
    let root = g.state_root()?;
    // Nothing to destroy is not an error, named or not: teardown steps can
    // run twice.
    if a.name.is_none() && crate::cluster::paths::list_clusters(&root).is_ok_and(|c| c.is_empty()) {
        eprintln!(
            "note: {}; nothing to destroy",
            super::select::no_clusters(&root)
        );
        return print_destroyed(a.output, None, None, 0.0);
    }
    let name = super::select::cluster(&root, a.name)?;
    let removed = match lifecycle::destroy(&root, &name).map_err(failure)? {
        Destroyed::Removed(dir) => Some(dir),
        Destroyed::Absent => {
            eprintln!(
                "note: no cluster named {:?} under {}; nothing to destroy",
                name.as_str(),
                root.display()
            );
            None
        }
    };
    print_destroyed(a.output, Some(name), removed, t.elapsed().as_secs_f64())
}

/// What `destroy -o json` prints.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestroyDone {
    /// The cluster (none when there was no cluster at all and none was named).
    pub cluster: Option<ClusterName>,
    /// `destroyed`, or `absent` when there was nothing to destroy.
    pub result: &'static str,
    /// The state dir that was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub seconds: f64,
}

fn print_destroyed(
    output: Output,
    cluster: Option<ClusterName>,
    removed: Option<PathBuf>,
    seconds: f64,
) -> CliResult {
    match output {
        Output::Json => {
            let done = DestroyDone {
                cluster,
                result: if removed.is_some() {
                    "destroyed"
                } else {
                    "absent"
                },
                dir: removed,
                seconds,
            };
            outln!("{}", json(&done)?);
        }
        // The absent cases were said on stderr.
        Output::Text => {
            if let (Some(name), Some(_)) = (cluster, removed) {
                outln!("cluster {name} destroyed in {seconds:.1} s");
            }
        }
    }
    Ok(())
}

pub fn console(g: &Global, a: ConsoleArgs) -> CliResult {
    let root = g.state_root()?;
    let paths = lifecycle::find_node(&root, &a.node, a.cluster.as_ref()).map_err(failure)?;
    let mut out = std::io::stdout().lock();
    match lifecycle::console(&paths, &a.node, !a.no_follow, &mut out) {
        // A reader that went away (`| head`) ends it quietly, as in `super::out`.
        Err(LifecycleError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(failure),
    }
}

pub fn supervise(a: SuperviseArgs) -> CliResult {
    crate::cluster::supervisor::main(&a.dir)
        .map_err(|e| Failure::failed(miette::miette!("supervisor: {e}")))
}
