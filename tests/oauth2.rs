//! `auth: {oauth2: ...}` on http and websocket probes against a real in-test OAuth2 token
//! server (hyper on 127.0.0.1:0, client-credentials grant, `client_secret_basic`) and resource
//! servers (tokio-tungstenite WebSocket, hyper HTTP) that accept only unexpired tokens that
//! server issued.
// tungstenite fixes the callback signature (`Result<Response, ErrorResponse>`).
#![allow(clippy::result_large_err)]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::http::{json, serve, Task};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};

use egress_probe::config::{
    HttpMethod, HttpSpec, OAuth2Spec, ProbeSpec, ProxySetting, Secret, StatusRange, TlsOptions, TokenCache, WebsocketSpec,
};
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};

const CLIENT: &str = "softphone-tenant-7";
const SECRET: &str = "cs-5e1f7a9b-client-secret";

/// What the token server issued: token → when it stops being valid.
#[derive(Default)]
struct Issued {
    tokens: Mutex<HashMap<String, Instant>>,
    requests: Mutex<u32>,
}

impl Issued {
    fn count(&self) -> u32 {
        *self.requests.lock().unwrap()
    }
    fn valid(&self, bearer: Option<&str>) -> bool {
        let Some(token) = bearer.and_then(|b| b.strip_prefix("Bearer ")) else {
            return false;
        };
        self.tokens.lock().unwrap().get(token).is_some_and(|until| Instant::now() < *until)
    }
}

/// The token server: `POST /token`; 401 `invalid_client` for a wrong id/secret, 400
/// `invalid_scope` for scope `admin`; else a fresh token living `expires_in` seconds.
async fn token_server(issued: Arc<Issued>, expires_in: u64) -> (u16, Task) {
    serve(move |req| token(req, issued.clone(), expires_in)).await
}

async fn token(req: Request<Incoming>, issued: Arc<Issued>, expires_in: u64) -> Response<Full<Bytes>> {
    *issued.requests.lock().unwrap() += 1;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"));
    let basic_ok = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.to_str().unwrap_or("") == format!("Basic {expected}"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !basic_ok {
        return json(401, r#"{"error":"invalid_client"}"#.into());
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return json(400, r#"{"error":"unsupported_grant_type"}"#.into());
    }
    if form.get("scope").is_some_and(|s| s.split(' ').any(|s| s == "admin")) {
        return json(
            400,
            r#"{"error":"invalid_scope","error_description":"admin is not granted"}"#.into(),
        );
    }
    let n = issued.count();
    let token = format!("at-{n}-{:016x}", rand::random::<u64>());
    issued
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), Instant::now() + Duration::from_secs(expires_in));
    json(
        200,
        format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#),
    )
}

/// A WebSocket server that upgrades only with a valid bearer (else 401), and records the
/// bearer of every upgrade it accepted.
async fn ws_resource(issued: Arc<Issued>, seen: Arc<Mutex<Vec<String>>>) -> (u16, Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (issued, seen) = (issued.clone(), seen.clone());
            tokio::spawn(async move {
                let cb = move |req: &WsRequest, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
                    let bearer = req.headers().get("authorization").and_then(|v| v.to_str().ok());
                    if !issued.valid(bearer) {
                        let mut e = ErrorResponse::new(Some("invalid token".into()));
                        *e.status_mut() = http::StatusCode::UNAUTHORIZED;
                        return Err(e);
                    }
                    seen.lock().unwrap().push(bearer.unwrap_or("").to_string());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), async { while let Some(Ok(_)) = ws.next().await {} }).await;
            });
        }
    });
    (port, Task(task))
}

/// An HTTP server answering 200 to a valid bearer, else 401.
async fn http_resource(issued: Arc<Issued>) -> (u16, Task) {
    serve(move |req: Request<Incoming>| {
        let ok = issued.valid(req.headers().get("authorization").and_then(|v| v.to_str().ok()));
        async move { json(if ok { 200 } else { 401 }, "{}".into()) }
    })
    .await
}

fn oauth(token_port: u16, secret: &str, scopes: &[&str]) -> OAuth2Spec {
    OAuth2Spec {
        token_url: url::Url::parse(&format!("http://127.0.0.1:{token_port}/token")).unwrap(),
        client_id: CLIENT.into(),
        client_secret: Secret::literal(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        audience: Some("https://api.example/".into()),
        extra_params: BTreeMap::new(),
        cache: TokenCache::default(),
    }
}

fn ws_spec(port: u16, auth: OAuth2Spec) -> ProbeSpec {
    ProbeSpec::Websocket(WebsocketSpec {
        url: url::Url::parse(&format!("ws://127.0.0.1:{port}/signalling")).unwrap(),
        headers: BTreeMap::new(),
        ping: 1,
        send: None,
        expect: None,
        tls: TlsOptions::default(),
        auth: Some(auth),
        concurrent: 1,
        hold: None,
    })
}

async fn run(spec: &ProbeSpec) -> Outcome {
    probe::run(spec, &ProbeContext::with_timeout(Duration::from_secs(5), None)).await
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "ok".into())
}

#[tokio::test]
async fn good_client_gets_a_token_and_the_websocket_sees_the_bearer() {
    let issued = Arc::new(Issued::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let (wport, _w) = ws_resource(issued.clone(), seen.clone()).await;
    let spec = ws_spec(wport, oauth(tport, SECRET, &["signalling"]));
    let out = run(&spec).await;
    assert_eq!(code(&out), "ok", "{out:?}");
    assert_eq!(out.phases.first().map(|p| p.phase), Some(Phase::Auth));
    let auth = out.detail.auth.as_ref().unwrap();
    assert!(
        !auth.cached && auth.status == Some(200) && auth.expires_in_s == Some(3600),
        "{auth:?}"
    );
    let seen = seen.lock().unwrap().clone();
    let tokens: Vec<String> = issued.tokens.lock().unwrap().keys().cloned().collect();
    assert_eq!(seen, vec![format!("Bearer {}", tokens[0])]);
    // The token is in no part of the outcome.
    let json = serde_json::to_string(&out).unwrap();
    assert!(!json.contains(&tokens[0]) && !json.contains(SECRET), "{json}");
}

#[tokio::test]
async fn good_client_gets_a_token_and_the_http_request_carries_the_bearer() {
    let issued = Arc::new(Issued::default());
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let (hport, _h) = http_resource(issued.clone()).await;
    let spec = ProbeSpec::Http(HttpSpec {
        url: url::Url::parse(&format!("http://127.0.0.1:{hport}/api/v2/channels")).unwrap(),
        method: HttpMethod::Post,
        headers: BTreeMap::new(),
        body: None,
        expect_status: vec![StatusRange { low: 200, high: 200 }],
        expect_body: None,
        follow_redirects: 0,
        tls: TlsOptions::default(),
        auth: Some(oauth(tport, SECRET, &[])),
    });
    let out = run(&spec).await;
    assert_eq!(code(&out), "ok", "{out:?}");
    assert_eq!(issued.count(), 1);
    // Without the bearer the same server answers 401: the token made the difference.
    let ProbeSpec::Http(mut bare) = spec else { unreachable!() };
    bare.auth = None;
    let out = run(&ProbeSpec::Http(bare)).await;
    assert_eq!(code(&out), "request/status_401");
}

#[tokio::test]
async fn wrong_secret_is_auth_status_401_and_the_target_is_never_contacted() {
    let issued = Arc::new(Issued::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let (wport, _w) = ws_resource(issued.clone(), seen.clone()).await;
    let out = run(&ws_spec(wport, oauth(tport, "not-the-secret", &[]))).await;
    assert_eq!(code(&out), "auth/status_401", "{out:?}");
    let f = out.failure.unwrap();
    assert!(f.message.contains("invalid_client"), "{}", f.message);
    assert!(!f.message.contains("not-the-secret"), "{}", f.message);
    assert!(out.phases.iter().all(|p| p.phase == Phase::Auth), "{:?}", out.phases);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn refused_scope_is_auth_status_400_with_the_oauth_error_code() {
    let issued = Arc::new(Issued::default());
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let out = run(&ws_spec(1, oauth(tport, SECRET, &["signalling", "admin"]))).await;
    assert_eq!(code(&out), "auth/status_400", "{out:?}");
    let msg = out.failure.unwrap().message;
    assert!(msg.contains("invalid_scope"), "{msg}");
}

#[tokio::test]
async fn silent_token_server_is_auth_timeout_and_a_closed_port_auth_refused() {
    // Accepts TCP and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = Task(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    }));
    let started = Instant::now();
    let out = probe::run(
        &ws_spec(1, oauth(port, SECRET, &[])),
        &ProbeContext::with_timeout(Duration::from_millis(800), None),
    )
    .await;
    assert_eq!(code(&out), "auth/timeout", "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = run(&ws_spec(1, oauth(closed_port, SECRET, &[]))).await;
    assert_eq!(code(&out), "auth/refused", "{out:?}");
    assert!(out.failure.unwrap().message.contains("connect phase"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_request_goes_through_the_probes_proxy_like_the_upgrade() {
    let issued = Arc::new(Issued::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let (wport, _w) = ws_resource(issued.clone(), seen.clone()).await;
    let via = |proxy: &common::signalling::Tinyproxy| {
        let ProxySetting::Url(u) = ProxySetting::parse(&format!("http://127.0.0.1:{}", proxy.port)).unwrap() else {
            panic!("not a proxy URL")
        };
        ProbeContext::with_timeout(Duration::from_secs(5), Some(u))
    };
    let spec = ws_spec(wport, oauth(tport, SECRET, &[]));
    // A proxy that lets CONNECT reach both: the token comes through it, then the upgrade.
    let both = common::signalling::Tinyproxy::start(None, &[tport, wport]);
    let out = probe::run(&spec, &via(&both)).await;
    assert_eq!(code(&out), "ok", "{out:?}");
    let log = both.log();
    assert!(
        log.contains(&format!("127.0.0.1:{tport}")) && log.contains(&format!("127.0.0.1:{wport}")),
        "tinyproxy saw CONNECTs to the token server and the WebSocket:\n{log}"
    );
    assert_eq!(issued.count(), 1);
    // A proxy that refuses CONNECT to the token server's port: the auth phase fails there
    // (it never went around the proxy), and the target is never contacted.
    let spec = ws_spec(wport, oauth(tport, SECRET, &[]));
    let only_ws = common::signalling::Tinyproxy::start(None, &[wport]);
    let out = probe::run(&spec, &via(&only_ws)).await;
    let f = out
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("the refused CONNECT must fail the run: {out:?}"));
    assert_eq!(f.phase, Phase::Auth, "{f:?}");
    assert!(f.message.contains("proxy"), "{}", f.message);
    assert_eq!(issued.count(), 1, "no token request reached the server around the proxy");
    assert_eq!(seen.lock().unwrap().len(), 1, "the WebSocket was not opened without a token");
}

#[tokio::test]
async fn a_token_with_expires_in_2_is_refreshed_and_never_reused_after_expiry() {
    let issued = Arc::new(Issued::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tport, _t) = token_server(issued.clone(), 2).await;
    let (wport, _w) = ws_resource(issued.clone(), seen.clone()).await;
    let spec = ws_spec(wport, oauth(tport, SECRET, &[]));
    let first = run(&spec).await;
    assert_eq!(code(&first), "ok", "{first:?}");
    let second = run(&spec).await;
    assert_eq!(code(&second), "ok", "{second:?}");
    assert!(second.detail.auth.as_ref().unwrap().cached, "reused within its life");
    assert_eq!(issued.count(), 1);
    // Past the expiry: the resource server refuses the old token, so only a fresh one passes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let third = run(&spec).await;
    assert_eq!(code(&third), "ok", "{third:?}");
    assert!(!third.detail.auth.as_ref().unwrap().cached);
    assert_eq!(issued.count(), 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
}

#[tokio::test]
async fn two_probes_never_share_a_token() {
    let issued = Arc::new(Issued::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let (wport, _w) = ws_resource(issued.clone(), seen.clone()).await;
    // Same tenant, same config: two probes, each with its own cache.
    let a = ws_spec(wport, oauth(tport, SECRET, &[]));
    let b = ws_spec(wport, oauth(tport, SECRET, &[]));
    let (oa, ob) = tokio::join!(run(&a), run(&b));
    assert_eq!((code(&oa), code(&ob)), ("ok".into(), "ok".into()));
    let (oa2, ob2) = tokio::join!(run(&a), run(&b));
    assert_eq!((code(&oa2), code(&ob2)), ("ok".into(), "ok".into()));
    assert_eq!(issued.count(), 2, "one token per probe, each reused by its own probe");
    let seen = seen.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (4, 2), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_and_tokens_are_absent_from_check_output_at_trace_level() {
    let issued = Arc::new(Issued::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tport, _t) = token_server(issued.clone(), 3600).await;
    let (wport, _w) = ws_resource(issued.clone(), seen.clone()).await;
    let (hport, _h) = http_resource(issued.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{ timeout: 5s }}
x-auth: &auth
  oauth2:
    token_url: http://127.0.0.1:{tport}/token
    client_id: {CLIENT}
    client_secret: env:T_CLIENT_SECRET
    scopes: [signalling]
probes:
  - name: ws-oauth
    kind: websocket
    url: ws://127.0.0.1:{wport}/
    auth: *auth
  - name: http-oauth
    kind: http
    url: http://127.0.0.1:{hport}/api
    auth: *auth
"
        ),
    )
    .unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"));
    for format in ["text", "json"] {
        let config = config.clone();
        let out = tokio::task::spawn_blocking(move || common::check_at_trace(&config, format, &[("T_CLIENT_SECRET", SECRET.into())]))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: all probes must pass\n{stdout}\n{stderr}");
        let tokens: Vec<String> = issued.tokens.lock().unwrap().keys().cloned().collect();
        let mut forbidden = vec![SECRET.to_string(), basic.clone()];
        forbidden.extend(tokens);
        for secret in &forbidden {
            assert!(!stdout.contains(secret.as_str()), "{format}: stdout contains {secret:?}");
            if let Some(line) = stderr.lines().find(|l| l.contains(secret.as_str())) {
                panic!("{format}: the log contains {secret:?}: {line}");
            }
        }
    }
    // Two probes, two runs: a token per probe per process, each used on the wire.
    assert_eq!(issued.count(), 4);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn oauth2_config_is_validated_and_each_probe_gets_its_own_cache() {
    use egress_probe::config::parse_str;
    std::env::set_var("T_OAUTH_CFG_SECRET", SECRET);
    let yaml = "probes:
  - {name: a, kind: websocket, url: wss://x.example/, auth: {oauth2: {token_url: https://idp.example/token, client_id: c, client_secret: env:T_OAUTH_CFG_SECRET, scopes: [a, b], extra_params: {resource: r}}}}
  - {name: b, kind: http, url: https://x.example/, auth: {oauth2: {token_url: https://idp.example/token, client_id: c, client_secret: env:T_OAUTH_CFG_SECRET}}}
";
    let c = parse_str(yaml, "x").unwrap();
    let (ProbeSpec::Websocket(a), ProbeSpec::Http(b)) = (&c.probes[0].spec, &c.probes[1].spec) else {
        panic!()
    };
    let (a, b) = (a.auth.as_ref().unwrap(), b.auth.as_ref().unwrap());
    assert_eq!(a.scopes, ["a", "b"]);
    assert_eq!(a.client_secret.expose(), SECRET);
    assert!(!format!("{a:?}").contains(SECRET));
    // Separate caches: a token put in one is not seen by the other.
    a.cache.put(Some(egress_probe::config::CachedToken {
        token: Secret::literal("t"),
        use_until: tokio::time::Instant::now() + Duration::from_secs(60),
    }));
    assert!(b.cache.get(tokio::time::Instant::now()).is_none());

    for (bad, says) in [
        ("auth: {oauth2: {client_id: c, client_secret: s}}", "token_url"),
        ("auth: {oauth2: {token_url: ftp://x/, client_id: c, client_secret: s}}", "token_url"),
        ("auth: {basic: {}}", "basic"),
        (
            "auth: {oauth2: {token_url: https://x/, client_id: c, client_secret: s, scopes: [\"a b\"]}}",
            "space",
        ),
        (
            "auth: {oauth2: {token_url: https://x/, client_id: c, client_secret: s, extra_params: {grant_type: x}}}",
            "grant_type",
        ),
    ] {
        let yaml = format!("probes:\n  - {{name: a, kind: websocket, url: wss://x.example/, {bad}}}\n");
        let e = parse_str(&yaml, "x").unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
