//! The daemon's endpoint, locked down, through the real binary (`egress-probe run`):
//! `/probe` never hands a module's secrets to a host they were not configured for (in-test TLS
//! and UDP listeners record every byte they receive), keeps the module's scheme, refuses
//! targets outside `web.probe_targets` with 403 and counts them; `POST /-/reload` exists only
//! with `--web.enable-lifecycle`; `--web.config.file` basic auth guards everything but
//! `/healthz`; and runs to one host stay at most 2 in flight across the schedule and `/probe`.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::certs::TestCa;
use common::proc::ChildGuard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const TOKEN: &str = "tok-3e9a1c7f-never-elsewhere";
const TURN_PASSWORD: &str = "turnpw-5b2d8e4a";

/// A TLS server that records every request head it receives and answers 200 "ok".
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(ip: &str, ca: &TestCa) -> Recorder {
        let leaf = ca.leaf(&["127.0.0.1", "127.0.0.2"], None);
        let acceptor = tokio_rustls::TlsAcceptor::from(leaf.rustls_server_config(None, &["http/1.1"]));
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen2, acc2) = (seen.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            for _ in 0..100 {
                let Ok((tcp, _)) = l.accept().await else { return };
                acc2.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen2.clone());
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 8192];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Recorder {
            addr,
            seen,
            accepted,
            task,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A UDP socket that counts datagrams (a would-be STUN server on a foreign host).
async fn udp_recorder(ip: &str) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        for _ in 0..100 {
            if s.recv_from(&mut buf).await.is_err() {
                return;
            }
            n2.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, n, task)
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
async fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to the daemon");
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The daemon on a free loopback port, killed on drop.
struct Daemon {
    addr: SocketAddr,
    _guard: ChildGuard,
}

async fn daemon(config: &Path, extra: &[&str], auth: Option<&str>) -> Daemon {
    let bearer = format!("Bearer {TOKEN}");
    let (addr, guard) = common::spawn_daemon(
        config,
        common::DaemonStart {
            extra,
            env: &[("T_TOKEN", bearer.as_str()), ("T_TURN_PASSWORD", TURN_PASSWORD)],
            ..Default::default()
        },
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(addr).await.is_ok() && request(addr, "GET", "/healthz", auth).await.0 == 200 {
            break;
        }
        assert!(Instant::now() < end, "the daemon did not serve /healthz on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Daemon { addr, _guard: guard }
}

fn config_text(legit: SocketAddr, ca: &Path, turn_port: u16, web: &str) -> String {
    format!(
        "defaults: {{ interval: 1h, timeout: 3s }}
{web}probes:
  - name: api
    kind: http
    url: https://{legit}/health
    ca_file: {ca}
    headers: {{ Authorization: env:T_TOKEN, Origin: https://app.example.test }}
  - name: relay
    kind: turn
    server: turn:127.0.0.1:{turn_port}?transport=udp
    credentials: {{ username: probeuser, password: env:T_TURN_PASSWORD }}
",
        ca = ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_secrets_never_reach_a_host_they_were_not_configured_for() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Endpoint Test CA");
    let ca_file = ca.write_ca(dir.path());
    let legit = Recorder::start("127.0.0.1", &ca).await;
    let foreign = Recorder::start("127.0.0.2", &ca).await;
    let (foreign_udp, udp_seen, udp_task) = udp_recorder("127.0.0.2").await;
    let turn_port = common::free_port();
    let config = dir.path().join("probes.yaml");
    std::fs::write(&config, config_text(legit.addr, &ca_file, turn_port, "")).unwrap();
    let d = daemon(&config, &["--web.enable-lifecycle"], None).await;

    // The module's own target: the token goes there.
    let (st, body) = request(d.addr, "GET", "/probe?module=api", None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    assert!(
        legit
            .heads()
            .iter()
            .any(|h| h.to_ascii_lowercase().contains(&format!("authorization: bearer {TOKEN}"))),
        "the configured host receives the token: {:?}",
        legit.heads()
    );

    // Another host, no allow-list: 403, nothing sent.
    let t = format!("https://{}/x", foreign.addr);
    let (st, body) = request(d.addr, "GET", &format!("/probe?module=api&target={t}"), None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("web.probe_targets") && body.lines().count() == 1, "{body}");
    // Another port of the module's own host (a port scan of the tenant network): 403.
    let scan = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (st, body) = request(d.addr, "GET", &format!("/probe?module=api&target={scan}"), None).await;
    assert_eq!(st, 403, "{body}");
    // Another scheme (clear text): 403 whatever the allow-list.
    let t = format!("http://{}/x", foreign.addr);
    let (st, body) = request(d.addr, "GET", &format!("/probe?module=api&target={t}"), None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("scheme"), "{body}");
    // The TURN module at a foreign STUN server: 403.
    let (st, body) = request(d.addr, "GET", &format!("/probe?module=relay&target={foreign_udp}"), None).await;
    assert_eq!(st, 403, "{body}");

    // Allow 127.0.0.2 and reload through the lifecycle endpoint.
    std::fs::write(
        &config,
        config_text(legit.addr, &ca_file, turn_port, "web: { probe_targets: [127.0.0.2/32] }\n"),
    )
    .unwrap();
    let (st, body) = request(d.addr, "POST", "/-/reload", None).await;
    assert_eq!(st, 200, "{body}");
    let t = format!("https://{}/x", foreign.addr);
    let (st, body) = request(d.addr, "GET", &format!("/probe?module=api&target={t}"), None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "the allowed host is probed: {body}");
    let heads = foreign.heads();
    assert_eq!(heads.len(), 1, "exactly the allowed run reached the foreign host: {heads:?}");
    assert!(heads[0].starts_with("GET /x HTTP/1.1"), "{heads:?}");
    assert!(
        heads[0].to_ascii_lowercase().contains("origin: https://app.example.test"),
        "{heads:?}"
    );
    assert!(!heads[0].contains(TOKEN), "the token must not reach a foreign host: {heads:?}");
    // TURN credentials still stay home, allow-list or not.
    let (st, body) = request(d.addr, "GET", &format!("/probe?module=relay&target={foreign_udp}"), None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("credentials"), "{body}");
    assert_eq!(udp_seen.load(Ordering::SeqCst), 0, "no datagram reached the foreign STUN port");
    assert_eq!(foreign.accepted.load(Ordering::SeqCst), 1, "one connection: the allowed run");

    let (_, metrics) = request(d.addr, "GET", "/metrics", None).await;
    // Refused: api to a foreign host and to another port, relay to a foreign host, all before
    // the allow-list (not_allowed); api over http (scheme); relay to an allowed foreign host
    // (credentials).
    let refused = |r: &str| sample(&metrics, &format!("egress_probe_probe_refused_total{{reason=\"{r}\"}}"));
    assert_eq!(refused("not_allowed"), Some(3.0), "{metrics}");
    assert_eq!(refused("scheme"), Some(1.0));
    assert_eq!(refused("credentials"), Some(1.0));
    udp_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_endpoint_needs_the_lifecycle_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(&config, format!("probes:\n  - name: t\n    kind: tcp\n    target: {closed}\n")).unwrap();
    let d = daemon(&config, &[], None).await;
    let (st, body) = request(d.addr, "POST", "/-/reload", None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("--web.enable-lifecycle"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_config_basic_auth_guards_the_daemon_but_not_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(&config, format!("probes:\n  - name: t\n    kind: tcp\n    target: {closed}\n")).unwrap();
    let web = dir.path().join("web-config.yml");
    let hash = bcrypt::hash("scrape-secret", 4).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: {hash}\n")).unwrap();
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:scrape-secret")
    );
    let d = daemon(&config, &["--web.config.file", web.to_str().unwrap()], None).await;
    assert_eq!(request(d.addr, "GET", "/healthz", None).await.0, 200);
    for path in ["/metrics", "/status", "/ready", "/probe?module=t"] {
        assert_eq!(request(d.addr, "GET", path, None).await.0, 401, "{path} without credentials");
    }
    let (st, body) = request(d.addr, "GET", "/metrics", Some(&good)).await;
    assert_eq!(st, 200);
    assert!(
        sample(&body, "egress_probe_web_unauthorized_total").is_some_and(|n| n >= 4.0),
        "{body}"
    );
    // A bad web config is a usage error at start, with the file named.
    let bad = dir.path().join("bad-web.yml");
    std::fs::write(&bad, "basic_auth_users:\n  prometheus: plain-text-password\n").unwrap();
    let out = Command::new("timeout")
        .args(["10"])
        .arg(common::bin())
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--web.config.file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-web.yml") && err.contains("bcrypt") && !err.contains("plain-text-password"),
        "{err}"
    );
}

/// A TCP server that never speaks and records each connection's (accepted, closed) times.
type Spans = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

async fn silent_recording() -> (SocketAddr, Spans, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let s2 = spans.clone();
    let task = tokio::spawn(async move {
        for _ in 0..200 {
            let Ok((mut s, _)) = l.accept().await else { return };
            let i = {
                let mut v = s2.lock().unwrap();
                v.push((Instant::now(), None));
                v.len() - 1
            };
            let s3 = s2.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                // Until the client gives up (its TLS deadline) and closes.
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await {
                    if n == 0 {
                        break;
                    }
                }
                s3.lock().unwrap()[i].1 = Some(Instant::now());
            });
        }
    });
    (addr, spans, task)
}

/// The most connections open at one accept instant; a close noticed up to `slack` after the
/// next accept counts as before it (the server task may see the FIN a little late).
fn peak(spans: &Spans, slack: Duration) -> usize {
    let v = spans.lock().unwrap().clone();
    v.iter()
        .map(|(t, _)| v.iter().filter(|(a, e)| a <= t && e.is_none_or(|e| e > *t + slack)).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_two_runs_per_host_across_schedule_and_probe() {
    let (target, spans, task) = silent_recording().await;
    let slack = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    let mut text = String::from("defaults: { interval: 2s, timeout: 800ms, jitter: 0% }\nprobes:\n");
    for i in 0..4 {
        text.push_str(&format!("  - name: tls{i}\n    kind: tls\n    target: {target}\n"));
    }
    std::fs::write(&config, text).unwrap();
    let d = daemon(&config, &[], None).await;
    // The scheduled round: four runs at once on the grid, two at a time at the host.
    let end = Instant::now() + Duration::from_secs(10);
    while request(d.addr, "GET", "/ready", None).await.0 != 200 {
        assert!(Instant::now() < end, "the first round did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spans.lock().unwrap().len(), 4, "every scheduled run connected once");
    assert_eq!(peak(&spans, slack), 2, "scheduled runs: two at a time at one host");
    // Four on-demand runs at once: two run, two wait for a slot within their deadline.
    let probes: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(request(
                d.addr,
                "GET",
                Box::leak(format!("/probe?module=tls{i}").into_boxed_str()),
                None,
            ))
        })
        .collect();
    let mut answered = 0;
    for p in probes {
        let (st, body) = p.await.unwrap();
        assert!(st == 200 || st == 503, "{st} {body}");
        if st == 200 {
            assert!(body.contains("probe_success 0"), "a silent TLS server times out: {body}");
            answered += 1;
        }
    }
    assert!(answered >= 2, "two on-demand runs got a slot at once, got {answered}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let peak = peak(&spans, slack);
    assert_eq!(peak, 2, "at most 2 connections to one host at once, saw {peak}");
    task.abort();
}
