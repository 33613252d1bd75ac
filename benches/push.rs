//! remote_write push cost for a config of 100 tcp probes (every family `/metrics` serves, after
//! a few runs of each probe), against a loopback receiver on its own thread:
//!
//! * **bytes on the wire per sample**: the whole HTTP request (headers + snappy protobuf
//!   body) as the receiver read it, divided by the samples it carried, for the steady state
//!   (one gather per request, every `interval`) and for a backlog drain (as many gathers per
//!   request as `MAX_BATCH_SAMPLES` holds, each series' samples grouped);
//! * **push CPU per 1,000 samples**: this thread's CPU time (`/proc/thread-self/schedstat`,
//!   ns) for gather → snapshot → protobuf → snappy → dial → POST → answer, on a current-thread
//!   runtime so everything the client does is counted here and nothing the receiver does.
//!
//! Bounded: `ITER` requests (default 200, at most 5000), loopback only.
//! Run with `scripts/bench-push.sh` (release) or `cargo bench --profile dev --bench push`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use egress_probe::config::{AddressMode, Config, HostPort, ProbeConfig, ProbeSpec, RemoteWriteConfig, TcpSpec};
use egress_probe::metrics::Metrics;
use egress_probe::outcome::{Outcome, Phase, PhaseTiming};
use egress_probe::push::Pusher;

/// A blocking HTTP/1.1 receiver: reads each request whole, counts its bytes, answers 204.
fn receiver(bytes: Arc<AtomicU64>, requests: Arc<AtomicU64>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            let mut head = 0u64;
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head += n as u64,
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_ok() {
                bytes.fetch_add(head + len as u64, Ordering::Relaxed);
                requests.fetch_add(1, Ordering::Relaxed);
            }
            let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    port
}

/// CPU time of this thread so far, in ns.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn probes(n: usize) -> Vec<ProbeConfig> {
    (0..n)
        .map(|i| ProbeConfig {
            name: format!("tcp-{i:03}"),
            interval: None,
            timeout: None,
            labels: Default::default(),
            proxy: None,
            spec: ProbeSpec::Tcp(TcpSpec {
                target: HostPort {
                    host: format!("relay-{i}.example.test"),
                    port: 443,
                },
                addresses: AddressMode::default(),
            }),
        })
        .collect()
}

fn outcome(i: usize) -> Outcome {
    let ms = |n: u64| Duration::from_micros(n);
    Outcome {
        success: true,
        phases: vec![
            PhaseTiming {
                phase: Phase::Resolve,
                duration: ms(300 + i as u64),
            },
            PhaseTiming {
                phase: Phase::Connect,
                duration: ms(12_000 + 37 * i as u64),
            },
        ],
        total: ms(12_400 + 37 * i as u64),
        ..Default::default()
    }
}

/// Samples of one gather (queued then dropped again).
fn per_gather_samples(p: &Pusher) -> usize {
    p.gather();
    let n = p.queued();
    drain(p);
    n
}

/// Empties the queue without sending.
fn drain(p: &Pusher) {
    p.clear();
}

fn main() {
    let iter: usize = std::env::var("ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .clamp(10, 5000);
    let bytes = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let port = receiver(bytes.clone(), requests.clone());
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/api/v1/write")).expect("url");
    let mut rw = RemoteWriteConfig::new(url);
    rw.external_labels = [("tenant", "acme"), ("site", "paris-1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = Config {
        probes: probes(100),
        push: vec![rw.clone()],
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::new(&config).expect("metrics"));
    for round in 0..3 {
        for (i, p) in config.probes.iter().enumerate() {
            metrics.observe(p, &outcome(i + round));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let pusher = Pusher::new(&rw, None, metrics.clone()).expect("pusher");

    rt.block_on(async {
        // Warm-up, then steady state: one gather per request.
        for _ in 0..10 {
            pusher.gather();
            pusher.attempt(None).await;
        }
        let (b0, r0) = (bytes.load(Ordering::Relaxed), requests.load(Ordering::Relaxed));
        let mut samples = 0usize;
        let cpu0 = thread_cpu_ns();
        for i in 0..iter {
            metrics.observe(&config.probes[i % 100], &outcome(i));
            pusher.gather();
            samples += pusher.queued();
            pusher.attempt(None).await;
        }
        let cpu = thread_cpu_ns() - cpu0;
        // The receiver thread may still be reading the last request.
        std::thread::sleep(Duration::from_millis(100));
        let (b, r) = (bytes.load(Ordering::Relaxed) - b0, requests.load(Ordering::Relaxed) - r0);
        println!("remote_write push, 100 tcp probes, {} samples per gather, {iter} requests, loopback", samples / iter);
        println!(
            "steady state (1 gather/request): {:>6.2} bytes on the wire per sample ({} B per request, {} requests seen)",
            b as f64 / samples as f64,
            b / r.max(1),
            r
        );
        println!(
            "push CPU: {:>6.1} µs per 1,000 samples (gather + encode + compress + POST, client thread)",
            cpu as f64 / 1000.0 / (samples as f64 / 1000.0)
        );

        // Where the time goes, per gather (nothing sent).
        let per = |cpu: u64| cpu as f64 / 1000.0 / (per_gather_samples(&pusher) as f64 / 1000.0);
        let c0 = thread_cpu_ns();
        for _ in 0..iter {
            std::hint::black_box(metrics.gather());
        }
        let registry = (thread_cpu_ns() - c0) / iter as u64;
        let c0 = thread_cpu_ns();
        for _ in 0..iter {
            pusher.gather();
            let n = pusher.queued();
            std::hint::black_box(n);
            drain(&pusher);
        }
        let gather = (thread_cpu_ns() - c0) / iter as u64;
        let c0 = thread_cpu_ns();
        for _ in 0..iter {
            pusher.gather();
            std::hint::black_box(pusher.next_body());
            drain(&pusher);
        }
        let encode = (thread_cpu_ns() - c0) / iter as u64 - gather;
        println!(
            "  of which: registry gather {:.0} µs, + label sets/queue {:.0} µs, protobuf + snappy {:.0} µs per 1,000 samples",
            per(registry),
            per(gather.saturating_sub(registry)),
            per(encode)
        );

        // Backlog drain after an outage: as many gathers per request as the batch bound holds.
        let per_gather = samples / iter;
        let k = (egress_probe::push::MAX_BATCH_SAMPLES / per_gather.max(1)).max(1);
        let rounds = (iter / k).max(2);
        let (b0, r0) = (bytes.load(Ordering::Relaxed), requests.load(Ordering::Relaxed));
        let mut samples = 0usize;
        let cpu0 = thread_cpu_ns();
        for i in 0..rounds {
            for j in 0..k {
                metrics.observe(&config.probes[(i * k + j) % 100], &outcome(j));
                pusher.gather();
            }
            samples += pusher.queued();
            pusher.attempt(None).await;
        }
        let cpu = thread_cpu_ns() - cpu0;
        std::thread::sleep(Duration::from_millis(100));
        let (b, r) = (bytes.load(Ordering::Relaxed) - b0, requests.load(Ordering::Relaxed) - r0);
        println!(
            "backlog drain ({k} gathers/request): {:>6.2} bytes on the wire per sample ({} B per request, {} requests); CPU {:>6.1} µs per 1,000 samples",
            b as f64 / samples as f64,
            b / r.max(1),
            r,
            cpu as f64 / 1000.0 / (samples as f64 / 1000.0)
        );
    });
}
