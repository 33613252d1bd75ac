//! `check` output: the versioned JSON report (read back by `diff`) and the table.
//!
//! Layer: imports `outcome` and `config` only. The folder owns what a human or a script reads
//! after a check: the JSON report and its loader, the one table renderer (`table`), the verdicts
//! (`verdict`) and the before/after comparison (`diff`).

pub mod diff;
pub mod facts;
pub mod table;
pub mod verdict;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ProbeSpec;
use crate::outcome::{Endpoint, Outcome};

pub use facts::render_facts;

/// Version of the JSON report format; bump on incompatible changes. New optional sections
/// (e.g. `detail.media`) are additions older readers skip and this build reads as absent in
/// older reports, so they do not bump it.
///
/// - 1: durations in milliseconds under unit-less keys (`total`, `duration`, `min`...).
/// - 2: the same values, rounded to the microsecond, under keys that say the unit
///   (`total_ms`, `duration_ms`, `min_ms`...). Schema 1 reports are still read (`diff`).
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest report schema this build still reads.
pub const OLDEST_SCHEMA: u32 = 1;

/// A whole `check --output json` document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema: u32,
    /// RFC 3339 time the check started.
    pub started_at: String,
    /// Wall time from the first probe's start to the last result, in ms: with probes run
    /// concurrently this is close to the slowest probe's time.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "micro_rounded")]
    pub wall_ms: Option<f64>,
    pub results: Vec<ProbeResult>,
}

/// `wall_ms` rounded to the microsecond like every other duration in JSON.
fn micro_rounded<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(ms) => s.serialize_some(&((ms * 1000.0).round() / 1000.0)),
        None => s.serialize_none(),
    }
}

/// One probe's line in a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    pub kind: String,
    /// For humans: the target as the config wrote it (URLs without credentials or query).
    pub target: String,
    /// The same target typed, for verdicts (absent in reports written before schema 2).
    #[serde(default)]
    pub endpoint: Endpoint,
    pub outcome: Outcome,
}

impl ProbeResult {
    /// The result of probe `name` running `spec`.
    pub fn of(name: &str, spec: &ProbeSpec, outcome: Outcome) -> ProbeResult {
        ProbeResult {
            name: name.to_string(),
            kind: spec.kind().to_string(),
            target: spec.target(),
            endpoint: spec.endpoint(),
            outcome,
        }
    }
}

impl Report {
    /// A report of `results` for a check that started at `started` (wall clock).
    pub fn new(started: std::time::SystemTime, results: Vec<ProbeResult>) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            started_at: humantime::format_rfc3339_millis(started).to_string(),
            wall_ms: None,
            results,
        }
    }

    /// Whether every probe passed (the `check` exit code is 0 iff this holds).
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(|r| r.outcome.success)
    }
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The cause is part of the message and deliberately not a `source`: `{:#}` at the edge
    // would print it twice ("cannot read (No such file…): No such file…").
    #[error("{path}: cannot read: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a JSON report ({error})")]
    Json { path: PathBuf, error: serde_json::Error },
    #[error("{path}: no \"schema\" field; is this the output of `egress-probe check --output json`?")]
    NoSchema { path: PathBuf },
    #[error("{path}: report schema {found} is not supported by this build (it reads schema {oldest} to {supported}); compare reports written by the same egress-probe version")]
    Schema {
        path: PathBuf,
        found: String,
        oldest: u32,
        supported: u32,
    },
}

/// Reads a `check --output json` report, refusing unknown schema versions before looking at
/// anything else. Schema 1 (unit-less duration keys) reads through the `alias`es on the
/// outcome's fields.
pub fn load(path: &Path) -> Result<Report, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let json = |error| LoadError::Json {
        path: path.to_path_buf(),
        error,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
    let readable = |n: u64| (u64::from(OLDEST_SCHEMA)..=u64::from(SCHEMA_VERSION)).contains(&n);
    match value.get("schema") {
        None => return Err(LoadError::NoSchema { path: path.to_path_buf() }),
        Some(v) if !v.as_u64().is_some_and(readable) => {
            return Err(LoadError::Schema {
                path: path.to_path_buf(),
                found: v.to_string(),
                oldest: OLDEST_SCHEMA,
                supported: SCHEMA_VERSION,
            })
        }
        Some(_) => {}
    }
    serde_json::from_value(value).map_err(json)
}

/// Widest name and target shown in the table; longer ones are shortened with `…`.
const MAX_NAME: usize = 32;
const MAX_TARGET: usize = 48;
const HEADERS: [&str; 6] = ["NAME", "KIND", "TARGET", "RESULT", "TOTAL ms", "FAILURE"];

/// The `check` table: name, kind, target, result, total ms, failing phase/reason. Column
/// widths come from the whole table (bounded), so every row lines up; `colour` adds ANSI
/// colour to the result column only (callers pass it only when stdout is a terminal).
pub fn render_table(results: &[ProbeResult], colour: bool) -> String {
    use table::Align::{Left, Right};
    let rows: Vec<[String; 6]> = results
        .iter()
        .map(|r| {
            [
                table::shorten(&r.name, MAX_NAME),
                r.kind.clone(),
                table::shorten(&r.target, MAX_TARGET),
                if r.outcome.success { "PASS" } else { "FAIL" }.to_string(),
                format!("{:.1}", r.outcome.total.as_secs_f64() * 1000.0),
                r.outcome.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table::render(HEADERS, [Left, Left, Left, Left, Right, Left], &rows, |row, col, padded| {
        if !colour || col != 3 {
            return padded.to_string();
        }
        let code = if results[row].outcome.success { "32" } else { "31;1" };
        format!("\x1b[{code}m{padded}\x1b[0m")
    })
}

/// One line per failed probe with its message, for humans below the table.
pub fn render_failures(results: &[ProbeResult]) -> String {
    let mut out = String::new();
    for r in results {
        if let Some(f) = &r.outcome.failure {
            out.push_str(&format!("{}: {}: {}\n", r.name, f.code(), f.message));
            if let Some(path) = &r.outcome.detail.path {
                out.push_str(&render_path(path));
            }
        }
    }
    out
}

/// One line per probe that streamed media (pass or fail): the call-quality figures a network
/// team compares with the vendor's targets.
pub fn render_media(results: &[ProbeResult]) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    results
        .iter()
        .filter_map(|r| Some((r, r.outcome.detail.media.as_ref().filter(|m| m.sent > 0)?)))
        .map(|(r, m)| {
            let head = format!("{}: media ({}, {} packets of {} ms)", r.name, m.path, m.sent, m.packet.as_millis());
            match (m.received, m.jitter, m.rtt_avg, m.rtt_p95) {
                (1.., Some(jitter), Some(avg), Some(p95)) => format!(
                    "{head}: loss {:.1}% (longest burst {}), jitter {:.1} ms, round trip avg {:.1} / p95 {:.1} ms, MOS {:.2} (R {:.1})\n",
                    m.loss * 100.0,
                    m.longest_loss_burst,
                    ms(jitter),
                    ms(avg),
                    ms(p95),
                    m.mos,
                    m.r_factor
                ),
                _ => format!("{head}: no packet came back\n"),
            }
        })
        .collect()
}

/// A trace that did not reach, as a short indented hop table (TTL, who answered, RTT, what).
pub fn render_path(path: &crate::outcome::details::PathDetails) -> String {
    use table::Align::{Left, Right};
    let rows: Vec<[String; 4]> = path
        .hops
        .iter()
        .map(|h| {
            [
                h.ttl.to_string(),
                h.address.map(|a| a.to_string()).unwrap_or_else(|| "*".into()),
                h.rtt
                    .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                    .unwrap_or_else(|| "-".into()),
                h.answer.clone(),
            ]
        })
        .collect();
    let text = table::render(
        ["HOP", "ADDRESS", "RTT ms", "ANSWER"],
        [Right, Left, Right, Left],
        &rows,
        |_, _, s| s.to_string(),
    );
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, Phase, Reason};
    use std::time::Duration;

    fn result(name: &str, target: &str, failure: Option<Failure>, ms: u64) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            kind: "tcp".into(),
            target: target.into(),
            endpoint: Default::default(),
            outcome: Outcome {
                success: failure.is_none(),
                failure,
                total: Duration::from_millis(ms),
                ..Default::default()
            },
        }
    }

    #[test]
    fn table_columns_line_up_and_failures_show_phase_and_reason() {
        let rows = vec![
            result("a", "127.0.0.1:1", None, 3),
            result(
                "a-much-longer-name",
                "relay.example.test:443",
                Some(Failure::new(Phase::Connect, Reason::Refused, "x")),
                1234,
            ),
        ];
        let t = render_table(&rows, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str, h: &str| l.find(h);
        let result_col = col(lines[0], "RESULT").unwrap();
        assert_eq!(col(lines[1], "PASS"), Some(result_col));
        assert_eq!(col(lines[2], "FAIL"), Some(result_col));
        assert!(lines[2].ends_with("connect/refused"));
        assert!(lines[1].ends_with('-'));
        // Right-aligned totals end in the same column.
        let end_of = |l: &str, s: &str| l.find(s).map(|i| i + s.len());
        assert_eq!(end_of(lines[1], "3.0"), end_of(lines[2], "1234.0"));
        assert!(!t.contains('\x1b'), "no colour unless asked");
        assert!(render_table(&rows, true).contains("\x1b[32mPASS"));
    }

    #[test]
    fn media_streams_get_a_line_of_figures_and_other_probes_none() {
        let mut r = result("call", "udp:127.0.0.1:7", None, 2000);
        assert_eq!(render_media(std::slice::from_ref(&r)), "");
        r.outcome.detail.media = Some(crate::outcome::details::MediaDetails {
            path: "udp_echo".into(),
            packet: Duration::from_millis(20),
            sent: 100,
            received: 95,
            loss: 0.05,
            longest_loss_burst: 1,
            rtt_avg: Some(Duration::from_micros(20_300)),
            rtt_p95: Some(Duration::from_micros(20_500)),
            jitter: Some(Duration::from_micros(200)),
            mos: 3.89,
            r_factor: 76.69,
            ..Default::default()
        });
        assert_eq!(
            render_media(&[r]),
            "call: media (udp_echo, 100 packets of 20 ms): loss 5.0% (longest burst 1), jitter 0.2 ms, round trip avg 20.3 / p95 20.5 ms, MOS 3.89 (R 76.7)\n"
        );
    }

    #[test]
    fn a_media_stream_of_which_nothing_came_back_says_so_instead_of_zero_figures() {
        let mut r = result("call", "udp:127.0.0.1:7", None, 2000);
        r.outcome.detail.media = Some(crate::outcome::details::MediaDetails {
            path: "udp_echo".into(),
            packet: Duration::from_millis(20),
            sent: 50,
            loss: 1.0,
            mos: 1.0,
            ..Default::default()
        });
        assert_eq!(
            render_media(&[r]),
            "call: media (udp_echo, 50 packets of 20 ms): no packet came back\n"
        );
    }

    #[test]
    fn long_targets_are_shortened() {
        let long = "x".repeat(100);
        let t = render_table(&[result("a", &long, None, 1)], false);
        assert!(t.lines().all(|l| l.chars().count() < 100), "{t}");
        assert!(t.contains('…'));
    }
}
