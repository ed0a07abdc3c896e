//! `create`: the state dir, image, secrets and machine configs, ports, disks,
//! then `up` on the selected engine; and the resume of a create that did not
//! finish ([`resume`]: `create` again with the same cluster file).

use super::*;

/// Options of [`create`].
pub struct CreateOptions<'a> {
    pub root: PathBuf,
    pub cluster: &'a Cluster,
    /// The cluster file's text (kept as `cluster.yaml`); `None` for the built-in default.
    pub source: Option<String>,
    pub accel: AccelChoice,
    /// Under TCG, each node's translated-code cache (MiB; in
    /// [`crate::cluster::state::TCG_CACHE_MIB_RANGE`]).
    pub tcg_cache_mib: u32,
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
    let engine = engine::selected();
    check_host_tools(engine)?;
    let cluster = opts.cluster;
    let name = &cluster.name;
    let paths = ClusterPaths::new(&opts.root, name);
    match crate::cluster::paths::find(&opts.root, name)? {
        Found::Absent => {}
        Found::Cluster(_) => return resume(engine, &paths, opts, started, progress),
        Found::Foreign { path, why } => {
            return Err(LifecycleError::BadInput(Found::foreign_message(
                &path, &why,
            )));
        }
    }
    let nodes: Vec<crate::spec::NodeName> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let longest = paths.longest_socket(&nodes);
    let len = longest.as_os_str().len();
    if len > crate::cluster::paths::MAX_SOCKET_PATH {
        return Err(LifecycleError::BadInput(format!(
            "cluster {name:?} would need the unix socket path {} ({len} bytes), longer than the limit of {} bytes; use a shorter --state-dir (or IRONCLAD_STATE_DIR) or shorter cluster and node names",
            longest.display(),
            crate::cluster::paths::MAX_SOCKET_PATH
        )));
    }
    let range = crate::cluster::state::TCG_CACHE_MIB_RANGE;
    if !range.contains(&opts.tcg_cache_mib) {
        return Err(LifecycleError::BadInput(format!(
            "--tcg-cache {} MiB is outside {}..={} MiB",
            opts.tcg_cache_mib,
            range.start(),
            range.end()
        )));
    }
    let (accel, why) =
        Accel::resolve(opts.accel).map_err(|e| LifecycleError::BadInput(e.to_string()))?;
    if let Some(why) = why {
        progress.line(&why);
    }

    let building = format!("image {}: building or reusing", cluster.image);
    progress.event(&Event::Stage(Stage::Image, Some(&building)));
    let image = crate::image::ensure_built(
        &crate::image::RecipeRef::parse(&cluster.image),
        &crate::image::BuildOptions {
            machined: None,
            cache_dir: opts.cache_dir.clone(),
            refresh_base: false,
        },
        &ImageProgress(progress),
    )?;
    progress.event(&Event::Step(&format!(
        "image {} ({})",
        &image.key[..image.key.len().min(12)],
        if image.cache_hit { "cached" } else { "built" }
    )));

    if crate::interrupt::requested() {
        return Err(LifecycleError::Interrupted);
    }
    let lock = PortLock::acquire(&opts.root)?;
    // The directory is made exclusively, its marker first: of two creates of
    // the same name, one gets AlreadyExists here.
    paths.claim(name).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => LifecycleError::AlreadyExists {
            name: name.clone(),
            dir: paths.dir().to_path_buf(),
        },
        _ => LifecycleError::CreateDir {
            dir: paths.dir().to_path_buf(),
            source: e,
        },
    })?;
    let half_made = |e: LifecycleError| -> LifecycleError {
        LifecycleError::HalfMade {
            error: Box::new(e),
            dir: paths.dir().to_path_buf(),
            name: name.clone(),
            resumed: false,
        }
    };
    let creating = CreateLock::make(&paths).map_err(|e| half_made(e.into()))?;
    if crate::interrupt::requested() {
        return Err(half_made(LifecycleError::Interrupted));
    }
    let state = prepare_dir(&paths, opts, accel, &image, &lock, progress).map_err(half_made)?;
    drop(lock);
    let report = up(
        engine,
        &paths,
        &state,
        None,
        started,
        opts.timeout,
        progress,
    )
    .map_err(half_made)?;
    creating.finish()?;
    Ok(report)
}

/// The `creating` file of a cluster whose create has not finished
/// ([`ClusterPaths::creating`]), locked (`flock`, exclusive) by the create
/// that runs: a second `create` of the same name cannot resume it meanwhile,
/// and the lock goes with the process, however it ends.
pub(super) struct CreateLock {
    file: std::fs::File,
    path: PathBuf,
}

impl CreateLock {
    /// Made locked: written under a temporary name, locked, then renamed into
    /// place, so that no other create finds it unlocked.
    pub(super) fn make(paths: &ClusterPaths) -> std::io::Result<CreateLock> {
        let path = paths.creating();
        let tmp = paths.dir().join(".creating.tmp");
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&tmp)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        std::fs::rename(&tmp, &path)?;
        Ok(CreateLock { file, path })
    }

    /// The lock of an unfinished create: `Ok(None)` when the create finished
    /// (no `creating` file); [`LifecycleError::CannotResume`] when another
    /// create holds it.
    pub(super) fn take(paths: &ClusterPaths, name: &ClusterName) -> Result<Option<CreateLock>> {
        let path = paths.creating();
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(CreateLock { file, path })),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LifecycleError::CannotResume {
                name: name.clone(),
                dir: paths.dir().to_path_buf(),
                why: "another `ironclad create` of it is running".into(),
            }),
            Err(e) => Err(std::io::Error::from(e).into()),
        }
    }

    /// The create is complete: the file goes (the lock with it).
    pub(super) fn finish(self) -> Result<()> {
        std::fs::remove_file(&self.path)?;
        drop(self.file);
        Ok(())
    }
}

/// `create` of a cluster that exists: resumed when its create did not finish
/// (its `creating` file is there and no other create holds it) and it was
/// made from the same cluster file (the same text as its `cluster.yaml`);
/// otherwise the refusal of a taken name ([`LifecycleError::AlreadyExists`]),
/// or [`LifecycleError::CannotResume`] saying why not.
///
/// Resuming runs `up` on the cluster as `cluster.json` has it: the
/// supervisor is launched unless it runs, every node that does not run is
/// booted from its disk (one that runs is left alone), the readiness wait
/// covers all, and etcd's converge resumes from the member list it finds
/// (see [`crate::cluster::etcd::converge`]).
fn resume(
    engine: &dyn Engine,
    paths: &ClusterPaths,
    opts: &CreateOptions,
    started: Instant,
    progress: &dyn Progress,
) -> Result<UpReport> {
    let name = &opts.cluster.name;
    let cannot = |why: String| LifecycleError::CannotResume {
        name: name.clone(),
        dir: paths.dir().to_path_buf(),
        why,
    };
    let Some(creating) = CreateLock::take(paths, name)? else {
        return Err(LifecycleError::AlreadyExists {
            name: name.clone(),
            dir: paths.dir().to_path_buf(),
        });
    };
    match std::fs::read(paths.cluster_yaml()) {
        Ok(kept) if kept == source_text(opts).as_bytes() => {}
        Ok(_) => {
            return Err(cannot(
                "it was made from a different cluster file (its cluster.yaml differs)".into(),
            ));
        }
        Err(e) => {
            return Err(cannot(format!(
                "its copy of the cluster file cannot be read ({e})"
            )));
        }
    }
    let state = ClusterState::load(&paths.cluster_json()).map_err(|e| {
        cannot(format!(
            "its create failed before its state was complete ({e})"
        ))
    })?;
    if let Some(gone) = [
        &state.image.kernel,
        &state.image.initrd,
        &state.image.rootfs,
    ]
    .into_iter()
    .find(|f| !f.exists())
    {
        return Err(cannot(format!("its image file {} is gone", gone.display())));
    }
    progress.line(&format!(
        "cluster {name} exists, made from this cluster file, and its create did not finish: resuming it (nodes that run are kept, the others booted; etcd goes on from its member list)"
    ));
    let report = up(engine, paths, &state, None, started, opts.timeout, progress).map_err(|e| {
        LifecycleError::HalfMade {
            error: Box::new(e),
            dir: paths.dir().to_path_buf(),
            name: name.clone(),
            resumed: true,
        }
    })?;
    creating.finish()?;
    Ok(report)
}

/// The cluster file's text as `cluster.yaml` keeps it.
fn source_text(opts: &CreateOptions) -> String {
    opts.source.clone().unwrap_or_else(|| {
        format!(
            "# the built-in default cluster\napiVersion: {}\nkind: Cluster\nmetadata:\n  name: {}\n",
            crate::API_VERSION,
            opts.cluster.name
        )
    })
}

pub(super) struct ImageProgress<'a>(&'a dyn Progress);
impl crate::image::Progress for ImageProgress<'_> {
    fn phase(&self, message: &str) {
        self.0.event(&Event::Step(&format!("image: {message}")));
    }
}

/// Everything on disk before the first boot.
pub(super) fn prepare_dir(
    paths: &ClusterPaths,
    opts: &CreateOptions,
    accel: Accel,
    image: &crate::image::BuiltImage,
    lock: &PortLock,
    progress: &dyn Progress,
) -> Result<ClusterState> {
    let cluster = opts.cluster;
    let name = cluster.name.as_str();
    let source = source_text(opts);
    crate::fsutil::write_secret(&paths.cluster_yaml(), source.as_bytes())?;
    progress.event(&Event::Stage(
        Stage::Secrets,
        Some("secrets and machine configs"),
    ));
    crate::configdir::generate(cluster, paths.dir())?;
    for d in [paths.disks_dir(), paths.logs_dir(), paths.run_dir()] {
        crate::fsutil::create_private_dir(&d)?;
    }
    let ports = ports::allocate(&opts.root, cluster.nodes.len(), lock)?;
    let mut nodes = Vec::with_capacity(cluster.nodes.len());
    for (i, (n, port)) in cluster.nodes.iter().zip(ports).enumerate() {
        let macs = crate::machine::node_macs(name, i)?;
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
    progress.event(&Event::Step(&format!(
        "{} state disks (qcow2)",
        nodes.len()
    )));
    let state = ClusterState {
        api_version: crate::API_VERSION.to_string(),
        kind: crate::cluster::state::KIND.to_string(),
        name: cluster.name.clone(),
        created_at_ms: now_ms(),
        accel,
        tcg_cache_mib: opts.tcg_cache_mib,
        cidr: cluster.network.cidr,
        egress: cluster.network.egress,
        image: ImageFiles {
            key: image.key.clone(),
            kernel: image.vmlinux.clone(),
            initrd: image.initramfs.clone(),
            rootfs: image.rootfs.clone(),
        },
        nodes,
    };
    state.save(&paths.cluster_json())?;
    write_endpoints(paths, &state)?;
    Ok(state)
}

/// Records each node's API endpoint (127.0.0.1:port) in the state dir's client.yaml.
pub(super) fn write_endpoints(paths: &ClusterPaths, state: &ClusterState) -> Result<()> {
    let path = paths.client_yaml();
    let mut client = ClientConfig::load(&path)?;
    for n in &mut client.nodes {
        if let Some(rec) = state.node(&n.name) {
            n.endpoint = Some(std::net::SocketAddr::from(([127, 0, 0, 1], rec.api_port)));
        }
    }
    Ok(client.save(&path)?)
}
