//! Soak, bounded: the real daemon runs mixed probes every second for 40 s against a real
//! coturn (TURN over UDP, TCP and TLS, STUN, ICE with a relay) plus a TCP and a DNS target,
//! while `/probe` and `/metrics` are scraped; after a 10 s warm-up its open fds and RSS stay
//! flat, every run passes, and coturn's log shows every allocation it created deleted again.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::coturn::{Coturn, CoturnOptions};

const SOAK: Duration = Duration::from_secs(40);
const WARM_UP: Duration = Duration::from_secs(10);

/// A plain HTTP/1.0 GET given 10 s to read (a scrape while the soak loads the machine).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    common::http::get_within(addr, path, Duration::from_secs(10))
}

/// (open fds, RSS in KiB) of process `pid`.
fn usage(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Sum of `egress_probe_runs_total` over every probe for `result`.
fn runs(text: &str, result: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("egress_probe_runs_total{") && l.contains(&format!("result=\"{result}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn fds_and_rss_stay_flat_and_every_allocation_is_released_over_a_soak() {
    let turn = Coturn::start(CoturnOptions::default());
    let tcp_target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("soak.yaml");
    let (p, tp, ca) = (turn.port, turn.tls_port, turn.ca_file.display().to_string());
    std::fs::write(
        &config,
        format!(
            "defaults: {{ interval: 1s, timeout: 900ms, jitter: 20% }}
probes:
  - {{ name: tcp, kind: tcp, target: {tcp} }}
  - {{ name: stun, kind: stun, server: 'stun:127.0.0.1:{p}', count: 1 }}
  - name: turn-udp
    kind: turn
    server: turn:127.0.0.1:{p}?transport=udp
    credentials: {{ username: test, password: secret }}
    count: 2
  - name: turn-tcp
    kind: turn
    server: turn:127.0.0.1:{p}?transport=tcp
    credentials: {{ username: test, password: secret }}
    count: 2
  - name: turn-tls
    kind: turn
    server: turns:127.0.0.1:{tp}?transport=tcp
    credentials: {{ username: test, password: secret }}
    ca_file: {ca}
    count: 2
  - name: ice
    kind: ice
    servers:
      - url: turn:127.0.0.1:{p}?transport=udp
        credentials: {{ username: test, password: secret }}
    policy: relay
",
            tcp = tcp_target.local_addr().unwrap()
        ),
    )
    .unwrap();
    let (addr, mut daemon) = common::spawn_daemon(&config, common::DaemonStart::default());
    let start = Instant::now();
    let mut warm: Option<(usize, u64)> = None;
    let mut peak = (0usize, 0u64);
    let mut on_demand = 0;
    // Bounded: one iteration per 500 ms for SOAK.
    for i in 0..(SOAK.as_millis() / 500) {
        std::thread::sleep(Duration::from_millis(500));
        if i % 4 == 0 {
            if let Some((200, body)) = get(addr, "/probe?module=turn-udp") {
                on_demand += usize::from(body.contains("probe_success 1"));
            }
        }
        let _ = get(addr, "/metrics");
        let now = usage(daemon.pid());
        if start.elapsed() >= WARM_UP {
            if warm.is_none() {
                warm = Some(now);
            }
            peak = (peak.0.max(now.0), peak.1.max(now.1));
        }
    }
    let (_, metrics) = get(addr, "/metrics").expect("scrape");
    let passed = runs(&metrics, "success");
    let failed = runs(&metrics, "failure");
    let st = daemon.terminate(Duration::from_secs(1)).expect("exit within 1 s of SIGTERM");
    assert!(st.success());
    let (warm_fds, warm_rss) = warm.expect("sampled after warm-up");
    eprintln!(
        "soak: {passed} runs passed, {failed} failed, {on_demand} on-demand passed; fds {warm_fds} → peak {}, RSS {warm_rss} KiB → peak {} KiB",
        peak.0, peak.1
    );
    assert!(passed >= 150.0, "six probes at 1 s for 40 s: {passed} passed");
    assert_eq!(failed, 0.0, "no run failed:\n{metrics}");
    assert!(on_demand >= 15, "on-demand runs passed: {on_demand}");
    assert!(peak.0 <= warm_fds + 16, "fds grew: {warm_fds} after warm-up, peak {}", peak.0);
    assert!(
        peak.1 <= warm_rss + 8 * 1024,
        "RSS grew: {warm_rss} KiB after warm-up, peak {} KiB",
        peak.1
    );
    // Every allocation coturn created was deleted by the probe (Refresh lifetime=0); coturn
    // writes its log lines asynchronously, so wait for the last ones (bounded).
    let ok = common::proc::wait_until(Duration::from_secs(3), || {
        let (c, d) = turn.allocation_counts();
        c > 0 && c == d
    });
    let (created, deleted) = turn.allocation_counts();
    assert!(ok, "coturn allocations created {created}, deleted {deleted}");
    assert!(created >= 100, "allocations made: {created}");
}
