//! `egress-probe diff before.json after.json`: what a network change broke, from two
//! `check --output json` reports. Exit 0 nothing regressed, 1 a regression (pass→fail or
//! slower beyond the threshold), 2 a report that cannot be read or has an unknown schema.

use std::time::Duration;

use anyhow::Context;

use crate::cli::{DiffArgs, OutputFormat};
use crate::report;
use crate::report::diff::{self, Options, Thresholds};

use super::{EXIT_FAILED, EXIT_OK};

/// Runs the subcommand; returns the exit code (errors become exit 2 in `main`).
pub async fn main(args: DiffArgs) -> anyhow::Result<u8> {
    let before = report::load(&args.before)?;
    let after = report::load(&args.after)?;
    let min = Duration::try_from_secs_f64(args.threshold_ms / 1000.0).map_err(|_| {
        anyhow::anyhow!(
            "--threshold-ms must be a non-negative number of milliseconds, not {}",
            args.threshold_ms
        )
    })?;
    let opts = Options {
        thresholds: Thresholds {
            ratio: args.threshold_ratio,
            min,
        },
        ignore_timing: args.ignore_timing,
    };
    let d = diff::compare(&before, &after, &opts);
    match args.output {
        OutputFormat::Table => print!("{}", diff::render_table(&d)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&d).context("cannot encode the diff as JSON")?),
    }
    Ok(if d.regressed { EXIT_FAILED } else { EXIT_OK })
}
