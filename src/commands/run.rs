//! `egress-probe run`. PROVISIONAL: not implemented yet.

use crate::cli::RunArgs;

/// Runs the subcommand; returns the exit code.
pub async fn main(args: RunArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("`run` is not implemented yet")
}
