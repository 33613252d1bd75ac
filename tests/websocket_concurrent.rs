//! `concurrent: N` on websocket probes against the real responder with a per-client
//! WebSocket cap (`websocket_cap`): a cap shows up as the number of connections established
//! and the first refusal's `upgrade/status_429`, and every socket the probe opened is released.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use egress_probe::config::{ProbeSpec, TlsOptions, WebsocketSpec};
use egress_probe::outcome::Outcome;
use egress_probe::probe::{self, ProbeContext};
use egress_probe::responder::{Responder, ResponderConfig};

async fn responder(cap: u32) -> Responder {
    let mut cfg = ResponderConfig::loopback_ephemeral();
    cfg.websocket_cap = Some(cap);
    Responder::start(&cfg).await.expect("responder starts")
}

async fn run(r: &Responder, concurrent: u32) -> Outcome {
    probe::run(&spec(r, concurrent), &ProbeContext::with_timeout(Duration::from_secs(10), None)).await
}

fn spec(r: &Responder, concurrent: u32) -> ProbeSpec {
    ProbeSpec::Websocket(WebsocketSpec {
        url: url::Url::parse(&format!("wss://127.0.0.1:{}/signalling", r.addrs.web[0].port())).unwrap(),
        headers: BTreeMap::new(),
        ping: 1,
        send: None,
        expect: None,
        tls: TlsOptions {
            ca_file: r.tls.ca_file.clone(),
            server_name: Some("localhost".into()),
            ..Default::default()
        },
        auth: None,
        concurrent,
        hold: None,
    })
}

/// The value of `series` in the responder's metrics, once it equals `want` (or after 5 s).
async fn metric_settles(r: &Responder, series: &str, want: f64) -> Option<f64> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = r.metrics_text().await;
        let v = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok());
        if v == Some(want) || Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_at_once_against_a_cap_of_five_establish_five_and_the_first_refusal_is_429() {
    let r = responder(5).await;
    let out = run(&r, 8).await;
    let c = out.detail.concurrent.clone().expect("concurrent details");
    assert_eq!((c.requested, c.established), (8, 5), "{out:?}");
    let f = out.failure.as_ref().expect("three refusals fail the run");
    assert_eq!(f.code(), "upgrade/status_429", "{f:?}");
    assert!(f.message.contains("5 of 8 established"), "{}", f.message);
    assert_eq!(out.detail.retry_after, Some(Duration::from_secs(5)));
    // The verdict says it as a cap, with the number.
    let results = [egress_probe::report::ProbeResult::of("signalling-cap", &spec(&r, 8), out.clone())];
    let verdicts = egress_probe::report::verdict::assess(&results);
    assert_eq!(
        verdicts.first().map(|v| (v.rule, v.text.as_str())),
        Some((
            "connection_cap",
            format!(
                "WebSocket signalling on {} allows only 5 of 8 connections at once (upgrade/status_429): a cap of 5 per client or user (Retry-After 5 s); more parallel clients with these credentials are refused",
                r.addrs.web[0].port()
            )
            .as_str()
        )),
        "{verdicts:#?}"
    );
    // Everything the probe opened was released.
    assert_eq!(metric_settles(&r, "egress_responder_websockets_open", 0.0).await, Some(0.0));
    assert_eq!(metric_settles(&r, "egress_responder_websockets_total", 5.0).await, Some(5.0));

    // And the cap frees up again: five at once all pass.
    let out = run(&r, 5).await;
    assert!(out.success, "{:?}", out.failure);
    assert_eq!(out.detail.concurrent.map(|c| c.established), Some(5));
    assert_eq!(metric_settles(&r, "egress_responder_websockets_open", 0.0).await, Some(0.0));
    r.shutdown().await;
}

#[test]
fn concurrent_is_1_to_64_and_the_responder_cap_is_a_config_key() {
    use egress_probe::config::parse_str;
    let probe = |extra: &str| format!("probes:\n  - {{name: w, kind: websocket, url: wss://x.example/, {extra}}}\n");
    let c = parse_str(&probe("concurrent: 64"), "x").unwrap();
    let ProbeSpec::Websocket(w) = &c.probes[0].spec else { panic!() };
    assert_eq!(w.concurrent, 64);
    let ProbeSpec::Websocket(w) = &parse_str(&probe("ping: 1"), "x").unwrap().probes[0].spec else {
        panic!()
    };
    assert_eq!(w.concurrent, 1);
    for bad in ["concurrent: 0", "concurrent: 65"] {
        let e = parse_str(&probe(bad), "x").unwrap_err().to_string();
        assert!(e.contains("concurrent"), "{bad}: {e}");
    }
    assert_eq!(ResponderConfig::parse("websocket_cap: 5\n", "r").unwrap().websocket_cap, Some(5));
    assert_eq!(ResponderConfig::parse("", "r").unwrap().websocket_cap, None);
}
