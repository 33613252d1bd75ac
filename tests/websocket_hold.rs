//! `hold:` on websocket probes: a WebSocket kept open through a real tinyproxy whose idle
//! timeout (`Timeout 3`) cuts silent tunnels, as corporate proxies cut softphone signalling
//! minutes into a shift. Idle, the cut is reported as `hold/closed` with the lifetime; with
//! keepalive pings every second the socket outlives the proxy's timer.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::signalling::{ws_server, Tinyproxy, WsMode};
use egress_probe::config::{parse_str, HoldSpec, ProbeSpec, ProxySetting, TlsOptions, WebsocketSpec};
use egress_probe::outcome::{Outcome, Phase};
use egress_probe::probe::{self, ProbeContext};
use egress_probe::report::verdict::{assess, contradictions};
use egress_probe::report::ProbeResult;

async fn hold_through_tinyproxy(ping_interval: Option<Duration>) -> (Outcome, Duration) {
    let (_, out, took) = holds_through_tinyproxy(ping_interval, 1).await;
    (out, took)
}

/// `concurrent` WebSockets held 6 s at once through one tinyproxy with `Timeout 3`.
async fn holds_through_tinyproxy(ping_interval: Option<Duration>, concurrent: u32) -> (ProbeSpec, Outcome, Duration) {
    let server = ws_server(WsMode::Good, false).await;
    let proxy = Tinyproxy::start_with_timeout(None, &[], 3);
    let spec = ProbeSpec::Websocket(WebsocketSpec {
        url: url::Url::parse(&format!("ws://127.0.0.1:{}/signalling", server.port)).unwrap(),
        headers: BTreeMap::new(),
        ping: 1,
        send: None,
        expect: None,
        tls: TlsOptions::default(),
        auth: None,
        concurrent,
        hold: Some(HoldSpec {
            duration: Duration::from_secs(6),
            ping_interval,
        }),
    });
    let ProxySetting::Url(proxy_url) = ProxySetting::parse(&format!("http://127.0.0.1:{}", proxy.port)).unwrap() else {
        panic!("not a proxy URL")
    };
    // The run's deadline covers hold + timeout, as the scheduler gives it.
    let ctx = ProbeContext::with_timeout(Duration::from_secs(6 + 5), Some(proxy_url));
    let started = Instant::now();
    let out = probe::run(&spec, &ctx).await;
    (spec, out, started.elapsed())
}

#[tokio::test]
async fn an_idle_hold_is_cut_by_the_proxy_idle_timeout_and_reported_with_its_lifetime() {
    let (out, took) = hold_through_tinyproxy(None).await;
    let f = out.failure.as_ref().unwrap_or_else(|| panic!("the idle hold must be cut: {out:?}"));
    assert_eq!(f.code(), "hold/closed", "{f:?}");
    let hold = out.detail.websocket.as_ref().and_then(|w| w.hold.clone()).unwrap();
    assert!(!hold.survived);
    assert_eq!(hold.pings, 0);
    // tinyproxy's Timeout 3 (whole seconds, so up to ~4 s after the last byte).
    assert!(
        hold.lifetime >= Duration::from_millis(2500) && hold.lifetime < Duration::from_millis(5000),
        "lifetime {:?}",
        hold.lifetime
    );
    assert!(
        f.message.contains("socket cut after") && f.message.contains("idle"),
        "{}",
        f.message
    );
    assert_eq!(out.phase_time(Phase::Hold), Some(hold.lifetime));
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test]
async fn a_hold_with_pings_every_second_survives_the_proxy_idle_timeout() {
    let (out, took) = hold_through_tinyproxy(Some(Duration::from_secs(1))).await;
    assert!(out.success, "{:?}", out.failure);
    let hold = out.detail.websocket.as_ref().and_then(|w| w.hold.clone()).unwrap();
    assert!(hold.survived);
    assert!(hold.lifetime >= Duration::from_secs(6), "{:?}", hold.lifetime);
    assert!(hold.pings >= 5, "{} pings", hold.pings);
    assert!(out.detail.websocket.as_ref().unwrap().clean_close);
    assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(9), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_cut_at_the_same_age_beside_a_pinged_control_make_the_verdict_name_the_proxy_idle_timeout() {
    let (spec, out, took) = holds_through_tinyproxy(None, 3).await;
    let c = out.detail.concurrent.clone().expect("concurrent details");
    assert_eq!((c.requested, c.established), (3, 3), "{out:?}");
    assert_eq!(c.holds.len(), 3, "{c:?}");
    let lifetimes: Vec<Duration> = c.holds.iter().map(|h| h.lifetime).collect();
    println!("three idle holds through tinyproxy Timeout 3 cut after {lifetimes:?} (run {took:?})");
    assert!(c.holds.iter().all(|h| !h.survived && h.pings == 0), "{c:?}");
    // Each of the three lifetimes is an observation of the hold histogram.
    let cfg = parse_str(
        "probes:\n  - {name: signalling-idle, kind: websocket, url: ws://127.0.0.1/, hold: 6s, idle: true, concurrent: 3}\n",
        "x",
    )
    .unwrap();
    let metrics = egress_probe::metrics::Metrics::new(&cfg).unwrap();
    metrics.observe(&cfg.probes[0], &out);
    let text = metrics.render().unwrap();
    assert!(
        text.lines()
            .any(|l| l == "egress_probe_websocket_hold_seconds_count{probe=\"signalling-idle\",result=\"cut\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("egress_probe_websocket_hold_seconds_bucket{probe=\"signalling-idle\",result=\"cut\",le=\"5\"} 3"),
        "{text}"
    );
    // One run alone: three sockets opened together and cut at one age were cut at one
    // moment, which a proxy restart would do too.
    let idle = ProbeResult::of("signalling-idle", &spec, out);
    let all = assess(std::slice::from_ref(&idle));
    let v = all.first().expect("a verdict");
    assert_eq!(v.rule, "ws_hold_cut", "{all:#?}");
    assert!(v.text.contains("the 3 holds of one run were all cut at "), "{}", v.text);

    // Pinged every second, the same three survive and no hold verdict is given.
    let (spec, out, _) = holds_through_tinyproxy(Some(Duration::from_secs(1)), 3).await;
    assert!(out.success, "{:?}", out.failure);
    let c = out.detail.concurrent.clone().expect("concurrent details");
    assert!(c.holds.len() == 3 && c.holds.iter().all(|h| h.survived), "{c:?}");
    let pinged = ProbeResult::of("signalling-pinged", &spec, out);
    assert_eq!(
        assess(std::slice::from_ref(&pinged)).iter().map(|v| v.rule).collect::<Vec<_>>(),
        vec!["all_pass"]
    );

    // Together, the pinged holds are the control: they lived through the moment the idle ones
    // were cut, so the cut is the proxy's idle timer.
    let results = [idle, pinged];
    let all = assess(&results);
    assert_eq!(contradictions(&all), Vec::<String>::new(), "{all:#?}");
    let v = all.first().expect("a verdict");
    assert_eq!(v.rule, "ws_idle_timeout", "{all:#?}");
    // tinyproxy's timer counts whole seconds: about 3 s, at most 4.
    assert!(
        v.text.starts_with("WebSocket cut after ~3 s of idle, every time (3 idle holds")
            || v.text.starts_with("WebSocket cut after ~4 s of idle, every time (3 idle holds"),
        "{}",
        v.text
    );
    assert!(
        v.text.contains("idle timeout of about") && v.text.contains("(ping_interval < "),
        "{}",
        v.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_steps_idle_hold_is_cut_by_the_proxy_and_names_its_step() {
    let http = common::signalling::http_server(false).await;
    let ws = ws_server(WsMode::Good, false).await;
    let proxy = Tinyproxy::start_with_timeout(None, &[], 3);
    let yaml = format!(
        "probes:\n  - name: s\n    kind: session\n    timeout: 5s\n    interval: 20s\n    proxy: http://127.0.0.1:{}\n    steps:\n      - http: {{url: 'http://127.0.0.1:{}/ok'}}\n      - websocket: {{url: 'ws://127.0.0.1:{}/signalling', ping: 1, hold: 6s, idle: true}}\n",
        proxy.port, http.port, ws.port
    );
    let config = parse_str(&yaml, "session-hold.yaml").expect("config");
    let p = &config.probes[0];
    let ProxySetting::Url(proxy_url) = ProxySetting::parse(&format!("http://127.0.0.1:{}", proxy.port)).unwrap() else {
        panic!("not a proxy URL")
    };
    // The deadline the scheduler gives it: timeout plus the steps' holds.
    let ctx = ProbeContext::with_timeout(p.run_time(&config.defaults), Some(proxy_url));
    let out = probe::run(&p.spec, &ctx).await;
    let f = out.failure.as_ref().unwrap_or_else(|| panic!("the idle hold must be cut: {out:?}"));
    assert_eq!(f.code(), "hold/closed", "{f:?}");
    assert!(f.message.starts_with("step 2 (websocket): socket cut after"), "{}", f.message);
    let session = out.detail.session.as_ref().expect("session detail");
    assert_eq!((session.failed_step, session.completed), (Some(2), 1), "{session:?}");
    let hold = out.detail.websocket.as_ref().and_then(|w| w.hold.clone()).expect("hold detail");
    assert!(
        !hold.survived && hold.lifetime >= Duration::from_millis(2500) && hold.lifetime < Duration::from_secs(5),
        "{hold:?}"
    );
    let log = proxy.log();
    assert!(
        log.contains(&format!("127.0.0.1:{}", ws.port)),
        "the WebSocket went through tinyproxy:\n{log}"
    );
}

#[test]
fn hold_config_needs_a_keepalive_choice_and_an_interval_covering_hold_plus_timeout() {
    let probe = |extra: &str| format!("probes:\n  - {{name: w, kind: websocket, url: wss://x.example/, {extra}}}\n");
    let c = parse_str(&probe("hold: 6s, idle: true, timeout: 5s, interval: 11s"), "x").unwrap();
    assert_eq!(c.probes[0].run_time(&c.defaults), Duration::from_secs(11));
    assert!(parse_str(&probe("hold: 6s, ping_interval: 1s, timeout: 5s, interval: 11s"), "x").is_ok());
    for (bad, says) in [
        (
            "hold: 6s, idle: true, timeout: 5s, interval: 10s",
            "hold 6s plus timeout 5s is longer than interval 10s",
        ),
        ("hold: 6s, interval: 30s", "needs `ping_interval"),
        ("hold: 6s, idle: true, ping_interval: 1s, interval: 30s", "idle: true"),
        ("idle: true", "only applies with `hold`"),
        ("hold: 0s, idle: true", "greater than zero"),
    ] {
        let e = parse_str(&probe(bad), "x").unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responders_idle_cut_ends_an_idle_hold_with_a_close_frame_and_pings_keep_it_open() {
    let mut cfg = egress_probe::responder::ResponderConfig::loopback_ephemeral();
    cfg.websocket_idle_timeout = 2;
    let r = egress_probe::responder::Responder::start(&cfg).await.expect("responder starts");
    let spec = |ping_interval: Option<Duration>| {
        ProbeSpec::Websocket(WebsocketSpec {
            url: url::Url::parse(&format!("wss://127.0.0.1:{}/signalling", r.addrs.web[0].port())).unwrap(),
            headers: BTreeMap::new(),
            ping: 0,
            send: None,
            expect: None,
            tls: TlsOptions {
                ca_file: r.tls.ca_file.clone(),
                ..Default::default()
            },
            auth: None,
            concurrent: 1,
            hold: Some(HoldSpec {
                duration: Duration::from_secs(4),
                ping_interval,
            }),
        })
    };
    let (idle_spec, pinged_spec) = (spec(None), spec(Some(Duration::from_millis(500))));
    let (c1, c2) = (
        ProbeContext::with_timeout(Duration::from_secs(4 + 5), None),
        ProbeContext::with_timeout(Duration::from_secs(4 + 5), None),
    );
    let (idle, pinged) = tokio::join!(probe::run(&idle_spec, &c1), probe::run(&pinged_spec, &c2));
    let f = idle.failure.as_ref().expect("cut");
    assert_eq!(f.code(), "hold/closed", "{f:?}");
    assert!(f.message.contains("1001") && f.message.contains("idle"), "{}", f.message);
    let lifetime = idle.detail.websocket.as_ref().and_then(|w| w.hold.as_ref()).unwrap().lifetime;
    assert!(
        lifetime >= Duration::from_millis(1800) && lifetime < Duration::from_secs(3),
        "{lifetime:?}"
    );
    assert!(pinged.success, "{:?}", pinged.failure);
    r.shutdown().await;
}
