//! `egress-probe diff`. PROVISIONAL: not implemented yet.

use crate::cli::DiffArgs;

/// Runs the subcommand; returns the exit code.
pub async fn main(args: DiffArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("`diff` is not implemented yet")
}
