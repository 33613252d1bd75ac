//! The daemon end to end, through the real binary: `egress-probe run` against a listening
//! port (passes) and a closed one (`connect/refused`), scraped over HTTP like Prometheus does;
//! the exposition passes `promtool check metrics`; `/probe` retargets a probe; `/ready` turns
//! 200 after the first round; SIGHUP reloads; SIGTERM exits 0 within 1 s (the README's promise); JSON log lines
//! parse strictly; a probe that panics reads `internal/panic` while the others keep running.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::get;
use common::proc::{wait_until, ChildGuard};
use common::DaemonStart;

/// A TCP server that accepts and closes connections until dropped.
struct Listening {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listening {
    fn start() -> Listening {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listening {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of the first sample line starting with `prefix` (labels in sorted order).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn promtool_check(text: &str) {
    let mut child = Command::new("timeout")
        .args(["60", "promtool", "check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/test, which installs the lab packages)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One line of `--log-format json` (tracing-subscriber's layout), parsed strictly: a field
/// present twice fails the parse.
#[derive(serde::Deserialize)]
struct LogLine {
    level: String,
    fields: LogFields,
}

#[derive(serde::Deserialize)]
struct LogFields {
    /// The event text ("probe failed").
    message: Option<String>,
    /// The failure's own message.
    error: Option<String>,
    probe: Option<String>,
    kind: Option<String>,
    phase: Option<String>,
    reason: Option<String>,
}

struct Daemon {
    guard: ChildGuard,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn write_config(dir: &Path, open: u16, closed: u16, extra: &str) -> PathBuf {
    let path = dir.join("probes.yaml");
    std::fs::write(
        &path,
        format!(
            // `web.probe_targets`: /probe may point these modules at other loopback ports;
            // `histograms: per_phase` so the per-phase family these tests read exists.
            "defaults:\n  interval: 300ms\n  timeout: 250ms\n  jitter: 0%\nmetrics:\n  histograms: per_phase\nweb:\n  probe_targets: [127.0.0.1/32]\nprobes:\n  - name: open\n    kind: tcp\n    target: 127.0.0.1:{open}\n    labels:\n      team: voice\n  - name: closed\n    kind: tcp\n    target: 127.0.0.1:{closed}\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn start_daemon(open: u16, closed: u16) -> Daemon {
    start_daemon_with_env(open, closed, &[])
}

/// `start_daemon` with extra environment variables (the test build's fault hooks).
fn start_daemon_with_env(open: u16, closed: u16, env: &[(&str, &str)]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), open, closed, "");
    let log = dir.path().join("daemon.log");
    let (addr, guard) = common::spawn_daemon(
        &config,
        DaemonStart {
            global: &["--log-format", "json"],
            env,
            log: Some(&log),
            ..Default::default()
        },
    );
    assert!(
        wait_until(Duration::from_secs(10), || get(addr, "/healthz").map(|r| r.0) == Some(200)),
        "daemon did not serve /healthz: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Daemon {
        guard,
        addr,
        log,
        _dir: dir,
    }
}

#[test]
fn daemon_counts_runs_exports_pass_and_refused_and_stops_on_sigterm() {
    let open = Listening::start();
    let closed = closed_port();
    let mut d = start_daemon(open.port, closed);

    assert!(
        wait_until(Duration::from_secs(5), || get(d.addr, "/ready").map(|r| r.0) == Some(200)),
        "/ready never turned 200"
    );
    let (status, first) = get(d.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let ok_runs = r#"egress_probe_runs_total{kind="tcp",probe="open",result="success"}"#;
    let a = sample(&first, ok_runs).unwrap();
    assert!(a >= 1.0, "{first}");
    // Wait (bounded) for two more runs instead of sleeping and hoping they happened; the grid
    // can only make them late, never early: two more runs take at least one interval (the
    // first may fall due right after the scrape), and on a 300 ms grid never 5 s.
    let since = Instant::now();
    let mut second = String::new();
    let grew = wait_until(Duration::from_secs(5), || {
        second = get(d.addr, "/metrics").map(|r| r.1).unwrap_or_default();
        sample(&second, ok_runs).is_some_and(|b| b >= a + 2.0)
    });
    let waited = since.elapsed();
    let b = sample(&second, ok_runs).unwrap_or(0.0);
    assert!(grew, "300 ms interval: runs did not grow by 2 within 5 s ({a} → {b})");
    assert!(
        waited >= Duration::from_millis(250),
        "2 runs in {waited:?}: faster than the 300 ms grid ({a} → {b})"
    );
    let open_target = format!(
        r#"egress_probe_success{{kind="tcp",probe="open",target="127.0.0.1:{}"}}"#,
        open.port
    );
    assert_eq!(sample(&second, &open_target), Some(1.0), "{second}");
    assert_eq!(sample(&second, r#"egress_probe_success{kind="tcp",probe="closed""#), Some(0.0));
    assert!(
        sample(
            &second,
            r#"egress_probe_failures_total{kind="tcp",phase="connect",probe="closed",reason="refused"}"#
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(&second, r#"egress_probe_runs_total{kind="tcp",probe="open",result="failure"}"#),
        Some(0.0)
    );
    assert!(second.contains(r#"egress_probe_info{kind="tcp",probe="closed",team=""} 1"#));
    assert_eq!(sample(&second, "egress_probe_config_reload_success"), Some(1.0));
    assert!(second.contains("egress_probe_phase_duration_seconds_bucket{kind=\"tcp\",phase=\"connect\",probe=\"open\",le=\"0.001\"}"));
    promtool_check(&second);

    let (status, body) = get(d.addr, "/status").unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["ready"], true);
    assert_eq!(doc["probes"][1]["name"], "closed");
    assert_eq!(doc["probes"][1]["outcome"]["failure"]["reason"], "refused");

    let t = Instant::now();
    let st = d
        .guard
        .terminate(Duration::from_secs(1))
        .expect("no exit within 1 s of SIGTERM (README: SIGTERM stops within 1 s)");
    assert!(st.success(), "exit status {st:?}");
    let took = t.elapsed();

    // Every line is one JSON object whose fields parse strictly: a key twice (the event text
    // and the failure's message both as `message`) is an error, as in strict log pipelines.
    let log = std::fs::read_to_string(&d.log).unwrap();
    let lines: Vec<LogLine> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a strict JSON log line ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l.fields.message.as_deref() == Some("probe failed") && l.fields.probe.as_deref() == Some("closed"))
        .unwrap_or_else(|| panic!("no log line for the failed run:\n{log}"));
    assert_eq!(failed.level, "WARN");
    assert_eq!(failed.fields.kind.as_deref(), Some("tcp"));
    assert_eq!(failed.fields.phase.as_deref(), Some("connect"));
    assert_eq!(failed.fields.reason.as_deref(), Some("refused"));
    let error = failed.fields.error.as_deref().unwrap_or_else(|| panic!("no `error` field:\n{log}"));
    assert!(
        error.contains(&format!("127.0.0.1:{closed}")),
        "the failure's message names the target: {error}"
    );
    eprintln!("SIGTERM → exit took {took:?}");
}

/// A GET with `Accept-Encoding: gzip`; returns (head, raw body bytes).
fn get_gzip(addr: SocketAddr, path: &str) -> Option<(String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((String::from_utf8_lossy(&raw[..at]).to_string(), raw[at + 4..].to_vec()))
}

#[test]
fn metrics_are_gzipped_for_a_scraper_that_accepts_gzip_and_decode_to_the_same_valid_text() {
    let open = Listening::start();
    let closed = closed_port();
    let d = start_daemon(open.port, closed);
    assert!(
        wait_until(Duration::from_secs(5), || get(d.addr, "/ready").map(|r| r.0) == Some(200)),
        "/ready never turned 200"
    );
    let (head, body) = get_gzip(d.addr, "/metrics").expect("gzip scrape");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .expect("the body is one valid gzip stream");
    assert!(
        body.len() * 3 < text.len(),
        "{} compressed bytes for {} of text",
        body.len(),
        text.len()
    );
    // The probe families and the endpoint counters (appended after them) are both inside.
    assert!(sample(&text, r#"egress_probe_runs_total{kind="tcp",probe="open",result="success"}"#).unwrap() >= 1.0);
    assert!(text.contains("egress_probe_web_unauthorized_total 0"), "{text}");
    promtool_check(&text);
    // Without the header: plain text, the same families.
    let (status, plain) = get(d.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let families = |t: &str| -> Vec<String> { t.lines().filter(|l| l.starts_with("# TYPE")).map(String::from).collect() };
    assert_eq!(families(&plain), families(&text));
    promtool_check(&plain);
}

#[test]
fn probe_endpoint_retargets_a_module_and_refuses_unknown_ones() {
    let open = Listening::start();
    let closed = closed_port();
    let d = start_daemon(open.port, closed);

    let (status, body) = get(d.addr, &format!("/probe?module=open&target=127.0.0.1:{closed}")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "probe_success "), Some(0.0), "{body}");
    // The run's wall time: the one observation of our own histogram, within the 250 ms timeout.
    let took = sample(&body, "probe_duration_seconds ").expect("probe_duration_seconds");
    assert_eq!(
        Some(took),
        sample(&body, r#"egress_probe_duration_seconds_sum{kind="tcp",probe="open"}"#),
        "{body}"
    );
    assert!(took > 0.0 && took < 0.25, "a refused connect took {took} s");
    assert_eq!(
        sample(
            &body,
            r#"egress_probe_failures_total{kind="tcp",phase="connect",probe="open",reason="refused"}"#
        ),
        Some(1.0)
    );
    promtool_check(&body);

    // The "closed" module's settings pointed at the open port pass.
    let (status, body) = get(d.addr, &format!("/probe?module=closed&target=127.0.0.1:{}", open.port)).unwrap();
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "probe_success "), Some(1.0), "{body}");
    let target = format!(
        r#"egress_probe_success{{kind="tcp",probe="closed",target="127.0.0.1:{}"}}"#,
        open.port
    );
    assert_eq!(sample(&body, &target), Some(1.0));
    promtool_check(&body);

    assert_eq!(get(d.addr, "/probe?module=nope&target=127.0.0.1:1").unwrap().0, 400);
    assert_eq!(get(d.addr, "/probe?module=open&target=no-port").unwrap().0, 400);
    assert_eq!(get(d.addr, "/probe?target=127.0.0.1:1").unwrap().0, 400);
}

#[test]
fn ready_is_503_until_every_probe_has_run() {
    // `slow` asks a DNS server that never answers, over UDP nor TCP (the TCP listener never
    // accepts, so the kernel completes the handshake and nothing replies): its first run ends
    // only at its 1.5 s timeout, so /ready must answer 503 until then and 200 after.
    let open = Listening::start();
    let dns_port = common::free_port();
    let silent = std::net::UdpSocket::bind(("127.0.0.1", dns_port)).unwrap();
    let _silent_tcp = TcpListener::bind(("127.0.0.1", dns_port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  interval: 2s\n  timeout: 1500ms\n  jitter: 0%\nprobes:\n  - name: fast\n    kind: tcp\n    target: 127.0.0.1:{}\n  - name: slow\n    kind: dns\n    query: relay.example.test\n    resolver: {}\n",
            open.port,
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (addr, mut guard) = common::spawn_daemon(&path, DaemonStart::default());
    assert!(wait_until(Duration::from_secs(10), || get(addr, "/healthz").is_some()));
    let (status, body) = get(addr, "/ready").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("1 of 2") || body.contains("0 of 2"), "{body}");
    assert!(wait_until(Duration::from_secs(5), || get(addr, "/ready").map(|r| r.0) == Some(200)));
    let ready_after = started.elapsed();
    assert!(
        ready_after >= Duration::from_millis(1400),
        "ready before the slow probe ended: {ready_after:?}"
    );
    let (_, metrics) = get(addr, "/metrics").unwrap();
    assert!(
        sample(
            &metrics,
            r#"egress_probe_failures_total{kind="dns",phase="resolve",probe="slow",reason="timeout"}"#
        )
        .is_some(),
        "{metrics}"
    );
    assert!(guard.terminate(Duration::from_secs(1)).unwrap().success());
}

#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let open = Listening::start();
    let mut d = start_daemon(open.port, closed_port());
    let config = d._dir.path().join("probes.yaml");

    std::fs::write(&config, "probes:\n  - name: broken\n    kind: tcp\n    target: no-port\n").unwrap();
    let hup = |pid: u32| {
        Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    };
    hup(d.guard.pid());
    assert!(wait_until(Duration::from_secs(5), || {
        get(d.addr, "/metrics").and_then(|(_, b)| sample(&b, "egress_probe_config_reload_success")) == Some(0.0)
    }));
    let (_, body) = get(d.addr, "/metrics").unwrap();
    assert!(body.contains(r#"probe="open""#), "the running config stays");

    write_config(
        d._dir.path(),
        open.port,
        closed_port(),
        "  - name: added\n    kind: tcp\n    target: 127.0.0.1:1\n",
    );
    hup(d.guard.pid());
    assert!(wait_until(Duration::from_secs(5), || {
        get(d.addr, "/metrics").is_some_and(|(_, b)| b.contains(r#"egress_probe_info{kind="tcp",probe="added""#))
    }));
    let (_, body) = get(d.addr, "/metrics").unwrap();
    assert_eq!(sample(&body, "egress_probe_config_reload_success"), Some(1.0));
    assert!(d.guard.terminate(Duration::from_secs(1)).unwrap().success());
}

#[test]
fn bad_config_exits_2_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "defaults:\n  interval: soon\nprobes: []\n").unwrap();
    let out = Command::new(common::bin()).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
}

#[test]
fn tls_stun_and_turn_runs_against_coturn_fill_their_families() {
    let turn = common::coturn::Coturn::start(Default::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  interval: 2s\n  timeout: 1500ms\n  jitter: 0%\nmetrics:\n  histograms: per_phase\nprobes:\n  - name: turn-tls-cert\n    kind: tls\n    target: 127.0.0.1:{tls}\n    server_name: relay.example.test\n    ca_file: {ca}\n  - name: stun-udp\n    kind: stun\n    server: stun:127.0.0.1:{port}\n    count: 3\n  - name: turn-udp\n    kind: turn\n    server: turn:127.0.0.1:{port}?transport=udp\n    count: 4\n    credentials:\n      username: test\n      password: secret\n",
            tls = turn.tls_port,
            port = turn.port,
            ca = turn.ca_file.display()
        ),
    )
    .unwrap();
    let (addr, mut guard) = common::spawn_daemon(&path, DaemonStart::default());
    assert!(wait_until(Duration::from_secs(10), || get(addr, "/ready").map(|r| r.0) == Some(200)));
    let (_, text) = get(addr, "/metrics").unwrap();
    for (probe, kind) in [("turn-tls-cert", "tls"), ("stun-udp", "stun"), ("turn-udp", "turn")] {
        let line = format!(r#"egress_probe_runs_total{{kind="{kind}",probe="{probe}",result="success"}}"#);
        assert!(sample(&text, &line).unwrap_or(0.0) >= 1.0, "{probe} did not pass:\n{text}");
    }

    // The expiry gauge is the leaf's notAfter (the CA outlives it), read from coturn's cert.
    let pem = std::fs::read(turn.dir.path().join("turn.crt")).unwrap();
    let (_, leaf) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let not_after = leaf.parse_x509().unwrap().validity().not_after.timestamp() as f64;
    assert_eq!(
        sample(&text, r#"egress_probe_tls_cert_expiry_timestamp_seconds{probe="turn-tls-cert"}"#),
        Some(not_after)
    );
    // One observation per STUN sample and per relay round trip.
    let stun = sample(&text, r#"egress_probe_stun_rtt_seconds_count{probe="stun-udp"}"#).unwrap();
    assert!(stun >= 3.0 && stun % 3.0 == 0.0, "stun samples {stun}");
    let relay = sample(&text, r#"egress_probe_relay_rtt_seconds_count{probe="turn-udp",transport="udp"}"#).unwrap();
    assert!(relay >= 3.0, "relay samples {relay}");
    let loss = sample(&text, r#"egress_probe_relay_loss_ratio{probe="turn-udp",transport="udp"}"#).unwrap();
    assert!((0.0..=0.25).contains(&loss), "loopback relay loss {loss}");
    assert!(!text.contains("secret"), "no credential in the exposition");
    promtool_check(&text);
    assert!(guard.terminate(Duration::from_secs(1)).unwrap().success());
}

/// Sample lines (not comments) of one probe's series.
fn probe_series<'a>(text: &'a str, probe: &str) -> Vec<&'a str> {
    let needle = format!("probe=\"{probe}\"");
    text.lines().filter(|l| !l.starts_with('#') && l.contains(&needle)).collect()
}

#[test]
fn default_settings_keep_a_tcp_probe_within_20_series_and_a_turn_probe_within_40() {
    let turn = common::coturn::Coturn::start(Default::default());
    let open = Listening::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  interval: 1s\n  timeout: 900ms\n  jitter: 0%\nprobes:\n  - name: tcp-443\n    kind: tcp\n    target: 127.0.0.1:{open}\n  - name: turn-tls-443\n    kind: turn\n    server: turns:127.0.0.1:{tls}?transport=tcp\n    server_name: relay.example.test\n    ca_file: {ca}\n    count: 4\n    credentials:\n      username: test\n      password: secret\n  - name: turn-media\n    kind: turn\n    server: turn:127.0.0.1:{udp}\n    interval: 3s\n    media: {{duration: 1s}}\n    credentials: {{username: test, password: secret}}\n",
            open = open.port,
            udp = turn.port,
            tls = turn.tls_port,
            ca = turn.ca_file.display()
        ),
    )
    .unwrap();
    let (addr, mut guard) = common::spawn_daemon(&path, DaemonStart::default());
    assert!(wait_until(Duration::from_secs(10), || get(addr, "/ready").map(|r| r.0) == Some(200)));
    let (_, text) = get(addr, "/metrics").unwrap();
    for (probe, kind) in [("tcp-443", "tcp"), ("turn-tls-443", "turn")] {
        let line = format!(r#"egress_probe_runs_total{{kind="{kind}",probe="{probe}",result="success"}}"#);
        assert!(sample(&text, &line).unwrap_or(0.0) >= 1.0, "{probe} did not pass:\n{text}");
    }
    let tcp = probe_series(&text, "tcp-443");
    let turn_series = probe_series(&text, "turn-tls-443");
    eprintln!(
        "series per probe with default settings: tcp {}, turn over TLS {}",
        tcp.len(),
        turn_series.len()
    );
    assert!(tcp.len() <= 20, "{} series for one TCP probe:\n{}", tcp.len(), tcp.join("\n"));
    assert!(
        turn_series.len() <= 40,
        "{} series for one TURN probe:\n{}",
        turn_series.len(),
        turn_series.join("\n")
    );
    // What the budget keeps: counters, the last result and one latency distribution each.
    for probe in ["tcp-443", "turn-tls-443"] {
        let of = |family: &str| probe_series(&text, probe).iter().filter(|l| l.starts_with(family)).count();
        assert_eq!(of("egress_probe_runs_total{"), 2, "{probe}: runs_total by result");
        assert_eq!(of("egress_probe_success{"), 1, "{probe}");
        assert!(of("egress_probe_duration_seconds_bucket{") >= 5, "{probe}: a latency distribution");
        assert_eq!(of("egress_probe_phase_duration_seconds"), 0, "{probe}: per-phase is opt-in");
    }
    assert!(
        sample(&text, r#"egress_probe_relay_loss_ratio{probe="turn-tls-443",transport="tls"}"#).is_some(),
        "{text}"
    );
    assert!(!text.contains("egress_probe_relay_rtt_seconds"), "relay RTT histogram is opt-in");
    // The media gauges exist only for the probe with a stream: 3 more series, within budget.
    assert!(wait_until(Duration::from_secs(10), || get(addr, "/metrics")
        .is_some_and(|(_, t)| t.contains(r#"egress_probe_media_mos{probe="turn-media"}"#))));
    let (_, text) = get(addr, "/metrics").unwrap();
    let media_series = probe_series(&text, "turn-media");
    let media_of = |probe: &str| {
        probe_series(&text, probe)
            .iter()
            .filter(|l| l.starts_with("egress_probe_media_"))
            .count()
    };
    assert_eq!(media_of("turn-media"), 3, "{}", media_series.join("\n"));
    assert_eq!(media_of("turn-tls-443") + media_of("tcp-443"), 0, "no media series without media:");
    assert!(
        media_series.len() <= 40,
        "{} series for a TURN probe with media",
        media_series.len()
    );
    eprintln!("series for a TURN probe with media: {}", media_series.len());
    // The scheduler's lag histogram is one series set for the whole daemon.
    assert!(
        sample(&text, "egress_probe_schedule_lag_seconds_count").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    promtool_check(&text);
    assert!(guard.terminate(Duration::from_secs(1)).unwrap().success());
}

#[test]
fn a_panicking_probe_counts_as_internal_panic_and_the_daemon_keeps_probing() {
    // The test build has the `fault-injection` hook: every run of `closed` panics in its task.
    let open = Listening::start();
    let mut d = start_daemon_with_env(open.port, closed_port(), &[("EGRESS_PROBE_FAULT_PANIC", "closed")]);
    let panics = r#"egress_probe_failures_total{kind="tcp",phase="internal",probe="closed",reason="panic"}"#;
    let failed_runs = r#"egress_probe_runs_total{kind="tcp",probe="closed",result="failure"}"#;
    let ok_runs = r#"egress_probe_runs_total{kind="tcp",probe="open",result="success"}"#;
    let scrape = || get(d.addr, "/metrics").map(|(_, body)| body).unwrap_or_default();

    // Failures back off (2 s, then 4 s): the second panicking run comes after about 2 s.
    assert!(
        wait_until(Duration::from_secs(10), || sample(&scrape(), panics).unwrap_or(0.0) >= 2.0),
        "two runs of the panicking probe were not counted as internal/panic:\n{}",
        scrape()
    );
    let before = sample(&scrape(), ok_runs).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sample(&scrape(), ok_runs).unwrap_or(0.0) >= before + 2.0),
        "the other probe stopped running after the panics ({before} runs)"
    );
    let text = scrape();
    assert_eq!(
        sample(&text, panics),
        sample(&text, failed_runs),
        "every failed run of the panicking probe is internal/panic:\n{text}"
    );
    assert!(
        !text.contains(r#"probe="closed",reason="refused""#),
        "the probe never got to connect"
    );
    promtool_check(&text);

    let (_, body) = get(d.addr, "/status").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["probes"][1]["outcome"]["failure"]["phase"], "internal", "{body}");
    assert_eq!(doc["probes"][1]["outcome"]["failure"]["reason"], "panic", "{body}");

    // `/probe` runs through the same launch path.
    let (status, body) = get(d.addr, "/probe?module=closed").unwrap();
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "probe_success "), Some(0.0), "{body}");
    assert_eq!(sample(&body, panics), Some(1.0), "{body}");

    assert!(d.guard.terminate(Duration::from_secs(1)).unwrap().success());
}
