//! The default per-probe series, kept by hand and written straight to text.
//!
//! These are most of what `/metrics` holds: `_success`, `_duration_seconds` (8 buckets),
//! `_runs_total{result}`, `_failures_total{phase,reason}`, `_skipped_runs_total` and `_info`,
//! 16 series for a TCP probe, 160,000 for 10,000 probes. Kept in the `prometheus` crate, every
//! series is a hash-map entry with its own copies of every label string, and encoding first
//! copies every series into the crate's protobuf-shaped model (`gather()`) before its text
//! encoder writes them: 5 ms for 1,000 probes, tens of MB transient for 10,000. Here a probe is
//! one [`Row`]: its label values once (already escaped), its numbers under one small mutex
//! (a probe's loop writes, a scrape reads: never contended), and [`ProbeTable::encode_into`]
//! appends the text exposition to one buffer.
//!
//! The families, their HELP text and the label order are what the crate wrote (labels sorted
//! by name, `le` last), so scrapes, tests and dashboards see the same series; a series appears
//! when the crate's would have (the daemon's run and skip counters at 0 from the start, the
//! rest from a probe's first result). [`ProbeTable::families`] builds the crate's model of the
//! same values for the remote_write push, once per push interval rather than per scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::DURATION_BUCKETS;
use crate::outcome::Outcome;

const SUCCESS: (&str, &str) = (
    "egress_probe_success",
    "Whether the last run of the probe succeeded (1) or failed (0).",
);
const DURATION: (&str, &str) = ("egress_probe_duration_seconds", "Wall time of whole probe runs.");
const RUNS: (&str, &str) = ("egress_probe_runs_total", "Probe runs completed, by result (success or failure).");
const FAILURES: (&str, &str) = (
    "egress_probe_failures_total",
    "Failed probe runs by failing phase and reason (e.g. connect/timeout = dropped, connect/refused = rejected).",
);
const SKIPPED: (&str, &str) = (
    "egress_probe_skipped_runs_total",
    "Scheduled runs skipped because the previous run of the same probe was still in flight.",
);
const INFO: (&str, &str) = (
    "egress_probe_info",
    "Configured probes (always 1), with the labels set in the config for joins.",
);

/// Buckets of the duration histogram plus `+Inf`.
const SLOTS: usize = DURATION_BUCKETS.len() + 1;
/// `result` words of `egress_probe_runs_total`, in the order of [`Values::runs`].
const RESULTS: [&str; 2] = ["success", "failure"];

/// The numbers of one probe.
#[derive(Default)]
struct Values {
    /// The last run's result; `None` before the first.
    success: Option<bool>,
    /// Observations per bucket of `egress_probe_duration_seconds` (not cumulative; the last
    /// slot is `+Inf`).
    buckets: [u64; SLOTS],
    sum: f64,
    /// Completed runs: successes, failures.
    runs: [u64; 2],
    skipped: u64,
    /// `(phase, reason, count)` in first-seen order: only the pairs that happened.
    failures: Vec<(&'static str, Box<str>, u64)>,
}

/// One probe: its label values, once, and its numbers.
struct Row {
    probe: Box<str>,
    kind: &'static str,
    target: Box<str>,
    /// Labels of `egress_probe_info` besides `kind` and `probe`, sorted by name (usually none).
    info: Box<[(Box<str>, Box<str>)]>,
    values: Mutex<Values>,
}

impl Row {
    /// Every label of `egress_probe_info`, sorted by name.
    fn info_labels(&self) -> Vec<(&str, &str)> {
        let mut labels: Vec<(&str, &str)> = vec![("kind", self.kind), ("probe", &self.probe)];
        labels.extend(self.info.iter().map(|(k, v)| (&**k, &**v)));
        labels.sort_by(|a, b| a.0.cmp(b.0));
        labels
    }
}

/// Every configured probe's default series. The daemon's table (`with_daemon_families`) also
/// holds `_skipped_runs_total` and `_info` and shows the run counters at 0 before the first
/// run, as `rate()` needs; `/probe`'s one-run table holds only what the run produced.
pub struct ProbeTable {
    rows: Vec<Row>,
    /// Probe name → row.
    index: HashMap<Box<str>, usize>,
    daemon: bool,
}

impl ProbeTable {
    /// An empty table; `daemon` adds the daemon-only families (see the type's docs).
    pub fn new(daemon: bool) -> ProbeTable {
        ProbeTable {
            rows: Vec::new(),
            index: HashMap::new(),
            daemon,
        }
    }

    /// Adds probe `name` (a second row of the same name is ignored). `info` are the labels of
    /// `egress_probe_info` besides `probe` and `kind`, as (label name, value).
    pub fn add(&mut self, name: &str, kind: &'static str, target: &str, info: &[(&str, &str)]) {
        if self.index.contains_key(name) {
            return;
        }
        let mut info: Vec<(Box<str>, Box<str>)> = info.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        info.sort();
        self.index.insert(name.into(), self.rows.len());
        self.rows.push(Row {
            probe: name.into(),
            kind,
            target: target.into(),
            info: info.into_boxed_slice(),
            values: Mutex::new(Values::default()),
        });
    }

    fn with<F: FnOnce(&mut Values)>(&self, probe: &str, f: F) {
        let Some(row) = self.index.get(probe).and_then(|i| self.rows.get(*i)) else {
            return;
        };
        if let Ok(mut v) = row.values.lock() {
            f(&mut v);
        }
    }

    /// Records one finished run of `probe` (unknown names are ignored).
    pub fn observe(&self, probe: &str, outcome: &Outcome) {
        let secs = outcome.total.as_secs_f64();
        let slot = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(SLOTS - 1);
        self.with(probe, |v| {
            v.success = Some(outcome.success);
            v.buckets[slot] += 1;
            v.sum += secs;
            v.runs[usize::from(!outcome.success)] += 1;
            if let Some(f) = &outcome.failure {
                let (phase, reason) = (f.phase.as_str(), f.reason.label());
                match v.failures.iter_mut().find(|(p, r, _)| *p == phase && **r == *reason) {
                    Some(entry) => entry.2 += 1,
                    None => v.failures.push((phase, reason.into(), 1)),
                }
            }
        });
    }

    /// Counts a skipped grid point of `probe`.
    pub fn skipped(&self, probe: &str) {
        self.with(probe, |v| v.skipped += 1);
    }

    /// Bytes one encoding takes, roughly (to size the buffer once).
    pub fn size_hint(&self) -> usize {
        // ~75 bytes a series, 16 series a probe, plus the HELP/TYPE lines.
        self.rows.len() * 16 * 80 + 2048
    }

    /// Appends the text exposition of every family with at least one series to `out`.
    pub fn encode_into(&self, out: &mut String) {
        // One snapshot per row first, so every family reads the same values.
        let snap: Vec<Values> = self
            .rows
            .iter()
            .map(|r| r.values.lock().map(|v| v.clone_values()).unwrap_or_default())
            .collect();
        let rows = || self.rows.iter().zip(&snap);

        if rows().any(|(_, v)| v.success.is_some()) {
            header(out, SUCCESS, "gauge");
            for (r, v) in rows() {
                if let Some(ok) = v.success {
                    let _ = writeln!(
                        out,
                        "{}{{kind=\"{}\",probe=\"{}\",target=\"{}\"}} {}",
                        SUCCESS.0,
                        r.kind,
                        escape(&r.probe),
                        escape(&r.target),
                        u8::from(ok)
                    );
                }
            }
        }
        if rows().any(|(_, v)| v.count() > 0) {
            header(out, DURATION, "histogram");
            let name = DURATION.0;
            for (r, v) in rows().filter(|(_, v)| v.count() > 0) {
                let (kind, probe) = (r.kind, escape(&r.probe));
                let mut cumulative = 0;
                for (le, n) in DURATION_BUCKETS.iter().zip(&v.buckets) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{kind=\"{kind}\",probe=\"{probe}\",le=\"{le}\"}} {cumulative}");
                }
                let count = v.count();
                let _ = writeln!(out, "{name}_bucket{{kind=\"{kind}\",probe=\"{probe}\",le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\",probe=\"{probe}\"}} {}", v.sum);
                let _ = writeln!(out, "{name}_count{{kind=\"{kind}\",probe=\"{probe}\"}} {count}");
            }
        }
        if self.daemon || rows().any(|(_, v)| v.runs.iter().any(|n| *n > 0)) {
            header(out, RUNS, "counter");
            for (r, v) in rows() {
                for (result, n) in RESULTS.iter().zip(v.runs) {
                    if self.daemon || n > 0 {
                        let _ = writeln!(
                            out,
                            "{}{{kind=\"{}\",probe=\"{}\",result=\"{result}\"}} {n}",
                            RUNS.0,
                            r.kind,
                            escape(&r.probe)
                        );
                    }
                }
            }
        }
        if rows().any(|(_, v)| !v.failures.is_empty()) {
            header(out, FAILURES, "counter");
            for (r, v) in rows() {
                for (phase, reason, n) in &v.failures {
                    let _ = writeln!(
                        out,
                        "{}{{kind=\"{}\",phase=\"{phase}\",probe=\"{}\",reason=\"{}\"}} {n}",
                        FAILURES.0,
                        r.kind,
                        escape(&r.probe),
                        escape(reason)
                    );
                }
            }
        }
        if self.daemon && !self.rows.is_empty() {
            header(out, SKIPPED, "counter");
            for (r, v) in rows() {
                let _ = writeln!(out, "{}{{probe=\"{}\"}} {}", SKIPPED.0, escape(&r.probe), v.skipped);
            }
            header(out, INFO, "gauge");
            for r in &self.rows {
                out.push_str(INFO.0);
                for (i, (k, v)) in r.info_labels().into_iter().enumerate() {
                    let sep = if i == 0 { '{' } else { ',' };
                    let _ = write!(out, "{sep}{k}=\"{}\"", escape(v));
                }
                out.push_str("} 1\n");
            }
        }
    }

    /// The same values in the `prometheus` crate's model, for the remote_write push.
    pub fn families(&self) -> Vec<MetricFamily> {
        let snap: Vec<Values> = self
            .rows
            .iter()
            .map(|r| r.values.lock().map(|v| v.clone_values()).unwrap_or_default())
            .collect();
        let rows = || self.rows.iter().zip(&snap);
        let mut success = Vec::new();
        let mut duration = Vec::new();
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        let mut skipped = Vec::new();
        let mut info = Vec::new();
        for (r, v) in rows() {
            let probe = r.probe.to_string();
            let base = [("kind", r.kind.to_string()), ("probe", probe.clone())];
            if let Some(ok) = v.success {
                let mut labels = base.to_vec();
                labels.push(("target", r.target.to_string()));
                let mut g = Gauge::default();
                g.set_value(f64::from(u8::from(ok)));
                let mut m = metric(&labels);
                m.set_gauge(g);
                success.push(m);
            }
            if v.count() > 0 {
                let mut h = Histogram::default();
                let mut cumulative = 0;
                let buckets = DURATION_BUCKETS
                    .iter()
                    .zip(&v.buckets)
                    .map(|(le, n)| {
                        cumulative += n;
                        let mut b = Bucket::default();
                        b.set_upper_bound(*le);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                h.set_bucket(buckets);
                h.set_sample_count(v.count());
                h.set_sample_sum(v.sum);
                let mut m = metric(&base);
                m.set_histogram(h);
                duration.push(m);
            }
            for (result, n) in RESULTS.iter().zip(v.runs) {
                if self.daemon || n > 0 {
                    let mut labels = base.to_vec();
                    labels.push(("result", result.to_string()));
                    runs.push(counter_metric(&labels, n));
                }
            }
            for (phase, reason, n) in &v.failures {
                let labels = [
                    ("kind", r.kind.to_string()),
                    ("phase", phase.to_string()),
                    ("probe", probe.clone()),
                    ("reason", reason.to_string()),
                ];
                failures.push(counter_metric(&labels, *n));
            }
            if self.daemon {
                skipped.push(counter_metric(&[("probe", probe.clone())], v.skipped));
                let labels: Vec<(&str, String)> = r.info_labels().into_iter().map(|(k, v)| (k, v.to_string())).collect();
                let mut g = Gauge::default();
                g.set_value(1.0);
                let mut m = metric(&labels);
                m.set_gauge(g);
                info.push(m);
            }
        }
        [
            (SUCCESS, MetricType::GAUGE, success),
            (DURATION, MetricType::HISTOGRAM, duration),
            (RUNS, MetricType::COUNTER, runs),
            (FAILURES, MetricType::COUNTER, failures),
            (SKIPPED, MetricType::COUNTER, skipped),
            (INFO, MetricType::GAUGE, info),
        ]
        .into_iter()
        .filter(|(_, _, ms)| !ms.is_empty())
        .map(|((name, help), t, ms)| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(t);
            f.set_metric(ms);
            f
        })
        .collect()
    }
}

impl Values {
    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn clone_values(&self) -> Values {
        Values {
            success: self.success,
            buckets: self.buckets,
            sum: self.sum,
            runs: self.runs,
            skipped: self.skipped,
            failures: self.failures.clone(),
        }
    }
}

fn header(out: &mut String, (name, help): (&str, &str), kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn metric(labels: &[(&str, String)]) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.clone());
                l
            })
            .collect(),
    );
    m
}

fn counter_metric(labels: &[(&str, String)], n: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(n as f64);
    let mut m = metric(labels);
    m.set_counter(c);
    m
}

/// A label value as the text format needs it: `\`, `"` and newline escaped.
pub(super) fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut s = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Failure, Phase, PhaseTiming, Reason};
    use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
    use std::time::Duration;

    fn run(success: bool, ms: u64, failure: Option<(Phase, Reason)>) -> Outcome {
        Outcome {
            success,
            phases: vec![PhaseTiming {
                phase: Phase::Connect,
                duration: Duration::from_millis(ms),
            }],
            failure: failure.map(|(p, r)| Failure::new(p, r, "refused")),
            total: Duration::from_millis(ms),
            detail: Default::default(),
        }
    }

    /// Sample lines sorted, HELP/TYPE lines kept in place per family (the series order within
    /// a family is the crate's hash order, ours is config order).
    fn normalised(text: &str) -> Vec<String> {
        let mut families: Vec<Vec<String>> = Vec::new();
        for l in text.lines() {
            if l.starts_with("# HELP") {
                families.push(vec![l.to_string()]);
            } else if let Some(f) = families.last_mut() {
                f.push(l.to_string());
            }
        }
        for f in &mut families {
            f[1..].sort();
        }
        families.sort();
        families.concat()
    }

    fn encode(families: &[MetricFamily]) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(families, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn hand_written_text_is_what_the_prometheus_crate_wrote_for_the_same_results() {
        let runs: Vec<(&str, Outcome)> = vec![
            ("a", run(true, 3, None)),
            ("a", run(false, 700, Some((Phase::Connect, Reason::Refused)))),
            ("b \"quoted\" \\ name", run(false, 6000, Some((Phase::Connect, Reason::Timeout)))),
            ("a", run(false, 12, Some((Phase::Connect, Reason::Refused)))),
        ];
        let mut table = ProbeTable::new(true);
        table.add("a", "tcp", "h:1", &[("site", "x\ny"), ("team", "voice")]);
        table.add("b \"quoted\" \\ name", "tcp", "h:2", &[("site", ""), ("team", "")]);
        table.add("idle", "tcp", "h:3", &[("site", ""), ("team", "")]);
        for (p, o) in &runs {
            table.observe(p, o);
        }
        table.skipped("idle");
        let mut ours = String::new();
        table.encode_into(&mut ours);

        // The same families in the crate, as metrics.rs kept them before this table.
        let reg = Registry::new();
        let success = prometheus::GaugeVec::new(Opts::new(SUCCESS.0, SUCCESS.1), &["probe", "kind", "target"]).unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(DURATION.0, DURATION.1).buckets(DURATION_BUCKETS.to_vec()),
            &["probe", "kind"],
        )
        .unwrap();
        let runs_c = IntCounterVec::new(Opts::new(RUNS.0, RUNS.1), &["probe", "kind", "result"]).unwrap();
        let failures = IntCounterVec::new(Opts::new(FAILURES.0, FAILURES.1), &["probe", "kind", "phase", "reason"]).unwrap();
        let skipped = IntCounterVec::new(Opts::new(SKIPPED.0, SKIPPED.1), &["probe"]).unwrap();
        let info = prometheus::GaugeVec::new(Opts::new(INFO.0, INFO.1), &["probe", "kind", "site", "team"]).unwrap();
        for c in [
            Box::new(success.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(runs_c.clone()),
            Box::new(failures.clone()),
            Box::new(skipped.clone()),
            Box::new(info.clone()),
        ] {
            reg.register(c).unwrap();
        }
        for (p, target, site, team) in [
            ("a", "h:1", "x\ny", "voice"),
            ("b \"quoted\" \\ name", "h:2", "", ""),
            ("idle", "h:3", "", ""),
        ] {
            for r in RESULTS {
                runs_c.with_label_values(&[p, "tcp", r]);
            }
            skipped.with_label_values(&[p]);
            info.with_label_values(&[p, "tcp", site, team]).set(1.0);
            for (_, o) in runs.iter().filter(|(n, _)| *n == p) {
                let name = p;
                success
                    .with_label_values(&[name, "tcp", target])
                    .set(if o.success { 1.0 } else { 0.0 });
                duration.with_label_values(&[name, "tcp"]).observe(o.total.as_secs_f64());
                runs_c
                    .with_label_values(&[name, "tcp", if o.success { "success" } else { "failure" }])
                    .inc();
                if let Some(f) = &o.failure {
                    failures
                        .with_label_values(&[name, "tcp", f.phase.as_str(), &f.reason.label()])
                        .inc();
                }
            }
        }
        skipped.with_label_values(&["idle"]).inc();
        let theirs = encode(&reg.gather());
        assert_eq!(normalised(&ours), normalised(&theirs), "ours:\n{ours}\ntheirs:\n{theirs}");
        // The push's model of the table is the same text again.
        assert_eq!(normalised(&encode(&table.families())), normalised(&ours));
    }

    #[test]
    fn a_one_run_table_shows_only_what_the_run_produced() {
        let mut table = ProbeTable::new(false);
        table.add("p", "tls", "h:443", &[]);
        let mut empty = String::new();
        table.encode_into(&mut empty);
        assert_eq!(empty, "", "no run yet: no family at all");
        table.observe("p", &run(true, 20, None));
        table.observe("unknown", &run(true, 20, None));
        let mut text = String::new();
        table.encode_into(&mut text);
        assert!(
            text.contains("egress_probe_runs_total{kind=\"tls\",probe=\"p\",result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("result=\"failure\""), "{text}");
        assert!(
            !text.contains("skipped") && !text.contains("egress_probe_info") && !text.contains("unknown"),
            "{text}"
        );
        assert!(
            text.contains("egress_probe_duration_seconds_bucket{kind=\"tls\",probe=\"p\",le=\"0.025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("egress_probe_duration_seconds_bucket{kind=\"tls\",probe=\"p\",le=\"0.01\"} 0\n"),
            "{text}"
        );
    }
}
