//! `kind: stun` against a real coturn over UDP, TCP and TLS: the Binding succeeds, the mapped
//! address is exactly our loopback source, RTT/loss are reported; a silent UDP port is
//! `stun/timeout` at the deadline; NAT mapping from one socket to two servers is
//! endpoint-independent on loopback.
mod common;

use std::time::{Duration, Instant};

use common::coturn::{Coturn, CoturnOptions};
use egress_probe::config::{IceUrl, ProbeSpec, StunSpec, TlsOptions};
use egress_probe::outcome::{Outcome, Phase, Reason};
use egress_probe::probe::{self, ProbeContext};

fn spec(url: &str) -> StunSpec {
    StunSpec {
        server: IceUrl::parse(url).expect("url"),
        count: 3,
        nat_mapping: false,
        second_server: None,
        nat_filtering: false,
        binding_lifetime: None,
        tls: TlsOptions::default(),
    }
}

async fn run(spec: StunSpec, timeout: Duration) -> Outcome {
    let ctx = ProbeContext::with_timeout(timeout, None);
    probe::run(&ProbeSpec::Stun(spec), &ctx).await
}

fn assert_binding_ok(out: &Outcome, transport: &str) {
    assert!(out.success, "{transport}: {:?}", out.failure);
    let stun = out.detail.stun.as_ref().expect("stun detail");
    assert_eq!(stun.transport, transport);
    let local = stun.local.expect("local address");
    assert_eq!(stun.mapped, Some(local), "mapped address must be our own loopback source");
    assert_eq!(local.ip().to_string(), "127.0.0.1");
    let rtt = stun.rtt.as_ref().expect("rtt");
    assert_eq!((rtt.sent, rtt.received), (3, 3), "{rtt:?}");
    assert_eq!(rtt.loss, 0.0);
    assert!(rtt.max < Duration::from_millis(200) && rtt.min <= rtt.avg, "{rtt:?}");
    assert_eq!(out.phases.last().map(|p| p.phase), Some(Phase::Stun));
}

#[tokio::test]
async fn udp_binding_maps_to_our_loopback_source() {
    let turn = Coturn::start(CoturnOptions::default());
    let out = run(spec(&format!("stun:127.0.0.1:{}", turn.port)), Duration::from_secs(3)).await;
    assert_binding_ok(&out, "udp");
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, vec![Phase::Resolve, Phase::Stun]);
}

#[tokio::test]
async fn tcp_binding_maps_to_our_loopback_source() {
    let turn = Coturn::start(CoturnOptions::default());
    let out = run(spec(&format!("stun:127.0.0.1:{}?transport=tcp", turn.port)), Duration::from_secs(3)).await;
    assert_binding_ok(&out, "tcp");
    let phases: Vec<Phase> = out.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, vec![Phase::Resolve, Phase::Connect, Phase::Stun]);
}

#[tokio::test]
async fn tls_binding_on_the_tls_port_maps_to_our_loopback_source() {
    let turn = Coturn::start(CoturnOptions::default());
    let mut s = spec(&format!("stuns:127.0.0.1:{}", turn.tls_port));
    s.tls.ca_file = Some(turn.ca_file.clone());
    let out = run(s, Duration::from_secs(3)).await;
    assert_binding_ok(&out, "tls");
    let tls = out.detail.tls.as_ref().expect("tls detail");
    assert_eq!(tls.alpn, None, "no ALPN by default, like browsers");
}

#[tokio::test]
async fn silent_udp_port_is_stun_timeout_at_the_deadline() {
    // A bound socket that never answers: packets vanish as behind a DROP rule.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let out = run(spec(&format!("stun:127.0.0.1:{port}")), Duration::from_secs(3)).await;
    let took = started.elapsed();
    let f = out.failure.as_ref().expect("must fail");
    assert_eq!((f.phase, f.reason.clone()), (Phase::Stun, Reason::Timeout), "{f:?}");
    // The deadline on the probe's own clock: it waited the whole timeout and no longer.
    assert!(
        out.total >= Duration::from_millis(2900) && out.total <= Duration::from_millis(3100),
        "probe total {:?} (the test saw {took:?})",
        out.total
    );
    assert!(took >= Duration::from_millis(2900), "returned before the deadline: {took:?}");
    // Each of the 3 requests had ~1 s: sent at 0 and retransmitted at 500 ms (RTO doubling).
    let rtt = out.detail.stun.as_ref().and_then(|s| s.rtt.as_ref()).expect("rtt");
    assert!(rtt.sent >= 5 && rtt.received == 0, "{rtt:?}");
    drop(silent);
}

#[tokio::test]
async fn nat_mapping_to_two_servers_from_one_socket_is_endpoint_independent_on_loopback() {
    let first = Coturn::start(CoturnOptions::default());
    let second = Coturn::start(CoturnOptions::default());
    let mut s = spec(&format!("stun:127.0.0.1:{}", first.port));
    s.nat_mapping = true;
    s.second_server = Some(IceUrl::parse(&format!("stun:127.0.0.1:{}", second.port)).unwrap());
    let out = run(s, Duration::from_secs(3)).await;
    assert!(out.success, "{:?}", out.failure);
    let stun = out.detail.stun.as_ref().unwrap();
    assert_eq!(stun.second_mapped, stun.mapped);
    assert_eq!(stun.nat_mapping.as_deref(), Some("endpoint_independent"), "{:?}", out.detail.notes);
}

#[tokio::test]
async fn a_second_server_resolving_to_the_server_itself_is_refused() {
    let turn = Coturn::start(CoturnOptions::default());
    let mut s = spec(&format!("stun:127.0.0.1:{}", turn.port));
    s.nat_mapping = true;
    // Another spelling of the same address: only resolving shows it is the server again.
    s.second_server = Some(IceUrl::parse(&format!("stun:localhost:{}", turn.port)).unwrap());
    let out = run(s, Duration::from_secs(3)).await;
    assert!(out.success, "{:?}", out.failure);
    assert_eq!(out.detail.stun.as_ref().unwrap().nat_mapping, None, "{:?}", out.detail.notes);
    let notes = out.detail.notes.join(" | ");
    assert!(notes.contains("the server's own address"), "{notes}");
}

#[tokio::test]
async fn nat_mapping_without_second_address_is_a_note_not_a_failure() {
    // coturn with one IP advertises no OTHER-ADDRESS (it logs "cannot support CHANGE_REQUEST").
    let turn = Coturn::start(CoturnOptions::default());
    let mut s = spec(&format!("stun:127.0.0.1:{}", turn.port));
    s.nat_mapping = true;
    let out = run(s, Duration::from_secs(3)).await;
    assert!(out.success, "{:?}", out.failure);
    assert_eq!(out.detail.stun.as_ref().unwrap().nat_mapping, None);
    assert!(
        out.detail.notes.iter().any(|n| n.contains("OTHER-ADDRESS")),
        "{:?}",
        out.detail.notes
    );
}
