//! `kind: dns` against a real DNS server started by the test (hickory-server in-process, see
//! `common::dns`), and against servers that never answer.
mod common;

use common::outcome::{code, run};

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::dns::{DnsServer, SilentDns};
use egress_probe::config::{DnsExpect, DnsSpec, ProbeSpec, RecordKind};
use egress_probe::outcome::{Outcome, Phase};

fn dns(server: std::net::SocketAddr, query: &str, record: RecordKind, expect: DnsExpect) -> ProbeSpec {
    ProbeSpec::Dns(DnsSpec {
        query: query.into(),
        record,
        resolver: Some(server),
        expect,
    })
}

fn answers(o: &Outcome) -> Vec<String> {
    o.detail.dns.as_ref().map(|d| d.answers.clone()).unwrap_or_default()
}

const T: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_record_answer_is_reported() {
    let server = DnsServer::start().await;
    let o = run(&dns(server.addr, "relay.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(o.phases.iter().map(|p| p.phase).collect::<Vec<_>>(), vec![Phase::Resolve]);
    assert_eq!(answers(&o), vec!["127.0.0.1"]);
    let d = o.detail.dns.as_ref().unwrap();
    assert_eq!((d.record.as_str(), d.rcode.as_str(), d.transport.as_str()), ("A", "noerror", "udp"));
    assert_eq!(d.resolver, server.addr.to_string());
}

#[tokio::test]
async fn aaaa_cname_srv_txt_answers_are_rendered() {
    let server = DnsServer::start().await;
    let cases = [
        ("relay.example.test", RecordKind::Aaaa, "::1"),
        ("alias.example.test", RecordKind::Cname, "relay.example.test."),
        ("_turn._udp.example.test", RecordKind::Srv, "0 0 3478 relay.example.test."),
        ("txt.example.test", RecordKind::Txt, "v=softphone1"),
    ];
    for (q, kind, want) in cases {
        let o = run(&dns(server.addr, q, kind, Default::default()), T).await;
        assert_eq!(code(&o), "success", "{q} {kind}: {o:?}");
        assert_eq!(answers(&o), vec![want.to_string()], "{q} {kind}");
    }
    // An A query for a CNAME follows it: the A records of the target are the answer.
    let o = run(&dns(server.addr, "alias.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(answers(&o), vec!["127.0.0.1"], "{o:?}");
}

#[tokio::test]
async fn nxdomain_is_resolve_nxdomain() {
    let server = DnsServer::start().await;
    let o = run(&dns(server.addr, "nope.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(code(&o), "resolve/nxdomain", "{o:?}");
    assert_eq!(o.detail.dns.as_ref().unwrap().rcode, "nxdomain");
}

#[tokio::test]
async fn servfail_is_resolve_servfail_and_refused_is_dns_refused() {
    let server = DnsServer::start().await;
    let o = run(&dns(server.addr, "servfail.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(code(&o), "resolve/servfail", "{o:?}");
    assert!(
        o.total < Duration::from_secs(1),
        "a SERVFAIL is an answer, not a wait: {:?}",
        o.total
    );
    let o = run(&dns(server.addr, "refused.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(code(&o), "resolve/dns_refused", "{o:?}");
}

#[tokio::test]
async fn name_without_that_record_type_is_no_answer() {
    let server = DnsServer::start().await;
    let o = run(&dns(server.addr, "v4only.example.test", RecordKind::Aaaa, Default::default()), T).await;
    assert_eq!(code(&o), "resolve/no_answer", "{o:?}");
    assert_eq!(o.detail.dns.as_ref().unwrap().rcode, "noerror");
}

#[tokio::test]
async fn expect_contains_mismatch_is_expect_failed() {
    let server = DnsServer::start().await;
    let expect = DnsExpect {
        contains: vec!["10.0.0.1".into()],
        rcode: None,
    };
    let o = run(&dns(server.addr, "relay.example.test", RecordKind::A, expect), T).await;
    assert_eq!(code(&o), "resolve/expect_failed", "{o:?}");
    assert_eq!(answers(&o), vec!["127.0.0.1"], "answers are reported on failure too");
    let expect = DnsExpect {
        contains: vec!["127.0.0.1".into()],
        rcode: None,
    };
    let o = run(&dns(server.addr, "relay.example.test", RecordKind::A, expect), T).await;
    assert_eq!(code(&o), "success", "{o:?}");
}

#[tokio::test]
async fn expect_rcode_nxdomain_turns_a_negative_answer_into_success() {
    let server = DnsServer::start().await;
    let want_nx = || DnsExpect {
        contains: vec![],
        rcode: Some("nxdomain".into()),
    };
    let o = run(&dns(server.addr, "blocked.example.test", RecordKind::A, want_nx()), T).await;
    assert_eq!(code(&o), "success", "{o:?}");
    let o = run(&dns(server.addr, "relay.example.test", RecordKind::A, want_nx()), T).await;
    assert_eq!(code(&o), "resolve/expect_failed", "{o:?}");
}

#[tokio::test]
async fn silent_server_is_resolve_timeout_within_timeout_plus_100ms() {
    let silent = SilentDns::start();
    let timeout = Duration::from_millis(700);
    let o = run(&dns(silent.addr, "relay.example.test", RecordKind::A, Default::default()), timeout).await;
    assert_eq!(code(&o), "resolve/timeout", "{o:?}");
    assert!(o.total >= timeout - Duration::from_millis(20), "ended early: {:?}", o.total);
    assert!(o.total <= timeout + Duration::from_millis(100), "ended late: {:?}", o.total);
}

#[tokio::test]
async fn silent_udp_and_closed_tcp_is_resolve_timeout_with_the_tcp_story() {
    // UDP 53 dropped (a socket that never answers), TCP 53 rejected (nothing listening).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = udp.local_addr().expect("addr");
    let timeout = Duration::from_millis(600);
    let o = run(&dns(addr, "relay.example.test", RecordKind::A, Default::default()), timeout).await;
    assert_eq!(code(&o), "resolve/timeout", "{o:?}");
    let msg = &o.failure.as_ref().unwrap().message;
    assert!(msg.contains("TCP fallback"), "{msg}");
    assert!(o.total <= timeout + Duration::from_millis(100), "ended late: {:?}", o.total);
}

#[tokio::test]
async fn udp_blocked_falls_back_to_tcp() {
    let server = DnsServer::start_tcp_only().await;
    let o = run(
        &dns(server.addr, "relay.example.test", RecordKind::A, Default::default()),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(answers(&o), vec!["127.0.0.1"]);
    assert_eq!(o.detail.dns.as_ref().unwrap().transport, "tcp");
    assert!(server.counts.tcp.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn truncated_udp_answer_is_retried_over_tcp() {
    let server = DnsServer::start().await;
    let o = run(&dns(server.addr, "big.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(answers(&o), vec!["127.0.0.9"]);
    assert_eq!(server.counts.udp.load(Ordering::SeqCst), 1);
    assert_eq!(server.counts.tcp.load(Ordering::SeqCst), 1);
    let d = o.detail.dns.as_ref().unwrap();
    assert_eq!(d.transport, "tcp", "the answer came over TCP: {d:?}");
    assert!(d.truncated, "{d:?}");
}

#[tokio::test]
async fn truncated_udp_answer_with_tcp_refused_is_truncated_tcp_refused() {
    let server = DnsServer::start_udp_only().await;
    let timeout = Duration::from_secs(3);
    let o = run(&dns(server.addr, "big.example.test", RecordKind::A, Default::default()), timeout).await;
    assert_eq!(code(&o), "resolve/truncated_tcp_refused", "{o:?}");
    let d = o.detail.dns.as_ref().unwrap();
    assert!(d.truncated, "{d:?}");
    let msg = &o.failure.as_ref().unwrap().message;
    assert!(msg.contains("truncated") && msg.contains("TCP"), "{msg}");
    assert_eq!(server.counts.udp.load(Ordering::SeqCst), 1);
    assert!(o.total < Duration::from_secs(1), "a refusal is known at once: {:?}", o.total);
}

#[tokio::test]
async fn closed_resolver_port_is_resolve_refused_not_timeout() {
    // Nothing on UDP or TCP at that port: the kernel answers ICMP port unreachable and RST,
    // exactly what a REJECT rule does.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let timeout = Duration::from_secs(3);
    let o = run(&dns(addr, "relay.example.test", RecordKind::A, Default::default()), timeout).await;
    assert_eq!(code(&o), "resolve/refused", "{o:?}");
    let msg = &o.failure.as_ref().unwrap().message;
    assert!(msg.contains("ICMP port unreachable") && msg.contains("TCP fallback"), "{msg}");
    assert!(o.total < Duration::from_secs(1), "a refusal is known at once: {:?}", o.total);
}

#[tokio::test]
async fn rejected_udp_with_open_tcp_answers_over_tcp() {
    // UDP port closed (ICMP port unreachable), TCP serving: the answer comes over TCP at once,
    // not after UDP's half of the timeout.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let counts = std::sync::Arc::new(common::dns::Counts::default());
    let _server = common::dns::DnsServer::serve_tcp(tcp, counts.clone());
    let o = run(&dns(addr, "relay.example.test", RecordKind::A, Default::default()), T).await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(o.detail.dns.as_ref().unwrap().transport, "tcp");
    assert!(o.total < Duration::from_secs(1), "ICMP refusal seen at once: {:?}", o.total);
    assert_eq!(counts.tcp.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn special_use_names_are_sent_to_the_resolver() {
    // hickory-resolver would answer these itself without a packet; the probe measures DNS.
    let server = DnsServer::start().await;
    for name in ["probe.localhost", "probe.invalid"] {
        let o = run(&dns(server.addr, name, RecordKind::A, Default::default()), T).await;
        assert_eq!(code(&o), "resolve/nxdomain", "{name}: {o:?}");
    }
    assert_eq!(server.counts.udp.load(Ordering::SeqCst), 2, "both queries reached the server");
}

#[tokio::test]
async fn no_cache_between_runs() {
    let server = DnsServer::start().await;
    let spec = dns(server.addr, "relay.example.test", RecordKind::A, Default::default());
    for _ in 0..3 {
        let o = run(&spec, T).await;
        assert_eq!(code(&o), "success", "{o:?}");
    }
    assert_eq!(server.counts.udp.load(Ordering::SeqCst), 3, "every run must ask the server");
}

/// The system resolver path, for real: a network namespace of the test's own, our DNS server on
/// 127.0.0.1:53 inside it, and a private `/etc/resolv.conf` pointing there (bind-mounted in a
/// private mount namespace; the machine's file is untouched).
fn with_system_dns<T: Send + 'static, F: std::future::Future<Output = T>>(test: &str, f: impl FnOnce() -> F + Send + 'static) -> T {
    let net = common::netns::NetPair::new(test);
    let resolv = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";
    let hosts = "127.0.0.1 localhost\n";
    common::netns::NetPair::isolated(
        Some(&net.client),
        &[("/etc/resolv.conf", resolv), ("/etc/hosts", hosts)],
        move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let _server = DnsServer::start_on("127.0.0.1:53".parse().unwrap()).await;
                f().await
            })
        },
    )
}

#[test]
fn default_resolver_is_the_system_configuration() {
    let (ok, nx) = with_system_dns("dnssys", || async {
        let spec = |q: &str| {
            ProbeSpec::Dns(DnsSpec {
                query: q.into(),
                record: RecordKind::Srv,
                resolver: None,
                expect: Default::default(),
            })
        };
        (
            run(&spec("_turn._udp.example.test"), T).await,
            run(&spec("nope.example.test"), T).await,
        )
    });
    assert_eq!(code(&ok), "success", "{ok:?}");
    assert_eq!(answers(&ok), vec!["0 0 3478 relay.example.test."]);
    assert_eq!(ok.detail.dns.as_ref().unwrap().resolver, "system");
    assert_eq!(code(&nx), "resolve/nxdomain", "{nx:?}");
}

#[test]
fn dial_path_classifies_getaddrinfo_failures() {
    // tcp probes resolve through getaddrinfo (the shared dial path), not hickory.
    let outcomes = with_system_dns("dnsgai", || async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut out = Vec::new();
        for name in [
            "relay.example.test",
            "nope.example.test",
            "servfail.example.test",
            "txt.example.test",
        ] {
            let spec = ProbeSpec::Tcp(egress_probe::config::TcpSpec {
                target: egress_probe::config::HostPort { host: name.into(), port },
                addresses: egress_probe::config::AddressMode::First,
            });
            out.push((name, run(&spec, T).await));
        }
        out
    });
    let codes: Vec<(&str, String)> = outcomes.iter().map(|(n, o)| (*n, code(o))).collect();
    assert_eq!(
        codes,
        vec![
            ("relay.example.test", "success".to_string()),
            ("nope.example.test", "resolve/nxdomain".to_string()),
            ("servfail.example.test", "resolve/servfail".to_string()),
            ("txt.example.test", "resolve/no_answer".to_string()),
        ],
        "{outcomes:?}"
    );
    let relay = &outcomes[0].1;
    assert!(relay.detail.resolved.iter().any(|a| a.ip().to_string() == "127.0.0.1"), "{relay:?}");
}
