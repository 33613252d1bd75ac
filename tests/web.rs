//! The endpoint's bounded listener and its exporter-toolkit web config, over real sockets:
//! a client that never finishes its headers is disconnected, connections over the cap are
//! closed on accept, and a real `web-config.yml` with bcrypt `basic_auth_users` and mTLS
//! (`RequireAndVerifyClientCert`) guards every path but `/healthz`.
mod common;

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use base64::Engine;
use common::certs::TestCa;
use egress_probe::web::listen::{serve, Limits, ListenerStats};
use egress_probe::web::WebSecurity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A listener task with `security` and `limits`, stopped on drop.
struct Endpoint {
    port: u16,
    stats: Arc<ListenerStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

async fn endpoint(security: WebSecurity, limits: Limits) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(|| async { "egress_probe_up 1\n" }));
    let (_tx, rx) = watch::channel(Arc::new(security));
    let stats = Arc::new(ListenerStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s2 = stats.clone();
    let task = tokio::spawn(async move {
        let _keep = _tx;
        let _ = serve(listener, app, rx, limits, s2, async move {
            let _ = stopped.await;
        })
        .await;
    });
    Endpoint {
        port,
        stats,
        stop: Some(stop),
        task,
    }
}

/// Sends `request` and reads the whole answer (the server closes: `Connection: close`).
async fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get_req(path: &str, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Whether the server closes the connection (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

#[tokio::test]
async fn slow_header_client_is_disconnected_after_the_header_read_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let ep = endpoint(WebSecurity::default(), limits).await;
    let mut s = TcpStream::connect(("127.0.0.1", ep.port)).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    // One more header byte every 100 ms: never a complete head.
    let drip = async {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(600), drip).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "the slow client must be disconnected"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2000), "disconnected after {took:?}");
    // The endpoint still answers others.
    assert!(http(ep.port, &get_req("/healthz", None)).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_counted() {
    let limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let ep = endpoint(WebSecurity::default(), limits).await;
    // Two connections hold both slots with unfinished requests.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", ep.port)).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // Wait until the server has accepted both (bounded).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(("127.0.0.1", ep.port)).await.unwrap();
    let _ = third.write_all(get_req("/healthz", None).as_bytes()).await;
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "the third connection must be closed"
    );
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(200), third.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200"), "no answer over the cap");
    assert!(ep.stats.over_capacity.load(Ordering::Relaxed) >= 1);
    // Freeing a slot lets a new client in.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a = http(ep.port, &get_req("/healthz", None)).await;
        if a.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not freed: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unfinished_requests_do_not_pin_memory_beyond_the_header_limit() {
    // A request head larger than the buffer limit is rejected, not buffered.
    let ep = endpoint(WebSecurity::default(), Limits::default()).await;
    let mut s = TcpStream::connect(("127.0.0.1", ep.port)).await.unwrap();
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n", "a".repeat(64 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
    p
}

#[tokio::test]
async fn basic_auth_from_web_config_guards_everything_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret-scrape", 4).unwrap();
    let cfg = write(dir.path(), "web-config.yml", &format!("basic_auth_users:\n  prometheus: {hash}\n"));
    let sec = WebSecurity::load(&cfg).expect("load web config");
    let ep = endpoint(sec, Limits::default()).await;
    assert!(http(ep.port, &get_req("/healthz", None)).await.starts_with("HTTP/1.1 200"));
    let no = http(ep.port, &get_req("/metrics", None)).await;
    assert!(no.starts_with("HTTP/1.1 401"), "{no}");
    assert!(no.to_ascii_lowercase().contains("www-authenticate: basic"), "{no}");
    let wrong = http(ep.port, &get_req("/metrics", Some(&basic("prometheus", "guess")))).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let nobody = http(ep.port, &get_req("/metrics", Some(&basic("nobody", "s3cret-scrape")))).await;
    assert!(nobody.starts_with("HTTP/1.1 401"), "{nobody}");
    let ok = http(ep.port, &get_req("/metrics", Some(&basic("prometheus", "s3cret-scrape")))).await;
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("egress_probe_up 1"), "{ok}");
    assert!(ep.stats.unauthorized.load(Ordering::Relaxed) >= 3);
}

#[test]
fn web_config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let bad_hash = write(dir.path(), "a.yml", "basic_auth_users:\n  u: plaintext\n");
    let e = WebSecurity::load(&bad_hash).unwrap_err().to_string();
    assert!(e.contains("not a bcrypt hash") && !e.contains("plaintext"), "{e}");
    let unknown = write(dir.path(), "b.yml", "tls_server_config:\n  cert_fil: x\n");
    let e = WebSecurity::load(&unknown).unwrap_err().to_string();
    assert!(e.contains("cert_fil"), "{e}");
    let e = WebSecurity::load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let no_ca = write(
        dir.path(),
        "c.yml",
        "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
    );
    assert!(WebSecurity::load(&no_ca).unwrap_err().to_string().contains("/nonexistent.crt"));
}

/// A TLS client (trusting `ca`), optionally presenting `client` (cert PEM, key PEM).
fn tls_client(ca: &TestCa, client: Option<(&str, &str)>) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der.clone())).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn https_get(port: u16, connector: &tokio_rustls::TlsConnector, path: &str, auth: Option<&str>) -> Result<String, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(get_req(path, auth).as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

#[tokio::test]
async fn mtls_and_basic_auth_from_a_real_web_config() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("Endpoint CA");
    let leaf = server_ca.leaf(&["127.0.0.1"], None);
    let (crt, key) = leaf.write(dir.path(), "endpoint", None);
    let client_ca = TestCa::new("Prometheus Clients CA");
    let client_ca_file = dir.path().join("clients.pem");
    std::fs::write(&client_ca_file, &client_ca.cert_pem).unwrap();
    let client = client_ca.leaf(&["prometheus.example.test"], None);
    let rogue_ca = TestCa::new("Rogue CA");
    let rogue = rogue_ca.leaf(&["prometheus.example.test"], None);
    let hash = bcrypt::hash("scrape-pw", 4).unwrap();
    let cfg = write(
        dir.path(),
        "web-config.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: {hash}\n",
            crt.display(),
            key.display(),
            client_ca_file.display()
        ),
    );
    let ep = endpoint(WebSecurity::load(&cfg).expect("load"), Limits::default()).await;
    let good = tls_client(&server_ca, Some((&client.cert_pem, &client.key_pem)));
    let ok = https_get(ep.port, &good, "/metrics", Some(&basic("prometheus", "scrape-pw")))
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("egress_probe_up 1"), "{ok}");
    let no_pw = https_get(ep.port, &good, "/metrics", None).await.unwrap();
    assert!(no_pw.starts_with("HTTP/1.1 401"), "{no_pw}");
    let health = https_get(ep.port, &good, "/healthz", None).await.unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Without a client certificate, or with one from another CA: no HTTP at all.
    for (what, c) in [
        ("no client cert", tls_client(&server_ca, None)),
        ("rogue client cert", tls_client(&server_ca, Some((&rogue.cert_pem, &rogue.key_pem)))),
    ] {
        let r = https_get(ep.port, &c, "/metrics", Some(&basic("prometheus", "scrape-pw"))).await;
        assert!(r.as_ref().map_or(true, |a| !a.contains("200 OK")), "{what}: {r:?}");
    }
    // Plain HTTP on the TLS port gets nothing.
    let plain = http(ep.port, &get_req("/healthz", None)).await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert!(ep.stats.tls_failed.load(Ordering::Relaxed) >= 2);
}
