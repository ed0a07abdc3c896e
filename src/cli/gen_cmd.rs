//! `ironclad gen config|client-cert`: write a cluster's secrets, machine configs
//! and client config, or mint a further API client certificate. The work is in
//! [`crate::configdir`] and [`crate::pki`]; this file parses flags and prints.

use super::out::outln;
use super::{CliResult, Exit, Failure, Output};
use crate::configdir::{self, ConfigDirError};
use crate::pki::{self, CaKind, ClientRole, PkiError};
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum GenCommand {
    /// Generate (or complete) the secrets, one machine config per node, an admin
    /// client certificate and a client config into a directory. Existing
    /// secrets in it are kept.
    Config(ConfigArgs),
    /// Mint a further API client certificate and key from an existing secrets dir.
    ClientCert(ClientCertArgs),
}

/// The directory a `gen` command writes into.
#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The directory to write into (created if needed).
    #[arg(
        short = 'd',
        long = "dir",
        value_name = "DIR",
        required_unless_present = "old_out"
    )]
    dir: Option<PathBuf>,
    /// The old spelling of `--dir`: refused with a hint.
    #[arg(long = "out", hide = true, value_name = "DIR")]
    old_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The cluster file. Without it, the built-in default cluster (1 control plane, 1 worker).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[command(flatten)]
    dir: DirArg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t, value_parser = output_of_gen)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ClientCertArgs {
    /// The role the certificate grants: admin or reader.
    #[arg(long)]
    role: String,
    /// The secrets directory of the cluster (DIR/secrets of `gen config`).
    #[arg(long)]
    secrets: PathBuf,
    #[command(flatten)]
    dir: DirArg,
    /// The certificate's common name (also the file names); defaults to the role.
    #[arg(long)]
    name: Option<String>,
    /// Replace `<name>.crt` and `<name>.key` if they already exist.
    #[arg(long)]
    force: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t, value_parser = output_of_gen)]
    output: Output,
}

/// `-o` of `gen` used to be the directory: a value that is not a format
/// gets the new spelling in its error.
fn output_of_gen(s: &str) -> Result<Output, String> {
    use clap::ValueEnum;
    Output::from_str(s, false).map_err(|_| {
        format!(
            "{s:?} is not an output format (text or json); the directory is given with --dir/-d"
        )
    })
}

/// The directory of `--dir`; the old `--out` is refused with the new spelling.
fn target_dir(dir: Option<PathBuf>, old_out: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match (dir, old_out) {
        (_, Some(old)) => Err(Failure::msg(
            Exit::BadInput,
            format!(
                "--out is now --dir (or -d): ironclad gen ... --dir {}; -o/--output chooses text or json in every command",
                old.display()
            ),
        )),
        (Some(dir), None) => Ok(dir),
        (None, None) => Err(Failure::msg(Exit::BadInput, "--dir DIR is required")),
    }
}

pub fn run(cmd: GenCommand) -> CliResult {
    match cmd {
        GenCommand::Config(args) => config(args),
        GenCommand::ClientCert(args) => client_cert(args),
    }
}

fn dir_failure(e: ConfigDirError) -> Failure {
    let exit = if e.is_bad_input() {
        Exit::BadInput
    } else {
        Exit::Failed
    };
    Failure::new(exit, miette::Report::msg(error_chain(&e)))
}

fn pki_failure(e: PkiError) -> Failure {
    let exit = if e.is_bad_input() {
        Exit::BadInput
    } else {
        Exit::Failed
    };
    Failure::new(exit, miette::Report::msg(error_chain(&e)))
}

/// The error and its sources on one line (the top message already includes
/// the direct I/O cause for our own error types, so duplicates are skipped).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

fn config(args: ConfigArgs) -> CliResult {
    let out = target_dir(args.dir.dir, args.dir.old_out)?;
    let cluster = match &args.file {
        Some(file) => crate::spec::parse_cluster_file(file).map_err(Failure::bad_input)?,
        None => crate::spec::default_cluster(),
    };
    let report = configdir::generate(&cluster, &out).map_err(dir_failure)?;
    match args.output {
        Output::Json => outln!("{}", super::out::json(&report)?),
        Output::Text => {
            let source = args
                .file
                .as_ref()
                .map_or("the built-in default".to_string(), |f| {
                    f.display().to_string()
                });
            outln!(
                "cluster {:?} (from {source}) -> {}",
                report.cluster,
                report.dir.display()
            );
            outln!(
                "secrets: {} created, {} kept in {}",
                report.secrets.created.len(),
                report.secrets.kept.len(),
                report.dir.join(configdir::SECRETS_DIR).display()
            );
            for p in &report.secrets.created {
                outln!("  created {}", p.display());
            }
            for n in &report.nodes {
                outln!(
                    "node {:<20} {:<13} {:<15} {}",
                    n.name,
                    n.role.as_str(),
                    n.address,
                    n.config.display()
                );
            }
            outln!(
                "admin client certificate: {} ({})",
                report.admin_cert.display(),
                if report.admin_kept { "kept" } else { "issued" }
            );
            outln!("client config: {}", report.client_config.display());
            for p in &report.stale_nodes {
                outln!(
                    "note: {} belongs to no node of this cluster any more (left in place)",
                    p.display()
                );
            }
        }
    }
    Ok(())
}

/// What `gen client-cert` wrote, for `--output json`.
#[derive(serde::Serialize)]
struct ClientCertReport {
    role: ClientRole,
    organization: &'static str,
    common_name: String,
    cert: PathBuf,
    key: PathBuf,
}

fn client_cert(args: ClientCertArgs) -> CliResult {
    let out = target_dir(args.dir.dir.clone(), args.dir.old_out.clone())?;
    let role: ClientRole = args
        .role
        .parse()
        .map_err(|e: ironclad_contract::role::UnknownRole| pki_failure(e.into()))?;
    let cn = args.name.unwrap_or_else(|| role.as_str().to_string());
    // The name becomes file names: keep it to a safe, portable set.
    let safe = !cn.is_empty()
        && cn.len() <= 64
        && !cn.starts_with('.')
        && cn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if !safe {
        return Err(Failure::msg(
            Exit::BadInput,
            format!(
                "--name {cn:?} is not usable: use 1 to 64 letters, digits, '-', '_', '.', '@' (not starting with '.')"
            ),
        ));
    }
    let ca = pki::load_ca(&args.secrets, CaKind::Os).map_err(pki_failure)?;
    if !out.is_dir() {
        crate::fsutil::create_private_dir(&out).map_err(|source| {
            pki_failure(PkiError::Io {
                action: "create directory",
                path: out.clone(),
                source,
            })
        })?;
    }
    // The key goes there: refuse a directory others could write to.
    configdir::check_private_output(&out).map_err(dir_failure)?;
    for existing in [out.join(format!("{cn}.crt")), out.join(format!("{cn}.key"))] {
        if existing.exists() && !args.force {
            return Err(Failure::msg(
                Exit::BadInput,
                format!(
                    "{} already exists; choose another --name or pass --force to replace it",
                    existing.display()
                ),
            ));
        }
    }
    let issued = pki::issue_client_cert(&ca, role, &cn).map_err(pki_failure)?;
    let (cert, key) = pki::write_client_cert(&out, &cn, &issued).map_err(pki_failure)?;
    match args.output {
        Output::Json => outln!(
            "{}",
            super::out::json(&ClientCertReport {
                role,
                organization: role.organization(),
                common_name: cn,
                cert,
                key,
            })?
        ),
        Output::Text => {
            outln!(
                "client certificate for {cn:?} with role {} ({})",
                role,
                role.organization()
            );
            outln!("  certificate: {}", cert.display());
            outln!("  key:         {}", key.display());
        }
    }
    Ok(())
}
