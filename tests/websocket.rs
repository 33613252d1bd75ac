//! `kind: websocket` against an in-process tokio-tungstenite server (ws:// and wss://) that
//! upgrades well, answers 200 without upgrading, strips the Upgrade header, stays silent,
//! refuses with 403/429, or never answers pings and close frames.
mod common;

use common::outcome::phases;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proc::wait_until;
use common::signalling::{ws_server, Seen, Server, WsMode};
use egress_probe::config::{ProbeSpec, Secret, TlsOptions, WebsocketSpec};
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};

fn spec(server: &Server) -> WebsocketSpec {
    let scheme = if server.pki.is_some() { "wss" } else { "ws" };
    WebsocketSpec {
        auth: None,
        concurrent: 1,
        hold: None,
        url: url::Url::parse(&format!("{scheme}://127.0.0.1:{}/signalling", server.port)).unwrap(),
        headers: BTreeMap::new(),
        ping: 3,
        send: None,
        expect: None,
        tls: TlsOptions {
            ca_file: server.pki.as_ref().map(|p| p.ca_file.clone()),
            ..Default::default()
        },
    }
}

async fn run(spec: WebsocketSpec, timeout: Duration) -> Outcome {
    probe::run(&ProbeSpec::Websocket(spec), &ProbeContext::with_timeout(timeout, None)).await
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "ok".into())
}

/// The server saw one close frame per upgrade, and every connection ended.
async fn assert_server_saw_close(server: &Server) {
    let seen = server.seen.clone();
    let ok = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(3), || {
            Seen::get(&seen.close_frames) == Seen::get(&seen.upgrades) && Seen::get(&seen.open) == 0
        })
    })
    .await
    .unwrap();
    assert!(
        ok,
        "upgrades {} close frames {} open {}",
        Seen::get(&server.seen.upgrades),
        Seen::get(&server.seen.close_frames),
        Seen::get(&server.seen.open)
    );
}

async fn good_upgrade_pings_and_clean_close(tls: bool) {
    let server = ws_server(WsMode::Good, tls).await;
    let mut s = spec(&server);
    s.headers.insert("Origin".into(), Secret::literal("https://apps.example.test"));
    s.headers.insert("Authorization".into(), Secret::literal("Bearer s3cr3t"));
    s.headers.insert("Sec-WebSocket-Protocol".into(), Secret::literal("sip"));
    let out = run(s, Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    let mut want = vec![Phase::Resolve, Phase::Connect];
    if tls {
        want.push(Phase::Tls);
    }
    want.extend([Phase::Upgrade, Phase::Ping, Phase::Close]);
    assert_eq!(phases(&out), want);
    let ws = out.detail.websocket.as_ref().unwrap();
    assert_eq!(ws.status, Some(101));
    assert_eq!(ws.subprotocol.as_deref(), Some("sip"));
    assert!(ws.clean_close);
    let rtt = ws.ping_rtt.as_ref().unwrap();
    assert_eq!((rtt.sent, rtt.received, rtt.samples.len()), (3, 3, 3));
    assert!(
        rtt.min <= rtt.avg && rtt.avg <= rtt.max && rtt.max < Duration::from_secs(1),
        "{rtt:?}"
    );
    if tls {
        assert_eq!(out.detail.tls.as_ref().unwrap().alpn.as_deref(), Some("http/1.1"));
    }
    let headers = server.seen.headers.lock().unwrap()[0].clone();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("origin").as_deref(), Some("https://apps.example.test"));
    assert_eq!(get("authorization").as_deref(), Some("Bearer s3cr3t"));
    assert!(!format!("{out:?}").contains("s3cr3t"), "secret leaked into the outcome");
    assert_server_saw_close(&server).await;
}

#[tokio::test]
async fn ws_good_upgrade_pings_and_clean_close() {
    good_upgrade_pings_and_clean_close(false).await;
}

#[tokio::test]
async fn wss_good_upgrade_pings_and_clean_close() {
    good_upgrade_pings_and_clean_close(true).await;
}

#[tokio::test]
async fn send_and_expect_exchange_text() {
    let server = ws_server(WsMode::Good, true).await;
    let mut s = spec(&server);
    s.send = Some("REGISTER".into());
    s.expect = Some(regex::Regex::new("^echo: REGISTER$").unwrap());
    let out = run(s.clone(), Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert!(phases(&out).contains(&Phase::Request));

    s.expect = Some(regex::Regex::new("^200 OK").unwrap());
    let out = run(s, Duration::from_secs(5)).await;
    assert_eq!(code(&out), "request/expect_failed");
    // Closed properly on the failure path too.
    assert!(out.detail.websocket.as_ref().unwrap().clean_close);
    assert_server_saw_close(&server).await;
}

#[tokio::test]
async fn answer_200_without_upgrade_is_not_upgraded() {
    for tls in [false, true] {
        let server = ws_server(WsMode::Plain200, tls).await;
        let out = run(spec(&server), Duration::from_secs(5)).await;
        assert_eq!(code(&out), "upgrade/not_upgraded", "tls={tls}");
        assert_eq!(out.detail.websocket.as_ref().unwrap().status, Some(200));
    }
}

#[tokio::test]
async fn switching_protocols_without_upgrade_header_is_not_upgraded() {
    let server = ws_server(WsMode::Stripped101, false).await;
    let out = run(spec(&server), Duration::from_secs(5)).await;
    assert_eq!(code(&out), "upgrade/not_upgraded");
}

#[tokio::test]
async fn silent_server_is_upgrade_timeout() {
    for tls in [false, true] {
        let server = ws_server(WsMode::Silent, tls).await;
        // With wss the server completes TLS, then never answers the Upgrade request.
        let s = spec(&server);
        let timeout = Duration::from_millis(700);
        let out = run(s, timeout).await;
        assert_eq!(code(&out), "upgrade/timeout", "tls={tls}");
        assert!(out.total < timeout + Duration::from_millis(300), "{:?}", out.total);
    }
}

#[tokio::test]
async fn refused_upgrade_is_upgrade_status() {
    for (status, tls) in [(403u16, false), (403, true), (429, true), (408, false)] {
        let server = ws_server(WsMode::Refuse(status), tls).await;
        let out = run(spec(&server), Duration::from_secs(5)).await;
        assert_eq!(code(&out), format!("upgrade/status_{status}"), "tls={tls}");
        assert_eq!(out.detail.websocket.as_ref().unwrap().status, Some(status));
    }
}

#[tokio::test]
async fn unanswered_pings_time_out_and_still_send_a_close_frame() {
    let server = ws_server(WsMode::Deaf, false).await;
    let timeout = Duration::from_millis(800);
    let out = run(spec(&server), timeout).await;
    assert_eq!(code(&out), "ping/timeout");
    let ws = out.detail.websocket.as_ref().unwrap();
    assert!(!ws.clean_close);
    assert_eq!(ws.ping_rtt.as_ref().unwrap().received, 0);
    assert!(out.total < timeout + Duration::from_millis(300), "{:?}", out.total);
}

#[tokio::test]
async fn zero_pings_skips_the_ping_phase() {
    let server = ws_server(WsMode::Good, false).await;
    let mut s = spec(&server);
    s.ping = 0;
    let out = run(s, Duration::from_secs(5)).await;
    assert!(out.success, "{out:?}");
    assert!(!phases(&out).contains(&Phase::Ping));
    assert_server_saw_close(&server).await;
}
