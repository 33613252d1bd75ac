//! Secrets never reach the log, dependencies included: the real binary runs `check` at
//! `RUST_LOG=trace` (text and JSON) against real servers — a wss server that receives a bearer
//! header, an HTTPS server (bearer header too, over hyper) through tinyproxy with Basic proxy
//! credentials, coturn with a
//! long-term password and coturn with a REST secret (turn and ice probes) — and none of the
//! secret strings, nor the encoded forms that travel on the wire, appear in stdout or stderr.
//!
//! The signalling set-up gets the same at trace level, `check` and the daemon both: a
//! `kind: session` probe (OAuth2 client credentials, a REST step that returns the WebSocket
//! URL, the WebSocket step) and a `concurrent: 3` websocket probe with its own token per
//! connection; neither the client secret nor any token the in-test token server issued appears
//! in stderr, the JSON report, `/metrics` or `/status`.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{self, json, Task};
use common::proc::wait_until;
use hyper::body::Incoming;
use hyper::Request;

use base64::Engine;
use common::coturn::{Auth, Coturn, CoturnOptions};
use common::signalling::{http_server, ws_server, Seen, Tinyproxy, WsMode};

const BEARER: &str = "brr-7c1d9e2f-secret-token";
const PROXY_PASSWORD: &str = "pxy-4a8b0c6e-secret";
const TURN_PASSWORD: &str = "trn-9f3e5d1b-secret";
const REST_SECRET: &str = "rst-2b6d8f0a-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_absent_from_every_output_at_trace_level() {
    let ws = ws_server(WsMode::Good, true).await;
    let https = http_server(true).await;
    let proxy = Tinyproxy::start(Some(("probeuser", PROXY_PASSWORD)), &[]);
    let lt = Coturn::start(CoturnOptions {
        auth: Auth::LongTerm {
            user: "probeuser".into(),
            password: TURN_PASSWORD.into(),
        },
        extra: vec![],
    });
    let rest = Coturn::start(CoturnOptions {
        auth: Auth::Rest {
            secret: REST_SECRET.into(),
        },
        extra: vec![],
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{ timeout: 5s }}
probes:
  - name: ws-bearer
    kind: websocket
    url: wss://127.0.0.1:{ws}/
    headers: {{ Authorization: env:T_BEARER }}
    ca_file: {ws_ca}
  - name: https-via-proxy
    kind: http
    url: https://127.0.0.1:{https}/ok
    headers: {{ Authorization: env:T_BEARER }}
    proxy: env:T_PROXY_URL
    ca_file: {https_ca}
  - name: turn-long-term
    kind: turn
    server: turn:127.0.0.1:{lt}?transport=tcp
    credentials: {{ username: probeuser, password: env:T_TURN_PASSWORD }}
  - name: turn-rest
    kind: turn
    server: turn:127.0.0.1:{rest}?transport=udp
    credentials: {{ rest_secret: env:T_REST_SECRET }}
  - name: ice-relay
    kind: ice
    servers:
      - url: turn:127.0.0.1:{lt}?transport=udp
        credentials: {{ username: probeuser, password: env:T_TURN_PASSWORD }}
    policy: relay
",
            ws = ws.port,
            ws_ca = ws.ca_file().display(),
            https = https.port,
            https_ca = https.ca_file().display(),
            lt = lt.port,
            rest = rest.port,
        ),
    )
    .unwrap();
    let proxy_url = format!("http://probeuser:{PROXY_PASSWORD}@127.0.0.1:{}", proxy.port);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("probeuser:{PROXY_PASSWORD}"));
    let forbidden = [BEARER, PROXY_PASSWORD, TURN_PASSWORD, REST_SECRET, basic.as_str()];

    for format in ["text", "json"] {
        let (config, proxy_url) = (config.clone(), proxy_url.clone());
        let out = tokio::task::spawn_blocking(move || {
            let env = [
                ("T_BEARER", format!("Bearer {BEARER}")),
                ("T_PROXY_URL", proxy_url),
                ("T_TURN_PASSWORD", TURN_PASSWORD.into()),
                ("T_REST_SECRET", REST_SECRET.into()),
            ];
            common::check_at_trace(&config, format, &env)
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Every probe passed, so every secret was really used on the wire.
        assert_eq!(out.status.code(), Some(0), "{format}: all probes must pass\n{stdout}\n{stderr}");
        // Trace logging was really on, and dependencies did try to log the exchanges.
        let summary = stderr
            .lines()
            .find(|l| l.contains("dependency log events withheld"))
            .unwrap_or_else(|| panic!("{format}: no withheld summary at trace level:\n{stderr}"));
        eprintln!("{format}: {summary}");
        assert!(summary.contains("DEBUG") || summary.contains("\"level\":\"DEBUG\""), "{summary}");
        for secret in forbidden {
            assert!(!stdout.contains(secret), "{format}: stdout contains {secret:?}");
            if let Some(line) = stderr.lines().find(|l| l.contains(secret)) {
                panic!("{format}: the log contains {secret:?}: {line}");
            }
        }
    }
    // The bearer header did reach the server it was configured for.
    let headers = ws.seen.headers.lock().unwrap().clone();
    assert!(
        headers
            .iter()
            .flatten()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {BEARER}")),
        "the wss server must have received the bearer header: {headers:?}"
    );
    assert!(Seen::get(&ws.seen.upgrades) >= 2);
}

const CLIENT: &str = "softphone-tenant-9";
const CLIENT_SECRET: &str = "cs-8d2e4f6a-client-secret";

/// The tenant's API: `POST /token` (client credentials, HTTP Basic) issues a fresh token and
/// records it; `POST /channels` with a bearer it issued answers
/// `{"connectUri": "ws://127.0.0.1:<ws_port>/channels/c1"}`, else 401.
async fn tenant_api(ws_port: u16, issued: Arc<Mutex<Vec<String>>>) -> (u16, Task) {
    http::serve(move |req: Request<Incoming>| {
        let issued = issued.clone();
        async move {
            let auth = http::authorization(&req);
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{CLIENT_SECRET}"));
            match req.uri().path() {
                "/token" if auth == format!("Basic {basic}") => {
                    let token = format!("tok-{:032x}", rand::random::<u128>());
                    issued.lock().unwrap().push(token.clone());
                    json(
                        200,
                        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#),
                    )
                }
                "/token" => json(401, r#"{"error":"invalid_client"}"#.into()),
                "/channels" => {
                    let ok = auth
                        .strip_prefix("Bearer ")
                        .is_some_and(|t| issued.lock().unwrap().iter().any(|i| i == t));
                    if ok {
                        json(200, format!(r#"{{"id":"c1","connectUri":"ws://127.0.0.1:{ws_port}/channels/c1"}}"#))
                    } else {
                        json(401, "{}".into())
                    }
                }
                _ => json(404, "{}".into()),
            }
        }
    })
    .await
}

/// (where, text) pairs must hold none of `forbidden`.
fn assert_clean(outputs: &[(&str, &str)], forbidden: &[String]) {
    for (place, text) in outputs {
        for secret in forbidden {
            if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
                panic!("{place} contains {secret:?}: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_concurrent_oauth2_secrets_are_absent_from_logs_report_metrics_and_status_at_trace_level() {
    let ws = common::signalling::ws_server(WsMode::Good, false).await;
    let issued = Arc::new(Mutex::new(Vec::new()));
    let (api, _api) = tenant_api(ws.port, issued.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signalling.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{ timeout: 5s, interval: 60s, jitter: 0% }}
x-auth: &auth
  oauth2:
    token_url: http://127.0.0.1:{api}/token
    client_id: {CLIENT}
    client_secret: env:T_CLIENT_SECRET
    scopes: [signalling]
probes:
  - name: signalling-session
    kind: session
    auth: *auth
    steps:
      - http: {{ method: POST, url: \"http://127.0.0.1:{api}/channels\", expect_status: 200 }}
        extract: {{ ws_url: /connectUri }}
      - websocket: {{ url: \"${{ws_url}}\", ping: 1 }}
  - name: signalling-concurrent
    kind: websocket
    url: ws://127.0.0.1:{ws}/
    auth: *auth
    concurrent: 3
    ping: 1
",
            ws = ws.port,
        ),
    )
    .unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{CLIENT_SECRET}"));

    // `check`, text and JSON logs; the JSON run prints the JSON report too.
    for format in ["text", "json"] {
        let config = config.clone();
        let out =
            tokio::task::spawn_blocking(move || common::check_at_trace(&config, format, &[("T_CLIENT_SECRET", CLIENT_SECRET.into())]))
                .await
                .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(0), "{format}: all probes must pass\n{stdout}\n{stderr}");
        // Trace logging was really on, and dependencies did try to log the exchanges.
        assert!(
            stderr.lines().any(|l| l.contains("dependency log events withheld")),
            "{format}: no withheld summary at trace level:\n{stderr}"
        );
        if format == "json" {
            let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
            let text = report.to_string();
            assert!(text.contains("\"established\":3"), "the concurrent probe ran: {text}");
        }
        let mut forbidden = vec![CLIENT_SECRET.to_string(), basic.clone()];
        forbidden.extend(issued.lock().unwrap().iter().cloned());
        assert_clean(&[("check stdout", &stdout), ("check stderr", &stderr)], &forbidden);
    }
    // Each process: one token for the session, one per concurrent connection (3).
    assert_eq!(issued.lock().unwrap().len(), 8, "{:?}", issued.lock().unwrap());

    // The daemon: /metrics and /status after the first runs, and its trace log.
    let log = dir.path().join("daemon.log");
    let (addr, mut daemon) = common::spawn_daemon(
        &config,
        common::DaemonStart {
            global: &["--log-format", "json"],
            env: &[("RUST_LOG", "trace"), ("T_CLIENT_SECRET", CLIENT_SECRET)],
            log: Some(&log),
            ..Default::default()
        },
    );
    let ran = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(20), || {
            http::get(addr, "/metrics").is_some_and(|(_, m)| {
                m.contains("egress_probe_concurrent_established{probe=\"signalling-concurrent\"} 3")
                    && m.lines()
                        .any(|l| l.starts_with("egress_probe_success{") && l.contains("signalling-session") && l.ends_with(" 1"))
            })
        })
    })
    .await
    .unwrap();
    let metrics = http::get(addr, "/metrics").map(|r| r.1).unwrap_or_default();
    let (status_code, status) = http::get(addr, "/status").unwrap_or_default();
    let stopped = daemon.terminate(Duration::from_secs(10));
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ran, "both probes must have passed in the daemon:\n{metrics}\n{daemon_log}");
    assert!(stopped.is_some(), "the daemon stops on SIGTERM");
    assert_eq!(status_code, 200, "{status}");
    assert!(status.contains("signalling-session"), "{status}");
    assert!(
        daemon_log.lines().any(|l| l.contains("dependency log events withheld")),
        "trace logging was on in the daemon:\n{daemon_log}"
    );
    let mut forbidden = vec![CLIENT_SECRET.to_string(), basic.clone()];
    forbidden.extend(issued.lock().unwrap().iter().cloned());
    assert!(forbidden.len() >= 2 + 12, "the daemon got its own tokens: {forbidden:?}");
    assert_clean(
        &[("/metrics", &metrics), ("/status", &status), ("daemon log", &daemon_log)],
        &forbidden,
    );
    // The tokens were really used on the wire: the WebSocket server saw bearers it issued.
    let bearers: Vec<String> = ws
        .seen
        .headers
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .collect();
    let tokens = issued.lock().unwrap().clone();
    // Three processes, each: the session's WebSocket step and three concurrent connections,
    // every one with a token of its own (none shared between probes or connections).
    let distinct: std::collections::BTreeSet<&String> = bearers.iter().collect();
    assert_eq!((bearers.len(), distinct.len()), (12, 12), "{bearers:?}");
    assert!(
        bearers.len() >= 12
            && bearers
                .iter()
                .all(|b| b.strip_prefix("Bearer ").is_some_and(|t| tokens.iter().any(|i| i == t))),
        "{bearers:?}"
    );
}
