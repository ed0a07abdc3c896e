//! One invocation: checks the options and the host, resolves the
//! accelerator, owns the work dir, the per-invocation scratch dirs, the
//! samples and the clusters created (destroyed on every way out), runs the
//! groups in their order and writes the report.

use crate::options::{Group, Options};
use crate::report::{HostInfo, Meta, Report, Sample, VmShape};
use crate::{BenchError, Result};
use ironclad_host::image::{self, BuildOptions, BuiltImage, RecipeRef, StderrProgress};
use ironclad_host::qemu::{Accel, MachineType};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The same VM shape for every boot measured here.
pub const CPUS: u32 = 2;
pub const MEMORY_MIB: u64 = 1024;
/// The QEMU binary (the library's).
pub const QEMU: &str = ironclad_host::cluster::supervisor::QEMU;

/// Progress on stderr.
macro_rules! log {
    ($($arg:tt)*) => { eprintln!("bench: {}", format_args!($($arg)*)) };
}
pub(crate) use log;

/// The state of one invocation.
pub struct Bench {
    pub opts: Options,
    /// The source tree (for `clusters/*.yaml`).
    pub repo: PathBuf,
    pub work: PathBuf,
    /// Per-invocation scratch under the work dir, removed at exit.
    pub run: tempfile::TempDir,
    /// The state root of the clusters created here (short: unix sockets live in it).
    pub state: tempfile::TempDir,
    pub accel: Accel,
    pub ironclad: PathBuf,
    samples: Vec<Sample>,
    image: Option<BuiltImage>,
    /// Clusters created and not yet destroyed.
    pub clusters: Vec<ironclad_host::spec::ClusterName>,
}

#[expect(
    clippy::disallowed_methods,
    reason = "the bench's default work dir follows XDG_CACHE_HOME and HOME, as ci/bench always did"
)]
fn default_work() -> Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache"),
            None => {
                return Err(BenchError::BadInput(
                    "neither XDG_CACHE_HOME nor HOME is set: pass --work DIR".into(),
                ));
            }
        },
    };
    Ok(cache.join("ironclad").join("bench"))
}

/// `--output`: absolute, and its directory writable now (not after an hour of runs).
fn check_output(output: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(output)
        .map_err(|e| BenchError::BadInput(format!("--output {}: {e}", output.display())))?;
    if abs.is_dir() {
        return Err(BenchError::BadInput(format!(
            "--output {} is a directory",
            abs.display()
        )));
    }
    let dir = abs.parent().unwrap_or(Path::new("/"));
    tempfile::NamedTempFile::new_in(dir).map_err(|e| {
        BenchError::BadInput(format!(
            "--output {}: cannot write in {}: {}",
            abs.display(),
            dir.display(),
            e.kind()
        ))
    })?;
    Ok(abs)
}

/// `--ironclad`, else `ironclad` beside this program; machined must sit next to it.
fn locate_ironclad(explicit: Option<&Path>) -> Result<PathBuf> {
    let (path, hint) = match explicit {
        Some(p) => (p.to_path_buf(), "--ironclad"),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| BenchError::Failed(format!("cannot find this program: {e}")))?;
            (
                exe.with_file_name("ironclad"),
                "build it first (ci/bench runs cargo build --release --workspace --bins), or pass --ironclad",
            )
        }
    };
    let path = path.canonicalize().map_err(|e| {
        BenchError::BadInput(format!(
            "no ironclad binary at {} ({e}): {hint}",
            path.display()
        ))
    })?;
    let machined = path.with_file_name("machined");
    if !machined.is_file() {
        return Err(BenchError::BadInput(format!(
            "no machined beside {} (looked for {})",
            path.display(),
            machined.display()
        )));
    }
    Ok(path)
}

/// The host tools every group needs.
fn check_tools() -> Result<()> {
    let missing: Vec<&str> = [QEMU, "qemu-img"]
        .into_iter()
        .filter(|t| image::build::find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BenchError::MissingTool(format!(
            "{} missing (Debian: qemu-system-x86 qemu-utils; ci/install-deps installs them)",
            missing.join(" and ")
        )))
    }
}

pub fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt).unwrap_or_default()
}

impl Bench {
    pub fn record(&mut self, s: Sample) {
        self.samples.push(s);
    }

    pub fn sample(
        &mut self,
        group: &'static str,
        name: &'static str,
        unit: &'static str,
        value: f64,
        what: &'static str,
    ) {
        self.record(Sample::Value {
            group,
            name,
            unit,
            value,
            what,
        });
    }

    pub fn skip(
        &mut self,
        group: &'static str,
        name: &'static str,
        unit: &'static str,
        reason: &str,
        what: &'static str,
    ) {
        log!("skipped {group}/{name}: {reason}");
        self.record(Sample::Skipped {
            group,
            name,
            unit,
            reason: reason.to_string(),
            what,
        });
    }

    /// A failed run; the serial logs of the run dir are kept in `<work>/failed`.
    pub fn failed(
        &mut self,
        group: &'static str,
        name: &'static str,
        unit: &'static str,
        reason: String,
    ) {
        let kept = self.work.join("failed");
        if std::fs::create_dir_all(&kept).is_ok()
            && let Ok(entries) = std::fs::read_dir(self.run.path())
        {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.ends_with(".log") || n.ends_with(".stderr") {
                    let _ = std::fs::copy(e.path(), kept.join(&*n));
                }
            }
        }
        log!(
            "FAILED {group}/{name}: {reason} (logs kept in {})",
            kept.display()
        );
        self.record(Sample::Failed {
            group,
            name,
            unit,
            reason,
        });
    }

    pub fn note(&mut self, text: String) {
        self.record(Sample::Note(text));
    }

    /// A path in the run dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.run.path().join(name)
    }

    /// Err(Interrupted) once Ctrl-C or SIGTERM arrived.
    pub fn check_interrupt(&self) -> Result<()> {
        if ironclad_host::interrupt::requested() {
            Err(BenchError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// The node image from the usual cache, built if missing (in this
    /// process, with the machined beside `ironclad`).
    pub fn image(&mut self) -> Result<&BuiltImage> {
        if self.image.is_none() {
            log!("ironclad image build (cached)");
            let opts = BuildOptions {
                machined: Some(self.ironclad.with_file_name("machined")),
                cache_dir: None,
                refresh_base: false,
            };
            let built = image::ensure_built(&RecipeRef::parse("trixie"), &opts, &StderrProgress)
                .map_err(|e| {
                    let msg = format!("the node image: {e}");
                    if e.is_missing_dependency() {
                        BenchError::MissingTool(msg)
                    } else {
                        BenchError::Failed(msg)
                    }
                })?;
            self.image = Some(built);
        }
        self.image
            .as_ref()
            .ok_or_else(|| BenchError::Failed("no image".into()))
    }

    /// The kernel version of the node image, once it was looked up.
    pub fn kernel_version(&self) -> Option<String> {
        self.image
            .as_ref()
            .map(|i| i.manifest.kernel_version.clone())
    }

    /// The kernel command line of every VM here: the nodes' own
    /// ([`ironclad_host::cluster::supervisor::kernel_cmdline`]).
    pub fn append(&self) -> String {
        ironclad_host::cluster::supervisor::kernel_cmdline(self.accel)
    }

    /// QEMU's machine options for a VM named `name`: exactly those the
    /// library puts in front of a node's devices (`-name` to `-display`), so
    /// that the limit and the baseline run on the node's machine, CPU model
    /// and accelerator.
    pub fn machine_args(&self, name: &str) -> Vec<OsString> {
        let spec = ironclad_host::qemu::VmSpec {
            name: name.to_string(),
            kernel: "k".into(),
            initrd: "i".into(),
            append: String::new(),
            cpus: CPUS,
            memory_mib: MEMORY_MIB,
            machine: MachineType::Q35,
            accel: self.accel,
            tcg_tb_size_mib: None,
            root_image: "r".into(),
            state_disk: "s".into(),
            machine_config: "m".into(),
            user_nic: ironclad_host::qemu::UserNic {
                mac: "52:54:00:00:00:01"
                    .parse()
                    .unwrap_or_else(|_| unreachable!("a constant MAC")),
                restrict: true,
                host_api_port: 1,
            },
            cluster_nic: None,
            qmp_socket: "q".into(),
            serial_log: "l".into(),
        };
        machine_prefix(spec.to_args().unwrap_or_default())
    }
}

/// The options of a node's QEMU line before its first device (`-kernel`).
pub fn machine_prefix(args: Vec<OsString>) -> Vec<OsString> {
    args.into_iter().take_while(|a| a != "-kernel").collect()
}

/// Escapes a path for a QEMU `key=value` option (a comma is doubled).
pub fn qemu_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Stops every cluster still recorded (on any way out of [`run`]).
impl Drop for Bench {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.clusters) {
            if let Err(e) = ironclad_host::cluster::lifecycle::destroy(self.state.path(), &c) {
                log!("destroy {c} failed: {e}");
            }
        }
    }
}

/// The whole invocation.
pub fn run(opts: Options) -> Result<()> {
    let output = opts.output.as_deref().map(check_output).transpose()?;
    let work = match &opts.work {
        Some(w) => w.clone(),
        None => default_work()?,
    };
    std::fs::create_dir_all(&work).map_err(|e| {
        BenchError::BadInput(format!(
            "cannot create the work dir {}: {e}",
            work.display()
        ))
    })?;
    let work = work
        .canonicalize()
        .map_err(|e| BenchError::BadInput(format!("work dir {}: {e}", work.display())))?;
    check_tools()?;
    let (accel, why) =
        Accel::resolve(opts.accel).map_err(|e| BenchError::BadInput(e.to_string()))?;
    if let Some(why) = why {
        log!("{why}");
    }
    let ironclad = locate_ironclad(opts.ironclad.as_deref())?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .map_err(|e| BenchError::Failed(format!("the source tree: {e}")))?;
    let run = tempfile::Builder::new()
        .prefix("run.")
        .tempdir_in(&work)
        .map_err(|e| BenchError::BadInput(format!("scratch dir in {}: {e}", work.display())))?;
    let state = tempfile::Builder::new()
        .prefix("icb.")
        .tempdir()
        .map_err(|e| BenchError::Failed(format!("scratch state dir: {e}")))?;
    let _catch = ironclad_host::interrupt::catch()
        .map_err(|e| BenchError::Failed(format!("cannot catch signals: {e}")))?;
    let mut b = Bench {
        opts,
        repo,
        work,
        run,
        state,
        accel,
        ironclad,
        samples: Vec::new(),
        image: None,
        clusters: Vec::new(),
    };
    let started = now_rfc3339();
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    log!(
        "accelerator: {accel}; runs: {}; work dir: {}",
        b.opts.runs,
        b.work.display()
    );
    let load_start = loadavg1();
    if load_start > 0.5 * nproc as f64 {
        log!(
            "WARNING: the host is busy (load average {load_start} on {nproc} CPUs): absolute figures will be inflated"
        );
        b.note(format!("host busy at start: load average {load_start} on {nproc} CPUs; absolute figures are inflated, take final figures on a quiet machine"));
    }
    groups(&mut b)?;
    let meta = Meta {
        accel: accel.to_string(),
        runs_per_figure: b.opts.runs,
        started,
        host: HostInfo {
            nproc,
            loadavg1_at_start: load_start,
            loadavg1_at_end: loadavg1(),
        },
        vm: VmShape {
            cpus: CPUS,
            memory: format!("{MEMORY_MIB}M"),
            machine: MachineType::Q35.qemu_name().into(),
        },
        kernel_version: b.kernel_version(),
    };
    let report = Report::build(meta, &b.samples);
    if let Some(out) = &output {
        write_json(out, &report)?;
    }
    print!("{}", report.table());
    if let Some(out) = &output {
        println!("\nJSON report: {}", out.display());
    }
    Ok(())
}

/// The groups, in their order. The boot groups run in rounds (limit, node,
/// baseline; then again), so that a change of load during the invocation
/// hits all three alike and the ratios compare runs taken side by side.
fn groups(b: &mut Bench) -> Result<()> {
    let boots: Vec<Group> = [Group::Limit, Group::Node, Group::Baseline]
        .into_iter()
        .filter(|g| b.opts.wants(*g))
        .collect();
    let mut setups = Vec::new();
    for g in &boots {
        setups.push(crate::boot::setup(b, *g)?);
    }
    for round in 1..=b.opts.runs {
        for s in &setups {
            b.check_interrupt()?;
            crate::boot::run_round(b, s, round)?;
        }
    }
    if b.opts.wants(Group::Etcd) {
        crate::lifecycle::bench_etcd(b)?;
    }
    if b.opts.wants(Group::Ha) {
        crate::lifecycle::bench_ha(b)?;
    }
    if b.opts.wants(Group::Scale) {
        crate::scale::bench_scale(b)?;
    }
    if b.opts.wants(Group::Dev) {
        crate::dev::bench_dev(b)?;
    }
    if b.opts.wants(Group::Image) {
        crate::image::bench_image(b)?;
    }
    if b.opts.wants(Group::Sizes) {
        crate::image::bench_sizes(b)?;
    }
    Ok(())
}

fn write_json(path: &Path, report: &Report) -> Result<()> {
    let mut text = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Failed(format!("the JSON report: {e}")))?;
    text.push('\n');
    let dir = path.parent().unwrap_or(Path::new("/"));
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| BenchError::Failed(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_prefix_stops_at_the_first_device() {
        let args: Vec<OsString> = [
            "-name", "guest=x", "-machine", "q35", "-kernel", "k", "-drive", "d",
        ]
        .map(OsString::from)
        .to_vec();
        assert_eq!(
            machine_prefix(args),
            ["-name", "guest=x", "-machine", "q35"]
        );
    }

    #[test]
    fn output_must_be_writable() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("b.json");
        assert_eq!(check_output(&ok).unwrap(), ok);
        assert!(!ok.exists(), "only checked, not written");
        assert!(matches!(
            check_output(dir.path()),
            Err(BenchError::BadInput(_))
        ));
        let missing = dir.path().join("no/such/dir/b.json");
        let e = check_output(&missing).unwrap_err();
        assert!(matches!(e, BenchError::BadInput(_)), "{e}");
        assert!(e.to_string().contains("cannot write in"), "{e}");
    }

    #[test]
    fn qemu_paths_escape_commas() {
        assert_eq!(qemu_path(Path::new("/a,b/c")), "/a,,b/c");
    }
}
