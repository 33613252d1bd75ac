//! `egress-probe check`: run every (or each `--probe NAME`) probe once, concurrently within
//! `defaults.concurrency`, print a table or the versioned JSON report, then plain-language
//! verdicts. Exit 0 if all pass, 1 if any fails, 2 on a config or usage error (an unknown
//! `--probe` name included).
//!
//! Terminal niceties only on a terminal: the live progress line (stderr) and colour (stdout,
//! unless `NO_COLOR` is set). `--quiet` keeps only the table or JSON.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::cli::{CheckArgs, OutputFormat};
use crate::config::{Config, ProbeConfig};
use crate::probe;
use crate::report::{self, ProbeResult, Report};
use crate::schedule::Launcher;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// Runs the subcommand; returns the exit code.
pub async fn main(args: CheckArgs) -> anyhow::Result<u8> {
    // Keep the demo's responder alive until every probe has run.
    let loaded = match args.preset.request() {
        Some(req) => super::load_preset(&req),
        None => super::load_config("check", args.demo, args.config.as_deref()).await?,
    };
    let (config, _demo) = match loaded {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    if args.push && config.push.is_empty() {
        eprintln!("egress-probe check: --push given but the config has no `push:` receivers");
        return Ok(EXIT_USAGE);
    }
    let selected = match select(&config, &args.probes) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("egress-probe check: {message}");
            return Ok(EXIT_USAGE);
        }
    };

    let started = SystemTime::now();
    let progress = progress_line(selected.len() as u64, !args.quiet && std::io::stderr().is_terminal());
    let clock = Instant::now();
    let mut results = run_all(&config, &selected, &progress).await;
    if args.push {
        results.extend(push_rows(&config, &selected, &results).await?);
    }
    let wall = clock.elapsed();
    // Left on screen at N/N: clearing it right after the last `inc` showed the last frame the
    // 100 ms ticker happened to draw (e.g. 9/11) as the final state.
    progress.finish_with_message("");
    let mut report = Report::new(started, results);
    report.wall_ms = Some(crate::outcome::ms(wall));

    match args.output {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !args.quiet {
                for v in crate::report::verdict::verdicts(&report.results) {
                    eprintln!("{v}");
                }
            }
        }
        OutputFormat::Table => {
            let colour = crate::cli::colour_on(std::io::stdout().is_terminal());
            print!("{}", report::render_table(&report.results, colour));
            if !args.quiet {
                // Call quality, then the other results a table cell cannot hold, one block.
                let lines = report::render_media(&report.results) + &report::render_facts(&report.results);
                if !lines.is_empty() {
                    print!("\n{lines}");
                }
                let failures = report::render_failures(&report.results);
                if !failures.is_empty() {
                    print!("\n{failures}");
                }
                let verdicts = crate::report::verdict::verdicts(&report.results);
                if !verdicts.is_empty() {
                    println!();
                    for v in verdicts {
                        println!("{v}");
                    }
                }
            }
        }
    }
    // An ICE agent still gathering at its deadline is released in the background; exiting
    // now would leave its TURN allocation on the server until the lifetime runs out.
    let left = probe::cleanup::wait(CLEANUP_BOUND).await;
    if left > 0 {
        eprintln!(
            "egress-probe check: {left} ICE agent(s) still gathering after {CLEANUP_BOUND:?}; their allocations expire on the server"
        );
    }
    Ok(if report.all_passed() { EXIT_OK } else { EXIT_FAILED })
}

/// `--push`: the families of this check's results, written once to every receiver; one row each.
async fn push_rows(config: &Config, probes: &[ProbeConfig], results: &[ProbeResult]) -> anyhow::Result<Vec<ProbeResult>> {
    let metrics = Arc::new(crate::metrics::Metrics::new(config)?);
    for (p, r) in probes.iter().zip(results) {
        metrics.observe(p, &r.outcome);
    }
    Ok(crate::push::check(config, &metrics)
        .await
        .into_iter()
        .map(|row| ProbeResult {
            name: row.name,
            kind: "remote_write".into(),
            target: row.target,
            endpoint: row.endpoint,
            outcome: row.outcome,
        })
        .collect())
}

/// How long `check` waits at exit for background releases (ICE agents still gathering).
const CLEANUP_BOUND: Duration = Duration::from_secs(10);

/// The probes to run: all, or the named ones in config order. Unknown names are an error.
fn select(config: &Config, names: &[String]) -> Result<Vec<ProbeConfig>, String> {
    if config.probes.is_empty() {
        return Err("the config has no probes".into());
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !config.probes.iter().any(|p| &p.name == *n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
        return Err(format!("unknown probe {} (configured: {})", unknown.join(", "), known.join(", ")));
    }
    Ok(config
        .probes
        .iter()
        .filter(|p| names.is_empty() || names.contains(&p.name))
        .cloned()
        .collect())
}

/// A progress line on stderr, hidden when not wanted (not a terminal, or `--quiet`).
fn progress_line(len: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos}/{len} probes done {wide_msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Runs `probes` concurrently (bounded by `defaults.concurrency`); results in config order.
/// Each probe is its own task (the scheduler's [`Launcher`]), so TLS handshakes and ICE
/// gathering use every core instead of queueing behind each other on one task: the check takes
/// about as long as its slowest probe. A probe that panics reads `internal/panic`.
async fn run_all(config: &Config, probes: &[ProbeConfig], progress: &ProgressBar) -> Vec<ProbeResult> {
    let launcher = Launcher::new(config);
    let runs = probes.iter().map(|p| {
        let run = launcher.spawn(Arc::new(p.clone()));
        async move {
            let outcome = run.await;
            let verdict = if outcome.success { "ok" } else { "FAIL" };
            progress.set_message(format!("{} {verdict}", p.name));
            progress.inc(1);
            ProbeResult::of(&p.name, &p.spec, outcome)
        }
    });
    futures::future::join_all(runs).await
}
