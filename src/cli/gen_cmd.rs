//! `ironclad gen config|client-cert`. (Placeholder: filled by the PKI work.)

use super::CliResult;

#[derive(Debug, clap::Subcommand)]
pub enum GenCommand {}

pub fn run(cmd: GenCommand) -> CliResult {
    match cmd {}
}
