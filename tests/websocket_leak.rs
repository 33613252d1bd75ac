//! Leak check (its own test binary, so no other test's sockets move the fd count): 200
//! WebSocket probes against the in-process server leave no connection open on the server and
//! no file descriptor behind in this process.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proc::{fd_count, wait_until};
use common::signalling::{ws_server, Seen, WsMode};
use egress_probe::config::{ProbeSpec, TlsOptions, WebsocketSpec};
use egress_probe::probe::{self, ProbeContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_websocket_probes_leave_nothing_open() {
    let server = ws_server(WsMode::Good, true).await;
    let spec = ProbeSpec::Websocket(WebsocketSpec {
        auth: None,
        concurrent: 1,
        hold: None,
        url: url::Url::parse(&format!("wss://127.0.0.1:{}/", server.port)).unwrap(),
        headers: BTreeMap::new(),
        ping: 2,
        send: None,
        expect: None,
        tls: TlsOptions {
            ca_file: Some(server.ca_file()),
            ..Default::default()
        },
    });
    let run = |spec: ProbeSpec| async move { probe::run(&spec, &ProbeContext::with_timeout(Duration::from_secs(5), None)).await };
    // Warm up (runtime threads, root store, lazily opened files), then take the baseline.
    for _ in 0..5 {
        assert!(run(spec.clone()).await.success);
    }
    let drained = |n: usize| {
        let seen = server.seen.clone();
        move || {
            wait_until(Duration::from_secs(5), || {
                Seen::get(&seen.open) == 0 && Seen::get(&seen.close_frames) == n
            })
        }
    };
    assert!(tokio::task::spawn_blocking(drained(5)).await.unwrap());
    let before = fd_count();

    let mut failures = Vec::new();
    for _ in 0..200 {
        let out = run(spec.clone()).await;
        if !out.success || !out.detail.websocket.as_ref().is_some_and(|w| w.clean_close) {
            failures.push(out);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 failed or closed uncleanly: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        tokio::task::spawn_blocking(drained(205)).await.unwrap(),
        "server: open {} close frames {} upgrades {}",
        Seen::get(&server.seen.open),
        Seen::get(&server.seen.close_frames),
        Seen::get(&server.seen.upgrades)
    );
    let after = fd_count();
    assert!(after <= before, "fd count grew from {before} to {after} over 200 probes");
}
