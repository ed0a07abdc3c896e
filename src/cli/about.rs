//! What ironclad says about itself: `version` (the report a bug report
//! needs), `completion` (shell completions) and `man` (manual pages), the
//! last two generated from the clap definitions so they never drift from
//! the real flags.

use super::out::{out, outln};
use super::{CliResult, Exit, Failure, Output};
use clap::CommandFactory;
use ironclad_host::version::VersionReport;
use std::path::PathBuf;

/// The commit this binary was built from (`build.rs`), or `unknown`.
pub const COMMIT: &str = env!("IRONCLAD_GIT_COMMIT");

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to write completions for (to stdout).
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `ironclad.1` and one page per subcommand (`ironclad-image-build.1`,
    /// ...) into DIR. Without it, `ironclad.1` goes to stdout.
    #[arg(short = 'd', long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn version(a: VersionArgs) -> CliResult {
    let r = VersionReport::collect(COMMIT);
    match a.output {
        Output::Json => {
            outln!("{}", super::out::json(&r)?);
        }
        Output::Text => out!("{}", version_text(&r)),
    }
    Ok(())
}

fn version_text(r: &VersionReport) -> String {
    let or_why = |v: &Option<String>, why: &Option<String>| match (v, why) {
        (Some(v), _) => v.clone(),
        (None, Some(why)) => format!("unknown ({why})"),
        (None, None) => "unknown".into(),
    };
    let m = &r.machined;
    let machined = match (&m.path, &m.sha256) {
        (Some(p), Some(h)) => format!("{p} (sha256:{h})"),
        _ => or_why(&None, &m.error),
    };
    let image = match &m.image_key {
        Some(k) => format!("{k} (recipe {})", m.recipe),
        None => "unknown (no machined)".into(),
    };
    let accel = match &r.accelerator.reason {
        Some(why) => format!("{} ({why})", r.accelerator.auto),
        None => r.accelerator.auto.to_string(),
    };
    let h = &r.host;
    let distro = h.distribution.as_deref().unwrap_or("unknown distribution");
    format!(
        "ironclad {} (commit {})\n\
         api        {}\n\
         machined   {machined}\n\
         image      {image}\n\
         qemu       {}\n\
         accel      {accel}\n\
         host       Linux {} {}, {distro}\n",
        r.ironclad,
        r.commit,
        r.api_version,
        or_why(&r.qemu.version, &r.qemu.error),
        h.kernel,
        h.arch,
    )
}

pub fn completion(a: CompletionArgs) -> CliResult {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "ironclad", &mut buf);
    to_stdout(&buf)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an
/// error (see [`super::out`]).
fn to_stdout(bytes: &[u8]) -> CliResult {
    super::out::bytes(bytes);
    Ok(())
}

pub fn man(a: ManArgs) -> CliResult {
    let cmd = super::Cli::command();
    let Some(dir) = a.dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buf)
            .map_err(|e| Failure::msg(Exit::Failed, format!("rendering the manual page: {e}")))?;
        return to_stdout(&buf);
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        Failure::msg(
            Exit::Failed,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let mut written = 0;
    write_pages(&cmd, "ironclad", &dir, &mut written)?;
    eprintln!("{written} manual pages in {}", dir.display());
    Ok(())
}

/// `cmd`'s page as `<name>.1`, then each visible subcommand's as
/// `<name>-<sub>.1`, recursively.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut usize,
) -> CliResult {
    let cmd = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|e| Failure::msg(Exit::Failed, format!("rendering {name}.1: {e}")))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf)
        .map_err(|e| Failure::msg(Exit::Failed, format!("writing {}: {e}", path.display())))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
