//! Before/after comparison of two `check --output json` reports, for a network team that
//! changed a firewall and wants to see what broke: pass→fail, fail→pass, a changed failure
//! reason, probes that appeared or disappeared, and timing changes beyond a threshold.
//!
//! Probes are matched by name. Timing is compared only when the probe passed in both reports
//! (a failure's timing is the failure, e.g. the timeout): the total and every phase present in
//! both, each against [`Thresholds`] (default: +50 % **and** at least +20 ms, so neither a
//! 1 ms → 2 ms blip nor 2 % of a slow probe counts). What counts as a regression (exit 1):
//! pass→fail, a probe that is slower beyond the threshold (unless timing is ignored).
//! A changed failure reason, fail→pass, appeared/disappeared and "faster" are reported but are
//! not regressions.

use std::time::Duration;

use serde::Serialize;

use crate::outcome::{Outcome, Phase};
use crate::report::{table, ProbeResult, Report, SCHEMA_VERSION};

/// When a timing change counts: both the relative and the absolute growth must be exceeded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Relative change, e.g. 0.5 = +50 %.
    pub ratio: f64,
    /// Absolute change.
    pub min: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            ratio: 0.5,
            min: Duration::from_millis(20),
        }
    }
}

/// What changed about one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// pass → fail.
    Regressed,
    /// Slower beyond the threshold (total or one phase).
    Slower,
    /// fail → fail with another phase/reason.
    ReasonChanged,
    /// fail → pass.
    Fixed,
    /// Faster beyond the threshold.
    Faster,
    /// Only in the after report.
    Appeared,
    /// Only in the before report.
    Disappeared,
    /// Same name, another kind or target: compared anyway, noted.
    TargetChanged,
}

impl ChangeKind {
    /// The word in the table: the same as in `--output json` (a test keeps them equal).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Regressed => "regressed",
            ChangeKind::Slower => "slower",
            ChangeKind::ReasonChanged => "reason_changed",
            ChangeKind::Fixed => "fixed",
            ChangeKind::Faster => "faster",
            ChangeKind::Appeared => "appeared",
            ChangeKind::Disappeared => "disappeared",
            ChangeKind::TargetChanged => "target_changed",
        }
    }
}

/// One line of the diff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub probe: String,
    pub kind: ChangeKind,
    /// For timing changes: the phase, or `None` for the total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `pass`, `phase/reason`, a time in ms, a target, or `-` when absent.
    pub before: String,
    pub after: String,
    /// Whether this change makes `diff` exit 1.
    pub regression: bool,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    /// Report format version of this output (same numbering as the reports).
    pub schema: u32,
    pub regressed: bool,
    pub changes: Vec<Change>,
    /// Probes present in both reports with nothing to report.
    pub unchanged: usize,
}

/// Options of a comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Options {
    pub thresholds: Thresholds,
    /// Report timing changes but never count them as regressions.
    pub ignore_timing: bool,
}

/// Compares two reports probe by probe (matched by name).
pub fn compare(before: &Report, after: &Report, opts: &Options) -> Diff {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for b in &before.results {
        match after.results.iter().find(|a| a.name == b.name) {
            Some(a) => {
                let n = changes.len();
                compare_one(b, a, opts, &mut changes);
                if changes.len() == n {
                    unchanged += 1;
                }
            }
            None => changes.push(change(
                &b.name,
                ChangeKind::Disappeared,
                None,
                status(&b.outcome),
                "-".into(),
                false,
            )),
        }
    }
    for a in after.results.iter().filter(|a| !before.results.iter().any(|b| b.name == a.name)) {
        changes.push(change(&a.name, ChangeKind::Appeared, None, "-".into(), status(&a.outcome), false));
    }
    // Regressions first, then by kind; the sort is stable so report order holds within a kind.
    changes.sort_by_key(|c| (!c.regression, c.kind));
    Diff {
        schema: SCHEMA_VERSION,
        regressed: changes.iter().any(|c| c.regression),
        changes,
        unchanged,
    }
}

fn change(probe: &str, kind: ChangeKind, phase: Option<Phase>, before: String, after: String, regression: bool) -> Change {
    Change {
        probe: probe.to_string(),
        kind,
        phase,
        before,
        after,
        regression,
    }
}

/// `pass` or `phase/reason`.
fn status(o: &Outcome) -> String {
    match &o.failure {
        Some(f) if !o.success => f.code(),
        _ if o.success => "pass".into(),
        _ => "fail".into(),
    }
}

fn compare_one(b: &ProbeResult, a: &ProbeResult, opts: &Options, out: &mut Vec<Change>) {
    if b.kind != a.kind || b.target != a.target {
        let show = |r: &ProbeResult| format!("{} {}", r.kind, r.target);
        out.push(change(&b.name, ChangeKind::TargetChanged, None, show(b), show(a), false));
    }
    let (sb, sa) = (status(&b.outcome), status(&a.outcome));
    match (b.outcome.success, a.outcome.success) {
        (true, false) => out.push(change(&b.name, ChangeKind::Regressed, None, sb, sa, true)),
        (false, true) => out.push(change(&b.name, ChangeKind::Fixed, None, sb, sa, false)),
        (false, false) if sb != sa => out.push(change(&b.name, ChangeKind::ReasonChanged, None, sb, sa, false)),
        (false, false) => {}
        (true, true) => {
            timing(&b.name, None, b.outcome.total, a.outcome.total, opts, out);
            for phase in phases_in_order(&b.outcome) {
                if let (Some(tb), Some(ta)) = (b.outcome.phase_time(phase), a.outcome.phase_time(phase)) {
                    timing(&b.name, Some(phase), tb, ta, opts, out);
                }
            }
        }
    }
}

fn phases_in_order(o: &Outcome) -> Vec<Phase> {
    let mut v: Vec<Phase> = Vec::new();
    for p in &o.phases {
        if !v.contains(&p.phase) {
            v.push(p.phase);
        }
    }
    v
}

/// Whether `to` is beyond the thresholds compared with `from` (growth in both senses).
fn beyond(from: Duration, to: Duration, t: &Thresholds) -> bool {
    // 1 ns of slack so that exactly +50 % counts despite float rounding.
    to >= from + t.min && to.as_secs_f64() + 1e-9 >= from.as_secs_f64() * (1.0 + t.ratio)
}

fn timing(probe: &str, phase: Option<Phase>, before: Duration, after: Duration, opts: &Options, out: &mut Vec<Change>) {
    let t = &opts.thresholds;
    let kind = if beyond(before, after, t) {
        ChangeKind::Slower
    } else if beyond(after, before, t) {
        ChangeKind::Faster
    } else {
        return;
    };
    let pct = if before.is_zero() {
        String::new()
    } else {
        format!(" ({:+.0}%)", (after.as_secs_f64() / before.as_secs_f64() - 1.0) * 100.0)
    };
    let regression = kind == ChangeKind::Slower && !opts.ignore_timing;
    out.push(change(probe, kind, phase, ms(before), format!("{}{pct}", ms(after)), regression));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The human table: one line per change, stable column widths, a summary line.
pub fn render_table(d: &Diff) -> String {
    let rows: Vec<[String; 5]> = d
        .changes
        .iter()
        .map(|c| {
            let mark = if c.regression { "!" } else { " " };
            [
                format!("{mark}{}", c.kind.as_str()),
                c.probe.clone(),
                match (c.kind, c.phase) {
                    (ChangeKind::Slower | ChangeKind::Faster, None) => "total".into(),
                    (_, Some(p)) => p.to_string(),
                    _ => "-".into(),
                },
                c.before.clone(),
                c.after.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    if !d.changes.is_empty() {
        out = table::render(
            ["CHANGE", "PROBE", "PHASE", "BEFORE", "AFTER"],
            [table::Align::Left; 5],
            &rows,
            |_, _, s| s.to_string(),
        );
    }
    let regressions = d.changes.iter().filter(|c| c.regression).count();
    out.push_str(&format!(
        "{} regression(s), {} other change(s), {} probe(s) unchanged{}\n",
        regressions,
        d.changes.len() - regressions,
        d.unchanged,
        if d.regressed { "" } else { ": nothing regressed" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, PhaseTiming, Reason};

    fn result(name: &str, total_ms: u64, tls_ms: u64, failure: Option<(Phase, Reason)>) -> ProbeResult {
        let ms = Duration::from_millis;
        ProbeResult {
            name: name.into(),
            kind: "tls".into(),
            target: "relay.example.com:443".into(),
            endpoint: Default::default(),
            outcome: Outcome {
                success: failure.is_none(),
                phases: vec![
                    PhaseTiming {
                        phase: Phase::Connect,
                        duration: ms(1),
                    },
                    PhaseTiming {
                        phase: Phase::Tls,
                        duration: ms(tls_ms),
                    },
                ],
                failure: failure.map(|(p, r)| Failure::new(p, r, "x")),
                total: ms(total_ms),
                detail: Default::default(),
            },
        }
    }

    fn report(results: Vec<ProbeResult>) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            started_at: "2025-01-01T00:00:00Z".into(),
            wall_ms: None,
            results,
        }
    }

    fn kinds(d: &Diff) -> Vec<(String, ChangeKind, Option<Phase>)> {
        d.changes.iter().map(|c| (c.probe.clone(), c.kind, c.phase)).collect()
    }

    #[test]
    fn each_change_kind_has_one_name_in_the_table_and_in_json() {
        use ChangeKind::*;
        for k in [
            Regressed,
            Slower,
            ReasonChanged,
            Fixed,
            Faster,
            Appeared,
            Disappeared,
            TargetChanged,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::from(k.as_str()), "{k:?}");
        }
    }

    #[test]
    fn threshold_needs_both_ratio_and_absolute_growth() {
        let t = Thresholds::default();
        let ms = Duration::from_millis;
        assert!(!beyond(ms(1), ms(15), &t), "+1400% but only +14 ms");
        assert!(!beyond(ms(100), ms(140), &t), "+40 ms but only +40%");
        assert!(beyond(ms(100), ms(150), &t));
        assert!(beyond(ms(0), ms(20), &t));
    }

    #[test]
    fn each_change_kind_is_detected() {
        let before = report(vec![
            result("breaks", 10, 5, None),
            result("heals", 10, 5, Some((Phase::Connect, Reason::Timeout))),
            result("moves", 10, 5, Some((Phase::Connect, Reason::Timeout))),
            result("slows", 10, 5, None),
            result("same", 10, 5, None),
            result("gone", 10, 5, None),
        ]);
        let after = report(vec![
            result("breaks", 10, 5, Some((Phase::Tls, Reason::PinMismatch))),
            result("heals", 10, 5, None),
            result("moves", 10, 5, Some((Phase::Tls, Reason::UntrustedIssuer))),
            result("slows", 60, 45, None),
            result("same", 12, 6, None),
            result("new", 10, 5, None),
        ]);
        let d = compare(&before, &after, &Options::default());
        assert!(d.regressed);
        assert_eq!(d.unchanged, 1);
        assert_eq!(
            kinds(&d),
            vec![
                ("breaks".into(), ChangeKind::Regressed, None),
                ("slows".into(), ChangeKind::Slower, None),
                ("slows".into(), ChangeKind::Slower, Some(Phase::Tls)),
                ("moves".into(), ChangeKind::ReasonChanged, None),
                ("heals".into(), ChangeKind::Fixed, None),
                ("new".into(), ChangeKind::Appeared, None),
                ("gone".into(), ChangeKind::Disappeared, None),
            ]
        );
        assert_eq!(d.changes[0].before, "pass");
        assert_eq!(d.changes[0].after, "tls/pin_mismatch");
        assert_eq!(d.changes[1].after, "60.0 ms (+500%)");
    }

    #[test]
    fn faster_or_fixed_or_ignored_timing_is_not_a_regression() {
        let before = report(vec![
            result("a", 100, 80, None),
            result("b", 10, 5, Some((Phase::Connect, Reason::Refused))),
        ]);
        let after = report(vec![result("a", 20, 5, None), result("b", 10, 5, None)]);
        let d = compare(&before, &after, &Options::default());
        assert!(!d.regressed, "{d:#?}");
        assert!(d.changes.iter().any(|c| c.kind == ChangeKind::Faster));
        let slower = compare(
            &after,
            &before,
            &Options {
                ignore_timing: true,
                ..Default::default()
            },
        );
        assert!(slower.changes.iter().any(|c| c.kind == ChangeKind::Slower && !c.regression));
        assert!(slower.changes.iter().any(|c| c.kind == ChangeKind::Regressed));
    }

    #[test]
    fn table_has_stable_columns_and_a_summary() {
        let before = report(vec![result("a-long-probe-name", 10, 5, None)]);
        let after = report(vec![result("a-long-probe-name", 10, 5, Some((Phase::Connect, Reason::Refused)))]);
        let text = render_table(&compare(&before, &after, &Options::default()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("PROBE"), lines[1].find("a-long-probe-name"));
        assert!(lines[1].starts_with("!regressed"));
        assert_eq!(lines[2], "1 regression(s), 0 other change(s), 0 probe(s) unchanged");
        let same = render_table(&compare(&before, &before, &Options::default()));
        assert_eq!(
            same,
            "0 regression(s), 0 other change(s), 1 probe(s) unchanged: nothing regressed\n"
        );
    }
}
