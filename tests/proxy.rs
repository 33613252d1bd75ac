//! HTTP CONNECT through a real forward proxy (Debian's tinyproxy, started per test on its own
//! loopback port and killed on drop) to in-process HTTPS and WebSocket servers: tunnels work,
//! and every way a proxy says no is `proxy/<reason>`, never `connect/...` of the target.
mod common;

use common::outcome::phases;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proc::wait_until;
use common::signalling::{http_server, ws_server, Seen, Server, Tinyproxy, WsMode};
use egress_probe::config::{
    HostPort, HttpMethod, HttpSpec, ProbeSpec, ProxySetting, ProxyUrl, StatusRange, TcpSpec, TlsOptions, WebsocketSpec,
};
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};

fn proxy(url: &str) -> ProxyUrl {
    match ProxySetting::parse(url).unwrap() {
        ProxySetting::Url(u) => u,
        other => panic!("{other:?}"),
    }
}

fn https(server: &Server, path: &str) -> ProbeSpec {
    ProbeSpec::Http(HttpSpec {
        auth: None,
        url: url::Url::parse(&format!("https://127.0.0.1:{}{path}", server.port)).unwrap(),
        method: HttpMethod::Get,
        headers: BTreeMap::new(),
        body: None,
        expect_status: vec![StatusRange { low: 200, high: 299 }],
        expect_body: Some(regex::Regex::new("hello egress-probe").unwrap()),
        follow_redirects: 0,
        tls: TlsOptions {
            ca_file: Some(server.ca_file()),
            ..Default::default()
        },
    })
}

fn wss(server: &Server) -> ProbeSpec {
    ProbeSpec::Websocket(WebsocketSpec {
        auth: None,
        concurrent: 1,
        hold: None,
        url: url::Url::parse(&format!("wss://127.0.0.1:{}/", server.port)).unwrap(),
        headers: BTreeMap::new(),
        ping: 3,
        send: Some("hello".into()),
        expect: Some(regex::Regex::new("^echo: hello$").unwrap()),
        tls: TlsOptions {
            ca_file: Some(server.ca_file()),
            ..Default::default()
        },
    })
}

async fn run(spec: &ProbeSpec, proxy: ProxyUrl) -> Outcome {
    probe::run(spec, &ProbeContext::with_timeout(Duration::from_secs(5), Some(proxy))).await
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "ok".into())
}

#[tokio::test]
async fn https_through_tinyproxy_passes() {
    let server = http_server(true).await;
    let tp = Tinyproxy::start(None, &[]);
    let out = run(&https(&server, "/ok"), proxy(&format!("http://127.0.0.1:{}", tp.port))).await;
    assert!(out.success, "{out:?}");
    assert_eq!(phases(&out), vec![Phase::Proxy, Phase::Tls, Phase::Request, Phase::Body]);
    assert_eq!(out.detail.peer, None, "the probe never talked to the target directly");
    assert!(tp.log().contains("CONNECT"), "tinyproxy log: {}", tp.log());
}

#[tokio::test]
async fn wss_through_tinyproxy_passes_and_closes() {
    let server = ws_server(WsMode::Good, true).await;
    let tp = Tinyproxy::start(None, &[server.port]);
    let out = run(&wss(&server), proxy(&format!("http://127.0.0.1:{}", tp.port))).await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        phases(&out),
        vec![Phase::Proxy, Phase::Tls, Phase::Upgrade, Phase::Ping, Phase::Request, Phase::Close]
    );
    assert!(out.detail.websocket.as_ref().unwrap().clean_close);
    let seen = server.seen.clone();
    let closed = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(3), || {
            Seen::get(&seen.close_frames) == 1 && Seen::get(&seen.open) == 0
        })
    })
    .await
    .unwrap();
    assert!(closed, "the server did not see our close frame through the proxy");
}

#[tokio::test]
async fn proxy_credentials_missing_or_wrong_is_proxy_auth() {
    let server = http_server(true).await;
    let tp = Tinyproxy::start(Some(("probe", "c0rrect")), &[]);
    let spec = https(&server, "/ok");

    let out = run(&spec, proxy(&format!("http://127.0.0.1:{}", tp.port))).await;
    assert_eq!(code(&out), "proxy/auth", "no credentials: {out:?}");

    let out = run(&spec, proxy(&format!("http://probe:wr0ng@127.0.0.1:{}", tp.port))).await;
    assert_eq!(code(&out), "proxy/auth", "wrong credentials: {out:?}");
    assert!(!format!("{out:?}").contains("wr0ng"), "password leaked into the outcome");

    let out = run(&spec, proxy(&format!("http://probe:c0rrect@127.0.0.1:{}", tp.port))).await;
    assert!(out.success, "right credentials: {out:?}");
}

#[tokio::test]
async fn proxy_forbidding_the_port_is_proxy_status_403() {
    // Like a corporate proxy that allows CONNECT to 443 only, with the server on another port
    // (the 8443 case).
    let server = ws_server(WsMode::Good, true).await;
    let tp = Tinyproxy::start(None, &[443]);
    let out = run(&wss(&server), proxy(&format!("http://127.0.0.1:{}", tp.port))).await;
    assert_eq!(code(&out), "proxy/status_403");
    assert_eq!(phases(&out), vec![Phase::Proxy]);
    assert_eq!(Seen::get(&server.seen.accepted), 0, "the proxy must not have connected");
}

#[tokio::test]
async fn unreachable_proxy_is_proxy_refused_not_connect() {
    let server = http_server(true).await;
    let dead = common::free_port();
    let out = run(&https(&server, "/ok"), proxy(&format!("http://127.0.0.1:{dead}"))).await;
    assert_eq!(code(&out), "proxy/refused");
    assert!(!phases(&out).contains(&Phase::Connect));
}

#[tokio::test]
async fn target_unreachable_behind_the_proxy_is_a_proxy_status() {
    let tp = Tinyproxy::start(None, &[]);
    let closed = common::free_port();
    let spec = ProbeSpec::Tcp(TcpSpec {
        target: HostPort {
            host: "127.0.0.1".into(),
            port: closed,
        },
        addresses: Default::default(),
    });
    let out = run(&spec, proxy(&format!("http://127.0.0.1:{}", tp.port))).await;
    let f = out.failure.as_ref().expect("must fail");
    assert_eq!(f.phase, Phase::Proxy, "{out:?}");
    assert!(f.reason.label().starts_with("status_5"), "{out:?}");
}
