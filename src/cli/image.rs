//! `ironclad image build|list|inspect`: the node image cache from the command
//! line. The work is in [`crate::image`].
//!
//! A recipe argument is the name of a built-in recipe (`trixie`) or the path
//! of a recipe file (any value with a `/` or ending in `.yaml`/`.yml`, e.g.
//! `./my.yaml`); nothing is looked up in the current directory by name.

use super::out::{json, outln};
use super::{CliResult, Exit, Failure, Global, Output};
use crate::image::{self, BuildOptions, ErrorClass, ImageError, RecipeRef, cache, prune};
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the node image for a recipe (a cache hit when nothing changed).
    Build(BuildArgs),
    /// List the images in the cache.
    List(ListArgs),
    /// Show the manifest of a cached image, by recipe or by key (prefix).
    Inspect(InspectArgs),
    /// Remove one cached image, by key (prefix); refused while a cluster
    /// under the state root boots from it.
    Rm(RmArgs),
    /// Remove every cached image no cluster under the state root boots from
    /// (and, with --base, the mmdebstrap base trees).
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The image's key, or a prefix of it (at least 4 hex digits).
    key: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Also remove the mmdebstrap base trees (about 500 MiB each; the next
    /// cold build makes its own again).
    #[arg(long)]
    base: bool,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// A built-in recipe (`trixie`), or the path of a recipe file: a value
    /// with a `/` or ending in `.yaml` (`./my.yaml`, `images/trixie.yaml`).
    #[arg(default_value = "trixie")]
    recipe: String,
    /// The machined binary to put in the image (default: beside this executable).
    #[arg(long, env = "IRONCLAD_MACHINED")]
    machined: Option<PathBuf>,
    /// Run mmdebstrap again even if the Debian base tree is cached.
    #[arg(long)]
    refresh_base: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A built-in recipe name or a recipe file path (as for `build`), or a
    /// cache key (at least 4 hex digits).
    #[arg(default_value = "trixie")]
    image: String,
    /// The machined binary (to compute a recipe's key).
    #[arg(long, env = "IRONCLAD_MACHINED")]
    machined: Option<PathBuf>,
}

fn failure(e: ImageError) -> Failure {
    Failure::new(exit_of(&e), e)
}

/// The exit status of an image failure (by [`ImageError::class`]).
pub fn exit_of(e: &ImageError) -> Exit {
    match e.class() {
        ErrorClass::BadInput => Exit::BadInput,
        ErrorClass::MissingDependency => Exit::MissingDependency,
        ErrorClass::Failed => Exit::Failed,
    }
}

pub fn run(g: &Global, cmd: ImageCommand) -> CliResult {
    match cmd {
        ImageCommand::Build(a) => build(a),
        ImageCommand::List(a) => list(a),
        ImageCommand::Inspect(a) => inspect(a),
        ImageCommand::Rm(a) => rm(g, a),
        ImageCommand::Prune(a) => prune_cmd(g, a),
    }
}

fn prune_failure(e: prune::PruneError) -> Failure {
    let exit = if e.is_bad_input() {
        Exit::BadInput
    } else {
        Exit::Failed
    };
    Failure::msg(exit, e)
}

/// The cache root (checked) and which images the clusters under the state
/// root boot from.
fn cache_and_users(
    g: &Global,
) -> Result<
    (
        PathBuf,
        std::collections::BTreeMap<String, Vec<crate::spec::ClusterName>>,
    ),
    Failure,
> {
    let root = cache::cache_root().map_err(|e| failure(e.into()))?;
    cache::check_root(&root).map_err(|e| failure(e.into()))?;
    let users = prune::users(&g.state_root()?).map_err(prune_failure)?;
    Ok((root, users))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rm(g: &Global, a: RmArgs) -> CliResult {
    let (root, users) = cache_and_users(g)?;
    let removed = prune::remove(&root, &a.key, &users).map_err(prune_failure)?;
    match a.output {
        Output::Json => outln!("{}", json(&removed)?),
        Output::Text => outln!(
            "removed image {} ({:.1} MiB)",
            removed.key,
            mib(removed.bytes)
        ),
    }
    Ok(())
}

fn prune_cmd(g: &Global, a: PruneArgs) -> CliResult {
    let (root, users) = cache_and_users(g)?;
    let mut removed = prune::prune(&root, &users, a.dry_run).map_err(prune_failure)?;
    if a.base {
        removed.extend(prune::prune_bases(&root, a.dry_run).map_err(prune_failure)?);
    }
    let kept: Vec<&String> = users.keys().collect();
    match a.output {
        Output::Json => outln!(
            "{}",
            json(&serde_json::json!({
                "dryRun": a.dry_run,
                "removed": removed,
                "keptForClusters": kept,
                "freedBytes": removed.iter().map(|r| r.bytes).sum::<u64>(),
            }))?
        ),
        Output::Text => {
            let verb = if a.dry_run { "would remove" } else { "removed" };
            for r in &removed {
                outln!("{verb} {} ({:.1} MiB)", r.key, mib(r.bytes));
            }
            let total: u64 = removed.iter().map(|r| r.bytes).sum();
            outln!(
                "{verb} {} entries, {:.1} MiB; kept {} image(s) that clusters under the state dir boot from",
                removed.len(),
                mib(total),
                kept.len()
            );
        }
    }
    Ok(())
}

fn build(a: BuildArgs) -> CliResult {
    let opts = BuildOptions {
        machined: a.machined,
        cache_dir: None,
        refresh_base: a.refresh_base,
    };
    let recipe = RecipeRef::parse(&a.recipe);
    // Each build gets its own view, gone before anything else is printed.
    let build = || image::ensure_built(&recipe, &opts, super::progress::image_progress().as_ref());
    let built = match build() {
        // `image build` is the command the error of a damaged entry points
        // to: it drops the entry and builds it again.
        Err(ImageError::Damaged { dir, damage, .. }) => {
            eprintln!(
                "image: the cached image {} is damaged ({damage}); removing it and building again",
                dir.display()
            );
            std::fs::remove_dir_all(&dir).map_err(|e| {
                Failure::failed(miette::miette!("cannot remove {}: {e}", dir.display()))
            })?;
            build()
        }
        other => other,
    }
    .map_err(failure)?;
    match a.output {
        Output::Json => outln!("{}", json(&built)?),
        Output::Text => {
            outln!(
                "image {} ({})",
                built.key,
                if built.cache_hit { "cached" } else { "built" }
            );
            outln!("  recipe     {}", built.recipe);
            outln!("  dir        {}", built.dir.display());
            outln!("  kernel     {}", built.manifest.kernel_version);
            for (name, part) in &built.manifest.parts {
                outln!(
                    "  {name:<16} {:>10} bytes  sha256:{}",
                    part.size,
                    part.sha256
                );
            }
        }
    }
    Ok(())
}

fn list(a: ListArgs) -> CliResult {
    let root = cache::cache_root().map_err(|e| failure(e.into()))?;
    cache::check_root(&root).map_err(|e| failure(e.into()))?;
    let images = cache::list(&root).map_err(|e| failure(e.into()))?;
    match a.output {
        Output::Json => {
            let v: Vec<&image::Manifest> = images.iter().map(|(_, m)| m).collect();
            outln!("{}", json(&v)?);
        }
        Output::Text => {
            if images.is_empty() {
                outln!("no images in {}", root.join("images").display());
            }
            for (dir, m) in &images {
                let size: u64 = m.parts.values().map(|p| p.size).sum();
                outln!(
                    "{}  {:<10} {:<24} {:>6.1} MiB  {}",
                    &m.key[..12],
                    m.recipe.name,
                    m.kernel_version,
                    size as f64 / (1024.0 * 1024.0),
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> CliResult {
    let root = cache::cache_root().map_err(|e| failure(e.into()))?;
    cache::check_root(&root).map_err(|e| failure(e.into()))?;
    if let Some((_, m)) = cache::find(&root, &a.image).map_err(|e| failure(e.into()))? {
        outln!("{}", json(&m)?);
        return Ok(());
    }
    let opts = BuildOptions {
        machined: a.machined,
        ..Default::default()
    };
    let inputs = image::build::inputs(&RecipeRef::parse(&a.image), &opts).map_err(failure)?;
    super::progress::line(&format!("image: recipe {}", inputs.recipe.origin));
    match cache::read_cached(&cache::image_dir(&root, &inputs.key)) {
        Some(m) => {
            outln!("{}", json(&m)?);
            Ok(())
        }
        None => Err(Failure::msg(
            Exit::Failed,
            format!(
                "the image for {} with machined {} (key {}) is not built: run `ironclad image build {}`",
                a.image,
                inputs.machined.display(),
                &inputs.key[..12],
                a.image
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_per_error_kind() {
        let missing = ImageError::MissingTools {
            tools: vec!["mksquashfs".into()],
            packages: vec!["squashfs-tools".into()],
        };
        assert_eq!(failure(missing).exit, Exit::MissingDependency);
        let bad = ImageError::Recipe(image::RecipeError::NotFound { name: "x".into() });
        assert_eq!(failure(bad).exit, Exit::BadInput);
        let io = ImageError::Tree("no kernel".into());
        assert_eq!(failure(io).exit, Exit::Failed);
        let untrusted = ImageError::Cache(cache::CacheError::Untrusted {
            path: "/tmp".into(),
            problem: image::trust::Untrusted::Writable { mode: 0o1777 },
            fix: "x".into(),
        });
        assert_eq!(failure(untrusted).exit, Exit::BadInput);
        let damaged = ImageError::Damaged {
            dir: "/c/images/k".into(),
            damage: cache::Damage {
                part: "rootfs.squashfs".into(),
                detail: "has sha256 a but the manifest says b".into(),
            },
            recipe: "trixie".into(),
        };
        let msg = damaged.to_string();
        assert!(msg.contains("rootfs.squashfs"), "{msg}");
        assert!(msg.contains("ironclad image build trixie"), "{msg}");
        assert_eq!(failure(damaged).exit, Exit::Failed);
    }
}
