//! `kind: ice` against a real coturn (each test its own instance): which candidate types the
//! webrtc-ice agent gathers, how fast, what fails and when, and that nothing is left behind.
//!
//! Host candidates are restricted to loopback (`HostInterfaces::LoopbackOnly`) and every
//! server is on 127.0.0.1, so no packet goes anywhere else.
mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::coturn::{Auth, Coturn, CoturnOptions};
use egress_probe::config::{CandidateKind, Credentials, IcePolicy, IceServer, IceSpec, IceUrl, NetworkType, Secret};
use egress_probe::probe::ice::{probe_with, HostInterfaces, IceOptions};
use egress_probe::probe::{Outcome, ProbeContext};

/// Normal tests share the lab; the leak test takes it alone (fd counts are per process).
static LAB: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const LOOPBACK: IceOptions = IceOptions {
    host_interfaces: HostInterfaces::LoopbackOnly,
};

fn server(url: &str, creds: Option<(&str, &str)>) -> IceServer {
    IceServer {
        url: IceUrl::parse(url).expect("url"),
        credentials: creds.map(|(u, p)| Credentials::LongTerm {
            username: Secret::literal(u),
            password: Secret::literal(p),
        }),
    }
}

fn spec(servers: Vec<IceServer>, policy: IcePolicy, expect: &[CandidateKind], connectivity: bool) -> IceSpec {
    IceSpec {
        servers,
        policy,
        network_types: vec![NetworkType::Udp4],
        expect: expect.to_vec(),
        connectivity,
    }
}

async fn run(spec: &IceSpec, timeout: Duration) -> Outcome {
    probe_with(spec, &ProbeContext::with_timeout(timeout, None), LOOPBACK).await
}

fn count(o: &Outcome, kind: &str) -> u32 {
    o.detail.ice.as_ref().and_then(|i| i.candidates.get(kind).copied()).unwrap_or(0)
}

fn first_ms(o: &Outcome, kind: &str) -> Option<f64> {
    let i = o.detail.ice.as_ref()?;
    i.first_arrival.get(kind).map(|d| d.as_secs_f64() * 1000.0)
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "success".into())
}

/// coturn accepts TCP before its UDP listener answers; webrtc-ice sends a single STUN Binding
/// (no retransmission), so wait until coturn answers one over UDP before probing.
fn coturn(opts: CoturnOptions) -> Coturn {
    let turn = Coturn::start(opts);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let mut req = [0u8; 20];
    req[1] = 1; // Binding request, length 0
    req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    req[8..].copy_from_slice(b"icereadyprob");
    let ready = common::proc::wait_until(Duration::from_secs(5), || {
        let _ = sock.send_to(&req, ("127.0.0.1", turn.port));
        let mut buf = [0u8; 1500];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 20 && buf[0] == 1 && buf[1] == 1)
    });
    assert!(ready, "coturn never answered a Binding request over UDP");
    turn
}

fn turn_udp(t: &Coturn) -> String {
    format!("turn:127.0.0.1:{}", t.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_network_gathers_host_srflx_and_relay() {
    let _lab = LAB.read().await;
    let turn = coturn(CoturnOptions::default());
    let s = spec(
        vec![
            server(&format!("stun:127.0.0.1:{}", turn.port), None),
            server(&turn_udp(&turn), Some(("test", "secret"))),
        ],
        IcePolicy::All,
        &[CandidateKind::Host, CandidateKind::Srflx, CandidateKind::Relay],
        false,
    );
    let o = run(&s, Duration::from_secs(10)).await;
    assert!(o.success, "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    assert!(ice.complete, "gathering must complete well before the deadline");
    // Loopback only: exactly one host candidate (127.0.0.1, udp4).
    assert_eq!(count(&o, "host"), 1, "{ice:#?}");
    assert!(count(&o, "srflx") >= 1, "{ice:#?}");
    assert_eq!(count(&o, "relay"), 1, "{ice:#?}");
    for kind in ["host", "srflx", "relay"] {
        let ms = first_ms(&o, kind).unwrap_or_else(|| panic!("no first arrival for {kind}"));
        assert!(ms > 0.0 && ms < o.total.as_secs_f64() * 1000.0, "{kind} at {ms} ms");
    }
    assert_eq!(ice.relay_servers.len(), 1);
    assert!(
        ice.relay_servers[0].ends_with(&format!("via turn:127.0.0.1:{}?transport=udp", turn.port)),
        "{:?}",
        ice.relay_servers
    );
    assert!(ice.unsupported.is_empty() && ice.server_errors.is_empty(), "{ice:#?}");
    assert!(ice.released, "agent must close inline");
    assert_eq!(o.phases.first().map(|p| p.phase.as_str()), Some("gather"));
    eprintln!(
        "gather times (ms): host {:.2} srflx {:.2} relay {:.2}, complete after {:.2}",
        first_ms(&o, "host").unwrap_or(-1.0),
        first_ms(&o, "srflx").unwrap_or(-1.0),
        first_ms(&o, "relay").unwrap_or(-1.0),
        o.phase_time(egress_probe::probe::Phase::Gather).unwrap_or_default().as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_policy_yields_only_relay_candidates() {
    let _lab = LAB.read().await;
    let turn = coturn(CoturnOptions::default());
    let s = spec(
        vec![
            server(&format!("stun:127.0.0.1:{}", turn.port), None),
            server(&turn_udp(&turn), Some(("test", "secret"))),
        ],
        IcePolicy::Relay,
        &[CandidateKind::Relay],
        false,
    );
    let o = run(&s, Duration::from_secs(10)).await;
    assert!(o.success, "{o:#?}");
    assert_eq!(count(&o, "relay"), 1);
    assert_eq!(count(&o, "host"), 0);
    assert_eq!(count(&o, "srflx"), 0);
    assert_eq!(count(&o, "prflx"), 0);
    assert!(first_ms(&o, "host").is_none() && first_ms(&o, "srflx").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_turn_password_is_no_relay_while_srflx_appears() {
    let _lab = LAB.read().await;
    let turn = coturn(CoturnOptions::default());
    let s = spec(
        vec![server(&turn_udp(&turn), Some(("test", "not-the-password")))],
        IcePolicy::All,
        &[CandidateKind::Srflx, CandidateKind::Relay],
        false,
    );
    let o = run(&s, Duration::from_secs(10)).await;
    assert_eq!(code(&o), "gather/no_relay", "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    assert!(ice.complete);
    assert!(count(&o, "srflx") >= 1, "srflx comes from the same server over UDP: {ice:#?}");
    assert_eq!(count(&o, "relay"), 0);
    assert!(ice.server_errors.iter().any(|e| e.contains("401")), "{:?}", ice.server_errors);
    let msg = &o.failure.as_ref().expect("failure").message;
    assert!(msg.contains("401") && msg.contains("TURN server configured but no relay"), "{msg}");
    assert!(!msg.contains("not-the-password") && !format!("{ice:?}").contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stun_server_is_no_srflx_at_the_deadline() {
    let _lab = LAB.read().await;
    // A bound socket that never reads: datagrams are queued, nothing answers, no ICMP.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let s = spec(
        vec![server(&format!("stun:127.0.0.1:{port}"), None)],
        IcePolicy::All,
        &[CandidateKind::Host, CandidateKind::Srflx],
        false,
    );
    let timeout = Duration::from_millis(2000);
    let started = Instant::now();
    let o = run(&s, timeout).await;
    let wall = started.elapsed();
    assert_eq!(code(&o), "gather/no_srflx", "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    assert!(!ice.complete, "webrtc-ice waits 5 s for STUN; the 2 s deadline comes first");
    assert_eq!(count(&o, "host"), 1);
    let off = |d: Duration| (d.as_secs_f64() - timeout.as_secs_f64()).abs();
    assert!(off(wall) < 0.2, "result after {wall:?}, deadline {timeout:?}");
    assert!(off(o.total) < 0.2, "reported total {:?}", o.total);
    let msg = &o.failure.as_ref().expect("failure").message;
    assert!(msg.contains("had not completed"), "{msg}");
    // The datagram really went to the silent server (it is the only place it could go).
    silent.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1500];
    let (n, from) = silent.recv_from(&mut buf).expect("a Binding request was sent");
    assert!(
        n >= 20 && from.ip().is_loopback() && buf[0] == 0 && buf[1] == 1,
        "STUN Binding request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_tcp_turn_servers_are_reported_unsupported() {
    let _lab = LAB.read().await;
    let turn = coturn(CoturnOptions::default());
    let tls = format!("turns:127.0.0.1:{}", turn.tls_port);
    let tcp = format!("turn:127.0.0.1:{}?transport=tcp", turn.port);
    let only_unsupported = spec(
        vec![server(&tls, Some(("test", "secret"))), server(&tcp, Some(("test", "secret")))],
        IcePolicy::All,
        &[CandidateKind::Relay],
        false,
    );
    let o = run(&only_unsupported, Duration::from_secs(5)).await;
    assert_eq!(code(&o), "gather/unsupported_transport", "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    assert_eq!(ice.unsupported.len(), 2, "{:?}", ice.unsupported);
    assert!(ice.unsupported.iter().any(|u| u.starts_with(&tls) && u.contains("TLS")));
    assert!(ice.unsupported.iter().any(|u| u.starts_with(&tcp) && u.contains("TCP")));
    assert_eq!(count(&o, "relay"), 0);

    // With a UDP TURN server beside them, relay works and the others are still listed.
    let mixed = spec(
        vec![
            server(&tls, Some(("test", "secret"))),
            server(&turn_udp(&turn), Some(("test", "secret"))),
        ],
        IcePolicy::Relay,
        &[CandidateKind::Relay],
        false,
    );
    let o = run(&mixed, Duration::from_secs(5)).await;
    assert!(o.success, "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    assert_eq!(ice.unsupported.len(), 1);
    assert!(ice.relay_servers[0].contains(&format!("via turn:127.0.0.1:{}?transport=udp", turn.port)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_credentials_are_minted_for_the_relay() {
    let _lab = LAB.read().await;
    let turn = coturn(CoturnOptions {
        auth: Auth::Rest {
            secret: "labsecret".into(),
        },
        extra: vec![],
    });
    let creds = |secret: &str| IceServer {
        url: IceUrl::parse(&turn_udp(&turn)).expect("url"),
        credentials: Some(Credentials::Rest {
            secret: Secret::literal(secret),
            user: "probe".into(),
            ttl: Duration::from_secs(600),
        }),
    };
    let good = spec(vec![creds("labsecret")], IcePolicy::Relay, &[CandidateKind::Relay], false);
    let o = run(&good, Duration::from_secs(5)).await;
    assert!(o.success, "{o:#?}");
    let bad = spec(vec![creds("other")], IcePolicy::Relay, &[CandidateKind::Relay], false);
    let o = run(&bad, Duration::from_secs(5)).await;
    assert_eq!(code(&o), "gather/no_relay", "{o:#?}");
    assert!(o
        .detail
        .ice
        .as_ref()
        .is_some_and(|i| i.server_errors.iter().any(|e| e.contains("401"))));
}
