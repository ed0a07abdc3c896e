//! `ironclad image build|list|inspect`: the node image cache from the command
//! line. The work is in [`crate::image`].

use super::{CliResult, Exit, Failure, Output};
use crate::image::{self, BuildOptions, ImageError, RecipeRef, StderrProgress, cache};
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the node image for a recipe (a cache hit when nothing changed).
    Build(BuildArgs),
    /// List the images in the cache.
    List(ListArgs),
    /// Show the manifest of a cached image, by recipe or by key (prefix).
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Recipe name (`trixie` → images/trixie.yaml) or path to a recipe file.
    #[arg(default_value = "trixie")]
    recipe: String,
    /// The machined binary to put in the image (default: beside this executable).
    #[arg(long, env = "IRONCLAD_MACHINED")]
    machined: Option<PathBuf>,
    /// Run mmdebstrap again even if the Debian base tree is cached.
    #[arg(long)]
    refresh_base: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Recipe name or path, or a cache key (at least 4 hex digits).
    #[arg(default_value = "trixie")]
    image: String,
    /// The machined binary (to compute a recipe's key).
    #[arg(long, env = "IRONCLAD_MACHINED")]
    machined: Option<PathBuf>,
}

fn failure(e: ImageError) -> Failure {
    let exit = if e.is_missing_dependency() {
        Exit::MissingDependency
    } else if e.is_bad_input() {
        Exit::BadInput
    } else {
        Exit::Failed
    };
    Failure::new(exit, miette::miette!("{e}"))
}

fn json(v: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(v).map_err(|e| Failure::failed(miette::miette!("{e}")))
}

pub fn run(cmd: ImageCommand) -> CliResult {
    match cmd {
        ImageCommand::Build(a) => build(a),
        ImageCommand::List(a) => list(a),
        ImageCommand::Inspect(a) => inspect(a),
    }
}

fn build(a: BuildArgs) -> CliResult {
    let opts = BuildOptions {
        machined: a.machined,
        cache_dir: None,
        refresh_base: a.refresh_base,
    };
    let built = image::ensure_built(&RecipeRef::parse(&a.recipe), &opts, &StderrProgress)
        .map_err(failure)?;
    match a.output {
        Output::Json => println!("{}", json(&built)?),
        Output::Text => {
            println!(
                "image {} ({})",
                built.key,
                if built.cache_hit { "cached" } else { "built" }
            );
            println!("  dir        {}", built.dir.display());
            println!("  kernel     {}", built.manifest.kernel_version);
            for (name, part) in &built.manifest.parts {
                println!(
                    "  {name:<16} {:>10} bytes  sha256:{}",
                    part.size, part.sha256
                );
            }
        }
    }
    Ok(())
}

fn list(a: ListArgs) -> CliResult {
    let root = cache::cache_root().map_err(|e| failure(e.into()))?;
    let images = cache::list(&root).map_err(|e| failure(e.into()))?;
    match a.output {
        Output::Json => {
            let v: Vec<&image::Manifest> = images.iter().map(|(_, m)| m).collect();
            println!("{}", json(&v)?);
        }
        Output::Text => {
            if images.is_empty() {
                println!("no images in {}", root.join("images").display());
            }
            for (dir, m) in &images {
                let size: u64 = m.parts.values().map(|p| p.size).sum();
                println!(
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
    if let Some((_, m)) = cache::find(&root, &a.image).map_err(|e| failure(e.into()))? {
        println!("{}", json(&m)?);
        return Ok(());
    }
    let opts = BuildOptions {
        machined: a.machined,
        ..Default::default()
    };
    let inputs = image::build::inputs(&RecipeRef::parse(&a.image), &opts).map_err(failure)?;
    match cache::read_cached(&cache::image_dir(&root, &inputs.key)) {
        Some(m) => {
            println!("{}", json(&m)?);
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
    }
}
