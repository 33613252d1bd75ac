//! `egress-probe check`. PROVISIONAL: not implemented yet.

use crate::cli::CheckArgs;

/// Runs the subcommand; returns the exit code.
pub async fn main(args: CheckArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("`check` is not implemented yet")
}
