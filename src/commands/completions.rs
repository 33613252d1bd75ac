//! `egress-probe completions SHELL` and the hidden `egress-probe man`: the shell completion
//! script and the man page, generated from the one clap definition (`cli.rs`) so they can never
//! list a flag the binary does not have. `scripts/package` installs both in the Debian package.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

use super::EXIT_OK;

/// Prints the completion script for `args.shell` on stdout.
pub fn main(args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "egress-probe", &mut std::io::stdout());
    Ok(EXIT_OK)
}

/// Prints the man page (roff) on stdout.
pub fn man() -> anyhow::Result<u8> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(EXIT_OK)
}
