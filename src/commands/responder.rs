//! `egress-probe responder`. PROVISIONAL: not implemented yet.

use crate::cli::ResponderArgs;

/// Runs the subcommand; returns the exit code.
pub async fn main(args: ResponderArgs) -> anyhow::Result<u8> {
    let _ = args;
    anyhow::bail!("`responder` is not implemented yet")
}
