//! `kind: session` end to end against real in-process servers: an HTTP server with an OAuth2
//! token endpoint and a REST endpoint that returns the signalling WebSocket's URL (as a
//! softphone's "create notification channel" call does), and the tokio-tungstenite WebSocket
//! servers of `common::signalling` (good, or a middlebox answering 101 without `Upgrade`).
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{self, json, Task};
use common::signalling::{ws_server, Seen, WsMode};
use hyper::body::Incoming;
use hyper::Request;

use egress_probe::config::parse_str;
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};

const TOKEN: &str = "sess-tok-3f9a1c";

/// `POST /token` → a bearer; `POST /channels` (bearer required, else 401) →
/// `{"id":"c1","connectUri":"ws://127.0.0.1:<ws_port>/channels/c1"}`; `/408` → 408.
/// Records the Authorization header of every /channels request.
async fn rest_server(ws_port: u16, seen: Arc<Mutex<Vec<String>>>) -> (u16, Task) {
    rest_server_naming("127.0.0.1", ws_port, seen).await
}

/// As [`rest_server`], with `ws_host` in the returned `connectUri`.
async fn rest_server_naming(ws_host: &'static str, ws_port: u16, seen: Arc<Mutex<Vec<String>>>) -> (u16, Task) {
    http::serve(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let auth = http::authorization(&req);
            match req.uri().path() {
                "/token" => json(
                    200,
                    format!(r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":60}}"#),
                ),
                "/channels" => {
                    seen.lock().unwrap().push(auth.clone());
                    if auth == format!("Bearer {TOKEN}") {
                        json(200, format!(r#"{{"id":"c1","connectUri":"ws://{ws_host}:{ws_port}/channels/c1"}}"#))
                    } else {
                        json(401, "{}".into())
                    }
                }
                "/408" => json(408, "{}".into()),
                _ => json(404, "{}".into()),
            }
        }
    })
    .await
}

fn session_yaml(rest: u16, first_path: &str) -> String {
    format!(
        "probes:
  - name: softphone-session
    kind: session
    timeout: 5s
    auth: {{oauth2: {{token_url: http://127.0.0.1:{rest}/token, client_id: c, client_secret: s}}}}
    steps:
      - http: {{method: POST, url: http://127.0.0.1:{rest}{first_path}, expect_status: 200}}
        extract: {{ws_url: /connectUri, channel: /id}}
      - websocket: {{url: '${{ws_url}}', ping: 2}}
"
    )
}

async fn run_yaml(yaml: &str) -> Outcome {
    let c = parse_str(yaml, "session.yaml").unwrap();
    probe::run(&c.probes[0].spec, &ProbeContext::with_timeout(Duration::from_secs(5), None)).await
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "ok".into())
}

#[tokio::test]
async fn rest_returns_the_ws_url_and_the_session_opens_it_with_the_same_bearer() {
    let ws = ws_server(WsMode::Good, false).await;
    let rest_seen = Arc::new(Mutex::new(Vec::new()));
    let (rest, _r) = rest_server(ws.port, rest_seen.clone()).await;
    let out = run_yaml(&session_yaml(rest, "/channels")).await;
    assert_eq!(code(&out), "ok", "{out:?}");
    let s = out.detail.session.clone().unwrap();
    assert_eq!((s.steps, s.completed, s.failed_step), (2, 2, None));
    assert_eq!(s.extracted, ["channel", "ws_url"]);
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    for p in [Phase::Auth, Phase::Request, Phase::Body, Phase::Upgrade, Phase::Ping, Phase::Close] {
        assert!(phases.contains(&p), "{p} missing in {phases:?}");
    }
    // One token for the whole session, on the REST call and on the upgrade.
    assert_eq!(*rest_seen.lock().unwrap(), vec![format!("Bearer {TOKEN}")]);
    assert_eq!(Seen::get(&ws.seen.upgrades), 1);
    let headers = ws.seen.headers.lock().unwrap().clone();
    assert!(
        headers[0]
            .iter()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {TOKEN}")),
        "{headers:?}"
    );
    let json = serde_json::to_string(&out).unwrap();
    assert!(!json.contains(TOKEN), "{json}");
}

#[tokio::test]
async fn a_server_supplied_url_on_another_host_gets_no_bearer() {
    // `localhost` reaches the same loopback server, but it is not a host the config names.
    let ws = ws_server(WsMode::Good, false).await;
    let (rest, _r) = rest_server_naming("localhost", ws.port, Arc::default()).await;
    let out = run_yaml(&session_yaml(rest, "/channels")).await;
    assert_eq!(Seen::get(&ws.seen.upgrades), 1, "{out:?}");
    let headers = ws.seen.headers.lock().unwrap().clone();
    assert!(
        !headers[0].iter().any(|(k, v)| k == "authorization" || v.contains(TOKEN)),
        "the token went to a host the server named: {headers:?}"
    );
}

#[tokio::test]
async fn a_408_on_step_1_is_request_status_408_of_step_1() {
    let ws = ws_server(WsMode::Good, false).await;
    let (rest, _r) = rest_server(ws.port, Arc::default()).await;
    let out = run_yaml(&session_yaml(rest, "/408")).await;
    assert_eq!(code(&out), "request/status_408", "{out:?}");
    let f = out.failure.as_ref().unwrap();
    assert!(f.message.starts_with("step 1 (http): "), "{}", f.message);
    let s = out.detail.session.clone().unwrap();
    assert_eq!((s.completed, s.failed_step), (0, Some(1)));
    assert_eq!(Seen::get(&ws.seen.accepted), 0, "step 2 never ran");
}

#[tokio::test]
async fn a_stripped_upgrade_on_step_2_is_upgrade_not_upgraded_of_step_2() {
    let ws = ws_server(WsMode::Stripped101, false).await;
    let (rest, _r) = rest_server(ws.port, Arc::default()).await;
    let out = run_yaml(&session_yaml(rest, "/channels")).await;
    assert_eq!(code(&out), "upgrade/not_upgraded", "{out:?}");
    let f = out.failure.as_ref().unwrap();
    assert!(f.message.starts_with("step 2 (websocket): "), "{}", f.message);
    let s = out.detail.session.clone().unwrap();
    assert_eq!((s.completed, s.failed_step), (1, Some(2)));
}

#[test]
fn session_config_is_bounded_and_variables_must_come_from_earlier_steps() {
    let session = |steps: &str| format!("probes:\n  - name: s\n    kind: session\n    interval: 5m\n    steps:\n{steps}");
    let http = "      - http: {url: https://api.example/x}\n        extract: {u: /connectUri}\n";
    let c = parse_str(
        &session(&format!("{http}      - websocket: {{url: '${{u}}', hold: 30s, idle: true}}\n")),
        "x",
    )
    .unwrap();
    // The run's deadline covers the steps' holds.
    assert_eq!(c.probes[0].run_time(&c.defaults), Duration::from_secs(10 + 30));
    for (steps, says) in [
        (http.repeat(9), "give 1 to 8 steps"),
        (
            "      - websocket: {url: '${nope}'}\n".to_string(),
            "${nope} is not extracted by an earlier step",
        ),
        (
            "      - websocket: {url: wss://x/}\n        extract: {a: /b}\n".to_string(),
            "only http steps",
        ),
        (
            "      - {http: {url: https://x/}, websocket: {url: wss://x/}}\n".to_string(),
            "exactly one of",
        ),
        (
            "      - http: {url: https://x/}\n        extract: {a: connectUri}\n".to_string(),
            "JSON pointer",
        ),
        (
            "      - http: {url: 'https://x/${later}'}\n        extract: {later: /a}\n".to_string(),
            "${later} is not extracted",
        ),
    ] {
        let e = parse_str(&session(&steps), "x").unwrap_err().to_string();
        assert!(e.contains(says), "{steps}: {e}");
    }
    let e = parse_str(
        "probes:\n  - name: s\n    kind: session\n    interval: 20s\n    timeout: 10s\n    steps:\n      - websocket: {url: wss://x/, hold: 15s, idle: true}\n",
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("hold 15s plus timeout 10s is longer than interval 20s"), "{e}");
}

async fn responder_with_client(secret: &str) -> egress_probe::responder::Responder {
    let mut cfg = egress_probe::responder::ResponderConfig::loopback_ephemeral();
    cfg.oauth2_clients = std::collections::BTreeMap::from([("softphone".to_string(), egress_probe::config::Secret::literal(secret))]);
    egress_probe::responder::Responder::start(&cfg).await.expect("responder starts")
}

fn responder_session(r: &egress_probe::responder::Responder, secret: &str) -> String {
    let web = r.addrs.web[0].port();
    format!(
        "probes:
  - name: responder-session
    kind: session
    timeout: 5s
    ca_file: {ca}
    auth: {{oauth2: {{token_url: https://127.0.0.1:{web}/oauth/token, client_id: softphone, client_secret: '{secret}'}}}}
    steps:
      - http: {{method: POST, url: https://127.0.0.1:{web}/api/channels, expect_status: 200}}
        extract: {{ws_url: /connectUri}}
      - websocket: {{url: '${{ws_url}}', ping: 1, send: hello, expect: hello}}
",
        ca = r.tls.ca_file.as_ref().unwrap().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_walks_the_responders_token_channel_and_websocket_endpoints() {
    let r = responder_with_client("rsp-61c0-secret").await;
    let out = run_yaml(&responder_session(&r, "rsp-61c0-secret")).await;
    assert_eq!(code(&out), "ok", "{out:?}");
    assert_eq!(out.detail.session.as_ref().map(|s| s.completed), Some(2));
    let text = r.metrics_text().await;
    assert!(text.contains("egress_responder_websockets_total 1"), "{text}");

    // The channel endpoint wants the bearer; a wrong client secret is auth/status_401.
    let out = run_yaml(&responder_session(&r, "not-it")).await;
    assert_eq!(code(&out), "auth/status_401", "{out:?}");
    assert!(out.failure.unwrap().message.contains("invalid_client"));
    let bare = run_yaml(&format!(
        "probes:\n  - {{name: b, kind: http, method: POST, url: 'https://127.0.0.1:{}/api/channels', ca_file: {}}}\n",
        r.addrs.web[0].port(),
        r.tls.ca_file.as_ref().unwrap().display()
    ))
    .await;
    assert_eq!(code(&bare), "request/status_401");
    r.shutdown().await;
}
