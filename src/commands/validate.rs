//! `egress-probe validate`. PROVISIONAL: not implemented yet.

use crate::cli::ValidateArgs;

/// Runs the subcommand; returns the exit code.
pub async fn main(args: ValidateArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("`validate` is not implemented yet")
}
