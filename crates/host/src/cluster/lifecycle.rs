//! The lifecycle operations behind `ironclad create|start|stop|destroy|status|
//! list|console`: plain synchronous functions over the state dir that talk to
//! the supervisor through its control socket. The CLI only parses and prints.
//!
//! `create`: host tools, name and socket-path checks, image, secrets and
//! machine configs (`gen config` into the state dir), qcow2 disks, ports and
//! MACs fixed in `cluster.json`, the detached supervisor, all nodes booted in
//! parallel, then [`wait_ready`] until every node meets every
//! [`ReadyCondition`], while [`start_converge`] bootstraps and joins etcd.

use super::control::{self, Request};
use super::paths::{ClusterPaths, Found};
use super::ports::{self, PortLock};
use super::state::{ClusterState, ImageFiles, NodeRecord, NodeState, now_ms};
use super::supervisor;
use crate::clientconfig::ClientConfig;
use crate::qemu::{Accel, AccelChoice};
use crate::spec::{Cluster, ClusterName, NodeName};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prefix of machined's phase lines (`machined: <phase> t=<uptime>`).
pub use ironclad_contract::console::PREFIX as PHASE_PREFIX;
/// The line machined prints on the serial console once it is ready.
pub use ironclad_contract::console::READY_LINE;

/// Lifecycle failures, by what the user can do about them.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Bad input: names, flags, an existing cluster.
    #[error("{0}")]
    BadInput(String),
    /// A host tool is missing.
    #[error("missing host tools: {}; install the Debian packages: apt-get install {}", tools.join(", "), packages.join(" "))]
    MissingTools {
        tools: Vec<String>,
        packages: Vec<String>,
    },
    /// The operation failed.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

impl LifecycleError {
    fn failed(e: impl std::fmt::Display) -> Self {
        LifecycleError::Failed(e.to_string())
    }
}

type Result<T, E = LifecycleError> = std::result::Result<T, E>;

/// Where progress lines go (the CLI prints them to stderr).
pub trait Progress {
    fn line(&self, message: &str);
}

/// Host tools the lifecycle runs, with their Debian packages.
const TOOLS: [(&str, &str); 2] = [
    (supervisor::QEMU, "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
];

/// Fails with [`LifecycleError::MissingTools`] unless QEMU and qemu-img are installed.
pub fn check_host_tools() -> Result<()> {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(t, _)| crate::image::build::find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(LifecycleError::MissingTools {
        tools: missing.iter().map(|(t, _)| t.to_string()).collect(),
        packages: missing.iter().map(|(_, p)| p.to_string()).collect(),
    })
}

/// What a node has to show before it counts as ready. The wait checks every
/// condition of every node; more conditions (the node API's health over mTLS)
/// slot in here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyCondition {
    /// machined printed [`READY_LINE`] on the serial console of the current boot.
    SerialReady,
    /// The node API answers `health` over mTLS through the host port (the
    /// admin client of `client.yaml`): the host can manage the node.
    ApiHealth,
}

impl ReadyCondition {
    fn met(self, paths: &ClusterPaths, node: &NodeRecord) -> bool {
        match self {
            ReadyCondition::SerialReady => serial_log_has(paths, &node.name, READY_LINE),
            ReadyCondition::ApiHealth => api_answers(paths, &node.name),
        }
    }
}

/// The conditions `create` and `start` wait for, checked in this order.
pub const DEFAULT_READY: &[ReadyCondition] =
    &[ReadyCondition::SerialReady, ReadyCondition::ApiHealth];

fn api_answers(paths: &ClusterPaths, node: &NodeName) -> bool {
    let Ok(client) = crate::client::NodeClient::from_client_config(&paths.client_yaml(), node)
    else {
        return false;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), client.health())
            .await
            .is_ok_and(|r| r.is_ok())
    })
}

fn serial_log_has(paths: &ClusterPaths, node: &NodeName, needle: &str) -> bool {
    std::fs::read(paths.serial_log(node))
        .map(|b| String::from_utf8_lossy(&b).contains(needle))
        .unwrap_or(false)
}

/// The last `machined: <phase>` line of a node's serial log (the current
/// boot), with control characters made visible (it is printed).
pub fn last_phase(paths: &ClusterPaths, node: &NodeName) -> Option<String> {
    let bytes = std::fs::read(paths.serial_log(node)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().rev().find_map(|l| {
        l.find(PHASE_PREFIX)
            .map(|i| super::console::escape_str(l[i + PHASE_PREFIX.len()..].trim()))
    })
}

/// Options of [`create`].
pub struct CreateOptions<'a> {
    pub root: PathBuf,
    pub cluster: &'a Cluster,
    /// The cluster file's text (kept as `cluster.yaml`); `None` for the built-in default.
    pub source: Option<String>,
    pub accel: AccelChoice,
    /// How long to wait for all nodes to be ready.
    pub timeout: Duration,
    /// Image cache root (default: the image module's).
    pub cache_dir: Option<PathBuf>,
}

/// What `create` or `start` did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpReport {
    pub cluster: ClusterName,
    pub dir: PathBuf,
    pub accel: Accel,
    /// Seconds from the start of the command to every node ready.
    pub seconds: f64,
    /// Per node: seconds from boot request to ready.
    pub nodes: Vec<(NodeName, f64)>,
}

/// `ironclad create`.
pub fn create(opts: &CreateOptions, progress: &dyn Progress) -> Result<UpReport> {
    let started = Instant::now();
    check_host_tools()?;
    let cluster = opts.cluster;
    let name = &cluster.name;
    let paths = ClusterPaths::new(&opts.root, name);
    match super::paths::find(&opts.root, name).map_err(LifecycleError::failed)? {
        Found::Absent => {}
        Found::Cluster(_) => {
            return Err(LifecycleError::BadInput(format!(
                "a cluster named {name:?} already exists (state in {}); destroy it first with `ironclad destroy {name}`",
                paths.dir().display()
            )));
        }
        Found::Foreign { path, why } => {
            return Err(LifecycleError::BadInput(Found::foreign_message(
                &path, &why,
            )));
        }
    }
    let nodes: Vec<crate::spec::NodeName> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let longest = paths.longest_socket(&nodes);
    let len = longest.as_os_str().len();
    if len > super::paths::MAX_SOCKET_PATH {
        return Err(LifecycleError::BadInput(format!(
            "cluster {name:?} would need the unix socket path {} ({len} bytes), longer than the limit of {} bytes; use a shorter --state-dir (or IRONCLAD_STATE_DIR) or shorter cluster and node names",
            longest.display(),
            super::paths::MAX_SOCKET_PATH
        )));
    }
    let (accel, why) =
        Accel::resolve(opts.accel).map_err(|e| LifecycleError::BadInput(e.to_string()))?;
    if let Some(why) = why {
        progress.line(&why);
    }

    progress.line(&format!("image {}: building or reusing", cluster.image));
    let image = crate::image::ensure_built(
        &crate::image::RecipeRef::parse(&cluster.image),
        &crate::image::BuildOptions {
            machined: None,
            cache_dir: opts.cache_dir.clone(),
            refresh_base: false,
        },
        &ImageProgress(progress),
    )?;
    progress.line(&format!(
        "image {} ({})",
        &image.key[..image.key.len().min(12)],
        if image.cache_hit { "cached" } else { "built" }
    ));

    let lock = PortLock::acquire(&opts.root).map_err(LifecycleError::failed)?;
    // The directory is made exclusively, its marker first: of two creates of
    // the same name, one gets AlreadyExists here.
    paths.claim(name).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => LifecycleError::BadInput(format!(
            "a cluster named {name:?} already exists (state in {})",
            paths.dir().display()
        )),
        _ => LifecycleError::Failed(format!("cannot create {}: {e}", paths.dir().display())),
    })?;
    let half_made = |e: LifecycleError| -> LifecycleError {
        LifecycleError::Failed(format!(
            "{e}\n(the half-made cluster is kept in {} for inspection; remove it with `ironclad destroy {name}`)",
            paths.dir().display()
        ))
    };
    let state = prepare_dir(&paths, opts, accel, &image, &lock, progress).map_err(half_made)?;
    drop(lock);
    up(&paths, &state, None, started, opts.timeout, progress).map_err(half_made)
}

struct ImageProgress<'a>(&'a dyn Progress);
impl crate::image::Progress for ImageProgress<'_> {
    fn phase(&self, message: &str) {
        self.0.line(&format!("image: {message}"));
    }
}

/// Everything on disk before the first boot.
fn prepare_dir(
    paths: &ClusterPaths,
    opts: &CreateOptions,
    accel: Accel,
    image: &crate::image::BuiltImage,
    lock: &PortLock,
    progress: &dyn Progress,
) -> Result<ClusterState> {
    let cluster = opts.cluster;
    let name = cluster.name.as_str();
    let source = opts.source.clone().unwrap_or_else(|| {
        format!(
            "# the built-in default cluster\napiVersion: {}\nkind: Cluster\nmetadata:\n  name: {name}\n",
            crate::API_VERSION
        )
    });
    crate::fsutil::write_secret(&paths.cluster_yaml(), source.as_bytes())
        .map_err(LifecycleError::failed)?;
    progress.line("secrets and machine configs");
    crate::configdir::generate(cluster, paths.dir()).map_err(LifecycleError::failed)?;
    for d in [paths.disks_dir(), paths.logs_dir(), paths.run_dir()] {
        crate::fsutil::create_private_dir(&d).map_err(LifecycleError::failed)?;
    }
    let ports =
        ports::allocate(&opts.root, cluster.nodes.len(), lock).map_err(LifecycleError::failed)?;
    let mut nodes = Vec::with_capacity(cluster.nodes.len());
    for (i, (n, port)) in cluster.nodes.iter().zip(ports).enumerate() {
        let macs = crate::machine::node_macs(name, i).map_err(LifecycleError::failed)?;
        if let Some(why) = make_disk(&paths.disk(&n.name), n.disk.as_u64())? {
            progress.line(&format!(
                "{}: state disk left blank, the node formats it on first boot ({why})",
                n.name
            ));
        }
        nodes.push(NodeRecord {
            name: n.name.clone(),
            role: n.role,
            address: n.address,
            cluster_mac: macs.cluster,
            user_mac: macs.user,
            api_port: port,
            cpus: n.cpus,
            memory_mib: n.memory.as_mib(),
            disk_bytes: n.disk.as_u64(),
            state: NodeState::Stopped,
            pid: None,
            started_at_ms: None,
            last_exit: None,
        });
    }
    progress.line(&format!("{} state disks (qcow2)", nodes.len()));
    let state = ClusterState {
        api_version: crate::API_VERSION.to_string(),
        kind: super::state::KIND.to_string(),
        name: cluster.name.clone(),
        created_at_ms: now_ms(),
        accel,
        cidr: cluster.network.cidr,
        egress: cluster.network.egress,
        image: ImageFiles {
            key: image.key.clone(),
            kernel: image.vmlinuz.clone(),
            initrd: image.initramfs.clone(),
            rootfs: image.rootfs.clone(),
        },
        nodes,
    };
    state
        .save(&paths.cluster_json())
        .map_err(LifecycleError::failed)?;
    write_endpoints(paths, &state)?;
    Ok(state)
}

/// Records each node's API endpoint (127.0.0.1:port) in the state dir's client.yaml.
fn write_endpoints(paths: &ClusterPaths, state: &ClusterState) -> Result<()> {
    let path = paths.client_yaml();
    let mut client = ClientConfig::load(&path).map_err(LifecycleError::failed)?;
    for n in &mut client.nodes {
        if let Some(rec) = state.node(&n.name) {
            n.endpoint = Some(std::net::SocketAddr::from(([127, 0, 0, 1], rec.api_port)));
        }
    }
    client.save(&path).map_err(LifecycleError::failed)
}

/// Makes a node's state disk: a qcow2 image of `bytes`, formatted as the
/// node expects it (ext4, [`crate::machine::mke2fs_args`]) when the host has
/// mke2fs, so that the node's first boot does not spend its CPU on it
/// (0.6 s under TCG). Without mke2fs, or if formatting fails, the disk is
/// left blank and machined formats it on first boot; then the reason is
/// returned, for the progress output.
fn make_disk(path: &Path, bytes: u64) -> Result<Option<String>> {
    let blank = match crate::image::build::find_tool("mke2fs") {
        Some(mke2fs) => formatted_disk(&mke2fs, path, bytes)
            .err()
            .map(|e| e.to_string()),
        None => Some("no mke2fs on this host (Debian: e2fsprogs)".to_string()),
    };
    if blank.is_some() {
        qemu_img(
            &["create", "-q", "-f", "qcow2"],
            &[path.as_os_str(), bytes.to_string().as_ref()],
        )?;
    }
    // qemu-img honours the umask; the disk holds the node's secrets at rest.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(LifecycleError::failed)?;
    Ok(blank)
}

/// A sparse raw file formatted by mke2fs, converted to qcow2 at `path` (only
/// the blocks mke2fs wrote are stored: a few MiB).
fn formatted_disk(mke2fs: &Path, path: &Path, bytes: u64) -> Result<()> {
    let raw = path.with_extension("raw.tmp");
    let result = (|| {
        std::fs::File::create(&raw)
            .and_then(|f| f.set_len(bytes))
            .map_err(LifecycleError::failed)?;
        let raw_arg = raw.to_string_lossy();
        let out = std::process::Command::new(mke2fs)
            .args(crate::machine::mke2fs_args(&raw_arg))
            .output()
            .map_err(|e| LifecycleError::Failed(format!("cannot run mke2fs: {e}")))?;
        if !out.status.success() {
            return Err(LifecycleError::Failed(format!(
                "mke2fs {} failed: {}",
                raw.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        qemu_img(
            &["convert", "-q", "-f", "raw", "-O", "qcow2"],
            &[raw.as_os_str(), path.as_os_str()],
        )
    })();
    let _ = std::fs::remove_file(&raw);
    result
}

/// Runs `qemu-img ARGS FILES...`.
fn qemu_img(args: &[&str], files: &[&std::ffi::OsStr]) -> Result<()> {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .args(files)
        .output()
        .map_err(|e| LifecycleError::Failed(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        return Err(LifecycleError::Failed(format!(
            "qemu-img {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LifecycleError::failed)?;
    Ok(rt.block_on(f))
}

fn call(paths: &ClusterPaths, req: &Request, timeout: Duration) -> Result<()> {
    block_on(control::call(&paths.supervisor_socket(), req, timeout))?
        .map_err(LifecycleError::failed)
}

/// Makes sure a supervisor runs for the cluster (starting one if needed).
fn ensure_supervisor(paths: &ClusterPaths, progress: &dyn Progress) -> Result<u32> {
    if let Some(pid) = supervisor::running_pid(paths) {
        return Ok(pid);
    }
    let mut child = supervisor::spawn_detached(paths).map_err(LifecycleError::failed)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LifecycleError::Failed(format!(
                "the cluster supervisor exited at start ({status}); its log {} ends with:\n{}",
                paths.supervisor_log().display(),
                tail(&paths.supervisor_log(), 10)
            )));
        }
        if call(paths, &Request::Ping {}, Duration::from_secs(2)).is_ok() {
            progress.line(&format!("supervisor running (pid {})", child.id()));
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            return Err(LifecycleError::Failed(format!(
                "the cluster supervisor did not answer within 15 s; see {}",
                paths.supervisor_log().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a file (for error messages), with control
/// characters made visible: serial logs hold what the guest wrote.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    super::console::escape_str(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// Boots `only` (or every node), waits for them to be ready, converges.
fn up(
    paths: &ClusterPaths,
    state: &ClusterState,
    only: Option<&NodeName>,
    started: Instant,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<UpReport> {
    ensure_supervisor(paths, progress)?;
    let names: Vec<NodeName> = state
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|o| *o == n.name))
        .map(|n| n.name.clone())
        .collect();
    for n in &names {
        call(
            paths,
            &Request::StartNode {
                node: n.to_string(),
            },
            Duration::from_secs(20),
        )?;
        progress.line(&format!("{n}: booting"));
    }
    // etcd bootstrap and join start at once, in parallel with the readiness
    // wait: they only need the node APIs, which answer before `ready`. A
    // single node started again needs none of it: a control plane's etcd
    // starts by itself from the data on its disk.
    let converging = only.is_none().then(|| start_converge(paths));
    let nodes = wait_ready(
        paths,
        &names,
        DEFAULT_READY,
        Instant::now() + timeout,
        progress,
    )?;
    if let Some(c) = converging {
        finish_converge(c, progress)?;
    }
    Ok(UpReport {
        cluster: state.name.clone(),
        dir: paths.dir().to_path_buf(),
        accel: state.accel,
        seconds: started.elapsed().as_secs_f64(),
        nodes,
    })
}

/// The cluster-level setup through the node APIs, running on its own thread:
/// etcd bootstrap on the first control plane and the join (learner, promote)
/// of the others ([`super::etcd::converge`]). Progress lines arrive on the
/// channel.
pub struct Converging {
    lines: std::sync::mpsc::Receiver<String>,
    task: std::thread::JoinHandle<std::result::Result<usize, String>>,
}

/// Starts [`Converging`] for the cluster at `paths`.
pub fn start_converge(paths: &ClusterPaths) -> Converging {
    let client_yaml = paths.client_yaml();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let task = std::thread::spawn(move || {
        let mut report = |node: &str, step: &super::etcd::Step| {
            let _ = tx.send(format!("{node}: {step}"));
        };
        super::etcd::converge_blocking(
            &client_yaml,
            super::etcd::ConvergeOptions::default(),
            &mut report,
        )
        .map(|m| m.members.len())
        .map_err(|e| e.to_string())
    });
    Converging { lines, task }
}

/// Prints the progress of `c` and waits for its end.
pub fn finish_converge(c: Converging, progress: &dyn Progress) -> Result<()> {
    loop {
        match c.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => progress.line(&line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    match c.task.join() {
        Ok(Ok(members)) => {
            progress.line(&format!("etcd: {members} voting members, healthy"));
            Ok(())
        }
        Ok(Err(e)) => Err(LifecycleError::Failed(format!("etcd: {e}"))),
        Err(_) => Err(LifecycleError::Failed(
            "etcd: the converge step panicked".into(),
        )),
    }
}

/// Waits until every node of `names` meets every condition, printing each new
/// boot phase. Fails early when a node's QEMU ends or the supervisor dies.
/// Returns per node the seconds from the call to ready.
pub fn wait_ready(
    paths: &ClusterPaths,
    names: &[NodeName],
    conditions: &[ReadyCondition],
    deadline: Instant,
    progress: &dyn Progress,
) -> Result<Vec<(NodeName, f64)>> {
    let t0 = Instant::now();
    let mut ready: Vec<(NodeName, f64)> = Vec::new();
    let mut phases: std::collections::HashMap<NodeName, String> = Default::default();
    loop {
        let state = ClusterState::load(&paths.cluster_json()).map_err(LifecycleError::failed)?;
        if supervisor::running_pid(paths).is_none() {
            return Err(LifecycleError::Failed(format!(
                "the cluster supervisor is gone; its log {} ends with:\n{}",
                paths.supervisor_log().display(),
                tail(&paths.supervisor_log(), 10)
            )));
        }
        for name in names {
            if ready.iter().any(|(n, _)| n == name) {
                continue;
            }
            let Some(node) = state.node(name) else {
                return Err(LifecycleError::Failed(format!(
                    "node {name} vanished from cluster.json"
                )));
            };
            if !node.state.has_process() {
                return Err(LifecycleError::Failed(format!(
                    "node {name} is {} ({}) before it was ready; serial log {} ends with:\n{}\nQEMU said:\n{}",
                    node.state,
                    node.last_exit.as_deref().unwrap_or("no exit status"),
                    paths.serial_log(name).display(),
                    tail(&paths.serial_log(name), 10),
                    tail(&paths.qemu_log(name), 5),
                )));
            }
            if let Some(p) = last_phase(paths, name)
                && phases.get(name) != Some(&p)
            {
                progress.line(&format!("{name}: {p}"));
                phases.insert(name.clone(), p);
            }
            if conditions.iter().all(|c| c.met(paths, node)) {
                let secs = t0.elapsed().as_secs_f64();
                progress.line(&format!("{name}: ready after {secs:.1} s"));
                ready.push((name.clone(), secs));
            }
        }
        if ready.len() == names.len() {
            return Ok(ready);
        }
        if Instant::now() > deadline {
            let waiting: Vec<&NodeName> = names
                .iter()
                .filter(|n| !ready.iter().any(|(r, _)| r == *n))
                .collect();
            return Err(LifecycleError::Failed(format!(
                "nodes not ready before the deadline: {}; see their serial logs in {}",
                waiting
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                paths.logs_dir().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster `name`: bad input when there is none, or when what is at its
/// place is not a cluster's directory (see [`super::paths::find`]).
fn existing(root: &Path, name: &ClusterName) -> Result<ClusterPaths> {
    match super::paths::find(root, name).map_err(LifecycleError::failed)? {
        Found::Cluster(paths) => Ok(paths),
        Found::Absent => Err(LifecycleError::BadInput(format!(
            "no cluster named {name:?} under {}",
            root.display()
        ))),
        Found::Foreign { path, why } => Err(LifecycleError::BadInput(Found::foreign_message(
            &path, &why,
        ))),
    }
}

fn load(paths: &ClusterPaths) -> Result<ClusterState> {
    ClusterState::load(&paths.cluster_json()).map_err(LifecycleError::failed)
}

/// `ironclad start NAME [--node NODE]`: boots the cluster (or one node) again
/// from its kept disks and waits for readiness.
pub fn start(
    root: &Path,
    name: &ClusterName,
    node: Option<&NodeName>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<UpReport> {
    let started = Instant::now();
    let paths = existing(root, name)?;
    let state = load(&paths)?;
    if let Some(n) = node
        && state.node(n).is_none()
    {
        return Err(LifecycleError::BadInput(format!(
            "cluster {name} has no node {n:?}"
        )));
    }
    check_host_tools()?;
    up(&paths, &state, node, started, timeout, progress)
}

/// `ironclad stop NAME [--node NODE]`: graceful power-off (power button, then
/// `quit` after `timeout`); disks and state are kept. Stopping the whole
/// cluster also ends its supervisor.
pub fn stop(
    root: &Path,
    name: &ClusterName,
    node: Option<&NodeName>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let paths = existing(root, name)?;
    let state = load(&paths)?;
    let Some(pid) = supervisor::running_pid(&paths) else {
        progress.line(&format!("cluster {name} is not running"));
        return Ok(());
    };
    let timeout_ms = timeout.as_millis() as u64;
    match node {
        Some(n) => {
            if state.node(n).is_none() {
                return Err(LifecycleError::BadInput(format!(
                    "cluster {name} has no node {n:?}"
                )));
            }
            call(
                &paths,
                &Request::StopNode {
                    node: n.to_string(),
                    graceful: true,
                    timeout_ms,
                },
                timeout + Duration::from_secs(15),
            )
        }
        None => {
            call(
                &paths,
                &Request::Shutdown {
                    graceful: true,
                    timeout_ms,
                },
                timeout + Duration::from_secs(15),
            )?;
            wait_gone(&[pid], Instant::now() + Duration::from_secs(10));
            if supervisor::is_supervisor_of(pid, paths.dir()) {
                return Err(LifecycleError::Failed(format!(
                    "the supervisor (pid {pid}) did not exit"
                )));
            }
            Ok(())
        }
    }
}

fn wait_gone(pids: &[u32], deadline: Instant) -> bool {
    loop {
        let alive = pids.iter().any(|p| supervisor::cmdline(*p).is_some());
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `destroy` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destroyed {
    /// The cluster's processes were ended and its directory removed.
    Removed(PathBuf),
    /// There was no cluster of that name: nothing to do (not an error, so
    /// that teardown steps can run twice).
    Absent,
}

/// `ironclad destroy NAME`: everything stopped at once (no graceful power-off:
/// the disks are deleted anyway) and the state dir removed. Works on a crashed
/// or half-created cluster: any process of the cluster found in /proc is killed.
///
/// Only a cluster's directory is removed ([`super::paths::find`]: a real
/// directory under `<root>/clusters/`, owned by the user, holding the marker
/// or an older version's `cluster.json`). Anything else at the name's place
/// is bad input, and nothing is killed or removed. The removal itself does not
/// follow symbolic links (`remove_dir_all` unlinks them), so a link swapped
/// in after the check removes only the link.
pub fn destroy(root: &Path, name: &ClusterName) -> Result<Destroyed> {
    let paths = match super::paths::find(root, name).map_err(LifecycleError::failed)? {
        Found::Absent => return Ok(Destroyed::Absent),
        Found::Foreign { path, why } => {
            return Err(LifecycleError::BadInput(Found::foreign_message(
                &path, &why,
            )));
        }
        Found::Cluster(paths) => paths,
    };
    if supervisor::running_pid(&paths).is_some() {
        // A quick, orderly end; the /proc sweep below covers anything left.
        let _ = call(
            &paths,
            &Request::Shutdown {
                graceful: false,
                timeout_ms: 0,
            },
            Duration::from_secs(3),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = supervisor::processes_of(paths.dir());
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            // SAFETY: kill(2) on a pid whose command line was just checked to
            // belong to this cluster; no memory involved.
            unsafe {
                libc::kill(*p as libc::pid_t, libc::SIGKILL);
            }
        }
        if Instant::now() > deadline {
            return Err(LifecycleError::Failed(format!(
                "processes of cluster {name} survive SIGKILL: {pids:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(paths.dir()).map_err(|e| {
        LifecycleError::Failed(format!("cannot remove {}: {e}", paths.dir().display()))
    })?;
    Ok(Destroyed::Removed(paths.dir().to_path_buf()))
}

/// One node in `status`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: NodeName,
    pub role: crate::spec::Role,
    /// `ready`, `booting`, `stopping`, `stopped` or `crashed`.
    pub state: String,
    /// The last boot phase machined printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub address: std::net::Ipv4Addr,
    pub api_port: u16,
    /// Where the host reaches the node API.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

/// A cluster in `status` and `list`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: ClusterName,
    pub dir: PathBuf,
    /// The supervisor's pid when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    pub nodes: Vec<NodeStatus>,
    /// Why the state could not be read (a half-created cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The state shown for a node: the supervisor's record, refined by the serial
/// log (`booting` until ready) and by whether the supervisor is alive.
pub fn shown_state(recorded: NodeState, supervisor_alive: bool, ready: bool) -> &'static str {
    match recorded {
        // Its QEMU died with the supervisor.
        NodeState::Running | NodeState::Stopping if !supervisor_alive => "crashed",
        NodeState::Running if ready => "ready",
        NodeState::Running => "booting",
        other => other.as_str(),
    }
}

/// `ironclad status NAME`.
pub fn status(root: &Path, name: &ClusterName) -> Result<ClusterStatus> {
    let paths = existing(root, name)?;
    let supervisor = supervisor::running_pid(&paths);
    let state = match ClusterState::load(&paths.cluster_json()) {
        Ok(s) => s,
        Err(e) => {
            return Ok(ClusterStatus {
                name: name.clone(),
                dir: paths.dir().to_path_buf(),
                supervisor,
                accel: None,
                nodes: vec![],
                problem: Some(format!(
                    "{e} (half-created? `ironclad destroy {name}` removes it)"
                )),
            });
        }
    };
    let now = now_ms();
    let nodes = state
        .nodes
        .iter()
        .map(|n| {
            let ready = DEFAULT_READY.iter().all(|c| c.met(&paths, n));
            let alive = supervisor.is_some();
            let live = n.state.has_process() && alive;
            NodeStatus {
                name: n.name.clone(),
                role: n.role,
                state: shown_state(n.state, alive, ready).to_string(),
                phase: if live {
                    last_phase(&paths, &n.name)
                } else {
                    None
                },
                pid: if live { n.pid } else { None },
                address: n.address,
                api_port: n.api_port,
                endpoint: format!("127.0.0.1:{}", n.api_port),
                uptime_seconds: if live {
                    n.started_at_ms.map(|s| now.saturating_sub(s) / 1000)
                } else {
                    None
                },
                last_exit: n.last_exit.clone(),
            }
        })
        .collect();
    Ok(ClusterStatus {
        name: name.clone(),
        dir: paths.dir().to_path_buf(),
        supervisor,
        accel: Some(state.accel),
        nodes,
        problem: None,
    })
}

/// `ironclad list`: every cluster under the root (see
/// [`super::paths::list_clusters`]: only real cluster directories).
pub fn list(root: &Path) -> Result<Vec<ClusterStatus>> {
    let names = super::paths::list_clusters(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => LifecycleError::BadInput(e.to_string()),
        _ => LifecycleError::failed(e),
    })?;
    names.iter().map(|n| status(root, n)).collect()
}

/// Finds the cluster holding `node` (or checks it is in `cluster`).
pub fn find_node(
    root: &Path,
    node: &NodeName,
    cluster: Option<&ClusterName>,
) -> Result<ClusterPaths> {
    let all = match cluster {
        Some(c) => vec![existing(root, c)?],
        None => super::paths::list_clusters(root)
            .map_err(LifecycleError::failed)?
            .iter()
            .map(|c| ClusterPaths::new(root, c))
            .collect(),
    };
    for paths in all {
        if let Ok(state) = ClusterState::load(&paths.cluster_json())
            && state.node(node).is_some()
        {
            return Ok(paths);
        }
    }
    Err(LifecycleError::BadInput(format!(
        "no node named {node:?} in {}",
        cluster.map_or("any cluster".to_string(), |c| format!("cluster {c}"))
    )))
}

/// `ironclad console NODE`: writes the node's serial log to `out`; with
/// `follow`, keeps writing what is appended until the cluster is gone.
/// Following survives a new file at the log's path (a rotation at the cap,
/// see [`super::caplog`], or a restarted node's new log): the old file is read
/// to its end, then the new one from its start. The log holds whatever the
/// guest wrote: control characters (escape sequences that could drive the
/// terminal) are written visibly, as `\x1b` and the like
/// ([`super::console::Escaper`]).
pub fn console(
    paths: &ClusterPaths,
    node: &NodeName,
    follow: bool,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let log = paths.serial_log(node);
    let mut reader = LogFollower::new(log);
    let mut escaper = super::console::Escaper::default();
    let mut raw = Vec::new();
    let mut shown = Vec::new();
    loop {
        raw.clear();
        reader.copy_new(&mut raw)?;
        if !raw.is_empty() {
            shown.clear();
            escaper.push(&raw, &mut shown);
            out.write_all(&shown).map_err(LifecycleError::failed)?;
            out.flush().map_err(LifecycleError::failed)?;
        }
        if !follow || !paths.dir().exists() {
            shown.clear();
            escaper.finish(&mut shown);
            out.write_all(&shown).map_err(LifecycleError::failed)?;
            return out.flush().map_err(LifecycleError::failed);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads a log file as it grows, across rotations (`tail -F`).
struct LogFollower {
    path: PathBuf,
    /// The open file and the inode it was opened as.
    current: Option<(std::fs::File, u64)>,
}

impl LogFollower {
    fn new(path: PathBuf) -> Self {
        LogFollower {
            path,
            current: None,
        }
    }

    /// Appends to `out` what was added since the last call.
    fn copy_new(&mut self, out: &mut Vec<u8>) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        loop {
            // Looked at before reading, so that whatever the old file got
            // before the switch is read below.
            let at_path = std::fs::metadata(&self.path).ok().map(|m| m.ino());
            if let Some((f, _)) = &mut self.current {
                // Truncated in place: start over.
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let pos = f.stream_position().map_err(LifecycleError::failed)?;
                if len < pos {
                    f.seek(SeekFrom::Start(0)).map_err(LifecycleError::failed)?;
                }
                f.read_to_end(out).map_err(LifecycleError::failed)?;
            }
            let open_ino = self.current.as_ref().map(|(_, ino)| *ino);
            match at_path {
                Some(ino) if open_ino != Some(ino) => {
                    // A new file (or the first): switch and read it at once.
                    let Ok(f) = std::fs::File::open(&self.path) else {
                        return Ok(());
                    };
                    let ino = f.metadata().map(|m| m.ino()).unwrap_or(ino);
                    self.current = Some((f, ino));
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_disks_come_formatted_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("n.qcow2");
        assert_eq!(
            make_disk(&disk, 64 << 20).unwrap(),
            None,
            "formatted on the host"
        );
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&disk).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(meta.len() < 16 << 20, "only what mke2fs wrote is stored");
        assert!(!dir.path().join("n.raw.tmp").exists());
        // Read it back as the node would: an ext4 superblock with the label.
        let raw = dir.path().join("back.raw");
        qemu_img(
            &["convert", "-q", "-f", "qcow2", "-O", "raw"],
            &[disk.as_os_str(), raw.as_os_str()],
        )
        .unwrap();
        let bytes = std::fs::read(&raw).unwrap();
        assert_eq!(bytes.len(), 64 << 20);
        assert_eq!(&bytes[1080..1082], &[0x53, 0xEF], "ext4 magic");
        let label = &bytes[1024 + 120..1024 + 136];
        assert!(label.starts_with(crate::machine::STATE_DISK_LABEL.as_bytes()));
    }

    #[test]
    fn shown_states() {
        assert_eq!(shown_state(NodeState::Running, true, true), "ready");
        assert_eq!(shown_state(NodeState::Running, true, false), "booting");
        assert_eq!(shown_state(NodeState::Running, false, true), "crashed");
        assert_eq!(shown_state(NodeState::Crashed, true, false), "crashed");
        assert_eq!(shown_state(NodeState::Stopped, false, false), "stopped");
    }

    fn cluster(s: &str) -> ClusterName {
        s.parse().unwrap()
    }
    fn node(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    #[test]
    fn phases_and_readiness_from_the_serial_log() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::new(tmp.path(), &cluster("dev"));
        std::fs::create_dir_all(paths.logs_dir()).unwrap();
        let n = node("n");
        assert_eq!(last_phase(&paths, &n), None);
        std::fs::write(
            paths.serial_log(&n),
            "[    1.0] kernel\nmachined: stage1 t=1.700\nnoise\nmachined: services started t=5.1\n",
        )
        .unwrap();
        assert_eq!(
            last_phase(&paths, &n).as_deref(),
            Some("services started t=5.1")
        );
        // A phase line is printed: its control characters are shown, not sent.
        std::fs::write(paths.serial_log(&n), "machined: \x1b]0;x\x07boot\r\n").unwrap();
        assert_eq!(
            last_phase(&paths, &n).as_deref(),
            Some("\\x1b]0;x\\x07boot")
        );
        let mut rec = super::super::state::tests::sample().nodes[0].clone();
        rec.name = n.clone();
        assert!(!ReadyCondition::SerialReady.met(&paths, &rec));
        std::fs::write(paths.serial_log(&n), "machined: ready t=6.0\n").unwrap();
        assert!(ReadyCondition::SerialReady.met(&paths, &rec));
    }

    #[test]
    fn the_follower_follows_a_rotation_between_reads_completely() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("n.log");
        let mut writer = super::super::caplog::CappedLog::create(&log, 1024, &[]).unwrap();
        let mut follower = LogFollower::new(log.clone());
        let mut out = Vec::new();
        let mut want = Vec::new();
        for i in 0..200 {
            let line = format!("line {i:03} ........................\n");
            writer.write(line.as_bytes()).unwrap();
            want.push(line.trim_end().to_string());
            // Read after every line: at most one rotation between two reads.
            follower.copy_new(&mut out).unwrap();
        }
        assert!(writer.rotations() >= 5);
        let text = String::from_utf8(out).unwrap();
        let got: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("ironclad: "))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn console_reads_and_stops_without_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::new(tmp.path(), &cluster("dev"));
        std::fs::create_dir_all(paths.logs_dir()).unwrap();
        std::fs::write(paths.serial_log(&node("n")), "hello\r\n").unwrap();
        let mut out = Vec::new();
        console(&paths, &node("n"), false, &mut out).unwrap();
        assert_eq!(out, b"hello\n");
    }

    #[test]
    fn console_shows_escape_sequences_instead_of_sending_them() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = ClusterPaths::new(tmp.path(), &cluster("dev"));
        std::fs::create_dir_all(paths.logs_dir()).unwrap();
        // Retitle the terminal, clear it, a C1 CSI, a lone CR to overwrite the line.
        std::fs::write(
            paths.serial_log(&node("n")),
            b"ok\r\n\x1b]0;pwned\x07\x1b[2J\xc2\x9b31m\rfake\n" as &[u8],
        )
        .unwrap();
        let mut out = Vec::new();
        console(&paths, &node("n"), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "ok\n\\x1b]0;pwned\\x07\\x1b[2J\\u{9b}31m\\rfake\n");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
    }

    #[test]
    fn tails_of_logs_in_messages_are_escaped() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("x.log");
        std::fs::write(&log, "a\nb \x1b[2J\nc\n").unwrap();
        assert_eq!(tail(&log, 2), "b \\x1b[2J\nc");
    }

    #[test]
    fn unknown_cluster_is_bad_input_and_nothing_to_destroy() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            destroy(tmp.path(), &cluster("nope")).unwrap(),
            Destroyed::Absent
        );
        assert!(matches!(
            status(tmp.path(), &cluster("nope")),
            Err(LifecycleError::BadInput(_))
        ));
        assert!(list(tmp.path()).unwrap().is_empty());
    }

    #[test]
    fn destroy_removes_a_half_made_cluster() {
        let tmp = tempfile::tempdir().unwrap();
        let name = cluster("half");
        let paths = ClusterPaths::new(tmp.path(), &name);
        paths.claim(&name).unwrap();
        std::fs::create_dir_all(paths.run_dir()).unwrap();
        let st = status(tmp.path(), &name).unwrap();
        assert!(st.problem.is_some());
        assert_eq!(
            destroy(tmp.path(), &name).unwrap(),
            Destroyed::Removed(paths.dir().to_path_buf())
        );
        assert!(!paths.dir().exists());
    }

    #[test]
    fn destroy_leaves_what_is_not_a_cluster_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let outside = tmp.path().join("precious");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("canary"), "x").unwrap();
        let clusters = super::super::paths::clusters_dir(&root);
        std::fs::create_dir_all(clusters.join("plain")).unwrap();
        std::fs::write(clusters.join("plain/canary"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, clusters.join("link")).unwrap();
        for n in ["plain", "link"] {
            let e = destroy(&root, &cluster(n)).unwrap_err();
            assert!(matches!(e, LifecycleError::BadInput(_)), "{e:?}");
            assert!(e.to_string().contains("remove it by hand"), "{e}");
            // The other commands refuse it too.
            assert!(matches!(
                status(&root, &cluster(n)),
                Err(LifecycleError::BadInput(_))
            ));
        }
        assert!(clusters.join("plain/canary").exists());
        assert!(outside.join("canary").exists());
        assert!(list(&root).unwrap().is_empty());
    }
}
