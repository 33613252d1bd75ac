//! WebSocket probe overhead against a loopback tokio-tungstenite server, in one run:
//!
//! * `bare`: `tokio_tungstenite::connect_async` + close handshake (what any client pays);
//! * `probe ping=0`: our probe (resolve, connect, upgrade, close handshake, Outcome);
//! * `probe ping=3`: the same plus three timed ping/pong round trips;
//! * `bare ping`: three ping/pongs on a bare connection, vs our recorded ping samples.
//!
//! Loopback only, bounded loop (`ITER`, default 300, max 5000). Prints medians and p90 in µs.
//! Run with `scripts/bench-websocket.sh` (release) or `cargo bench --profile dev --bench websocket`.

use std::time::{Duration, Instant};

use egress_probe::config::{ProbeSpec, TlsOptions, WebsocketSpec};
use egress_probe::probe::{self, ProbeContext};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn stats(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p90) = (pick(0.5), pick(0.9));
    println!(
        "{name:<28} n={:<5} median {:>8.1} µs   p90 {:>8.1} µs   min {:>8.1} µs",
        v.len(),
        us(p50),
        us(p90),
        us(v[0])
    );
    p50
}

async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        let _ = ws.send(Message::Text(t)).await;
                    }
                }
            });
        }
    });
    port
}

fn main() {
    let iter: usize = std::env::var("ITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .clamp(10, 5000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let port = echo_server().await;
        let url = format!("ws://127.0.0.1:{port}/");
        let spec = |ping: u32| {
            ProbeSpec::Websocket(WebsocketSpec {
                auth: None,
                concurrent: 1,
                hold: None,
                url: url::Url::parse(&url).expect("url"),
                headers: Default::default(),
                ping,
                send: None,
                expect: None,
                tls: TlsOptions::default(),
            })
        };
        let (p0, p3) = (spec(0), spec(3));
        let (mut bare, mut bare_ping, mut probe0, mut probe3, mut samples) = (vec![], vec![], vec![], vec![], vec![]);
        let mut phases: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
        // Interleave the variants so drift in machine load hits all of them alike.
        for i in 0..iter + 20 {
            let warm = i < 20;

            let t = Instant::now();
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("bare connect");
            let _ = tokio::net::TcpStream::set_nodelay(ws.get_ref().get_ref(), true);
            let connected = t.elapsed();
            let mut pings = Vec::with_capacity(3);
            for _ in 0..3 {
                let tp = Instant::now();
                ws.send(Message::Ping(b"bench".to_vec().into())).await.expect("ping");
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Message::Pong(_)) {
                        break;
                    }
                }
                pings.push(tp.elapsed());
            }
            let tc = Instant::now();
            ws.close(None).await.expect("close");
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
            let closed = tc.elapsed();

            let ctx = ProbeContext::with_timeout(Duration::from_secs(5), None);
            let t0 = Instant::now();
            let o0 = probe::run(&p0, &ctx).await;
            let d0 = t0.elapsed();
            let ctx = ProbeContext::with_timeout(Duration::from_secs(5), None);
            let t3 = Instant::now();
            let o3 = probe::run(&p3, &ctx).await;
            let d3 = t3.elapsed();
            assert!(o0.success && o3.success, "{o0:?} {o3:?}");
            if !warm {
                bare.push(connected + closed);
                bare_ping.extend(pings);
                for p in &o0.phases {
                    phases.entry(p.phase.as_str()).or_default().push(p.duration);
                }
                probe0.push(d0);
                probe3.push(d3);
                if let Some(r) = o3.detail.websocket.and_then(|w| w.ping_rtt) {
                    samples.extend(r.samples);
                }
            }
        }
        println!("WebSocket on loopback, {iter} iterations (after 20 warm-up), one current-thread runtime");
        let b = stats("bare connect_async+close", bare);
        let p = stats("probe ping=0", probe0);
        let p3 = stats("probe ping=3", probe3);
        let bp = stats("bare ping RTT", bare_ping);
        let sp = stats("probe ping RTT (samples)", samples);
        for (name, v) in phases {
            stats(&format!("  probe ping=0 phase {name}"), v);
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("probe overhead vs bare (median): {:+.1} µs ({:.2}x)", us(p) - us(b), us(p) / us(b));
        println!(
            "3 pings add (median): {:.1} µs; probe ping RTT vs bare ping RTT: {:+.1} µs",
            us(p3) - us(p),
            us(sp) - us(bp)
        );
    });
}
