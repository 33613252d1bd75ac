//! `egress-probe validate --config FILE`: load the file exactly as `run` and `check` would
//! (secret references included) and report every problem, so a config can be checked in CI or
//! before a reload without probing anything.
//!
//! Exit 0 printing `FILE: ok (N probes)` to stdout, or exit 2 printing one
//! `FILE:LINE:COLUMN: message` per problem to stderr (`FILE: message` when the file cannot be
//! read at all).

use crate::cli::ValidateArgs;
use crate::config;

use super::{EXIT_OK, EXIT_USAGE};

/// Runs the subcommand; returns the exit code.
pub async fn main(args: ValidateArgs) -> anyhow::Result<u8> {
    match config::load(&args.config).await {
        Ok(c) => {
            let n = c.probes.len();
            println!("{}: ok ({n} probe{})", args.config.display(), if n == 1 { "" } else { "s" });
            Ok(EXIT_OK)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(EXIT_USAGE)
        }
    }
}
