//! The in-process hot parts behind `/metrics`, timed with `Instant` (no bench framework, so no
//! extra dependency): recording an `Outcome` into the registry, encoding `/metrics` for 1,000
//! and 10,000 TCP probes (every encode after a new result, so the cache never answers), the
//! same plus gzip (what a Prometheus scrape gets), serving it from the cache, loading a
//! config of 10,000 probes, and `/probe`'s text for one TCP and one TLS run.
//!
//! Bounded loops (`ITER`, default 200, at most 10,000). Run in release with
//! `cargo bench --bench metrics`; `scripts/bench` measures the same through a real daemon.

use std::time::{Duration, Instant};

use egress_probe::config::{parse_str, Histograms};
use egress_probe::metrics::{render_single_run, render_single_run_registry, Metrics};
use egress_probe::outcome::{Failure, Outcome, Phase, PhaseTiming, Reason};

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} n={:<6} median {:>10.1} µs   p90 {:>10.1} µs",
        v.len(),
        us(pick(0.5)),
        us(pick(0.9))
    );
}

fn config_text(n: usize) -> String {
    let mut s = String::from("defaults:\n  interval: 10s\n  timeout: 5s\nprobes:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: tcp-{i:05}\n    kind: tcp\n    target: 127.0.0.1:443\n"));
    }
    s
}

fn outcome(success: bool) -> Outcome {
    let ms = Duration::from_millis;
    Outcome {
        success,
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
        failure: (!success).then(|| Failure::new(Phase::Connect, Reason::Refused, "connection refused")),
        total: ms(3),
        detail: Default::default(),
    }
}

fn main() {
    let iter: usize = std::env::var("ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(1, 10_000);

    // `/probe`'s body for one run (what every on-demand probe encodes).
    let mut tls = outcome(true);
    tls.phases.push(PhaseTiming {
        phase: Phase::Tls,
        duration: Duration::from_millis(4),
    });
    tls.detail.tls = Some(egress_probe::outcome::details::TlsDetails {
        earliest_expiry_unix: Some(1_900_000_000),
        ..Default::default()
    });
    for (name, kind, o) in [("tcp", "tcp", outcome(false)), ("tls", "tls", tls)] {
        for (h, hname) in [(Histograms::PerProbe, "default"), (Histograms::PerPhase, "per_phase")] {
            let (mut ours, mut registry) = (Vec::new(), Vec::new());
            for _ in 0..iter * 10 {
                let t = Instant::now();
                let text = render_single_run(name, kind, "127.0.0.1:443", &o, h).expect("render");
                ours.push(t.elapsed());
                let t = Instant::now();
                let same = render_single_run_registry(name, kind, "127.0.0.1:443", &o, h).expect("render");
                registry.push(t.elapsed());
                assert_eq!(text, same);
            }
            report(&format!("/probe text, {name} run, {hname}"), ours);
            report("  … through a registry (before)", registry);
        }
    }

    let big = config_text(10_000);
    let mut loads = Vec::new();
    for _ in 0..iter.min(20) {
        let t = Instant::now();
        let cfg = parse_str(&big, "bench.yaml").expect("bench config is valid");
        loads.push(t.elapsed());
        assert_eq!(cfg.probes.len(), 10_000);
    }
    report("config load, 10,000 TCP probes", loads);

    let cfg = parse_str(&config_text(1000), "bench.yaml").expect("bench config is valid");
    let m = Metrics::new(&cfg).expect("registry");
    let (ok, failed) = (outcome(true), outcome(false));
    let mut observe = Vec::new();
    for i in 0..iter * 10 {
        let p = &cfg.probes[i % cfg.probes.len()];
        let o = if i % 7 == 0 { &failed } else { &ok };
        let t = Instant::now();
        m.observe(p, o);
        observe.push(t.elapsed());
    }
    report("Outcome → metrics (observe), 1,000 probes", observe);
    for p in &cfg.probes {
        m.observe(p, &ok);
    }

    let mut encode = Vec::new();
    let mut size = 0;
    for i in 0..iter {
        m.observe(&cfg.probes[i % cfg.probes.len()], &ok);
        let t = Instant::now();
        let text = m.render().expect("render");
        encode.push(t.elapsed());
        size = text.len();
    }
    report("encode /metrics after a new result, 1,000", encode);
    let mut cached = Vec::new();
    for _ in 0..iter {
        let t = Instant::now();
        let text = m.render().expect("render");
        cached.push(t.elapsed());
        assert_eq!(text.len(), size);
    }
    report("/metrics from the cache, 1,000 probes", cached);
    let mut gz = Vec::new();
    let mut gz_size = 0;
    for i in 0..iter {
        m.observe(&cfg.probes[i % cfg.probes.len()], &ok);
        let t = Instant::now();
        let body = m.render_gzip("").expect("render");
        gz.push(t.elapsed());
        gz_size = body.len();
    }
    report("encode + gzip after a new result, 1,000", gz);
    println!("/metrics text for 1,000 TCP probes: {size} bytes, gzip {gz_size} bytes");

    let cfg = parse_str(&config_text(10_000), "bench.yaml").expect("bench config is valid");
    let m = Metrics::new(&cfg).expect("registry");
    for p in &cfg.probes {
        m.observe(p, &failed);
        m.observe(p, &ok);
    }
    let (mut plain, mut gz) = (Vec::new(), Vec::new());
    let (mut size, mut gz_size) = (0, 0);
    for i in 0..iter.min(20) {
        m.observe(&cfg.probes[i], &ok);
        let t = Instant::now();
        size = m.render().expect("render").len();
        plain.push(t.elapsed());
        m.observe(&cfg.probes[i], &ok);
        let t = Instant::now();
        gz_size = m.render_gzip("").expect("render").len();
        gz.push(t.elapsed());
    }
    report("encode after a new result, 10,000", plain);
    report("encode + gzip after a new result, 10,000", gz);
    println!("/metrics text for 10,000 TCP probes: {size} bytes, gzip {gz_size} bytes");
}
