//! remote_write push against real receivers: Debian's Prometheus 2.42 with
//! `--web.enable-remote-write-receiver` (queried back over its HTTP API), an in-test HTTP(S)
//! receiver that answers what the test scripts (429 with `Retry-After`, 400, TLS with a known
//! certificate), and a real tinyproxy with basic auth. The daemon tests run the real binary.
mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::get;
use common::proc::{wait_until, ChildGuard};
use egress_probe::config::{Config, ProxySetting, PushAuth, RemoteWriteConfig, Secret};
use egress_probe::metrics::Metrics;
use egress_probe::push::wire::WriteRequest;
use egress_probe::push::Pusher;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// A real Prometheus

/// Prometheus on loopback with the remote-write receiver, killed on drop.
struct Prom {
    port: u16,
    storage: PathBuf,
    _dir: tempfile::TempDir,
    guard: Option<ChildGuard>,
}

impl Prom {
    fn start() -> Prom {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("tsdb");
        let mut p = Prom {
            port: common::free_port(),
            storage,
            _dir: dir,
            guard: None,
        };
        p.restart();
        p
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// (Re)starts on the same port and storage; waits until ready.
    fn restart(&mut self) {
        let config = self._dir.path().join("prometheus.yml");
        std::fs::write(&config, "global: {}\n").expect("write prometheus.yml");
        let log = std::fs::File::create(self._dir.path().join("prometheus.log")).expect("log file");
        let guard = ChildGuard::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", self.storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .arg("--web.enable-remote-write-receiver")
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.guard = Some(guard);
        let addr = self.addr();
        assert!(
            wait_until(Duration::from_secs(20), || matches!(get(addr, "/-/ready"), Some((200, _)))),
            "prometheus did not become ready on {addr}"
        );
    }

    /// SIGTERM and wait for the exit, so the port is free and the WAL flushed.
    fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let st = g.terminate(Duration::from_secs(15));
            assert!(st.is_some(), "prometheus did not stop within 15 s");
        }
    }

    /// The `data.result` array of an instant query (empty when Prometheus did not answer 200).
    fn results(&self, q: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let Some((200, body)) = get(self.addr(), &path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus json");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// An instant query; each result as (labels, value).
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.results(q)
            .iter()
            .filter_map(|r| {
                let labels = serde_json::from_value(r["metric"].clone()).ok()?;
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((labels, value))
            })
            .collect()
    }

    fn value(&self, q: &str) -> Option<f64> {
        self.query(q).first().map(|(_, v)| *v)
    }

    /// Raw samples of a range selector (`metric{...}[60s]`): (timestamp ms, value) per series.
    fn range(&self, q: &str) -> Vec<Vec<(i64, f64)>> {
        self.results(q)
            .iter()
            .map(|r| {
                r["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| {
                        let t = (p[0].as_f64()? * 1000.0).round() as i64;
                        Some((t, p[1].as_str()?.parse().ok()?))
                    })
                    .collect()
            })
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// An in-test receiver that answers what the test says

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Seen {
    /// The decoded `WriteRequest` (snappy block + protobuf).
    fn decode(&self) -> WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(&self.body).expect("snappy block body");
        prost::Message::decode(raw.as_slice()).expect("protobuf WriteRequest")
    }

    /// Distinct sample timestamps in the request.
    fn timestamps(&self) -> Vec<i64> {
        let mut t: Vec<i64> = self
            .decode()
            .timeseries
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// (status, extra headers, body) for the n-th request (0-based).
type Script = Arc<dyn Fn(usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync>;

/// An HTTP/1.1 (optionally TLS) receiver on loopback, aborted on drop.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(script: Script, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (log, script, acceptor) = (log.clone(), script.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (log, script) = (log.clone(), script.clone());
                        async move {
                            let at = Instant::now();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let n = {
                                let mut l = log.lock().unwrap();
                                l.push(Seen { at, headers, body });
                                l.len() - 1
                            };
                            let (status, extra, text) = script(n);
                            let mut resp = http::Response::builder().status(status);
                            for (k, v) in extra {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(resp.body(Full::new(Bytes::from(text))).unwrap())
                        }
                    });
                    let timeout = Duration::from_secs(10);
                    match acceptor {
                        Some(a) => {
                            if let Ok(Ok(tls)) = tokio::time::timeout(timeout, a.accept(tcp)).await {
                                let io = hyper_util::rt::TokioIo::new(tls);
                                let _ = tokio::time::timeout(timeout, hyper::server::conn::http1::Builder::new().serve_connection(io, svc))
                                    .await;
                            }
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(tcp);
                            let _ =
                                tokio::time::timeout(timeout, hyper::server::conn::http1::Builder::new().serve_connection(io, svc)).await;
                        }
                    }
                });
            }
        });
        Receiver { port, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(status: u16) -> Script {
    Arc::new(move |_| (status, Vec::new(), String::new()))
}

// ---------------------------------------------------------------------------------------------
// Library-level helpers

fn rw(url: &str) -> RemoteWriteConfig {
    let mut c = RemoteWriteConfig::new(url::Url::parse(url).unwrap());
    c.timeout = Duration::from_secs(3);
    c
}

fn metrics_for(cfg: &RemoteWriteConfig) -> Arc<Metrics> {
    let config = Config {
        push: vec![cfg.clone()],
        ..Default::default()
    };
    Arc::new(Metrics::new(&config).unwrap())
}

/// The value of the first exposition line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Runs a pusher's loop until `within` has passed or `done` holds; stops it and waits for it.
async fn run_pusher(p: Arc<Pusher>, within: Duration, mut done: impl FnMut() -> bool) {
    let stop = egress_probe::shutdown::Shutdown::new();
    let task = tokio::spawn(p.run(stop.clone()));
    let end = Instant::now() + within;
    while Instant::now() < end && !done() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("pusher stops within 2 s")
        .expect("pusher task");
}

// ---------------------------------------------------------------------------------------------
// Library-level tests

#[tokio::test]
async fn a_write_carries_the_remote_write_1_0_headers_and_sorted_labels() {
    let recv = Receiver::start(answer(204), None).await;
    let mut cfg = rw(&format!("http://127.0.0.1:{}/api/v1/write", recv.port));
    cfg.external_labels = BTreeMap::from([("tenant".to_string(), "acme".to_string())]);
    let metrics = metrics_for(&cfg);
    let p = Pusher::new(&cfg, None, metrics.clone()).unwrap();
    let o = p.write_now().await;
    assert!(o.success, "{o:?}");
    let seen = recv.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert!(h["user-agent"].to_str().unwrap().starts_with("egress-probe/"));
    let req = seen[0].decode();
    assert!(!req.timeseries.is_empty());
    for ts in &req.timeseries {
        assert!(
            ts.labels.windows(2).all(|w| w[0].name < w[1].name),
            "labels sorted: {:?}",
            ts.labels
        );
        assert!(ts.labels.iter().any(|l| l.name == "tenant" && l.value == "acme"), "external label");
    }
    let text = metrics.render().unwrap();
    let sent = sample(
        &text,
        &format!(
            r#"egress_probe_push_samples_total{{remote="127.0.0.1:{}",result="sent"}}"#,
            recv.port
        ),
    );
    assert_eq!(sent, Some(req.timeseries.len() as f64), "{text}");
}

#[tokio::test]
async fn status_429_with_retry_after_5_gets_no_request_before_5_s() {
    let script: Script = Arc::new(|n| match n {
        0 => (429, vec![("retry-after", "5".to_string())], "slow down\n".into()),
        _ => (204, Vec::new(), String::new()),
    });
    let recv = Receiver::start(script, None).await;
    let mut cfg = rw(&format!("http://127.0.0.1:{}/api/v1/write", recv.port));
    cfg.interval = Duration::from_secs(1);
    let metrics = metrics_for(&cfg);
    let p = Arc::new(Pusher::new(&cfg, None, metrics.clone()).unwrap());
    let seen = recv.seen.clone();
    run_pusher(p, Duration::from_secs(9), || seen.lock().unwrap().len() >= 2).await;
    let seen = recv.seen();
    assert!(seen.len() >= 2, "a retry after the 429: {} requests", seen.len());
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(4950),
        "second request {gap:?} after the 429, before Retry-After: 5"
    );
    // The retry carries the refused batch first (nothing lost, order kept).
    assert_eq!(seen[1].timestamps().first(), seen[0].timestamps().first());
    let text = metrics.render().unwrap();
    let remote = format!("127.0.0.1:{}", recv.port);
    assert_eq!(
        sample(
            &text,
            &format!(r#"egress_probe_push_failures_total{{phase="request",reason="status_429",remote="{remote}"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"egress_probe_push_samples_total{{remote="{remote}",result="dropped"}}"#)
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn status_400_is_not_retried_and_counts_the_samples_failed() {
    let script: Script = Arc::new(|_| (400, Vec::new(), "out of order sample\nsecond line".into()));
    let recv = Receiver::start(script, None).await;
    let mut cfg = rw(&format!("http://127.0.0.1:{}/api/v1/write", recv.port));
    cfg.interval = Duration::from_secs(1);
    let metrics = metrics_for(&cfg);
    let p = Arc::new(Pusher::new(&cfg, None, metrics.clone()).unwrap());
    run_pusher(p, Duration::from_millis(3500), || false).await;
    let seen = recv.seen();
    assert!(seen.len() >= 3, "one request per gather: {}", seen.len());
    // No batch was sent twice: every request carries one gather, each a different one.
    let firsts: Vec<Vec<i64>> = seen.iter().map(Seen::timestamps).collect();
    for (i, t) in firsts.iter().enumerate() {
        assert_eq!(t.len(), 1, "request {i} carries exactly one gather: {t:?}");
    }
    let mut all: Vec<i64> = firsts.iter().map(|t| t[0]).collect();
    all.dedup();
    assert_eq!(all.len(), seen.len(), "a refused batch is never sent again: {firsts:?}");
    let text = metrics.render().unwrap();
    let remote = format!("127.0.0.1:{}", recv.port);
    let failures = sample(
        &text,
        &format!(r#"egress_probe_push_failures_total{{phase="request",reason="status_400",remote="{remote}"}}"#),
    );
    assert_eq!(failures, Some(seen.len() as f64), "{text}");
    let failed = sample(
        &text,
        &format!(r#"egress_probe_push_samples_total{{remote="{remote}",result="failed"}}"#),
    )
    .unwrap();
    assert!(failed > 0.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"egress_probe_push_samples_total{{remote="{remote}",result="sent"}}"#)
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn through_tinyproxy_with_basic_auth_push_works_and_wrong_credentials_are_proxy_auth() {
    let prom = Prom::start();
    let proxy = common::signalling::Tinyproxy::start(Some(("pushuser", "proxy-pass-1")), &[prom.port]);

    let mut cfg = rw(&prom.write_url());
    cfg.external_labels = BTreeMap::from([("via".to_string(), "tinyproxy".to_string())]);
    cfg.proxy = Some(ProxySetting::parse(&format!("http://pushuser:proxy-pass-1@127.0.0.1:{}", proxy.port)).unwrap());
    let metrics = metrics_for(&cfg);
    let p = Pusher::new(&cfg, None, metrics).unwrap();
    let o = p.write_now().await;
    assert!(o.success, "{o:?}");
    assert!(
        o.phases.iter().any(|t| t.phase.as_str() == "proxy"),
        "went through the proxy: {o:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || prom.value(r#"egress_probe_build_info{via="tinyproxy"}"#)
            == Some(1.0)),
        "series pushed through the proxy are in Prometheus"
    );

    let mut wrong = cfg.clone();
    wrong.proxy = Some(ProxySetting::parse(&format!("http://pushuser:nope@127.0.0.1:{}", proxy.port)).unwrap());
    let metrics = metrics_for(&wrong);
    let p = Pusher::new(&wrong, None, metrics.clone()).unwrap();
    let o = p.write_now().await;
    assert_eq!(o.failure.as_ref().map(|f| f.code()), Some("proxy/auth".to_string()), "{o:?}");
    let text = metrics.render().unwrap();
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"egress_probe_push_failures_total{{phase="proxy",reason="auth",remote="127.0.0.1:{}"}}"#,
                prom.port
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("nope") && !text.contains("proxy-pass-1"));
}

fn spki_sha256(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
}

#[tokio::test]
async fn a_tls_receiver_with_the_wrong_pin_is_tls_pin_mismatch_and_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::certs::TestCa::new("push test CA");
    let leaf = ca.leaf(&["127.0.0.1"], None);
    let recv = Receiver::start(answer(204), Some(leaf.rustls_server_config(Some(&ca), &["http/1.1"]))).await;
    let mut cfg = rw(&format!("https://127.0.0.1:{}/api/v1/write", recv.port));
    cfg.tls.ca_file = Some(ca.write_ca(dir.path()));

    cfg.tls.pin_sha256 = vec![spki_sha256(&leaf.cert_der)];
    let p = Pusher::new(&cfg, None, metrics_for(&cfg)).unwrap();
    let o = p.write_now().await;
    assert!(o.success, "the right pin passes: {o:?}");
    assert_eq!(recv.seen().len(), 1);

    let other = ca.leaf(&["127.0.0.1"], None);
    cfg.tls.pin_sha256 = vec![spki_sha256(&other.cert_der)];
    let metrics = metrics_for(&cfg);
    let p = Pusher::new(&cfg, None, metrics.clone()).unwrap();
    let o = p.write_now().await;
    assert_eq!(o.failure.as_ref().map(|f| f.code()), Some("tls/pin_mismatch".to_string()), "{o:?}");
    assert_eq!(recv.seen().len(), 1, "nothing sent to a receiver that fails the pin");
    let text = metrics.render().unwrap();
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"egress_probe_push_failures_total{{phase="tls",reason="pin_mismatch",remote="127.0.0.1:{}"}}"#,
                recv.port
            )
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn bearer_token_and_basic_auth_go_only_in_the_authorization_header() {
    let recv = Receiver::start(answer(204), None).await;
    let mut cfg = rw(&format!("http://127.0.0.1:{}/api/v1/write", recv.port));
    cfg.auth = Some(PushAuth::Bearer(Secret::literal("tok-3141")));
    cfg.headers = BTreeMap::from([("X-Scope-OrgID".to_string(), Secret::literal("acme"))]);
    assert!(Pusher::new(&cfg, None, metrics_for(&cfg)).unwrap().write_now().await.success);
    cfg.auth = Some(PushAuth::Basic {
        username: "u".into(),
        password: Secret::literal("pw-2718"),
    });
    assert!(Pusher::new(&cfg, None, metrics_for(&cfg)).unwrap().write_now().await.success);
    let seen = recv.seen();
    assert_eq!(seen[0].headers["authorization"], "Bearer tok-3141");
    assert_eq!(seen[0].headers["x-scope-orgid"], "acme");
    assert_eq!(seen[1].headers["authorization"], "Basic dTpwdy0yNzE4");
    assert!(!format!("{cfg:?}").contains("pw-2718"), "Debug of the config hides the password");
}

// ---------------------------------------------------------------------------------------------
// The daemon, end to end

/// A TCP server that accepts and closes connections until dropped.
struct Listening {
    port: u16,
    _l: std::thread::JoinHandle<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Listening {
    fn start() -> Listening {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listening { port, _l: t, stop }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The daemon with `config` (its log captured to a file), killed on drop.
struct Daemon {
    guard: ChildGuard,
    listen: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let path = dir.join("egress.yaml");
        std::fs::write(&path, config).unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(common::bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(listen.to_string())
            .env("RUST_LOG", "trace")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let guard = ChildGuard::spawn("egress-probe run", &mut cmd);
        assert!(
            wait_until(Duration::from_secs(15), || get(listen, "/healthz").is_some()),
            "daemon did not serve on {listen}"
        );
        Daemon { guard, listen, log }
    }

    fn metrics(&self) -> String {
        get(self.listen, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn daemon_config(probe_port: u16, push: &str) -> String {
    format!(
        "defaults: {{interval: 1h, timeout: 2s, jitter: 0%}}\n\
         probes:\n  - name: tcp-ok\n    kind: tcp\n    target: 127.0.0.1:{probe_port}\n\
         push:\n{push}"
    )
}

#[test]
fn a_running_daemon_pushes_its_families_with_external_labels_and_histogram_buckets() {
    let prom = Prom::start();
    let target = Listening::start();
    let dir = tempfile::tempdir().unwrap();
    let push = format!(
        "  - remote_write:\n      url: {}\n      interval: 1s\n      timeout: 2s\n      external_labels: {{tenant: acme, site: paris-1}}\n",
        prom.write_url()
    );
    // `per_phase`: the per-phase histogram's buckets are compared below.
    let config = format!("metrics: {{histograms: per_phase}}\n{}", daemon_config(target.port, &push));
    let mut d = Daemon::start(dir.path(), &config, &[]);
    let sel = r#"{probe="tcp-ok",tenant="acme",site="paris-1"}"#;
    assert!(
        wait_until(Duration::from_secs(15), || prom.value(&format!("egress_probe_success{sel}"))
            == Some(1.0)),
        "egress_probe_success arrives with the external labels; log:\n{}",
        d.log()
    );
    // Wait until the run's histogram made it, then compare with what /metrics serves.
    let count = format!("egress_probe_duration_seconds_count{sel}");
    assert!(wait_until(Duration::from_secs(10), || prom.value(&count) == Some(1.0)));
    let scraped = d.metrics();
    let served_sum = sample(&scraped, r#"egress_probe_duration_seconds_sum{kind="tcp",probe="tcp-ok"}"#).unwrap();
    assert_eq!(prom.value(&format!("egress_probe_duration_seconds_sum{sel}")), Some(served_sum));
    let buckets = prom.query(r#"egress_probe_phase_duration_seconds_bucket{probe="tcp-ok",phase="connect",tenant="acme"}"#);
    let les: Vec<&str> = buckets.iter().map(|(l, _)| l["le"].as_str()).collect();
    assert_eq!(les.len(), 15, "14 buckets and +Inf: {les:?}");
    assert!(les.contains(&"+Inf") && les.contains(&"0.005") && les.contains(&"1"), "{les:?}");
    let inf = buckets.iter().find(|(l, _)| l["le"] == "+Inf").unwrap().1;
    assert_eq!(inf, 1.0);
    assert_eq!(
        prom.value(r#"egress_probe_runs_total{probe="tcp-ok",result="success",tenant="acme"}"#),
        Some(1.0)
    );
    // The push self-metrics are pushed too.
    assert!(wait_until(Duration::from_secs(5), || {
        prom.value(r#"egress_probe_push_samples_total{result="sent",tenant="acme"}"#)
            .unwrap_or(0.0)
            > 0.0
    }));
    assert_eq!(d.guard.terminate(Duration::from_secs(3)).map(|s| s.code()), Some(Some(0)));
}

#[test]
fn a_receiver_outage_of_20_s_loses_no_sample_and_duplicates_none() {
    let mut prom = Prom::start();
    let target = Listening::start();
    let dir = tempfile::tempdir().unwrap();
    let push = format!(
        "  - remote_write:\n      url: {}\n      interval: 1s\n      timeout: 1s\n",
        prom.write_url()
    );
    let mut d = Daemon::start(dir.path(), &daemon_config(target.port, &push), &[]);
    let remote = format!("127.0.0.1:{}", prom.port);
    assert!(
        wait_until(Duration::from_secs(15), || prom.value("egress_probe_build_info").is_some()),
        "first pushes arrive; log:\n{}",
        d.log()
    );
    let started = Instant::now();
    prom.stop();
    let down_at = Instant::now();
    // While the receiver is away the queue holds the backlog.
    let queue = format!(r#"egress_probe_push_queue_samples{{remote="{remote}"}}"#);
    let mut peak = 0.0f64;
    while down_at.elapsed() < Duration::from_secs(20) {
        peak = peak.max(sample(&d.metrics(), &queue).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = d.metrics();
    assert!(peak > 0.0, "queue shows the backlog: {m}");
    let refused = format!(r#"egress_probe_push_failures_total{{phase="connect",reason="refused",remote="{remote}"}}"#);
    assert!(sample(&m, &refused).unwrap_or(0.0) >= 1.0, "{m}");
    prom.restart();
    assert!(
        wait_until(Duration::from_secs(20), || sample(&d.metrics(), &queue) == Some(0.0)),
        "the backlog drains; log:\n{}",
        d.log()
    );
    let end = Instant::now();
    let window = (end - started).as_secs() + 5;
    // One series, one sample per gather (1 s), across the outage: no gap, no duplicate.
    let series = prom.range(&format!("egress_probe_build_info[{window}s]"));
    assert_eq!(series.len(), 1, "{series:?}");
    let ts: Vec<i64> = series[0].iter().map(|(t, _)| *t).collect();
    assert!(ts.windows(2).all(|w| w[1] > w[0]), "strictly increasing, no duplicate: {ts:?}");
    let gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 1600).collect();
    assert!(gaps.is_empty(), "every gather of the outage arrived (gaps {gaps:?} ms)");
    assert!(ts.len() as u64 >= window - 6, "{} samples over {window} s", ts.len());
    let m = d.metrics();
    assert_eq!(
        sample(
            &m,
            &format!(r#"egress_probe_push_samples_total{{remote="{remote}",result="dropped"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!(r#"egress_probe_push_samples_total{{remote="{remote}",result="failed"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(d.guard.terminate(Duration::from_secs(3)).map(|s| s.code()), Some(Some(0)));
}

#[test]
fn push_secrets_never_reach_logs_metrics_status_or_check_output() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recv = rt.block_on(Receiver::start(answer(204), None));
    let target = Listening::start();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("rw-password");
    std::fs::write(&pw_file, "basic-secret-5e77\n").unwrap();
    let push = format!(
        "  - remote_write:\n      url: http://127.0.0.1:{port}/api/v1/write\n      interval: 1s\n      bearer_token: env:RW_TOKEN\n      headers: {{X-Scope-OrgID: env:RW_ORG}}\n\
         \x20 - remote_write:\n      url: http://127.0.0.1:{port}/other\n      interval: 1s\n      basic_auth: {{username: pusher, password: file:{pw}}}\n",
        port = recv.port,
        pw = pw_file.display()
    );
    let config = daemon_config(target.port, &push);
    let env = [("RW_TOKEN", "bearer-secret-9a1c"), ("RW_ORG", "org-secret-44b2")];
    let secrets = ["bearer-secret-9a1c", "org-secret-44b2", "basic-secret-5e77"];
    let mut d = Daemon::start(dir.path(), &config, &env);
    assert!(
        wait_until(Duration::from_secs(10), || recv.seen().len() >= 4),
        "both receivers get writes"
    );
    let metrics = d.metrics();
    let status = get(d.listen, "/status").map(|(_, b)| b).unwrap_or_default();
    assert!(metrics.contains("egress_probe_push_samples_total"), "{metrics}");
    assert_eq!(d.guard.terminate(Duration::from_secs(3)).map(|s| s.code()), Some(Some(0)));
    let log = d.log();
    assert!(
        log.contains("DEBUG") && log.contains("remote_write accepted"),
        "the log ran at trace level:\n{log}"
    );

    let check = Command::new("timeout")
        .arg("30")
        .arg(common::bin())
        .arg("check")
        .arg("--push")
        .arg("--config")
        .arg(dir.path().join("egress.yaml"))
        .env("RUST_LOG", "trace")
        .envs(env)
        .output()
        .unwrap();
    let check_out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(check.status.code(), Some(0), "{check_out}");
    assert!(
        check_out.contains("remote_write"),
        "check --push reports the receivers: {check_out}"
    );

    // The secrets did reach the receiver they were configured for...
    let seen = recv.seen();
    let auth: Vec<String> = seen
        .iter()
        .filter_map(|s| s.headers.get("authorization").map(|v| v.to_str().unwrap().to_string()))
        .collect();
    assert!(auth.iter().any(|a| a == "Bearer bearer-secret-9a1c"), "{auth:?}");
    assert!(seen
        .iter()
        .any(|s| s.headers.get("x-scope-orgid").is_some_and(|v| v == "org-secret-44b2")));
    // ...and nowhere else.
    for (what, text) in [
        ("log", &log),
        ("/metrics", &metrics),
        ("/status", &status),
        ("check output", &check_out),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "{s} appears in the {what}");
        }
    }
    drop(rt);
}

// ---------------------------------------------------------------------------------------------
// Config

#[test]
fn push_section_problems_are_reported_with_line_and_column() {
    let text = "probes:\n  - {name: a, kind: tcp, target: 127.0.0.1:1}\n\
                push:\n  - remote_write:\n      url: ftp://x/\n      intervl: 5s\n      interval: 100ms\n      bearer_token: t\n      basic_auth: {username: u, password: p}\n      external_labels: {__bad: x}\n      queue: {max_samples: 10}\n  - remote_wrte: {url: http://x/}\n";
    let err = egress_probe::config::parse_str(text, "p.yaml").unwrap_err().to_string();
    for want in [
        "p.yaml:5:12: url: scheme must be http or https",
        "p.yaml:6:7: unknown field `intervl` in remote_write (did you mean `interval`?)",
        "p.yaml:7:17: interval: a push interval must be at least 1s",
        "p.yaml:8:21: remote_write: give basic_auth or bearer_token, not both",
        "p.yaml:10:25: external_labels: \"__bad\" is not a Prometheus label name",
        "p.yaml:11:28: `max_samples` must be between 1000 and 100000000, got 10",
        "p.yaml:12:5: unknown field `remote_wrte` in a push entry (did you mean `remote_write`?)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(err.lines().count(), 7, "one problem per mistake:\n{err}");
}

#[test]
fn push_defaults_and_the_documented_shape_load() {
    let text = "probes:\n  - {name: a, kind: tcp, target: 127.0.0.1:1}\n\
                push:\n  - remote_write:\n      url: https://metrics.example.com/api/v1/write\n      external_labels: {tenant: acme}\n      headers: {X-Scope-OrgID: acme}\n      tls: {server_name: metrics.example.com, pin_sha256: [\"sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"]}\n      proxy: none\n      queue: {max_age: 30m}\n";
    let c = egress_probe::config::parse_str(text, "p.yaml").unwrap();
    let rw = &c.push[0];
    assert_eq!(rw.interval, Duration::from_secs(15));
    assert_eq!(rw.timeout, Duration::from_secs(10));
    assert_eq!(rw.queue.max_samples, 100_000);
    assert_eq!(rw.queue.max_age, Duration::from_secs(1800));
    assert_eq!(rw.external_labels["tenant"], "acme");
    assert_eq!(rw.tls.server_name.as_deref(), Some("metrics.example.com"));
    assert!(matches!(rw.proxy, Some(ProxySetting::None)));
    assert!(rw.auth.is_none());
}

#[test]
fn the_deploy_remote_write_example_validates() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .arg("20")
        .arg(common::bin())
        .arg("validate")
        .arg("--config")
        .arg(repo.join("deploy/remote-write.yaml"))
        .env("TURN_SECRET", "s")
        .env("RW_PASSWORD", "p")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigterm_sends_a_last_gather_and_exits_within_the_stop_budget() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recv = rt.block_on(Receiver::start(answer(204), None));
    let target = Listening::start();
    let dir = tempfile::tempdir().unwrap();
    // interval 1h: one gather at start, the next only at stop.
    let push = format!(
        "  - remote_write:\n      url: http://127.0.0.1:{}/api/v1/write\n      interval: 1h\n",
        recv.port
    );
    let mut d = Daemon::start(dir.path(), &daemon_config(target.port, &push), &[]);
    let runs = r#"egress_probe_runs_total{kind="tcp",probe="tcp-ok",result="success"}"#;
    assert!(wait_until(Duration::from_secs(10), || sample(&d.metrics(), runs) == Some(1.0)));
    assert!(
        wait_until(Duration::from_secs(5), || !recv.seen().is_empty()),
        "the start-up gather was sent"
    );
    let before = recv.seen().len();
    let t = Instant::now();
    let status = d.guard.terminate(Duration::from_secs(3));
    let took = t.elapsed();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)));
    assert!(took < Duration::from_millis(1500), "exit took {took:?}");
    let seen = recv.seen();
    assert_eq!(seen.len(), before + 1, "one last write at stop");
    let last = seen.last().unwrap().decode();
    let success_runs = last.timeseries.iter().find(|ts| {
        let has = |n: &str, v: &str| ts.labels.iter().any(|l| l.name == n && l.value == v);
        has("__name__", "egress_probe_runs_total") && has("result", "success")
    });
    assert_eq!(
        success_runs.map(|ts| ts.samples[0].value),
        Some(1.0),
        "the last gather carries the run"
    );
    drop(rt);
}
