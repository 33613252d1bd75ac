//! Secrets never reach the log, dependencies included: the real binary runs `check` at
//! `RUST_LOG=trace` (text and JSON) against real servers — a wss server that receives a bearer
//! header, an HTTPS server (bearer header too, over hyper) through tinyproxy with Basic proxy
//! credentials, coturn with a
//! long-term password and coturn with a REST secret (turn and ice probes) — and none of the
//! secret strings, nor the encoded forms that travel on the wire, appear in stdout or stderr.
mod common;

use std::process::Command;

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
            Command::new("timeout")
                .arg("60")
                .arg(common::bin())
                .args(["--log-format", format, "check", "--config"])
                .arg(&config)
                // The JSON run also prints the JSON report (every outcome's details).
                .args(if format == "json" { &["--output", "json"][..] } else { &[][..] })
                .env("RUST_LOG", "trace")
                .env("T_BEARER", format!("Bearer {BEARER}"))
                .env("T_PROXY_URL", proxy_url)
                .env("T_TURN_PASSWORD", TURN_PASSWORD)
                .env("T_REST_SECRET", REST_SECRET)
                .output()
                .expect("run egress-probe check")
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
