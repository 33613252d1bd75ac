//! `kind: ice` against a real coturn (each test its own instance): which candidate types the
//! webrtc-ice agent gathers, how fast, what fails and when, and that nothing is left behind.
//!
//! Host candidates are restricted to loopback (`HostInterfaces::LoopbackOnly`) and every
//! server is on 127.0.0.1, so no packet goes anywhere else.
mod common;

use common::outcome::code;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::coturn::{Auth, Coturn, CoturnOptions};
use egress_probe::config::{CandidateKind, Credentials, IcePolicy, IceServer, IceSpec, IceUrl, NetworkType, Secret};
use egress_probe::outcome::Outcome;
use egress_probe::probe::ice::{probe_with, HostInterfaces, IceOptions};
use egress_probe::probe::ProbeContext;

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

fn turn_udp(t: &Coturn) -> String {
    format!("turn:127.0.0.1:{}", t.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_network_gathers_host_srflx_and_relay() {
    let _lab = LAB.read().await;
    let turn = Coturn::start(CoturnOptions::default());
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
        o.phase_time(egress_probe::outcome::Phase::Gather).unwrap_or_default().as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_policy_yields_only_relay_candidates() {
    let _lab = LAB.read().await;
    let turn = Coturn::start(CoturnOptions::default());
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
    let turn = Coturn::start(CoturnOptions::default());
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
    let turn = Coturn::start(CoturnOptions::default());
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
    let turn = Coturn::start(CoturnOptions {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_through_coturn_reaches_connected() {
    let _lab = LAB.read().await;
    let turn = Coturn::start(CoturnOptions::default());
    let s = spec(
        vec![server(&turn_udp(&turn), Some(("test", "secret")))],
        IcePolicy::Relay,
        &[CandidateKind::Relay],
        true,
    );
    let o = run(&s, Duration::from_secs(10)).await;
    assert!(o.success, "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    let after = ice.connected_after.expect("time to Connected");
    assert!(after > Duration::ZERO && after < o.total, "{after:?}");
    assert_eq!(ice.selected_pair.as_deref(), Some("relay -> relay"), "{ice:#?}");
    let phases: Vec<&str> = o.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["gather", "connectivity"]);
    assert!(ice.released);
    eprintln!("connected after {:.1} ms (relay only)", after.as_secs_f64() * 1000.0);

    // policy all: the local agent's host candidate reaches the remote's relay directly.
    let mut all = s.clone();
    all.policy = IcePolicy::All;
    let o = run(&all, Duration::from_secs(10)).await;
    assert!(o.success, "{o:#?}");
    let ice = o.detail.ice.as_ref().expect("ice details");
    let pair = ice.selected_pair.as_deref().unwrap_or_default();
    assert!(pair.ends_with("-> relay"), "{pair}");
    eprintln!("connected after {:?} ({pair})", ice.connected_after);
}

/// Session ids coturn logged as `new` (allocation created) and `delete:` (allocation gone).
fn allocations(log: &str) -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
    let (mut created, mut deleted) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("session ") else { continue };
        let Some((id, what)) = rest.split_once(": ") else { continue };
        if what.starts_with("new, ") {
            created.insert(id.to_string());
        } else if what.starts_with("delete: ") {
            deleted.insert(id.to_string());
        }
    }
    (created, deleted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_runs_leave_no_allocation_and_no_descriptor() {
    let _lab = LAB.write().await;
    let turn = Coturn::start(CoturnOptions::default());
    let gather = spec(
        vec![
            server(&format!("stun:127.0.0.1:{}", turn.port), None),
            server(&turn_udp(&turn), Some(("test", "secret"))),
        ],
        IcePolicy::All,
        &[CandidateKind::Host, CandidateKind::Srflx, CandidateKind::Relay],
        false,
    );
    let connect = spec(
        vec![server(&turn_udp(&turn), Some(("test", "secret")))],
        IcePolicy::Relay,
        &[CandidateKind::Relay],
        true,
    );
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut cut = gather.clone();
    cut.servers
        .push(server(&format!("stun:{}", silent.local_addr().expect("addr")), None));
    // Warm-up (lazy statics, runtime and resolver state), then the baseline.
    let warm = run(&gather, Duration::from_secs(5)).await;
    assert!(warm.success, "{warm:#?}");
    // Settled when the warm-up's agent is closed (released), coturn has deleted its allocation,
    // and our descriptor count holds still between two reads 50 ms apart — not after a sleep.
    assert!(warm.detail.ice.as_ref().is_some_and(|i| i.released), "{warm:#?}");
    let warm_deleted = common::proc::wait_until(Duration::from_secs(10), || {
        let (created, deleted) = allocations(&turn.log_text());
        !created.is_empty() && created == deleted
    });
    assert!(warm_deleted, "the warm-up allocation was not deleted:\n{}", turn.log_text());
    let mut last = common::proc::fd_count();
    let steady = common::proc::wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = common::proc::fd_count();
        std::mem::replace(&mut last, now) == now
    });
    assert!(steady, "descriptor count kept changing after the warm-up");
    let fds_before = common::proc::fd_count();
    // Allocations the successful runs must have made (a run that failed may or may not have
    // allocated; its release is checked all the same by created == deleted below).
    let mut allocated = 1; // the warm-up's relay
    let mut failed = Vec::new();
    for i in 0..30 {
        let agents = if i % 10 != 9 && (i % 10) % 3 == 0 { 2 } else { 1 }; // connectivity: two agents
        let o = match i % 10 {
            // Deadline before gathering completes (a STUN server that never answers keeps it
            // open 5 s): the relay is already allocated; the agent must be closed afterwards.
            9 => run(&cut, Duration::from_millis(500)).await,
            n if n % 3 == 0 => run(&connect, Duration::from_secs(5)).await,
            _ => run(&gather, Duration::from_secs(5)).await,
        };
        if o.success {
            allocated += agents;
            if i % 10 == 9 {
                let ice = o.detail.ice.as_ref().expect("ice details");
                assert!(!ice.complete && !ice.released, "run {i} must end before gathering: {o:#?}");
            }
        } else {
            failed.push(format!("run {i}: {}", code(&o)));
        }
    }
    // webrtc-ice sends one srflx Binding without retransmission, so on a loaded machine a run
    // may rarely miss a candidate; the point here is release on every path, failures included.
    assert!(failed.len() <= 2, "too many failed runs: {failed:?}");
    // coturn deletes allocations asynchronously after Refresh(0): wait, bounded.
    let settled = common::proc::wait_until(Duration::from_secs(20), || {
        let (created, deleted) = allocations(&turn.log_text());
        created.len() >= allocated && created == deleted
    });
    let (created, deleted) = allocations(&turn.log_text());
    let left: Vec<_> = created.difference(&deleted).collect();
    assert!(
        settled,
        "allocations left on coturn: {left:?} (expected {allocated}, created {}, deleted {})",
        created.len(),
        deleted.len()
    );
    let fds_ok = common::proc::wait_until(Duration::from_secs(20), || common::proc::fd_count() <= fds_before + 2);
    assert!(fds_ok, "fds before {fds_before}, after {}", common::proc::fd_count());

    eprintln!(
        "allocations created {} deleted {}; fds before {fds_before} after {}",
        created.len(),
        deleted.len(),
        common::proc::fd_count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_blocked_at_the_relay_is_connectivity_timeout() {
    let _lab = LAB.read().await;
    // coturn refuses to relay to loopback peers: allocations work, checks cannot pass.
    let turn = Coturn::start(CoturnOptions {
        extra: vec!["denied-peer-ip=127.0.0.0-127.255.255.255".into()],
        ..Default::default()
    });
    let s = spec(
        vec![server(&turn_udp(&turn), Some(("test", "secret")))],
        IcePolicy::Relay,
        &[CandidateKind::Relay],
        true,
    );
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let o = run(&s, timeout).await;
    assert_eq!(code(&o), "connectivity/timeout", "{o:#?}");
    // The deadline on the probe's own clock (the test's clock also counts scheduling).
    assert!(
        o.total <= timeout + Duration::from_millis(100),
        "total {:?}, test saw {:?}",
        o.total,
        started.elapsed()
    );
    let ice = o.detail.ice.as_ref().expect("ice details");
    assert_eq!(count(&o, "relay"), 1, "gathering itself passed: {ice:#?}");
    assert!(ice.connected_after.is_none());
}

/// A one-shot `check` whose ICE agent is still gathering at the deadline (a silent STUN
/// server keeps webrtc-ice waiting 5 s) must not exit before the agent is closed: otherwise
/// its relay allocation stays on the TURN server until the lifetime expires (the leak that
/// becomes 429s and quota errors). Proven with the real binary and coturn's log.
#[test]
fn check_waits_for_an_agent_still_gathering_so_its_allocation_is_released() {
    // Shares the lab like the other tests, so the fd-leak test still counts alone.
    let _lab = LAB.blocking_read();
    let turn = Coturn::start(CoturnOptions::default());
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ice.yaml");
    std::fs::write(
        &config,
        format!(
            "probes:\n  - name: ice-relay\n    kind: ice\n    timeout: 1500ms\n    interval: 30s\n    expect: [relay]\n    servers:\n      - url: stun:127.0.0.1:{silent_port}\n      - url: turn:127.0.0.1:{}\n        credentials: {{ username: test, password: secret }}\n",
            turn.port
        ),
    )
    .expect("write config");
    let started = Instant::now();
    let out = std::process::Command::new(common::bin())
        .args(["check", "--quiet", "--output", "json", "--config"])
        .arg(&config)
        .output()
        .expect("run check");
    let wall = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: egress_probe::report::Report = serde_json::from_slice(&out.stdout).expect("report");
    let ice = report.results[0].outcome.detail.ice.as_ref().expect("ice details");
    assert!(
        !ice.complete,
        "gathering must still be running at the deadline for this test to mean anything"
    );
    assert!(ice.candidates.get("relay").copied().unwrap_or(0) >= 1, "{ice:?}");
    // The agent was closed before the process exited: coturn logs the allocation deleted
    // (give its log a moment to be written; without the close it would stay for 600 s).
    let settled = common::proc::wait_until(Duration::from_secs(5), || {
        let (created, deleted) = allocations(&turn.log_text());
        !created.is_empty() && created == deleted
    });
    let (created, deleted) = allocations(&turn.log_text());
    assert!(
        settled,
        "allocations created {created:?}, deleted {deleted:?} (check took {wall:?})"
    );
    assert!(wall < Duration::from_secs(12), "check took {wall:?}");
}
