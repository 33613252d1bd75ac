//! Outcome → Prometheus families. This is the only file that knows metric names.
//!
//! Two shapes share the same code: the daemon's long-lived [`Metrics`] (one registry for the
//! process, counters initialised at 0 for every configured probe so `rate()` works from the
//! first scrape), and [`render_single_run`] for `/probe`: blackbox-compatible `probe_success` /
//! `probe_duration_seconds` plus our families for that one run, written straight to text for
//! the common runs (TCP, TLS, HTTP) and through a fresh registry for runs with richer details.
//!
//! **Series budget.** A site runs ~10 probes and a Prometheus scrapes hundreds of sites, so the
//! default keeps every probe small: `_success`, `_runs_total{result}`,
//! `_failures_total{phase,reason}` (only the pairs that happened), `_skipped_runs_total`,
//! `_info` and one latency distribution, `egress_probe_duration_seconds`, on
//! [`DURATION_BUCKETS`] (8 buckets): 16 series for a TCP probe, ~20 for a TURN probe. The
//! per-phase histogram and the RTT histograms (STUN, relay, WebSocket ping, first ICE
//! candidate) multiply that by the phases and transports, so they exist only with
//! `metrics: {histograms: per_phase}` ([`Histograms::PerPhase`]); the families are then not
//! even registered, rather than registered and left empty.
//!
//! **Hand-kept default series.** The per-probe series every probe has (`_success`,
//! `_duration_seconds`, `_runs_total`, `_failures_total`, `_skipped_runs_total`, `_info`) live
//! in [`table::ProbeTable`], encoded straight to text; the rest (opt-in histograms, detail
//! gauges, the process families) stay in the `prometheus` crate's registry, appended after.
//! See `table.rs` for why (memory and encode time at 10,000 probes).
//!
//! **Encoding cache.** `/metrics` re-encodes only when something changed: every update bumps a
//! generation counter *after* changing the value, and [`Metrics::render`] reuses the text it
//! encoded last when the generation it read before encoding is still current. A scrape is
//! therefore never staler than the results recorded before it started.
//!
//! Labels are bounded: probe names and kinds come from the config, phases and reasons are the
//! fixed words of [`crate::outcome::Reason`], transports and candidate types are mapped onto
//! small fixed sets, and the only address ever used as a label is a *server* address from
//! `addresses: all` (bounded by the DNS answer). Never a client address, a token, a password
//! or a message text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

mod table;
pub use table::ProbeTable;

use crate::config::{Config, Histograms, ProbeConfig};
use crate::outcome::details::{HoldDetails, RttStats};
use crate::outcome::{Outcome, Transport};
use crate::schedule::Sink;

/// Buckets of the one default latency distribution per probe (`egress_probe_duration_seconds`):
/// few enough to keep a TCP probe within 20 series, spread over what an egress path takes
/// (LAN 5 ms … a slow intercontinental TLS handshake 1–5 s); timeouts land in `+Inf`.
pub const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Buckets for the opt-in per-phase and RTT histograms: 1 ms … 30 s.
pub const TIMING_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why a registry could not be built or rendered (a programming error, not a probe failure).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metric registration failed: {0}")]
    Register(#[from] prometheus::Error),
    #[error("metric text is not UTF-8")]
    Encoding,
    #[error("compressing the metric text failed: {0}")]
    Compress(#[from] std::io::Error),
}

/// Candidate types exported on the ICE families (anything else is not exported).
const ICE_TYPES: &[&str] = &["host", "srflx", "prflx", "relay"];
/// Relay protocols (Chromium's `relayProtocol`): how the client reaches the TURN server.
const RELAY_PROTOCOLS: &[&str] = &["udp", "tcp", "tls"];
/// NAT mapping behaviours exported on `egress_probe_nat_mapping`: RFC 5780's three, and
/// `endpoint_dependent` from a `second_server` comparison (a server without OTHER-ADDRESS).
const NAT_MAPPINGS: &[&str] = &[
    "endpoint_independent",
    "address_dependent",
    "address_and_port_dependent",
    "endpoint_dependent",
];
/// NAT filtering behaviours exported on `egress_probe_nat_filtering` (RFC 5780).
const NAT_FILTERINGS: &[&str] = &crate::outcome::details::NAT_BEHAVIORS;

/// The per-run families derived from one [`Outcome`] besides the default ones of
/// [`ProbeTable`]. The `Option` families exist only with `histograms: per_phase`.
struct RunFamilies {
    phase_duration: Option<HistogramVec>,
    tls_expiry: GaugeVec,
    relay_rtt: Option<HistogramVec>,
    relay_loss: GaugeVec,
    stun_rtt: Option<HistogramVec>,
    nat_mapping: GaugeVec,
    nat_filtering: GaugeVec,
    nat_lifetime: GaugeVec,
    ice_candidates: GaugeVec,
    ice_first: Option<HistogramVec>,
    ice_relays: GaugeVec,
    ice_rtt: GaugeVec,
    ws_ping_rtt: Option<HistogramVec>,
    ws_hold: HistogramVec,
    concurrent_established: GaugeVec,
    address_success: GaugeVec,
    path_hops: GaugeVec,
    path_reached: GaugeVec,
    udp_ports_open: GaugeVec,
    udp_ports_coverage: GaugeVec,
    media_mos: GaugeVec,
    media_loss: GaugeVec,
    media_jitter: GaugeVec,
    /// Server addresses last exported per probe, so addresses that left the DNS answer are
    /// removed instead of reporting a stale value forever.
    last_addresses: Mutex<HashMap<String, BTreeSet<String>>>,
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(reg: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
}

/// An opt-in histogram: registered only when `on`.
fn detail_histogram(reg: &Registry, on: bool, name: &str, help: &str, labels: &[&str]) -> Result<Option<HistogramVec>, MetricsError> {
    if on {
        histogram(reg, name, help, labels, TIMING_BUCKETS).map(Some)
    } else {
        Ok(None)
    }
}

fn scalar(reg: &Registry, name: &str, help: &str) -> Result<Gauge, MetricsError> {
    let g = Gauge::with_opts(Opts::new(name, help))?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

impl RunFamilies {
    fn register(reg: &Registry, histograms: Histograms) -> Result<RunFamilies, MetricsError> {
        let on = histograms == Histograms::PerPhase;
        Ok(RunFamilies {
            phase_duration: detail_histogram(reg, on, PHASE_DURATION.0, PHASE_DURATION.1, &["probe", "kind", "phase"])?,
            tls_expiry: gauge(reg, TLS_EXPIRY.0, TLS_EXPIRY.1, &["probe"])?,
            relay_rtt: detail_histogram(
                reg,
                on,
                "egress_probe_relay_rtt_seconds",
                "Round-trip time of packets sent through the TURN relay (one observation per sample).",
                &["probe", "transport"],
            )?,
            relay_loss: gauge(
                reg,
                "egress_probe_relay_loss_ratio",
                "Fraction of relay round trips lost in the last run (0..1).",
                &["probe", "transport"],
            )?,
            stun_rtt: detail_histogram(
                reg,
                on,
                "egress_probe_stun_rtt_seconds",
                "Round-trip time of STUN binding requests (one observation per sample).",
                &["probe"],
            )?,
            nat_mapping: gauge(
                reg,
                "egress_probe_nat_mapping",
                "NAT mapping behaviour seen in the last run (1 for the observed behaviour, 0 for the others).",
                &["probe", "behavior"],
            )?,
            nat_filtering: gauge(
                reg,
                "egress_probe_nat_filtering",
                "NAT filtering behaviour seen in the last run (RFC 5780; 1 for the observed behaviour, 0 for the others).",
                &["probe", "behavior"],
            )?,
            nat_lifetime: gauge(
                reg,
                "egress_probe_nat_binding_lifetime_seconds",
                "How long an idle UDP mapping survived in the last search (middle of the bracket found; the search's max when none expired).",
                &["probe"],
            )?,
            path_hops: gauge(
                reg,
                "egress_probe_path_hops",
                "kind path: hops to the target, to the hop that rejected, or to the last hop that answered, in the last run.",
                &["probe"],
            )?,
            path_reached: gauge(
                reg,
                "egress_probe_path_reached",
                "kind path: 1 if the last trace reached the target, 0 if it was rejected or went silent on the way.",
                &["probe"],
            )?,
            udp_ports_open: gauge(
                reg,
                "egress_probe_udp_ports_open_ratio",
                "kind udp_ports: share of the set's settled ports whose echo came back the last time each was tried (0..1; absent until one is settled); the ranges are in /status and JSON, never labels.",
                &["probe"],
            )?,
            udp_ports_coverage: gauge(
                reg,
                "egress_probe_udp_ports_coverage_ratio",
                "kind udp_ports: share of the set's ports with a settled result (open, or silent in two runs) in this sweep (0..1).",
                &["probe"],
            )?,
            media_mos: gauge(
                reg,
                "egress_probe_media_mos",
                "media: E-model (ITU-T G.107 simplified, G.711) MOS estimate of the last stream, 1 to 4.5.",
                &["probe"],
            )?,
            media_loss: gauge(
                reg,
                "egress_probe_media_loss_ratio",
                "media: fraction of the last stream's packets that did not come back (0..1).",
                &["probe"],
            )?,
            media_jitter: gauge(
                reg,
                "egress_probe_media_jitter_seconds",
                "media: RFC 3550 interarrival jitter of the last stream's round trips at its end.",
                &["probe"],
            )?,
            ice_candidates: gauge(
                reg,
                "egress_probe_ice_candidates",
                "ICE candidates gathered in the last run, by candidate type.",
                &["probe", "type"],
            )?,
            ice_first: detail_histogram(
                reg,
                on,
                "egress_probe_ice_first_candidate_seconds",
                "Time from the start of ICE gathering to the first candidate of each type.",
                &["probe", "type"],
            )?,
            ice_relays: gauge(
                reg,
                "egress_probe_ice_relay_candidates",
                "ICE relay candidates gathered in the last run, by relay protocol (udp, tcp, tls), for each protocol a TURN server is configured for.",
                &["probe", "protocol"],
            )?,
            ice_rtt: gauge(
                reg,
                "egress_probe_ice_rtt_seconds",
                "ICE with connectivity: mean round-trip time through the relay of each relay protocol that connected in the last run (udp: datagrams over the selected pair; tcp/tls: relayed STUN Binding checks). Both ICE agents run in the probe, so each round trip crosses the probe-to-TURN leg four times: about twice what a call to a far peer sees on that leg.",
                &["probe", "relay_protocol"],
            )?,
            ws_ping_rtt: detail_histogram(
                reg,
                on,
                "egress_probe_websocket_ping_rtt_seconds",
                "Round-trip time of WebSocket ping/pong after the upgrade (one observation per sample).",
                &["probe"],
            )?,
            ws_hold: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "egress_probe_websocket_hold_seconds",
                        "How long held WebSockets (hold:) lived, by whether they lasted the hold (survived) or were cut; cut lifetimes clustering at one value is an idle timer.",
                    )
                    .buckets(HOLD_BUCKETS.to_vec()),
                    &["probe", "result"],
                )?;
                reg.register(Box::new(h.clone()))?;
                h
            },
            concurrent_established: gauge(
                reg,
                "egress_probe_concurrent_established",
                "With concurrent: N, how many of the N connections the last run established at once (a cap shows up as this number).",
                &["probe"],
            )?,
            address_success: gauge(
                reg,
                "egress_probe_address_success",
                "With addresses: all, whether the last run against each resolved server address succeeded.",
                &["probe", "kind", "address"],
            )?,
            last_addresses: Mutex::new(HashMap::new()),
        })
    }

    /// Records one run (the families of [`ProbeTable`] are recorded there).
    fn observe(&self, probe: &str, kind: &str, outcome: &Outcome) {
        if let Some(h) = &self.phase_duration {
            for p in &outcome.phases {
                h.with_label_values(&[probe, kind, p.phase.as_str()])
                    .observe(p.duration.as_secs_f64());
            }
        }
        self.observe_details(probe, kind, outcome);
    }

    /// The NAT state sets and lifetime of a stun run; a family the run found nothing for
    /// loses its series (as `ice_rtt` does) instead of showing an old run's value forever.
    /// The lifetime is exported only when a mapping was seen to expire.
    fn observe_nat(&self, probe: &str, stun: Option<&crate::outcome::details::StunDetails>) {
        for (family, seen, words) in [
            (&self.nat_mapping, stun.and_then(|s| s.nat_mapping.as_deref()), NAT_MAPPINGS),
            (&self.nat_filtering, stun.and_then(|s| s.nat_filtering.as_deref()), NAT_FILTERINGS),
        ] {
            match seen.filter(|s| words.contains(s)) {
                Some(seen) => {
                    for b in words {
                        family.with_label_values(&[probe, b]).set(if *b == seen { 1.0 } else { 0.0 });
                    }
                }
                None => {
                    for b in words {
                        let _ = family.remove_label_values(&[probe, b]);
                    }
                }
            }
        }
        match stun.and_then(|s| s.binding_lifetime.as_ref()).filter(|l| l.expired.is_some()) {
            Some(l) => self.nat_lifetime.with_label_values(&[probe]).set(l.estimate().as_secs_f64()),
            None => {
                let _ = self.nat_lifetime.remove_label_values(&[probe]);
            }
        }
    }

    fn observe_details(&self, probe: &str, kind: &str, outcome: &Outcome) {
        let d = &outcome.detail;
        // With `addresses: all` each address has its own chain; the earliest expiry matters.
        let per_address_expiry = d.per_address.iter().filter_map(|a| a.tls.as_ref()?.earliest_expiry_unix).min();
        if let Some(expiry) = d.tls.as_ref().and_then(|t| t.earliest_expiry_unix).or(per_address_expiry) {
            self.tls_expiry.with_label_values(&[probe]).set(expiry as f64);
        }
        if let Some(relay) = &d.relay {
            let transport = bounded_transport(&relay.transport);
            if let Some(rtt) = &relay.rtt {
                observe_samples(self.relay_rtt.as_ref(), &[probe, transport], rtt);
                if rtt.sent > 0 {
                    self.relay_loss.with_label_values(&[probe, transport]).set(rtt.loss);
                }
            }
        }
        if let Some(rtt) = d.stun.as_ref().and_then(|s| s.rtt.as_ref()) {
            observe_samples(self.stun_rtt.as_ref(), &[probe], rtt);
        }
        if kind == "stun" || d.stun.is_some() {
            self.observe_nat(probe, d.stun.as_ref());
        }
        if let Some(ice) = &d.ice {
            for t in ICE_TYPES {
                let n = ice.candidates.get(*t).copied().unwrap_or(0);
                self.ice_candidates.with_label_values(&[probe, t]).set(f64::from(n));
            }
            if let Some(h) = &self.ice_first {
                for (t, after) in &ice.first_arrival {
                    if ICE_TYPES.contains(&t.as_str()) {
                        h.with_label_values(&[probe, t]).observe(after.as_secs_f64());
                    }
                }
            }
            for (p, n) in &ice.relay_protocols {
                if RELAY_PROTOCOLS.contains(&p.as_str()) {
                    self.ice_relays.with_label_values(&[probe, p]).set(f64::from(*n));
                }
            }
            // A protocol that did not connect this run has no RTT: its series goes, not stale.
            for p in RELAY_PROTOCOLS {
                match ice.rtt_via.get(*p).filter(|r| r.received > 0) {
                    Some(rtt) => self.ice_rtt.with_label_values(&[probe, p]).set(rtt.avg.as_secs_f64()),
                    None => {
                        let _ = self.ice_rtt.remove_label_values(&[probe, p]);
                    }
                }
            }
        }
        if let Some(path) = &d.path {
            self.path_hops.with_label_values(&[probe]).set(f64::from(path.end_hop));
            let reached = if path.end == "reached" { 1.0 } else { 0.0 };
            self.path_reached.with_label_values(&[probe]).set(reached);
        }
        if let Some(u) = &d.udp_ports {
            let known = u.open_ports + u.closed_ports;
            if known > 0 {
                let ratio = f64::from(u.open_ports) / f64::from(known);
                self.udp_ports_open.with_label_values(&[probe]).set(ratio);
            } else {
                // No settled port (yet, or since a reload started a fresh sweep): no stale share.
                let _ = self.udp_ports_open.remove_label_values(&[probe]);
            }
            self.udp_ports_coverage.with_label_values(&[probe]).set(u.coverage);
        }
        // Only probes with `media:` get these series, and only once a stream sent something;
        // a run without a stream (it failed before, or sent nothing) removes them, not stale.
        match d.media.as_ref().filter(|m| m.sent > 0) {
            Some(m) => {
                self.media_mos.with_label_values(&[probe]).set(m.mos);
                self.media_loss.with_label_values(&[probe]).set(m.loss);
                // Nothing back: no jitter measured, so no series (a 0 would read as perfect).
                match m.jitter {
                    Some(j) => self.media_jitter.with_label_values(&[probe]).set(j.as_secs_f64()),
                    None => {
                        let _ = self.media_jitter.remove_label_values(&[probe]);
                    }
                }
            }
            None => {
                let _ = self.media_mos.remove_label_values(&[probe]);
                let _ = self.media_loss.remove_label_values(&[probe]);
                let _ = self.media_jitter.remove_label_values(&[probe]);
            }
        }
        if let Some(rtt) = d.websocket.as_ref().and_then(|w| w.ping_rtt.as_ref()) {
            observe_samples(self.ws_ping_rtt.as_ref(), &[probe], rtt);
        }
        if let Some(c) = &d.concurrent {
            self.concurrent_established
                .with_label_values(&[probe])
                .set(f64::from(c.established));
        }
        // Every held socket: each connection's with `concurrent: N`, else the one.
        let holds: Vec<&HoldDetails> = match d.concurrent.as_ref().filter(|c| !c.holds.is_empty()) {
            Some(c) => c.holds.iter().collect(),
            None => d.websocket.iter().filter_map(|w| w.hold.as_ref()).collect(),
        };
        for h in holds {
            let result = if h.survived { "survived" } else { "cut" };
            self.ws_hold.with_label_values(&[probe, result]).observe(h.lifetime.as_secs_f64());
        }
        if !d.per_address.is_empty() {
            let now: BTreeSet<String> = d.per_address.iter().map(|a| a.address.ip().to_string()).collect();
            for a in &d.per_address {
                let ip = a.address.ip().to_string();
                self.address_success
                    .with_label_values(&[probe, kind, &ip])
                    .set(if a.success { 1.0 } else { 0.0 });
            }
            if let Ok(mut last) = self.last_addresses.lock() {
                if let Some(previous) = last.insert(probe.to_string(), now.clone()) {
                    for gone in previous.difference(&now) {
                        let _ = self.address_success.remove_label_values(&[probe, kind, gone]);
                    }
                }
            }
        }
    }
}

/// Buckets of WebSocket hold lifetimes: proxy idle timers sit at 3 s to 1 h.
const HOLD_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

fn observe_samples(h: Option<&HistogramVec>, labels: &[&str], rtt: &RttStats) {
    let Some(h) = h else { return };
    let h = h.with_label_values(labels);
    for s in &rtt.samples {
        h.observe(s.as_secs_f64());
    }
}

/// Maps a free-form transport word onto the fixed label set.
fn bounded_transport(t: &str) -> &'static str {
    Transport::parse(t).map_or("other", Transport::as_str)
}

/// Turns a configured label key into a valid, non-clashing Prometheus label name.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with("__") || s == "probe" || s == "kind" {
        s = format!("label_{s}");
    }
    s
}

/// The daemon's metrics: one registry for the process life.
pub struct Metrics {
    registry: Registry,
    runs: RunFamilies,
    /// The default series of every configured probe (`egress_probe_info` included, whose
    /// label names are the union of configured label keys).
    table: ProbeTable,
    reload_success: Gauge,
    reload_timestamp: Gauge,
    /// `egress_probe_schedule_lag_seconds`: actual start − planned start, all probes together.
    schedule_lag: prometheus::Histogram,
    /// Bumped after every change to a value; see the module docs on the encoding cache.
    generation: Arc<AtomicU64>,
    /// The last encoded text and the generation read before encoding it.
    cache: Mutex<Option<(u64, Arc<String>)>>,
    /// The gzip of the last text [`Metrics::render_gzip`] compressed, with the tail appended.
    gzip_cache: Mutex<Option<GzipCache>>,
    push: PushFamilies,
}

/// One compressed `/metrics` answer and what it was made from: the generation read before
/// encoding (as for the text cache) and the endpoint counters' text.
struct GzipCache {
    generation: u64,
    tail: String,
    gzip: bytes::Bytes,
}

/// The push delivery's own families (`egress_probe_push_*`), one series set per receiver
/// (`remote` = the receiver's `host:port`). Served on `/metrics` and pushed like the rest.
#[derive(Clone)]
pub struct PushFamilies {
    samples: IntCounterVec,
    failures: IntCounterVec,
    queue: GaugeVec,
    last_success: GaugeVec,
    /// The registry's change counter (see the module docs on the encoding cache).
    generation: Arc<AtomicU64>,
}

/// `result` words of `egress_probe_push_samples_total`.
pub const PUSH_RESULTS: &[&str] = &["sent", "failed", "dropped"];

impl PushFamilies {
    fn register(reg: &Registry, generation: Arc<AtomicU64>) -> Result<PushFamilies, MetricsError> {
        Ok(PushFamilies {
            generation,
            samples: counter(
                reg,
                "egress_probe_push_samples_total",
                "Samples handled by remote_write push: sent (accepted), failed (refused by the receiver with a 4xx, not retried), dropped (queue full, too old, or still queued at stop).",
                &["remote", "result"],
            )?,
            failures: counter(
                reg,
                "egress_probe_push_failures_total",
                "Failed remote_write requests by phase and reason, with the probes' words (proxy/auth, tls/pin_mismatch, request/status_429, connect/timeout).",
                &["remote", "phase", "reason"],
            )?,
            queue: gauge(
                reg,
                "egress_probe_push_queue_samples",
                "Samples waiting in the push queue.",
                &["remote"],
            )?,
            last_success: gauge(
                reg,
                "egress_probe_push_last_success_timestamp_seconds",
                "Unix time of the last write the receiver accepted (0 until the first).",
                &["remote"],
            )?,
        })
    }

    /// Creates the series of one receiver at 0.
    pub fn init(&self, remote: &str) {
        for r in PUSH_RESULTS {
            self.samples.with_label_values(&[remote, r]);
        }
        self.queue.with_label_values(&[remote]).set(0.0);
        self.last_success.with_label_values(&[remote]).set(0.0);
        self.changed();
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Counts `n` samples with `result` (one of [`PUSH_RESULTS`]).
    pub fn samples(&self, remote: &str, result: &str, n: usize) {
        self.samples.with_label_values(&[remote, result]).inc_by(n as u64);
        self.changed();
    }

    /// Counts one failed request at `phase`/`reason` (the label words of `outcome`).
    pub fn failure(&self, remote: &str, phase: &str, reason: &str) {
        self.failures.with_label_values(&[remote, phase, reason]).inc();
        self.changed();
    }

    /// Sets the queue length in samples.
    pub fn queue(&self, remote: &str, samples: usize) {
        self.queue.with_label_values(&[remote]).set(samples as f64);
        self.changed();
    }

    /// Records an accepted write now.
    pub fn success(&self, remote: &str) {
        self.last_success.with_label_values(&[remote]).set(unix_now());
        self.changed();
    }
}

/// Buckets of `egress_probe_schedule_lag_seconds`: 100 µs … 10 s (the p99 target is 10 ms).
pub const LAG_BUCKETS: &[f64] = &[0.0001, 0.001, 0.005, 0.01, 0.05, 0.25, 1.0, 10.0];

impl Metrics {
    /// Registers every family and initialises the series of each configured probe.
    pub fn new(config: &Config) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let runs = RunFamilies::register(&registry, config.metrics.histograms)?;
        let info_keys: Vec<String> = config
            .probes
            .iter()
            .flat_map(|p| p.labels.keys().map(|k| label_name(k)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let build = gauge(
            &registry,
            "egress_probe_build_info",
            "Version of egress-probe (always 1).",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        let reload_success = scalar(
            &registry,
            "egress_probe_config_reload_success",
            "Whether the last config load or reload succeeded (1) or failed (0).",
        )?;
        let reload_timestamp = scalar(
            &registry,
            "egress_probe_config_last_reload_timestamp_seconds",
            "Unix time of the last successful config load or reload.",
        )?;
        let schedule_lag = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "egress_probe_schedule_lag_seconds",
                "Delay between the planned start of a scheduled run (its grid point) and the moment it started (after waiting for a concurrency slot), all probes together.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(schedule_lag.clone()))?;
        let generation = Arc::new(AtomicU64::new(0));
        let push = PushFamilies::register(&registry, generation.clone())?;
        let mut table = ProbeTable::new(true);
        for p in &config.probes {
            let by_key: BTreeMap<String, &str> = p.labels.iter().map(|(k, v)| (label_name(k), v.as_str())).collect();
            let info: Vec<(&str, &str)> = info_keys
                .iter()
                .map(|k| (k.as_str(), by_key.get(k).copied().unwrap_or("")))
                .collect();
            table.add(&p.name, p.spec.kind(), &p.spec.target(), &info);
        }
        let m = Metrics {
            registry,
            runs,
            table,
            reload_success,
            reload_timestamp,
            schedule_lag,
            generation,
            cache: Mutex::new(None),
            gzip_cache: Mutex::new(None),
            push,
        };
        for rw in &config.push {
            m.push.init(&rw.remote_label());
        }
        m.config_loaded(true);
        Ok(m)
    }

    /// Records a finished run of a configured probe.
    pub fn observe(&self, probe: &ProbeConfig, outcome: &Outcome) {
        self.table.observe(&probe.name, outcome);
        self.runs.observe(&probe.name, probe.spec.kind(), outcome);
        self.changed();
    }

    /// Counts a run skipped because the previous one was still in flight.
    pub fn skipped(&self, probe: &str) {
        self.table.skipped(probe);
        self.changed();
    }

    /// Records how late a scheduled run started.
    pub fn schedule_lag(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
        self.changed();
    }

    /// Records the result of a config (re)load.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_success.set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.reload_timestamp.set(unix_now());
        }
        self.changed();
    }

    /// Marks the encoded text stale; called after every value change.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The text exposition format for `/metrics`, re-encoded only when a value changed since
    /// the last call (see the module docs).
    pub fn render(&self) -> Result<Arc<String>, MetricsError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Ok(cache) = self.cache.lock() {
            if let Some((g, text)) = cache.as_ref() {
                if *g == generation {
                    return Ok(text.clone());
                }
            }
        }
        let mut text = self.encode()?;
        // Moved, not copied, into the cache (a copy of 12 MB at 10,000 probes).
        text.shrink_to_fit();
        let text = Arc::new(text);
        if let Ok(mut cache) = self.cache.lock() {
            // Keep the newest encoding when two scrapes raced.
            if cache.as_ref().is_none_or(|(g, _)| *g <= generation) {
                *cache = Some((generation, text.clone()));
            }
        }
        Ok(text)
    }

    /// [`Metrics::render`]'s text followed by `tail` (the endpoint counters), gzip-compressed,
    /// for a scraper that accepts gzip; compressed again only when a value or the tail changed.
    /// Only the compressed bytes are kept: a stale text is encoded for this answer and dropped
    /// (not cached), so a Prometheus-only daemon holds ~0.6 MB at 10,000 probes, not 12 MB.
    pub fn render_gzip(&self, tail: &str) -> Result<bytes::Bytes, MetricsError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Ok(cache) = self.gzip_cache.lock() {
            if let Some(c) = cache.as_ref() {
                if c.generation == generation && c.tail == tail {
                    return Ok(c.gzip.clone());
                }
            }
        }
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.as_ref().filter(|(g, _)| *g == generation).map(|(_, t)| t.clone()));
        let gzip = match cached {
            Some(text) => gzip(&[text.as_bytes(), tail.as_bytes()])?,
            None => gzip(&[self.encode()?.as_bytes(), tail.as_bytes()])?,
        };
        if let Ok(mut cache) = self.gzip_cache.lock() {
            if cache.as_ref().is_none_or(|c| c.generation <= generation) {
                *cache = Some(GzipCache {
                    generation,
                    tail: tail.to_string(),
                    gzip: gzip.clone(),
                });
            }
        }
        Ok(gzip)
    }

    /// A fresh encoding of every family (the table's, then the registry's).
    fn encode(&self) -> Result<String, MetricsError> {
        let mut text = String::with_capacity(self.table.size_hint());
        self.table.encode_into(&mut text);
        encode_into(&self.registry, &mut text)?;
        Ok(text)
    }

    /// Every family as `/metrics` serves it, for the push delivery.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.table.families();
        families.extend(self.registry.gather());
        families
    }

    /// The push delivery's own families.
    pub fn push_families(&self) -> &PushFamilies {
        &self.push
    }
}

/// The daemon's scheduler reports every run here (and each skipped tick).
impl Sink for Metrics {
    fn record(&self, probe: &ProbeConfig, outcome: &Outcome) {
        self.observe(probe, outcome);
    }
    fn skipped(&self, probe: &ProbeConfig) {
        Metrics::skipped(self, &probe.name);
    }
    fn started(&self, _probe: &ProbeConfig, lag: Duration) {
        self.schedule_lag(lag);
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

fn encode(registry: &Registry) -> Result<String, MetricsError> {
    let mut out = String::new();
    encode_into(registry, &mut out)?;
    Ok(out)
}

/// Appends the text exposition of `registry` to `out`.
fn encode_into(registry: &Registry, out: &mut String) -> Result<(), MetricsError> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    out.push_str(std::str::from_utf8(&buf).map_err(|_| MetricsError::Encoding)?);
    Ok(())
}

/// One gzip member of `parts` in order, at the fastest level (the text repeats itself so much
/// that level 1 already shrinks it ~15×).
fn gzip(parts: &[&[u8]]) -> Result<bytes::Bytes, MetricsError> {
    use std::io::Write as _;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut z = flate2::write::GzEncoder::new(Vec::with_capacity(len / 8 + 64), flate2::Compression::fast());
    for p in parts {
        z.write_all(p)?;
    }
    Ok(bytes::Bytes::from(z.finish()?))
}

/// The endpoint's own counters: refused `/probe` targets and refused connections. They live as
/// long as the process (a config reload does not reset them), in a registry of their own that
/// the server renders after [`Metrics::render`].
pub struct EndpointCounters {
    registry: Registry,
    probe_refused: IntCounterVec,
    connections_refused: IntCounterVec,
    unauthorized: IntCounterVec,
}

/// Reasons a `/probe` target is refused (see `config::web`), pre-initialised at 0.
pub const PROBE_REFUSAL_REASONS: &[&str] = &["scheme", "not_allowed", "credentials"];

impl EndpointCounters {
    pub fn new() -> Result<EndpointCounters, MetricsError> {
        let registry = Registry::new();
        let probe_refused = counter(
            &registry,
            "egress_probe_probe_refused_total",
            "/probe requests refused with 403, by reason (scheme, not_allowed, credentials).",
            &["reason"],
        )?;
        for r in PROBE_REFUSAL_REASONS {
            probe_refused.with_label_values(&[r]);
        }
        let connections_refused = counter(
            &registry,
            "egress_probe_web_connections_refused_total",
            "Connections to the HTTP endpoint closed without an answer: over_capacity, tls_handshake.",
            &["reason"],
        )?;
        for r in ["over_capacity", "tls_handshake"] {
            connections_refused.with_label_values(&[r]);
        }
        let unauthorized = counter(
            &registry,
            "egress_probe_web_unauthorized_total",
            "Requests answered 401 (missing or wrong basic_auth credentials).",
            &[],
        )?;
        unauthorized.with_label_values(&[] as &[&str]);
        Ok(EndpointCounters {
            registry,
            probe_refused,
            connections_refused,
            unauthorized,
        })
    }

    /// Counts a refused `/probe` target.
    pub fn probe_refused(&self, reason: &str) {
        self.probe_refused.with_label_values(&[reason]).inc();
    }

    /// Brings the listener's counts (monotonic totals kept by the listener) into the registry.
    pub fn sync_listener(&self, over_capacity: u64, tls_failed: u64, unauthorized: u64) {
        let up = |c: prometheus::IntCounter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        up(self.connections_refused.with_label_values(&["over_capacity"]), over_capacity);
        up(self.connections_refused.with_label_values(&["tls_handshake"]), tls_failed);
        up(self.unauthorized.with_label_values(&[] as &[&str]), unauthorized);
    }

    /// The text exposition of these counters.
    pub fn render(&self) -> Result<String, MetricsError> {
        encode(&self.registry)
    }
}

/// `/probe` output for one run: blackbox-compatible `probe_success` and
/// `probe_duration_seconds`, plus our families for that run. `histograms` is the config's
/// `metrics: {histograms}`, as for `/metrics`.
///
/// A run whose details export nothing besides the TLS expiry (TCP, TLS, HTTP, DNS: most
/// `/probe` traffic) is written straight to text by [`render_plain_run`]; any other run goes
/// through a fresh `prometheus` registry ([`render_single_run_registry`]). Building that
/// registry (25 families registered, gathered, encoded) was most of the user-space cost of a
/// `/probe` besides the handshake; both write the same text (a test pins it byte for byte).
pub fn render_single_run(
    probe: &str,
    kind: &'static str,
    target: &str,
    outcome: &Outcome,
    histograms: Histograms,
) -> Result<String, MetricsError> {
    if plain_run(kind, &outcome.detail) {
        Ok(render_plain_run(probe, kind, target, outcome, histograms))
    } else {
        render_single_run_registry(probe, kind, target, outcome, histograms)
    }
}

/// Whether a run's details feed no family of [`RunFamilies`] but the TLS expiry (and the
/// per-phase histogram, which every run feeds). The destructuring names every field so that a
/// new detail cannot be added without deciding here whether it exports something.
fn plain_run(kind: &str, d: &crate::outcome::details::Details) -> bool {
    let crate::outcome::details::Details {
        peer: _,
        resolved: _,
        dns: _,
        tls: _,
        http: _,
        websocket,
        session: _,
        concurrent,
        auth: _,
        stun,
        relay,
        ice,
        path,
        udp_ports,
        media,
        reject_origin: _,
        per_address,
        retry_after: _,
        notes: _,
    } = d;
    kind != "stun"
        && websocket.is_none()
        && concurrent.is_none()
        && stun.is_none()
        && relay.is_none()
        && ice.is_none()
        && path.is_none()
        && udp_ports.is_none()
        && media.is_none()
        && per_address.is_empty()
}

/// [`render_single_run`] for a [`plain_run`]: the text the registry would write (families
/// sorted by name, series by label values, labels by name), then the one-run table.
fn render_plain_run(probe: &str, kind: &'static str, target: &str, outcome: &Outcome, histograms: Histograms) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2048);
    let p = table::escape(probe);
    if histograms == Histograms::PerPhase && !outcome.phases.is_empty() {
        // One series per phase, sorted by phase word (kind and probe are the same on all).
        let mut series: Vec<(&str, [u64; TIMING_BUCKETS.len()], f64, u64)> = Vec::with_capacity(outcome.phases.len());
        for t in &outcome.phases {
            let phase = t.phase.as_str();
            let i = match series.iter().position(|s| s.0 == phase) {
                Some(i) => i,
                None => {
                    series.push((phase, [0; TIMING_BUCKETS.len()], 0.0, 0));
                    series.len() - 1
                }
            };
            let v = t.duration.as_secs_f64();
            let s = &mut series[i];
            if let Some(b) = TIMING_BUCKETS.iter().position(|b| v <= *b) {
                s.1[b] += 1;
            }
            s.2 += v;
            s.3 += 1;
        }
        series.sort_by(|a, b| a.0.cmp(b.0));
        let (name, help) = PHASE_DURATION;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (phase, buckets, sum, count) in &series {
            let mut cumulative = 0;
            for (le, n) in TIMING_BUCKETS.iter().zip(buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{kind=\"{kind}\",phase=\"{phase}\",probe=\"{p}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{kind=\"{kind}\",phase=\"{phase}\",probe=\"{p}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\",phase=\"{phase}\",probe=\"{p}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{kind=\"{kind}\",phase=\"{phase}\",probe=\"{p}\"}} {count}");
        }
    }
    if let Some(expiry) = outcome.detail.tls.as_ref().and_then(|t| t.earliest_expiry_unix) {
        let (name, help) = TLS_EXPIRY;
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{probe=\"{p}\"}} {}",
            expiry as f64
        );
    }
    let (name, help) = PROBE_DURATION;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
        outcome.total.as_secs_f64()
    );
    let (name, help) = PROBE_SUCCESS;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
        u8::from(outcome.success)
    );
    let mut table = ProbeTable::new(false);
    table.add(probe, kind, target, &[]);
    table.observe(probe, outcome);
    table.encode_into(&mut out);
    out
}

/// [`render_single_run`] through a fresh registry: every family of [`RunFamilies`], for runs
/// with more details than [`render_plain_run`] writes; public for `benches/metrics.rs`, which
/// times both.
pub fn render_single_run_registry(
    probe: &str,
    kind: &'static str,
    target: &str,
    outcome: &Outcome,
    histograms: Histograms,
) -> Result<String, MetricsError> {
    let registry = Registry::new();
    let success = scalar(&registry, PROBE_SUCCESS.0, PROBE_SUCCESS.1)?;
    let duration = scalar(&registry, PROBE_DURATION.0, PROBE_DURATION.1)?;
    success.set(if outcome.success { 1.0 } else { 0.0 });
    duration.set(outcome.total.as_secs_f64());
    let runs = RunFamilies::register(&registry, histograms)?;
    runs.observe(probe, kind, outcome);
    let mut table = ProbeTable::new(false);
    table.add(probe, kind, target, &[]);
    table.observe(probe, outcome);
    let mut text = encode(&registry)?;
    table.encode_into(&mut text);
    Ok(text)
}

/// `/probe`'s blackbox-compatible families (name, help), as blackbox_exporter words them.
const PROBE_SUCCESS: (&str, &str) = ("probe_success", "Displays whether or not the probe was a success");
const PROBE_DURATION: (&str, &str) = ("probe_duration_seconds", "Returns how long the probe took to complete in seconds");
/// The two [`RunFamilies`] a plain run can have, shared by the registry and the text writer.
const PHASE_DURATION: (&str, &str) = (
    "egress_probe_phase_duration_seconds",
    "Time spent in each phase of a probe run (the failing phase included).",
);
const TLS_EXPIRY: (&str, &str) = (
    "egress_probe_tls_cert_expiry_timestamp_seconds",
    "Earliest notAfter of the certificate chain the server presented, as a Unix timestamp.",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostPort, ProbeSpec, TcpSpec};
    use crate::outcome::details::{AddressResult, Details, IceDetails, RelayDetails, StunDetails, TlsDetails};
    use crate::outcome::{Failure, Phase, PhaseTiming, Reason};

    fn tcp_probe(name: &str, labels: &[(&str, &str)]) -> ProbeConfig {
        ProbeConfig {
            name: name.into(),
            interval: None,
            timeout: None,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            proxy: None,
            spec: ProbeSpec::Tcp(TcpSpec {
                target: HostPort {
                    host: "relay.example.test".into(),
                    port: 443,
                },
                addresses: Default::default(),
            }),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn refused() -> Outcome {
        Outcome {
            success: false,
            phases: vec![
                PhaseTiming {
                    phase: Phase::Resolve,
                    duration: ms(1),
                },
                PhaseTiming {
                    phase: Phase::Connect,
                    duration: ms(2),
                },
            ],
            failure: Some(Failure::new(
                Phase::Connect,
                Reason::Refused,
                "connection refused by 10.0.0.1 secret-ish text",
            )),
            total: ms(3),
            detail: Details::default(),
        }
    }

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn counters_start_at_zero_and_count_failures_by_phase_and_reason() {
        let cfg = Config {
            probes: vec![tcp_probe("a", &[("team", "voice"), ("site-id", "x")]), tcp_probe("b", &[])],
            metrics: crate::config::MetricsSettings {
                histograms: Histograms::PerPhase,
            },
            ..Default::default()
        };
        let m = Metrics::new(&cfg).unwrap();
        let before = m.render().unwrap();
        assert_eq!(
            line_value(&before, r#"egress_probe_runs_total{kind="tcp",probe="b",result="failure"}"#),
            Some(0.0)
        );
        assert_eq!(line_value(&before, r#"egress_probe_skipped_runs_total{probe="a"}"#), Some(0.0));
        assert!(
            before.contains(r#"egress_probe_info{kind="tcp",probe="a",site_id="x",team="voice"} 1"#),
            "{before}"
        );
        assert!(before.contains(r#"egress_probe_info{kind="tcp",probe="b",site_id="",team=""} 1"#));
        assert!(before.contains(r#"egress_probe_build_info{version=""#));

        m.observe(&cfg.probes[0], &refused());
        m.observe(&cfg.probes[0], &refused());
        let after = m.render().unwrap();
        assert_eq!(
            line_value(&after, r#"egress_probe_runs_total{kind="tcp",probe="a",result="failure"}"#),
            Some(2.0)
        );
        assert_eq!(
            line_value(
                &after,
                r#"egress_probe_failures_total{kind="tcp",phase="connect",probe="a",reason="refused"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            line_value(
                &after,
                r#"egress_probe_success{kind="tcp",probe="a",target="relay.example.test:443"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            line_value(
                &after,
                r#"egress_probe_phase_duration_seconds_count{kind="tcp",phase="connect",probe="a"}"#
            ),
            Some(2.0)
        );
        assert!(!after.contains("secret-ish"), "failure messages must never become labels");
    }

    #[test]
    fn a_trace_exports_its_hop_count_and_whether_it_reached_never_hop_addresses() {
        let mut o = Outcome {
            success: false,
            total: ms(40),
            ..Default::default()
        };
        o.detail.path = Some(crate::outcome::details::PathDetails {
            end: "silence".into(),
            end_hop: 2,
            hops: vec![crate::outcome::details::PathHop {
                ttl: 1,
                address: Some("10.210.0.1".parse().unwrap()),
                answer: "time_exceeded".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let text = render_single_run("p", "path", "tcp:198.51.100.1:443", &o, Histograms::PerProbe).unwrap();
        assert!(text.contains(r#"egress_probe_path_hops{probe="p"} 2"#), "{text}");
        assert!(text.contains(r#"egress_probe_path_reached{probe="p"} 0"#), "{text}");
        assert!(!text.contains("10.210.0.1"), "hop addresses must never become labels");
    }

    #[test]
    fn udp_ports_export_open_share_and_coverage_never_port_labels() {
        let mut o = Outcome {
            success: false,
            total: ms(40),
            ..Default::default()
        };
        o.detail.udp_ports = Some(crate::outcome::details::UdpPortsDetails {
            set: "20000-20099".into(),
            set_size: 100,
            open: vec!["20000-20049".into()],
            closed: vec!["20050-20079".into()],
            open_ports: 50,
            closed_ports: 30,
            covered: 80,
            coverage: 0.8,
            ..Default::default()
        });
        let text = render_single_run("p", "udp_ports", "udp:198.51.100.1:20000-20099", &o, Histograms::PerProbe).unwrap();
        assert!(text.contains(r#"egress_probe_udp_ports_open_ratio{probe="p"} 0.625"#), "{text}");
        assert!(text.contains(r#"egress_probe_udp_ports_coverage_ratio{probe="p"} 0.8"#), "{text}");
        assert!(!text.contains("20050"), "port ranges must never become labels");
    }

    #[test]
    fn a_media_stream_exports_mos_loss_and_jitter_and_probes_without_one_export_none() {
        let mut o = Outcome {
            success: false,
            total: ms(3000),
            ..Default::default()
        };
        let plain = render_single_run("p", "turn", "turn.example.test:3478", &o, Histograms::PerProbe).unwrap();
        assert!(!plain.contains("_media_"), "no media series without a stream:\n{plain}");
        o.detail.media = Some(crate::outcome::details::MediaDetails {
            sent: 100,
            received: 95,
            loss: 0.05,
            jitter: Some(Duration::from_micros(1500)),
            mos: 3.88,
            ..Default::default()
        });
        let text = render_single_run("p", "turn", "turn.example.test:3478", &o, Histograms::PerProbe).unwrap();
        assert!(text.contains(r#"egress_probe_media_mos{probe="p"} 3.88"#), "{text}");
        assert!(text.contains(r#"egress_probe_media_loss_ratio{probe="p"} 0.05"#), "{text}");
        assert!(text.contains(r#"egress_probe_media_jitter_seconds{probe="p"} 0.0015"#), "{text}");
    }

    #[test]
    fn details_become_their_families() {
        let mut o = Outcome {
            success: true,
            total: ms(40),
            ..Default::default()
        };
        o.detail.tls = Some(TlsDetails {
            earliest_expiry_unix: Some(1_900_000_000),
            ..Default::default()
        });
        o.detail.relay = Some(RelayDetails {
            transport: "tls".into(),
            rtt: Some(RttStats::from_samples(4, vec![ms(2), ms(3), ms(4)])),
            ..Default::default()
        });
        o.detail.stun = Some(StunDetails {
            rtt: Some(RttStats::from_samples(2, vec![ms(1), ms(1)])),
            nat_mapping: Some("endpoint_independent".into()),
            nat_filtering: Some("address_and_port_dependent".into()),
            binding_lifetime: Some(crate::outcome::details::BindingLifetime {
                alive: Duration::from_secs(28),
                expired: Some(Duration::from_secs(32)),
                checks: 9,
            }),
            mapped: Some("192.0.2.7:5000".parse().unwrap()),
            ..Default::default()
        });
        o.detail.ice = Some(IceDetails {
            candidates: [("host".to_string(), 2), ("relay".to_string(), 1)].into_iter().collect(),
            first_arrival: [("relay".to_string(), ms(30))].into_iter().collect(),
            relay_protocols: [("udp".to_string(), 0), ("tls".to_string(), 1)].into_iter().collect(),
            rtt_via: [("tls".to_string(), RttStats::from_samples(2, vec![ms(3), ms(5)]))]
                .into_iter()
                .collect(),
            ..Default::default()
        });
        o.detail.per_address = vec![
            AddressResult {
                address: "198.51.100.1:443".parse().unwrap(),
                success: true,
                failure: None,
                total: ms(1),
                tls: None,
            },
            AddressResult {
                address: "198.51.100.2:443".parse().unwrap(),
                success: false,
                failure: None,
                total: ms(1),
                tls: None,
            },
        ];
        let text = render_single_run("p", "turn", "turn.example.test:443", &o, Histograms::PerPhase).unwrap();
        assert!(text.contains("probe_success 1"), "{text}");
        assert!(text.contains("probe_duration_seconds 0.04"));
        assert!(text.contains(r#"egress_probe_tls_cert_expiry_timestamp_seconds{probe="p"} 1900000000"#));
        assert!(text.contains(r#"egress_probe_relay_rtt_seconds_count{probe="p",transport="tls"} 3"#));
        assert!(text.contains(r#"egress_probe_relay_loss_ratio{probe="p",transport="tls"} 0.25"#));
        assert!(text.contains(r#"egress_probe_stun_rtt_seconds_count{probe="p"} 2"#));
        assert!(text.contains(r#"egress_probe_nat_mapping{behavior="endpoint_independent",probe="p"} 1"#));
        assert!(text.contains(r#"egress_probe_nat_mapping{behavior="endpoint_dependent",probe="p"} 0"#));
        assert!(text.contains(r#"egress_probe_nat_mapping{behavior="address_and_port_dependent",probe="p"} 0"#));
        assert!(text.contains(r#"egress_probe_nat_filtering{behavior="address_and_port_dependent",probe="p"} 1"#));
        assert!(text.contains(r#"egress_probe_nat_filtering{behavior="endpoint_independent",probe="p"} 0"#));
        assert!(
            text.contains(r#"egress_probe_nat_binding_lifetime_seconds{probe="p"} 30"#),
            "{text}"
        );
        assert!(text.contains(r#"egress_probe_ice_candidates{probe="p",type="srflx"} 0"#));
        assert!(text.contains(r#"egress_probe_ice_candidates{probe="p",type="host"} 2"#));
        assert!(text.contains(r#"egress_probe_ice_first_candidate_seconds_count{probe="p",type="relay"} 1"#));
        assert!(text.contains(r#"egress_probe_ice_relay_candidates{probe="p",protocol="tls"} 1"#));
        assert!(text.contains(r#"egress_probe_ice_relay_candidates{probe="p",protocol="udp"} 0"#));
        assert!(!text.contains(r#"egress_probe_ice_relay_candidates{probe="p",protocol="tcp"}"#));
        assert!(
            text.contains(r#"egress_probe_ice_rtt_seconds{probe="p",relay_protocol="tls"} 0.004"#),
            "{text}"
        );
        assert!(!text.contains(r#"egress_probe_ice_rtt_seconds{probe="p",relay_protocol="udp"}"#));
        assert!(text.contains(r#"egress_probe_address_success{address="198.51.100.2",kind="turn",probe="p"} 0"#));
        assert!(!text.contains("192.0.2.7"), "the client's mapped address must never be a label");
    }

    #[test]
    fn a_plain_run_is_written_byte_for_byte_as_the_registry_wrote_it() {
        let phases = |ds: &[(Phase, f64)]| -> Vec<PhaseTiming> {
            ds.iter()
                .map(|(phase, s)| PhaseTiming {
                    phase: *phase,
                    duration: Duration::from_secs_f64(*s),
                })
                .collect()
        };
        let run = |success: bool, ds: &[(Phase, f64)], total: f64, failure: Option<(Phase, Reason)>| Outcome {
            success,
            phases: phases(ds),
            failure: failure.map(|(p, r)| Failure::new(p, r, "a message")),
            total: Duration::from_secs_f64(total),
            detail: Details::default(),
        };
        let with_tls = |mut o: Outcome, expiry: Option<i64>| {
            o.detail.tls = Some(TlsDetails {
                earliest_expiry_unix: expiry,
                ..Default::default()
            });
            o
        };
        let tls_ok = with_tls(
            run(
                true,
                &[(Phase::Resolve, 0.0004), (Phase::Connect, 0.005), (Phase::Tls, 0.0031)],
                0.0085,
                None,
            ),
            Some(1_900_000_000),
        );
        let mut http = with_tls(
            run(
                true,
                &[(Phase::Connect, 0.001), (Phase::Tls, 0.004), (Phase::Request, 0.27)],
                0.275,
                None,
            ),
            Some(1_800_000_001),
        );
        http.detail.http = Some(crate::outcome::details::HttpDetails::default());
        http.detail.peer = Some("127.0.0.1:443".parse().unwrap());
        http.detail.notes = vec!["a note".into()];
        let outcomes = [
            refused(),
            run(true, &[(Phase::Resolve, 0.001), (Phase::Connect, 0.002)], 0.003, None),
            tls_ok,
            with_tls(
                run(
                    false,
                    &[(Phase::Connect, 0.001), (Phase::Tls, 0.2)],
                    0.201,
                    Some((Phase::Tls, Reason::Timeout)),
                ),
                None,
            ),
            http,
            // A phase twice (one series, two observations), a timeout past every bucket.
            run(
                false,
                &[(Phase::Connect, 0.5), (Phase::Connect, 45.0)],
                45.5,
                Some((Phase::Connect, Reason::Timeout)),
            ),
            // Nothing ran at all.
            run(false, &[], 0.0, Some((Phase::Internal, Reason::Cancelled))),
        ];
        for name in ["p", "b \"quoted\" \\ name\nx"] {
            for histograms in [Histograms::PerProbe, Histograms::PerPhase] {
                for kind in ["tcp", "tls", "http"] {
                    for o in &outcomes {
                        assert!(plain_run(kind, &o.detail));
                        let ours = render_plain_run(name, kind, "h:443", o, histograms);
                        let theirs = render_single_run_registry(name, kind, "h:443", o, histograms).unwrap();
                        assert_eq!(ours, theirs, "{name} {kind} {histograms:?}");
                        assert_eq!(render_single_run(name, kind, "h:443", o, histograms).unwrap(), ours);
                    }
                }
            }
        }
        // Any detail with families of its own goes through the registry.
        let mut o = Outcome::default();
        assert!(!plain_run("stun", &o.detail));
        o.detail.per_address = vec![AddressResult {
            address: "198.51.100.1:443".parse().unwrap(),
            success: true,
            failure: None,
            total: ms(1),
            tls: None,
        }];
        assert!(!plain_run("tcp", &o.detail));
    }

    #[test]
    fn media_series_go_when_a_later_run_has_no_stream() {
        let f = RunFamilies::register(&Registry::new(), Histograms::PerProbe).unwrap();
        let mut o = Outcome::default();
        o.detail.media = Some(crate::outcome::details::MediaDetails {
            sent: 100,
            received: 100,
            mos: 4.4,
            jitter: Some(Duration::from_millis(1)),
            ..Default::default()
        });
        f.observe("p", "turn", &o);
        let count = |f: &RunFamilies| {
            let r = Registry::new();
            r.register(Box::new(f.media_mos.clone())).unwrap();
            r.register(Box::new(f.media_loss.clone())).unwrap();
            r.register(Box::new(f.media_jitter.clone())).unwrap();
            r.gather().iter().map(|m| m.get_metric().len()).sum::<usize>()
        };
        assert_eq!(count(&f), 3);
        // A stream of which nothing came back measured no jitter: MOS and loss, no jitter.
        let mut silent = Outcome::default();
        silent.detail.media = Some(crate::outcome::details::MediaDetails {
            sent: 100,
            loss: 1.0,
            mos: 1.0,
            ..Default::default()
        });
        f.observe("p", "turn", &silent);
        assert_eq!(count(&f), 2, "no jitter series with nothing back");
        // The next run failed at allocate: no stream, so no MOS of the run before.
        f.observe("p", "turn", &Outcome::default());
        assert_eq!(count(&f), 0, "stale media series remain");
    }

    #[test]
    fn addresses_that_leave_the_dns_answer_are_removed() {
        let f = RunFamilies::register(&Registry::new(), Histograms::PerProbe).unwrap();
        let with = |ips: &[&str]| {
            let mut o = Outcome::default();
            o.detail.per_address = ips
                .iter()
                .map(|ip| AddressResult {
                    address: format!("{ip}:443").parse().unwrap(),
                    success: true,
                    failure: None,
                    total: ms(1),
                    tls: None,
                })
                .collect();
            o
        };
        f.observe("p", "tcp", &with(&["198.51.100.1", "198.51.100.2"]));
        f.observe("p", "tcp", &with(&["198.51.100.2"]));
        let families = {
            let r = Registry::new();
            r.register(Box::new(f.address_success.clone())).unwrap();
            r.gather()
        };
        // Exactly one series remains, and it is the address still in the answer.
        let series = families[0].get_metric();
        let addresses: Vec<&str> = series
            .iter()
            .flat_map(|m| m.get_label())
            .filter(|l| l.name() == "address")
            .map(|l| l.value())
            .collect();
        assert_eq!(addresses, ["198.51.100.2"]);
    }

    #[test]
    fn nat_series_are_removed_when_a_run_finds_nothing_and_lifetime_needs_an_expiry() {
        let f = RunFamilies::register(&Registry::new(), Histograms::PerProbe).unwrap();
        let run = |mapping: Option<&str>, expired: Option<u64>| {
            let mut o = Outcome::default();
            o.detail.stun = Some(StunDetails {
                nat_mapping: mapping.map(str::to_string),
                nat_filtering: mapping.map(str::to_string),
                binding_lifetime: Some(crate::outcome::details::BindingLifetime {
                    alive: Duration::from_secs(20),
                    expired: expired.map(Duration::from_secs),
                    checks: 5,
                }),
                ..Default::default()
            });
            o
        };
        let series = |f: &RunFamilies| {
            let r = Registry::new();
            r.register(Box::new(f.nat_mapping.clone())).unwrap();
            r.register(Box::new(f.nat_filtering.clone())).unwrap();
            r.register(Box::new(f.nat_lifetime.clone())).unwrap();
            r.gather()
                .iter()
                .map(|m| (m.name().to_string(), m.get_metric().len()))
                .collect::<Vec<_>>()
        };
        f.observe("p", "stun", &run(Some("endpoint_independent"), Some(24)));
        assert_eq!(
            series(&f),
            [
                ("egress_probe_nat_binding_lifetime_seconds".to_string(), 1),
                ("egress_probe_nat_filtering".to_string(), 3),
                ("egress_probe_nat_mapping".to_string(), 4),
            ]
        );
        // The next run could tell nothing (and nothing expired): no stale answer stays.
        f.observe("p", "stun", &run(None, None));
        assert_eq!(series(&f), []);
        // A run that failed before any STUN detail clears them too.
        f.observe("p", "stun", &run(Some("address_dependent"), Some(24)));
        f.observe("p", "stun", &Outcome::default());
        assert_eq!(series(&f), []);
    }

    /// Series of one probe in a text exposition (lines carrying `probe="NAME"`).
    fn series_of(text: &str, probe: &str) -> usize {
        let needle = format!("probe=\"{probe}\"");
        text.lines().filter(|l| !l.starts_with('#') && l.contains(&needle)).count()
    }

    #[test]
    fn default_tcp_probe_keeps_within_twenty_series_and_per_phase_is_opt_in() {
        let cfg = Config {
            probes: vec![tcp_probe("a", &[])],
            ..Default::default()
        };
        let m = Metrics::new(&cfg).unwrap();
        m.observe(&cfg.probes[0], &refused());
        m.observe(
            &cfg.probes[0],
            &Outcome {
                success: true,
                total: ms(3),
                ..refused()
            },
        );
        let text = m.render().unwrap();
        let n = series_of(&text, "a");
        assert!(n <= 20, "{n} series for one TCP probe:\n{text}");
        for kept in [
            "egress_probe_runs_total",
            "egress_probe_failures_total",
            "egress_probe_success",
            "egress_probe_duration_seconds_bucket",
        ] {
            assert!(text.contains(kept), "{kept} is kept by default");
        }
        assert!(!text.contains("egress_probe_phase_duration_seconds"), "{text}");

        let per_phase = Config {
            metrics: crate::config::MetricsSettings {
                histograms: Histograms::PerPhase,
            },
            ..cfg.clone()
        };
        let m = Metrics::new(&per_phase).unwrap();
        m.observe(&per_phase.probes[0], &refused());
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"egress_probe_phase_duration_seconds_count{kind="tcp",phase="connect",probe="a"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn rendered_text_follows_every_recorded_result() {
        let cfg = Config {
            probes: vec![tcp_probe("a", &[])],
            ..Default::default()
        };
        let m = Metrics::new(&cfg).unwrap();
        let first = m.render().unwrap();
        assert!(
            Arc::ptr_eq(&first, &m.render().unwrap()),
            "nothing changed: the encoded text is reused"
        );
        let runs = r#"egress_probe_runs_total{kind="tcp",probe="a",result="failure"}"#;
        for n in 1..=3 {
            m.observe(&cfg.probes[0], &refused());
            assert_eq!(line_value(&m.render().unwrap(), runs), Some(f64::from(n)));
        }
        m.skipped("a");
        assert_eq!(
            line_value(&m.render().unwrap(), r#"egress_probe_skipped_runs_total{probe="a"}"#),
            Some(1.0)
        );
        // The gzip answer follows every result too, with the tail appended, and is reused
        // (the same bytes) while nothing changed.
        let gunzip = |b: &[u8]| {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(b), &mut t).unwrap();
            t
        };
        let first = m.render_gzip("tail 1\n").unwrap();
        assert_eq!(first.as_ptr(), m.render_gzip("tail 1\n").unwrap().as_ptr());
        assert!(gunzip(&first).ends_with("tail 1\n"));
        for n in 4..=5 {
            m.observe(&cfg.probes[0], &refused());
            let text = gunzip(&m.render_gzip("tail 1\n").unwrap());
            assert_eq!(line_value(&text, runs), Some(f64::from(n)), "{text}");
        }
        assert!(gunzip(&m.render_gzip("tail 2\n").unwrap()).ends_with("tail 2\n"));
        m.schedule_lag(ms(2));
        assert_eq!(
            line_value(&m.render().unwrap(), "egress_probe_schedule_lag_seconds_count"),
            Some(1.0)
        );
        // The push delivery updates its families from outside `Metrics`: they invalidate too.
        m.push_families().samples("rw.example.test:443", "sent", 5);
        assert_eq!(
            line_value(
                &m.render().unwrap(),
                r#"egress_probe_push_samples_total{remote="rw.example.test:443",result="sent"}"#
            ),
            Some(5.0)
        );
    }

    #[test]
    fn label_keys_are_sanitised_and_never_clash() {
        assert_eq!(label_name("site-id"), "site_id");
        assert_eq!(label_name("probe"), "label_probe");
        assert_eq!(label_name("__x"), "label___x");
        assert_eq!(label_name("1a"), "label_1a");
    }
}
