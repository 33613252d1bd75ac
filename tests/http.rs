//! `kind: http` against an in-process hyper server over tokio-rustls (rcgen certificates):
//! each answer the issue lists is classified into its own phase and reason.
mod common;

use common::outcome::phases;

use std::collections::BTreeMap;
use std::time::Duration;

use common::signalling::{http_server, Server};
use egress_probe::config::{HttpMethod, HttpSpec, ProbeSpec, Secret, StatusRange, TlsOptions};
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};

fn spec(server: &Server, scheme: &str, path: &str) -> HttpSpec {
    HttpSpec {
        auth: None,
        url: url::Url::parse(&format!("{scheme}://127.0.0.1:{}{path}", server.port)).unwrap(),
        method: HttpMethod::Get,
        headers: BTreeMap::new(),
        body: None,
        expect_status: vec![StatusRange { low: 200, high: 399 }],
        expect_body: None,
        follow_redirects: 0,
        tls: TlsOptions {
            ca_file: server.pki.as_ref().map(|p| p.ca_file.clone()),
            ..Default::default()
        },
    }
}

async fn run(spec: HttpSpec, timeout: Duration) -> Outcome {
    probe::run(&ProbeSpec::Http(spec), &ProbeContext::with_timeout(timeout, None)).await
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "ok".into())
}

#[tokio::test]
async fn https_200_passes_with_every_phase_timed() {
    let server = http_server(true).await;
    let out = run(spec(&server, "https", "/ok"), Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        phases(&out),
        vec![Phase::Resolve, Phase::Connect, Phase::Tls, Phase::Request, Phase::Body]
    );
    let http = out.detail.http.as_ref().unwrap();
    assert_eq!((http.status, http.body_bytes), (200, "hello egress-probe".len() as u64));
    assert_eq!(out.detail.tls.as_ref().unwrap().alpn.as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn plain_http_passes_without_tls_phase() {
    let server = http_server(false).await;
    let out = run(spec(&server, "http", "/ok"), Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert_eq!(phases(&out), vec![Phase::Resolve, Phase::Connect, Phase::Request, Phase::Body]);
}

#[tokio::test]
async fn status_408_is_request_status_408() {
    let server = http_server(true).await;
    let out = run(spec(&server, "https", "/408"), Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/status_408");
    assert_eq!(out.detail.http.as_ref().unwrap().status, 408);
}

#[tokio::test]
async fn status_429_keeps_retry_after_seconds() {
    let server = http_server(true).await;
    let out = run(spec(&server, "https", "/429"), Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/status_429");
    assert_eq!(out.detail.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn status_503_keeps_retry_after_http_date() {
    let server = http_server(true).await;
    let out = run(spec(&server, "https", "/503"), Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/status_503");
    let ra = out.detail.retry_after.expect("retry_after");
    assert!(ra > Duration::from_secs(3500) && ra <= Duration::from_secs(3600), "{ra:?}");
}

#[tokio::test]
async fn slow_first_byte_is_request_timeout_at_the_deadline() {
    let server = http_server(true).await;
    let timeout = Duration::from_millis(800);
    let out = run(spec(&server, "https", "/slow"), timeout).await;
    assert_eq!(code(&out), "request/timeout");
    assert!(
        out.total >= timeout - Duration::from_millis(50) && out.total < timeout + Duration::from_millis(300),
        "{:?}",
        out.total
    );
}

#[tokio::test]
async fn expect_body_matches_or_is_body_expect_failed() {
    let server = http_server(true).await;
    let mut s = spec(&server, "https", "/ok");
    s.expect_body = Some(regex::Regex::new("^hello egress").unwrap());
    let out = run(s.clone(), Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    s.expect_body = Some(regex::Regex::new("goodbye").unwrap());
    let out = run(s, Duration::from_secs(5)).await;
    assert_eq!(code(&out), "body/expect_failed");
}

#[tokio::test]
async fn unexpected_status_is_rejected_even_when_2xx_3xx() {
    let server = http_server(true).await;
    let mut s = spec(&server, "https", "/redirect");
    s.expect_status = vec![StatusRange { low: 200, high: 200 }];
    let out = run(s, Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/status_302");
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let server = http_server(true).await;
    let mut s = spec(&server, "https", "/redirect");
    s.follow_redirects = 3;
    s.expect_status = vec![StatusRange { low: 200, high: 200 }];
    let out = run(s.clone(), Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    let http = out.detail.http.as_ref().unwrap();
    assert_eq!(http.redirects, 1);
    assert!(http.final_url.ends_with("/ok"), "{}", http.final_url);
    assert_eq!(out.phases.iter().filter(|p| p.phase == Phase::Request).count(), 2);

    // A redirect loop stops after `follow_redirects` hops and reports the last status.
    s.url = url::Url::parse(&format!("https://127.0.0.1:{}/loop", server.port)).unwrap();
    let out = run(s, Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/status_302");
    assert_eq!(out.detail.http.as_ref().unwrap().redirects, 3);
}

#[tokio::test]
async fn post_sends_body_and_headers_from_secrets() {
    let server = http_server(true).await;
    let mut s = spec(&server, "https", "/echo");
    s.method = HttpMethod::Post;
    s.body = Some("{\"ping\":1}".into());
    s.expect_body = Some(regex::Regex::new("^\\{\"ping\":1\\}$").unwrap());
    let out = run(s, Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");

    let mut s = spec(&server, "https", "/auth");
    let out = run(s.clone(), Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/status_401");
    s.headers.insert("Authorization".into(), Secret::literal("Bearer t0k"));
    let out = run(s, Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert!(!format!("{out:?}").contains("t0k"), "secret leaked into the outcome");
}

#[tokio::test]
async fn big_body_is_read_only_up_to_the_limit() {
    let server = http_server(true).await;
    let out = run(spec(&server, "https", "/big"), Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        out.detail.http.as_ref().unwrap().body_bytes,
        egress_probe::probe::http::MAX_BODY as u64
    );
    assert!(
        out.detail.notes.iter().any(|n| n.contains("only the first")),
        "{:?}",
        out.detail.notes
    );
}

#[tokio::test]
async fn head_reads_no_body() {
    let server = http_server(true).await;
    let mut s = spec(&server, "https", "/ok");
    s.method = HttpMethod::Head;
    let out = run(s, Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert_eq!(phases(&out).last(), Some(&Phase::Request));
}

#[tokio::test]
async fn closed_port_is_connect_refused() {
    let port = common::free_port();
    let s = HttpSpec {
        auth: None,
        url: url::Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap(),
        method: HttpMethod::Get,
        headers: BTreeMap::new(),
        body: None,
        expect_status: vec![],
        expect_body: None,
        follow_redirects: 0,
        tls: TlsOptions::default(),
    };
    let out = run(s, Duration::from_secs(2)).await;
    assert_eq!(code(&out), "connect/refused");
}

/// A plain-HTTP server on loopback that records the head of every request it gets and
/// answers each with `answer(port_of_this_server)`; stops with the test's runtime.
async fn recorder(answer: impl Fn(u16) -> String + Send + 'static) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase());
            let _ = s.write_all(answer(port).as_bytes()).await;
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_redirect_to_another_origin_gets_no_credentials() {
    let (other, landed) = recorder(|_| "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()).await;
    let (port, first) = recorder(move |_| {
        format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{other}/landing\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    })
    .await;
    // Another port is another origin (scheme, host and port), as for browsers.
    std::env::set_var("HTTP_RS_REDIRECT_TOKEN", "Bearer sekrit-token");
    let spec = HttpSpec {
        auth: None,
        url: url::Url::parse(&format!("http://127.0.0.1:{port}/start")).unwrap(),
        method: HttpMethod::Get,
        headers: BTreeMap::from([
            ("Authorization".to_string(), Secret::resolve("env:HTTP_RS_REDIRECT_TOKEN").unwrap()),
            ("X-Trace".to_string(), Secret::literal("visible")),
        ]),
        body: None,
        expect_status: vec![StatusRange { low: 200, high: 399 }],
        expect_body: None,
        follow_redirects: 1,
        tls: TlsOptions::default(),
    };
    let out = run(spec, Duration::from_secs(3)).await;
    let first = first.lock().unwrap().clone();
    let landed = landed.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "{out:?}");
    assert!(
        first[0].contains("authorization: bearer sekrit-token"),
        "the configured origin gets it: {first:?}"
    );
    assert_eq!(landed.len(), 1, "the redirect was followed: {out:?}");
    assert!(
        !landed[0].contains("sekrit"),
        "another origin must not get the credential: {landed:?}"
    );
    assert!(landed[0].contains("x-trace: visible"), "plain headers still go: {landed:?}");
}
