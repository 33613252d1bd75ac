//! `kind: udp_ports`: the port set a probe covers and the sweep state that makes successive
//! bounded runs cover all of it.
//!
//! **The set** ([`PortSet`]) is what a vendor publishes as its media ranges, written
//! `"16384-65535"` or `"10000-20000, 3478, 3479"`: sorted, merged, disjoint inclusive ranges,
//! at most [`MAX_SET_ITEMS`] items, ports 1..=65535. Ports are addressed by their *ordinal*
//! (0..len) in ascending port order.
//!
//! **The sweep** ([`PortSweep`]) is why this lives in `config`: a run may probe only `sample`
//! ports (≤ [`MAX_SAMPLE`]), yet every port of a 49,152-port range must be tried eventually.
//! The state has to survive from one run to the next and belong to exactly one probe, like the
//! OAuth2 token cache: it is built once per probe at load (a reload hands it over to the new
//! probe of the same name when host and port set are unchanged, see [`keep_sweeps`], and
//! starts a fresh one otherwise; clones of one probe's spec, e.g. `/probe?module=` runs and
//! `/probe?target=` pointing at the probe's own host, share it), and `config` is the
//! lowest layer the probe, the scheduler and `/probe` all see. It holds:
//!
//! - a **cursor** into a fixed permutation of the ordinals. Run *k* takes permutation positions
//!   `cursor .. cursor + sample` (mod len) and advances the cursor, so after `ceil(len/sample)`
//!   runs every ordinal has been taken once, whatever the start. The permutation is
//!   `position ↦ (position · stride) mod len` with `stride` coprime to `len` and close to
//!   `len / φ` (golden ratio): a bijection, so coverage is exact, and consecutive positions land
//!   far apart, so each run's sample is spread over the whole set instead of one corner
//!   (a firewall that opens only part of a range shows up in the first run). It is
//!   deterministic and needs no random state to store.
//! - the **start**: the first cursor is the wall clock's seconds mod len, so one-shot `check`
//!   runs (a fresh process each) look at different parts of the set instead of always the
//!   first sample; the daemon then walks on from there.
//! - the **last result per port** (unknown / open / silent once / closed, one byte per ordinal,
//!   allocated on first use: 64 KiB at most), from which the reported open and closed *ranges*
//!   and the coverage are built. A result replaces the port's earlier one each time the port is
//!   sampled again, so a rule change shows up within one full sweep; a run that got *no* result
//!   for a port (its retry cut by the deadline) never overwrites what an earlier run found.
//! - a **re-test queue** (at most [`MAX_RETEST`] ordinals). One lost datagram plus its lost
//!   retry must not read as a firewall, so a port silent in one run is only *silent once*; it
//!   is re-tested first in the next run's sample and called **closed** only when silent in two
//!   separate runs. A port that got no result at all (unknown) is queued the same way, so the
//!   cursor moves on only past ports that got a result or are queued to be tried again.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most ranges/ports one `ports:` value may list.
pub const MAX_SET_ITEMS: usize = 64;
/// Most ports one run may probe.
pub const MAX_SAMPLE: u32 = 256;
/// Most ranges a report lists per state (open, closed); the rest are counted.
pub const MAX_REPORTED_RANGES: usize = 64;
/// Most ports waiting in the re-test queue (silent once, or no result); beyond it a port
/// waits for the next sweep to come round.
pub const MAX_RETEST: usize = 2 * MAX_SAMPLE as usize;

/// Probe datagrams sent back to back before a pause (`probe::udp_ports`).
pub const BURST: usize = 16;
/// Pause between bursts.
pub const PACE: Duration = Duration::from_millis(1);
/// How long before the deadline a run's exchange stops on its own.
pub const RUN_MARGIN: Duration = Duration::from_millis(5);
/// What the load check adds to [`needed`] for resolving the host and starting the run.
pub const LOAD_SLACK: Duration = Duration::from_millis(100);

/// Time a run needs for `sample` ports: both rounds' sending, a full `port_timeout` after
/// each, and the margin. A port's verdict needs all of it; the load check requires `timeout`
/// ≥ this plus [`LOAD_SLACK`], and a run with less time left shrinks its sample.
pub fn needed(sample: u32, port_timeout: Duration) -> Duration {
    let bursts = u32::try_from((sample as usize).div_ceil(BURST)).unwrap_or(u32::MAX);
    2 * (port_timeout + PACE * bursts) + RUN_MARGIN
}

/// A set of UDP ports: sorted, merged, disjoint inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
    len: u32,
}

impl PortSet {
    /// Parses `"16384-65535"`, `"3478"` or a comma-separated mix (overlaps are merged).
    pub fn parse(text: &str) -> Result<PortSet, String> {
        if let Some(dash) = text.chars().find(|c| matches!(c, '–' | '—' | '−')) {
            return Err(format!(
                "{text:?} has {} where a range needs a plain hyphen: write {:?}",
                if dash == '–' {
                    "an en dash"
                } else if dash == '—' {
                    "an em dash"
                } else {
                    "a minus sign"
                },
                text.replace(['–', '—', '−'], "-")
            ));
        }
        let items: Vec<&str> = text.split(',').map(str::trim).collect();
        if items.iter().all(|i| i.is_empty()) {
            return Err("no ports given (write e.g. \"16384-65535\" or \"3478, 10000-20000\")".into());
        }
        if items.len() > MAX_SET_ITEMS {
            return Err(format!("at most {MAX_SET_ITEMS} ranges or ports, found {}", items.len()));
        }
        let port = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
                Ok(p) => Err(format!("port {p} is outside 1..65535")),
                Err(_) => Err(format!("{s:?} is not a port number")),
            }
        };
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            if item.is_empty() {
                return Err("empty item between commas".into());
            }
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(item)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!("range {item} runs backwards (write {hi}-{lo})"));
            }
            ranges.push((lo, hi));
        }
        Ok(PortSet::from_ranges(ranges))
    }

    fn from_ranges(mut ranges: Vec<(u16, u16)>) -> PortSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let len = merged.iter().map(|(lo, hi)| u32::from(*hi) - u32::from(*lo) + 1).sum();
        PortSet { ranges: merged, len }
    }

    /// Number of ports in the set (≥ 1).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Never true for a parsed set; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The port with ordinal `i` (ascending order); `None` past the end.
    pub fn nth(&self, mut i: u32) -> Option<u16> {
        for (lo, hi) in &self.ranges {
            let n = u32::from(*hi) - u32::from(*lo) + 1;
            if i < n {
                return u16::try_from(u32::from(*lo) + i).ok();
            }
            i -= n;
        }
        None
    }

    /// The first port (for resolving the host).
    pub fn first(&self) -> u16 {
        self.ranges.first().map_or(0, |r| r.0)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(|(lo, hi)| range_text(*lo, *hi)).collect();
        f.write_str(&parts.join(","))
    }
}

/// `"20000-20049"`, or `"3478"` for a single port.
pub fn range_text(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// What is known of one port. A run's own finding is `Open`, `Closed` (silent after a retry
/// that had its full wait) or `Unknown`; the sweep's memory adds `SilentOnce` (see the module
/// doc: closed takes two silent runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Unknown = 0,
    Open = 1,
    Closed = 2,
    SilentOnce = 3,
}

/// One port of a run's sample: its ordinal in the set and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplePort {
    pub ordinal: u32,
    pub port: u16,
}

/// Ranges of one state, as far as they are known, bounded to [`MAX_REPORTED_RANGES`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownRanges {
    pub open: Vec<String>,
    pub closed: Vec<String>,
    /// Ranges left out of `open`/`closed` beyond the bound.
    pub more: u32,
    pub open_ports: u32,
    pub closed_ports: u32,
}

/// One probe's sweep over its [`PortSet`] (see the module doc). Clones share the state.
#[derive(Clone, Default)]
pub struct PortSweep(Arc<Mutex<SweepState>>);

#[derive(Default)]
struct SweepState {
    /// Next permutation position; `None` until the first run.
    cursor: Option<u32>,
    /// Per ordinal: a [`PortState`] as u8 (allocated on first use).
    known: Vec<u8>,
    /// Ordinals to try first in the next sample (silent once, or no result yet).
    retest: std::collections::VecDeque<u32>,
}

impl fmt::Debug for PortSweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cursor = self.0.lock().map(|g| g.cursor).unwrap_or(None);
        write!(f, "PortSweep(cursor {cursor:?})")
    }
}

/// On reload: every `udp_ports` probe of `new` whose namesake in `old` has the same host and
/// port set takes over the old probe's sweep (cursor, results, re-test queue), so a reload
/// that changed something else does not start the coverage from zero.
pub fn keep_sweeps(new: &mut [super::ProbeConfig], old: &[super::ProbeConfig]) {
    use super::ProbeSpec;
    for p in new {
        let ProbeSpec::UdpPorts(s) = &mut p.spec else { continue };
        let before = old.iter().find_map(|o| match &o.spec {
            ProbeSpec::UdpPorts(x) if o.name == p.name && x.ports == s.ports && super::target::same_host(&x.host, &s.host) => {
                Some(x.sweep.clone())
            }
            _ => None,
        });
        if let Some(sweep) = before {
            s.sweep = sweep;
        }
    }
}

/// A stride coprime to `n`, close to `n / φ`, so that consecutive positions spread out.
pub fn stride(n: u32) -> u32 {
    if n <= 2 {
        return 1;
    }
    let mut s = ((f64::from(n) / 1.618_033_988_749_895).round() as u32).clamp(1, n - 1);
    // Bounded: among any n-1 consecutive numbers below n one is coprime (1 at the latest).
    while gcd(s, n) != 1 {
        s -= 1;
    }
    s
}

fn state_of(b: u8) -> PortState {
    match b {
        1 => PortState::Open,
        2 => PortState::Closed,
        3 => PortState::SilentOnce,
        _ => PortState::Unknown,
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl PortSweep {
    /// The next `sample` ports of `set` (all of them when the set is smaller): first the
    /// re-test queue, then fresh ports from the cursor, which advances past those only.
    /// `start` seeds the cursor on the first call only (reduced mod the set's size).
    pub fn next_sample(&self, set: &PortSet, sample: u32, start: u64) -> Vec<SamplePort> {
        let n = set.len().max(1);
        let take = sample.clamp(1, n) as usize;
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SamplePort> = Vec::with_capacity(take);
        while out.len() < take {
            let Some(ordinal) = g.retest.pop_front() else { break };
            if ordinal < n && !out.iter().any(|p| p.ordinal == ordinal) {
                if let Some(port) = set.nth(ordinal) {
                    out.push(SamplePort { ordinal, port });
                }
            }
        }
        let cursor = *g.cursor.get_or_insert((start % u64::from(n)) as u32);
        let stride = u64::from(stride(n));
        let mut fresh = 0u32;
        // Bounded: at most n fresh positions (one whole sweep).
        while out.len() < take && fresh < n {
            let position = (u64::from(cursor) + u64::from(fresh)) % u64::from(n);
            fresh += 1;
            let ordinal = ((position * stride) % u64::from(n)) as u32;
            if out.iter().any(|p| p.ordinal == ordinal) {
                continue;
            }
            if let Some(port) = set.nth(ordinal) {
                out.push(SamplePort { ordinal, port });
            }
        }
        g.cursor = Some(((u64::from(cursor) + u64::from(fresh)) % u64::from(n)) as u32);
        out
    }

    /// Records what a run found for each ordinal it sampled (`Open`, `Closed` for silent
    /// after a full retry, `Unknown` for no result) and returns each port's state after it:
    /// silent becomes `SilentOnce` (queued for a re-test) unless the port was silent in an
    /// earlier run already, then `Closed`; `Unknown` keeps the earlier state and queues the
    /// port again if it had none.
    pub fn record(&self, set: &PortSet, results: &[(u32, PortState)]) -> Vec<PortState> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = set.len() as usize;
        if g.known.len() != n {
            g.known = vec![PortState::Unknown as u8; n];
        }
        let mut after = Vec::with_capacity(results.len());
        for (ordinal, found) in results {
            let Some(before) = g.known.get(*ordinal as usize).map(|b| state_of(*b)) else {
                after.push(PortState::Unknown);
                continue;
            };
            let now = match (found, before) {
                (PortState::Open, _) => PortState::Open,
                (PortState::Closed | PortState::SilentOnce, PortState::SilentOnce | PortState::Closed) => PortState::Closed,
                (PortState::Closed | PortState::SilentOnce, _) => PortState::SilentOnce,
                (PortState::Unknown, b) => b,
            };
            if let Some(slot) = g.known.get_mut(*ordinal as usize) {
                *slot = now as u8;
            }
            let queue = now == PortState::SilentOnce || now == PortState::Unknown;
            if queue && g.retest.len() < MAX_RETEST && !g.retest.contains(ordinal) {
                g.retest.push_back(*ordinal);
            }
            after.push(now);
        }
        after
    }

    /// Ports of the set with a settled result (open or closed) so far.
    pub fn covered(&self) -> u32 {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.known
            .iter()
            .filter(|s| **s == PortState::Open as u8 || **s == PortState::Closed as u8)
            .count() as u32
    }

    /// Ports silent in one run, waiting for their re-test.
    pub fn silent_once(&self) -> u32 {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.known.iter().filter(|s| **s == PortState::SilentOnce as u8).count() as u32
    }

    /// Open and closed ranges as known so far (unknown ports break a range).
    pub fn known_ranges(&self, set: &PortSet) -> KnownRanges {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let state_of = |i: usize| g.known.get(i).copied().unwrap_or(PortState::Unknown as u8);
        let mut out = KnownRanges::default();
        // (state, first port, last port) of the run being built.
        let mut current: Option<(u8, u16, u16)> = None;
        let flush = |run: Option<(u8, u16, u16)>, out: &mut KnownRanges| {
            let Some((state, lo, hi)) = run else { return };
            let count = u32::from(hi) - u32::from(lo) + 1;
            let list = if state == PortState::Open as u8 {
                out.open_ports += count;
                &mut out.open
            } else if state == PortState::Closed as u8 {
                out.closed_ports += count;
                &mut out.closed
            } else {
                return;
            };
            if list.len() < MAX_REPORTED_RANGES {
                list.push(range_text(lo, hi));
            } else {
                out.more += 1;
            }
        };
        let mut ordinal = 0usize;
        for (lo, hi) in &set.ranges {
            for port in *lo..=*hi {
                let state = state_of(ordinal);
                ordinal += 1;
                current = match current {
                    Some((s, first, last)) if s == state && u32::from(last) + 1 == u32::from(port) => Some((s, first, port)),
                    other => {
                        flush(other, &mut out);
                        Some((state, port, port))
                    }
                };
            }
        }
        flush(current, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_merge_and_count() {
        let s = PortSet::parse("20000-20049, 3478,20050-20099 ,3479").unwrap();
        assert_eq!(s.to_string(), "3478-3479,20000-20099");
        assert_eq!(s.len(), 102);
        assert_eq!(s.nth(0), Some(3478));
        assert_eq!(s.nth(2), Some(20000));
        assert_eq!(s.nth(101), Some(20099));
        assert_eq!(s.nth(102), None);
        assert_eq!(PortSet::parse("16384-65535").unwrap().len(), 49152);
        for bad in ["", "0", "70000", "5-1", "a-b", "1,,2", "1-"] {
            assert!(PortSet::parse(bad).is_err(), "{bad}");
        }
        let many = (1..=65).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        assert!(PortSet::parse(&many).is_err());
    }

    #[test]
    fn the_stride_permutation_covers_every_port_once_per_sweep_from_any_start() {
        for (text, sample, start) in [
            ("16384-65535", 256, 12_345u64),
            ("20000-20099", 32, 7),
            ("3478", 5, 0),
            ("1-12", 5, 99),
        ] {
            let set = PortSet::parse(text).unwrap();
            let sweep = PortSweep::default();
            let n = set.len();
            let runs = n.div_ceil(sample.min(n));
            let mut seen = vec![0u32; n as usize];
            for _ in 0..runs {
                for p in sweep.next_sample(&set, sample, start) {
                    seen[p.ordinal as usize] += 1;
                    assert_eq!(set.nth(p.ordinal), Some(p.port));
                }
            }
            assert!(seen.iter().all(|c| *c >= 1), "{text}: a port was never sampled");
            assert!(seen.iter().all(|c| *c <= 2), "{text}: sampled more than twice in one sweep");
        }
    }

    #[test]
    fn one_sample_is_spread_over_the_whole_range() {
        let set = PortSet::parse("16384-65535").unwrap();
        let ports: Vec<u16> = PortSweep::default().next_sample(&set, 16, 0).iter().map(|p| p.port).collect();
        let (lo, hi) = (*ports.iter().min().unwrap(), *ports.iter().max().unwrap());
        assert!(lo < 20_000 && hi > 60_000, "{ports:?}");
    }

    #[test]
    fn known_results_read_as_ranges_and_unknown_ports_break_them() {
        let set = PortSet::parse("20000-20009").unwrap();
        let sweep = PortSweep::default();
        let mut results: Vec<(u32, PortState)> = (0..5).map(|i| (i, PortState::Open)).collect();
        results.extend((6..10).map(|i| (i, PortState::Closed)));
        // Silent twice: closed.
        sweep.record(&set, &results);
        sweep.record(&set, &results);
        let r = sweep.known_ranges(&set);
        assert_eq!(r.open, ["20000-20004"]);
        assert_eq!(r.closed, ["20006-20009"]);
        assert_eq!((r.open_ports, r.closed_ports, sweep.covered()), (5, 4, 9));
        sweep.record(&set, &[(5, PortState::Closed), (9, PortState::Open)]);
        sweep.record(&set, &[(5, PortState::Closed)]);
        let r = sweep.known_ranges(&set);
        assert_eq!(r.closed, ["20005-20008"]);
        assert_eq!(r.open, ["20000-20004", "20009"]);
    }

    #[test]
    fn a_run_without_a_result_never_overwrites_an_earlier_one() {
        let set = PortSet::parse("20000-20009").unwrap();
        let sweep = PortSweep::default();
        sweep.record(&set, &[(0, PortState::Open), (1, PortState::Closed), (1, PortState::Closed)]);
        let after = sweep.record(&set, &[(0, PortState::Unknown), (1, PortState::Unknown)]);
        assert_eq!(after, [PortState::Open, PortState::Closed]);
        let r = sweep.known_ranges(&set);
        assert_eq!(
            (r.open, r.closed, sweep.covered()),
            (vec!["20000".to_string()], vec!["20001".to_string()], 2)
        );
    }

    #[test]
    fn a_port_silent_once_is_retested_first_and_closed_only_when_silent_again() {
        let set = PortSet::parse("20000-20099").unwrap();
        let sweep = PortSweep::default();
        let first = sweep.next_sample(&set, 8, 0);
        let silent = first[3];
        let results: Vec<(u32, PortState)> = first
            .iter()
            .map(|p| (p.ordinal, if *p == silent { PortState::Closed } else { PortState::Open }))
            .collect();
        let after = sweep.record(&set, &results);
        assert_eq!(after[3], PortState::SilentOnce, "one silent run is not closed");
        assert_eq!((sweep.known_ranges(&set).closed_ports, sweep.silent_once()), (0, 1));
        let second = sweep.next_sample(&set, 8, 0);
        assert_eq!(second[0], silent, "re-tested first");
        assert!(second[1..].iter().all(|p| !first.contains(p)), "then fresh ports: {second:?}");
        assert_eq!(sweep.record(&set, &[(silent.ordinal, PortState::Closed)]), [PortState::Closed]);
        // Silent once, then answering: open, never closed.
        let other = second[1];
        sweep.record(&set, &[(other.ordinal, PortState::Closed)]);
        assert_eq!(sweep.record(&set, &[(other.ordinal, PortState::Open)]), [PortState::Open]);
    }

    #[test]
    fn the_cursor_moves_on_only_past_ports_with_a_result_and_unknown_ones_come_back() {
        let set = PortSet::parse("20000-20099").unwrap();
        let sweep = PortSweep::default();
        let first = sweep.next_sample(&set, 4, 0);
        let none: Vec<(u32, PortState)> = first.iter().map(|p| (p.ordinal, PortState::Unknown)).collect();
        sweep.record(&set, &none);
        let second = sweep.next_sample(&set, 4, 0);
        assert_eq!(first, second, "ports without a result are tried again before new ones");
        // Every port of the set still settles within the bound number of runs.
        let mut runs = 0;
        while sweep.covered() < set.len() && runs < 200 {
            let s = sweep.next_sample(&set, 4, 0);
            let r: Vec<(u32, PortState)> = s.iter().map(|p| (p.ordinal, PortState::Open)).collect();
            sweep.record(&set, &r);
            runs += 1;
        }
        assert_eq!(sweep.covered(), set.len(), "after {runs} runs");
    }

    #[test]
    fn a_reload_keeps_the_sweep_only_when_name_host_and_ports_are_unchanged() {
        use crate::config::{parse_str, ProbeSpec};
        let load = |host: &str, ports: &str, interval: &str| {
            let yaml =
                format!("probes:\n  - name: m\n    kind: udp_ports\n    host: {host}\n    ports: \"{ports}\"\n    interval: {interval}\n");
            parse_str(&yaml, "p.yaml").unwrap().probes
        };
        let covered = |probes: &[crate::config::ProbeConfig]| match &probes[0].spec {
            ProbeSpec::UdpPorts(s) => s.sweep.covered(),
            _ => panic!("kind"),
        };
        let old = load("a.example", "20000-20009", "30s");
        if let ProbeSpec::UdpPorts(s) = &old[0].spec {
            s.sweep.record(&s.ports, &[(0, PortState::Open)]);
        }
        let mut same = load("A.example.", "20000-20009", "60s");
        keep_sweeps(&mut same, &old);
        assert_eq!(covered(&same), 1, "interval changed only: the sweep carries on");
        for (host, ports) in [("b.example", "20000-20009"), ("a.example", "20000-20019")] {
            let mut other = load(host, ports, "30s");
            keep_sweeps(&mut other, &old);
            assert_eq!(covered(&other), 0, "{host} {ports}: a fresh sweep");
        }
    }
}
