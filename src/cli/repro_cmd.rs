//! `ironclad repro BUNDLE [--name NAME]`: the cluster of a support bundle,
//! made again on this host (see [`crate::repro`] for the steps and the
//! checks), with a progress line per phase and, at the end, what differs
//! between the reporter's host and this one.

use super::out::{json, outln};
use super::{CliResult, Exit, Failure, Global, Output};
use crate::repro::{self, AppliedFault, ImageCheck, ReproError};
use crate::spec::ClusterName;
use ironclad_host::cluster::lifecycle::UpReport;
use ironclad_host::qemu::AccelChoice;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle (`support-<cluster>-<time>.tar.gz`, as `ironclad support` writes it).
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// The new cluster's name [default: the bundle's cluster]. An existing
    /// cluster is never replaced.
    #[arg(long, value_name = "NAME", value_parser = super::cluster_name_arg)]
    pub name: Option<ClusterName>,
    /// Go on when the image built here differs from the bundle's manifest.
    #[arg(long)]
    pub allow_image_mismatch: bool,
    /// Accelerator: auto picks KVM when a standard guest kernel can run on it, else TCG.
    #[arg(long, value_enum, default_value_t)]
    pub accel: AccelChoice,
    /// Under TCG, each node's translated-code cache in MiB, as for
    /// `create` (the bundle's `cluster.json` says what the reporter used).
    #[arg(long, value_name = "MIB", default_value_t = crate::cluster::state::TCG_CACHE_DEFAULT_MIB,
          value_parser = super::tcg_cache_arg)]
    pub tcg_cache: u32,
    /// Seconds to wait for every node to be ready.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Output format (`json`: the image check, the cluster, the faults, the host table).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// What `repro --output json` prints.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Done<'a> {
    bundle: &'a std::path::Path,
    /// The bundle's cluster.
    from: &'a ClusterName,
    cluster: &'a UpReport,
    image: &'a ImageCheck,
    faults: &'a [AppliedFault],
    /// The reporter's drop seed, set on the new cluster's switch.
    drop_seed: Option<u64>,
    /// What the bundle says could not be collected about the network, when
    /// it has no `network.json`.
    faults_unknown: Option<String>,
    hosts: &'a [repro::compare::HostRow],
    seconds: f64,
}

fn failure(e: ReproError) -> Failure {
    use ReproError as E;
    let exit = match &e {
        E::BadBundle(_) | E::Spec(_) | E::Rename { .. } | E::Exists { .. } | E::Foreign(_) => {
            Exit::BadInput
        }
        E::Image(i) => super::image::exit_of(i),
        E::Lifecycle(l) => super::lifecycle::exit_of(l),
        E::Mismatch { .. } | E::Faults { .. } | E::Io { .. } => Exit::Failed,
    };
    Failure::new(exit, e)
}

pub fn run(g: &Global, a: Args) -> CliResult {
    let started = Instant::now();
    let root = g.state_root()?;
    let here = serde_json::to_value(ironclad_host::version::VersionReport::collect(
        super::about::COMMIT,
    ))
    .unwrap_or_default();
    let req = repro::Request {
        file: &a.bundle,
        root: &root,
        name: a.name.clone(),
        accel: a.accel,
        tcg_cache_mib: a.tcg_cache,
        timeout: Duration::from_secs(a.timeout),
        allow_image_mismatch: a.allow_image_mismatch,
        cache_dir: None,
        here,
    };
    let say = |s: &str| super::progress::line(&format!("repro: {s}"));
    say(&format!(
        "bundle {}: reading and checking",
        a.bundle.display()
    ));
    let plan = repro::plan(&req).map_err(failure)?;
    let b = &plan.bundle;
    say(&format!(
        "bundle of cluster {} ({} entries{}): cluster file valid, reproducing as {}",
        b.cluster,
        b.entries,
        b.index
            .created_at
            .as_deref()
            .map(|t| format!(", made {}", repro::bundle::shown(t)))
            .unwrap_or_default(),
        plan.cluster.name
    ));
    say(&format!(
        "image: from the bundled recipe {} (key {})",
        repro::bundle::shown(&b.manifest.recipe.name),
        &b.manifest.key[..12]
    ));
    let (image, recipe) =
        repro::image(&plan, &req, super::progress::image_progress().as_ref()).map_err(failure)?;
    if image.differs.is_empty() {
        say(&format!(
            "image {} ({}): every part matches the bundle's manifest",
            &image.key[..12],
            if image.cache_hit { "cached" } else { "built" }
        ));
    } else {
        for d in &image.differs {
            say(&format!(
                "image part {} differs (bundle: {}; here: {}); going on (--allow-image-mismatch)",
                d.part, d.bundle, d.here
            ));
        }
    }
    say(&format!("cluster {}: creating", plan.cluster.name));
    let catch = ironclad_host::interrupt::catch()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot catch Ctrl-C: {e}")))?;
    let created = repro::create(
        &plan,
        &recipe,
        &req,
        super::progress::lifecycle_progress().as_ref(),
    );
    drop(catch);
    let up = match created {
        Ok(r) => r,
        Err(e) if ironclad_host::interrupt::requested() => {
            return Err(super::lifecycle::interrupted(&root, e, false));
        }
        Err(e) => return Err(failure(ReproError::from(e))),
    };
    let faults_unknown = b.network.is_none().then(|| {
        b.why_missing("network.json")
            .unwrap_or_else(|| "the bundle has no network.json".into())
    });
    let applied = if plan.faults.requests.is_empty() {
        say(match &faults_unknown {
            Some(why) => format!("network faults: unknown ({why}); none set"),
            None => "network faults: none in the bundle".to_string(),
        }
        .as_str());
        Vec::new()
    } else {
        let applied = repro::faults(&plan, &root).map_err(failure)?;
        if let Some(seed) = plan.faults.seed {
            say(&format!("network: drop seed {seed} (the reporter's)"));
        }
        for f in &applied {
            say(&format!(
                "network fault on {} (bundle: {}): {}",
                f.node, f.bundle_node, f.faults
            ));
        }
        applied
    };
    let seconds = started.elapsed().as_secs_f64();
    match a.output {
        Output::Json => outln!(
            "{}",
            json(&Done {
                bundle: &a.bundle,
                from: &b.cluster,
                cluster: &up,
                image: &image,
                faults: &applied,
                drop_seed: plan.faults.seed,
                faults_unknown,
                hosts: &plan.hosts,
                seconds,
            })?
        ),
        Output::Text => {
            outln!(
                "cluster {} reproduced from {} in {seconds:.1} s ({}): {} nodes ready",
                up.cluster,
                a.bundle.display(),
                up.accel,
                up.nodes.len()
            );
            outln!(
                "  image    {} ({}), manifest sha256 {}{}",
                &image.key[..12],
                if image.cache_hit { "cached" } else { "built" },
                &image.manifest_sha256[..12],
                if image.differs.is_empty() {
                    ", same as the bundle's".to_string()
                } else {
                    format!(", {} part(s) differ", image.differs.len())
                }
            );
            outln!(
                "  faults   {}{}",
                if applied.is_empty() {
                    "none".to_string()
                } else {
                    applied
                        .iter()
                        .map(|f| format!("{}: {}", f.node, f.faults))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                match plan.faults.seed {
                    Some(seed) => format!(" (drop seed {seed}, the reporter's)"),
                    None => String::new(),
                }
            );
            outln!("  status   ironclad status {}", up.cluster);
            outln!();
            let w = |s: &str, n: usize| format!("{s:<n$}");
            outln!(
                "  {} {} {} {}",
                w("", 1),
                w("HOST", 13),
                w("REPORTER", 40),
                "HERE"
            );
            for r in &plan.hosts {
                outln!(
                    "  {} {} {} {}",
                    if r.same { " " } else { "≠" },
                    w(&r.what, 13),
                    w(&r.bundle, 40),
                    r.here
                );
            }
        }
    }
    Ok(())
}
