//! Verdicts from REAL outcomes: each test runs real probes against real local servers (closed
//! ports, in-process rustls servers with rcgen certificates, a hickory DNS server, a private
//! network namespace pair with an nftables DROP) and checks the sentence the verdict table
//! derives from what the probes actually reported. The unit tests in `src/verdict/tests.rs`
//! cover every rule on constructed outcomes; these prove the rules read real outcomes right.
mod common;

use common::certs::now;

use std::time::Duration;

use common::certs::TestCa;
use common::coturn::{Auth, Coturn, CoturnOptions};
use common::dns::{DnsServer, SilentDns};
use common::netns::{NetPair, PEER_IP};
use common::signalling::{http_server, ws_server, Tinyproxy, WsMode};
use egress_probe::config::{
    AddressMode, CandidateKind, Credentials, DnsSpec, HostPort, HttpMethod, HttpSpec, IcePolicy, IceServer, IceSpec, IceUrl, NetworkType,
    ProbeSpec, ProxyUrl, RecordKind, Secret, StatusRange, StunSpec, TcpSpec, TlsOptions, TlsSpec, TurnSpec, WebsocketSpec,
};
use egress_probe::probe::ice::{probe_with, HostInterfaces, IceOptions};
use egress_probe::probe::{self, ProbeContext};
use egress_probe::report::verdict::{assess, contradictions, verdicts, Severity, Verdict};
use egress_probe::report::ProbeResult;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(3);

async fn probe_result(name: &str, spec: ProbeSpec, timeout: Duration) -> ProbeResult {
    probe_via(name, spec, timeout, None).await
}

async fn probe_via(name: &str, spec: ProbeSpec, timeout: Duration, proxy: Option<ProxyUrl>) -> ProbeResult {
    let outcome = probe::run(&spec, &ProbeContext::with_timeout(timeout, proxy)).await;
    ProbeResult::of(name, &spec, outcome)
}

fn code(r: &ProbeResult) -> String {
    r.outcome.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "success".into())
}

/// The verdict about `probe` (there must be exactly one). Every list it looks at must also be
/// free of repeated and contradicting sentences.
fn verdict_for(results: &[ProbeResult], probe: &str) -> Verdict {
    let all = assess(results);
    assert_eq!(contradictions(&all), Vec::<String>::new(), "{all:#?}");
    let mine: Vec<_> = all.iter().filter(|v| v.probes.iter().any(|p| p == probe)).cloned().collect();
    assert_eq!(mine.len(), 1, "one verdict about {probe}: {all:#?}");
    mine.into_iter().next().unwrap()
}

fn tcp(host: &str, port: u16) -> ProbeSpec {
    ProbeSpec::Tcp(TcpSpec {
        target: HostPort { host: host.into(), port },
        addresses: AddressMode::First,
    })
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The CA the probe trusts, written to a temp dir.
struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Egress Test Root");
        ca.write_ca(dir.path());
        Pki { ca, dir }
    }

    fn tls(&self, port: u16, tweak: impl FnOnce(&mut TlsOptions)) -> ProbeSpec {
        let mut tls = TlsOptions {
            ca_file: Some(self.dir.path().join("ca.pem")),
            ..Default::default()
        };
        tweak(&mut tls);
        ProbeSpec::Tls(TlsSpec {
            target: HostPort {
                host: "127.0.0.1".into(),
                port,
            },
            addresses: AddressMode::First,
            tls,
        })
    }
}

fn dns(server: std::net::SocketAddr, query: &str) -> ProbeSpec {
    dns_record(server, query, RecordKind::A)
}

fn dns_record(server: std::net::SocketAddr, query: &str, record: RecordKind) -> ProbeSpec {
    ProbeSpec::Dns(DnsSpec {
        query: query.into(),
        record,
        resolver: Some(server),
        expect: Default::default(),
    })
}

#[tokio::test]
async fn closed_port_is_rejected() {
    let port = closed_port();
    let results = vec![probe_result("tcp-closed", tcp("127.0.0.1", port), T).await];
    assert_eq!(code(&results[0]), "connect/refused");
    let v = verdict_for(&results, "tcp-closed");
    assert_eq!((v.rule, v.severity), ("rejected", Severity::Broken));
    assert_eq!(
        v.text,
        format!("TCP to {port} on 127.0.0.1 is rejected (connect/refused): a firewall rejects it or nothing listens there")
    );
}

#[test]
fn firewall_drop_is_silently_dropped_and_reject_is_rejected() {
    let net = NetPair::new("vdrop");
    let _listeners: Vec<_> = [7100, 7101, 7102, 7103].into_iter().map(|p| net.listen_peer(p)).collect();
    net.nft(
        &net.peer,
        "table inet fw { chain input { type filter hook input priority 0; policy accept;
           tcp dport 7101 drop
           tcp dport 7102 reject with tcp reset
           tcp dport 7103 reject with icmpx type host-unreachable
         }
       }",
    );
    let peer = PEER_IP.to_string();
    let results = net.block_on_client(move || async move {
        vec![
            probe_result("open-7100", tcp(&peer, 7100), Duration::from_secs(2)).await,
            probe_result("drop-7101", tcp(&peer, 7101), Duration::from_millis(600)).await,
            probe_result("reject-7102", tcp(&peer, 7102), Duration::from_secs(2)).await,
            probe_result("unreach-7103", tcp(&peer, 7103), Duration::from_secs(2)).await,
        ]
    });
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["success", "connect/timeout", "connect/refused", "connect/unreachable"]);
    assert_eq!(
        verdict_for(&results, "unreach-7103").text,
        "10.201.0.2 is unreachable (connect/unreachable): no route from this network"
    );
    assert_eq!(
        verdict_for(&results, "drop-7101").text,
        "TCP to 7101 on 10.201.0.2 is silently dropped (connect/timeout): a firewall DROP rule"
    );
    assert_eq!(verdict_for(&results, "reject-7102").rule, "rejected");
    assert_eq!(verdicts(&results).last().map(String::as_str), Some("1 of 4 probes pass"));
}

#[tokio::test]
async fn unknown_ca_is_untrusted_and_names_the_proxy_ca() {
    let pki = Pki::new();
    let proxy_ca = TestCa::new("Corp Proxy CA");
    let server = common::tls_server::serve(proxy_ca.leaf(&["127.0.0.1"], None).rustls_server_config(Some(&proxy_ca), &[])).await;
    let results = vec![probe_result("tls", pki.tls(server.port, |_| {}), T).await];
    assert_eq!(code(&results[0]), "tls/untrusted_issuer");
    let v = verdict_for(&results, "tls");
    assert_eq!(
        v.text,
        format!(
            "TLS on {} presents a certificate from an untrusted issuer 'Corp Proxy CA' (tls/untrusted_issuer), likely an intercepting proxy: clients that verify the certificate (TURN over TLS, WebSocket signalling) will fail",
            server.port
        )
    );
}

#[tokio::test]
async fn wrong_pin_is_intercepted_with_issuer() {
    let pki = Pki::new();
    // The proxy's CA is trusted (installed on the machine), but the pin catches it.
    let server = common::tls_server::serve(pki.ca.leaf(&["127.0.0.1"], None).rustls_server_config(Some(&pki.ca), &[])).await;
    let spec = pki.tls(server.port, |t| t.pin_sha256 = vec!["ab".repeat(32)]);
    let results = vec![probe_result("tls-pinned", spec, T).await];
    assert_eq!(code(&results[0]), "tls/pin_mismatch");
    let v = verdict_for(&results, "tls-pinned");
    assert_eq!(v.rule, "tls_intercepted");
    assert!(
        v.text.starts_with(&format!(
            "TLS on {} is intercepted (pin mismatch, issuer 'Egress Test Root'): ",
            server.port
        )),
        "{}",
        v.text
    );
}

#[tokio::test]
async fn expired_certificate_and_wrong_name() {
    let pki = Pki::new();
    let expired = common::tls_server::serve(
        pki.ca
            .leaf(&["127.0.0.1"], Some((now() - 10 * 86400, now() - 86400)))
            .rustls_server_config(Some(&pki.ca), &[]),
    )
    .await;
    let wrong = common::tls_server::serve(pki.ca.leaf(&["other.example.test"], None).rustls_server_config(Some(&pki.ca), &[])).await;
    let results = vec![
        probe_result("expired", pki.tls(expired.port, |_| {}), T).await,
        probe_result(
            "wrong-name",
            pki.tls(wrong.port, |t| t.server_name = Some("relay.example.test".into())),
            T,
        )
        .await,
    ];
    assert_eq!(results.iter().map(code).collect::<Vec<_>>(), ["tls/expired", "tls/name_mismatch"]);
    assert!(verdict_for(&results, "expired").text.starts_with(&format!(
        "The certificate on 127.0.0.1:{} has expired (tls/expired): ",
        expired.port
    )));
    let v = verdict_for(&results, "wrong-name");
    assert!(
        v.text.starts_with(&format!(
            "The certificate on {} is not for relay.example.test (tls/name_mismatch), issuer 'Egress Test Root'",
            wrong.port
        )),
        "{}",
        v.text
    );
}

#[tokio::test]
async fn dns_nxdomain_servfail_and_silence() {
    let server = DnsServer::start().await;
    let silent = SilentDns::start();
    let results = vec![
        probe_result("nx", dns(server.addr, "missing.example.test"), T).await,
        probe_result("servfail", dns(server.addr, "servfail.example.test"), T).await,
        probe_result("silent", dns(silent.addr, "relay.example.test"), Duration::from_millis(800)).await,
        probe_result("no-aaaa", dns_record(server.addr, "v4only.example.test", RecordKind::Aaaa), T).await,
    ];
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["resolve/nxdomain", "resolve/servfail", "resolve/timeout", "resolve/no_answer"]
    );
    assert_eq!(
        verdict_for(&results, "no-aaaa").text,
        "DNS for v4only.example.test has no record of the asked type (resolve/no_answer)"
    );
    assert_eq!(
        verdict_for(&results, "nx").text,
        "DNS for missing.example.test does not resolve (resolve/nxdomain)"
    );
    assert_eq!(
        verdict_for(&results, "servfail").text,
        "DNS for servfail.example.test fails (resolve/servfail): the resolver is broken, refuses, or is blocked"
    );
    assert_eq!(verdict_for(&results, "silent").rule, "dns_failed");
}

#[tokio::test]
async fn a_healthy_lab_says_all_paths_work() {
    let pki = Pki::new();
    let tls = common::tls_server::serve(pki.ca.leaf(&["127.0.0.1"], None).rustls_server_config(Some(&pki.ca), &[])).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = listener.local_addr().unwrap().port();
    let server = DnsServer::start().await;
    let results = vec![
        probe_result("tcp", tcp("127.0.0.1", tcp_port), T).await,
        probe_result("tls", pki.tls(tls.port, |_| {}), T).await,
        probe_result("dns", dns(server.addr, "relay.example.test"), T).await,
    ];
    assert!(results.iter().all(|r| r.outcome.success), "{results:#?}");
    assert_eq!(verdicts(&results), vec!["all paths work (3 probes passed)".to_string()]);
    assert_eq!(assess(&results)[0].severity, Severity::Ok);
}

/// Runs an ICE probe with host candidates on loopback only (no packet leaves the machine).
async fn ice_result(name: &str, servers: Vec<(String, Option<(&str, &str)>)>, expect: &[CandidateKind], timeout: Duration) -> ProbeResult {
    let spec = IceSpec {
        servers: servers
            .into_iter()
            .map(|(url, creds)| IceServer {
                url: IceUrl::parse(&url).unwrap(),
                credentials: creds.map(|(u, p)| Credentials::LongTerm {
                    username: Secret::literal(u),
                    password: Secret::literal(p),
                }),
            })
            .collect(),
        policy: IcePolicy::All,
        network_types: vec![NetworkType::Udp4],
        expect: expect.to_vec(),
        connectivity: false,
        tls: Default::default(),
    };
    let ctx = ProbeContext::with_timeout(timeout, None);
    let outcome = probe_with(
        &spec,
        &ctx,
        IceOptions {
            host_interfaces: HostInterfaces::LoopbackOnly,
        },
    )
    .await;
    let spec = ProbeSpec::Ice(spec);
    ProbeResult::of(name, &spec, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_without_relay_or_srflx() {
    let turn = Coturn::start(CoturnOptions::default());
    // A bound socket that never reads: STUN to it gets no answer and no ICMP.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let relay_url = format!("turn:127.0.0.1:{}", turn.port);
    let results = vec![
        ice_result(
            "ice-relay",
            vec![(relay_url, Some(("test", "wrong-pw-7f3a")))],
            &[CandidateKind::Relay],
            Duration::from_secs(10),
        )
        .await,
        ice_result(
            "ice-srflx",
            vec![(format!("stun:127.0.0.1:{silent_port}"), None)],
            &[CandidateKind::Srflx],
            Duration::from_millis(1500),
        )
        .await,
    ];
    assert_eq!(results.iter().map(code).collect::<Vec<_>>(), ["gather/no_relay", "gather/no_srflx"]);
    assert_eq!(
        verdict_for(&results, "ice-relay").text,
        "ICE gathered no relay candidate over UDP (gather/no_relay): softphones cannot fall back to the relay"
    );
    let v = verdict_for(&results, "ice-srflx");
    assert_eq!((v.rule, v.severity), ("ice_no_srflx", Severity::Degraded));
    assert!(assess(&results).iter().all(|v| !v.text.contains("wrong-pw-7f3a")));
}

fn http(port: u16, path: &str) -> ProbeSpec {
    ProbeSpec::Http(HttpSpec {
        auth: None,
        url: url::Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap(),
        method: HttpMethod::Get,
        headers: Default::default(),
        body: None,
        expect_status: vec![StatusRange { low: 200, high: 399 }],
        expect_body: None,
        follow_redirects: 0,
        tls: TlsOptions::default(),
    })
}

fn ws(port: u16) -> ProbeSpec {
    ProbeSpec::Websocket(WebsocketSpec {
        auth: None,
        concurrent: 1,
        hold: None,
        url: url::Url::parse(&format!("ws://127.0.0.1:{port}/signalling")).unwrap(),
        headers: Default::default(),
        ping: 1,
        send: None,
        expect: None,
        tls: TlsOptions::default(),
    })
}

#[tokio::test]
async fn http_429_with_retry_after_and_503() {
    let server = http_server(false).await;
    let results = vec![
        probe_result("api-429", http(server.port, "/429"), T).await,
        probe_result("api-503", http(server.port, "/503"), T).await,
    ];
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["request/status_429", "request/status_503"]
    );
    let v = verdict_for(&results, "api-429");
    assert_eq!((v.rule, v.severity), ("rate_limited", Severity::Degraded));
    assert_eq!(v.text, "429 from 127.0.0.1: clients are retrying too fast (Retry-After 7 s)");
    assert_eq!(
        verdict_for(&results, "api-503").text,
        format!("127.0.0.1 answers HTTP 503 on {} (request/status_503)", server.port)
    );
}

#[tokio::test]
async fn websocket_silent_upgrade_stripped_upgrade_and_refused_upgrade() {
    let silent = ws_server(WsMode::Silent, false).await;
    let plain = ws_server(WsMode::Plain200, false).await;
    let refuse = ws_server(WsMode::Refuse(429), false).await;
    let results = vec![
        probe_result("ws-silent", ws(silent.port), Duration::from_millis(800)).await,
        probe_result("ws-plain", ws(plain.port), T).await,
        probe_result("ws-429", ws(refuse.port), T).await,
    ];
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["upgrade/timeout", "upgrade/not_upgraded", "upgrade/status_429"]
    );
    assert_eq!(
        verdict_for(&results, "ws-silent").text,
        format!(
            "WebSocket signalling on {} times out during upgrade (upgrade/timeout): a proxy or firewall holds the Upgrade request",
            silent.port
        )
    );
    assert_eq!(verdict_for(&results, "ws-plain").rule, "ws_not_upgraded");
    assert!(verdict_for(&results, "ws-429")
        .text
        .starts_with("429 from 127.0.0.1: clients are retrying too fast"));
}

#[tokio::test]
async fn proxy_demanding_auth_and_proxy_refusing_the_port() {
    let target = ws_server(WsMode::Good, false).await;
    let auth_proxy = Tinyproxy::start(Some(("corp", "proxy-pw-91c2")), &[]);
    let strict_proxy = Tinyproxy::start(None, &[443]);
    let via = |port| ProxyUrl {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
    };
    let results = vec![
        probe_via("ws-auth", ws(target.port), T, Some(via(auth_proxy.port))).await,
        probe_via("ws-strict", ws(target.port), T, Some(via(strict_proxy.port))).await,
    ];
    assert_eq!(results.iter().map(code).collect::<Vec<_>>(), ["proxy/auth", "proxy/status_403"]);
    assert_eq!(
        verdict_for(&results, "ws-auth").text,
        format!(
            "The HTTP proxy demands authentication for 127.0.0.1:{} (proxy/auth): configure proxy credentials",
            target.port
        )
    );
    assert_eq!(
        verdict_for(&results, "ws-strict").text,
        format!("The HTTP proxy does not let 127.0.0.1:{} through (proxy/status_403)", target.port)
    );
}

const TURN_PASSWORD: &str = "pw-5e1d-verdict";

fn coturn_with_password() -> Coturn {
    Coturn::start(CoturnOptions {
        auth: Auth::LongTerm {
            user: "test".into(),
            password: TURN_PASSWORD.into(),
        },
        extra: vec![],
    })
}

fn stun(url: &str) -> ProbeSpec {
    ProbeSpec::Stun(StunSpec {
        server: IceUrl::parse(url).unwrap(),
        count: 2,
        nat_mapping: false,
        second_server: None,
        nat_filtering: false,
        binding_lifetime: None,
        tls: TlsOptions::default(),
    })
}

fn turn(url: &str, password: &str, tls: TlsOptions) -> ProbeSpec {
    ProbeSpec::Turn(TurnSpec {
        server: IceUrl::parse(url).unwrap(),
        credentials: Credentials::LongTerm {
            username: Secret::literal("test"),
            password: Secret::literal(password),
        },
        count: 3,
        size: 100,
        channel: false,
        addresses: AddressMode::First,
        tls,
        media: None,
        concurrent: 1,
    })
}

fn no_secret_in(results: &[ProbeResult]) {
    for v in assess(results) {
        assert!(!v.text.contains(TURN_PASSWORD) && !v.text.contains("wrong-pw"), "{v:?}");
    }
}

/// The headline case: UDP to the STUN/TURN port never answers (a DROP), TURN over TLS works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_dropped_but_turn_over_tls_works() {
    let coturn = coturn_with_password();
    // A bound UDP socket that never reads: requests vanish like behind a DROP rule, no ICMP.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = silent.local_addr().unwrap().port();
    let tls = TlsOptions {
        ca_file: Some(coturn.ca_file.clone()),
        ..Default::default()
    };
    let results = vec![
        probe_result("stun-udp", stun(&format!("stun:127.0.0.1:{udp_port}")), Duration::from_millis(1200)).await,
        probe_result(
            "turn-udp",
            turn(&format!("turn:127.0.0.1:{udp_port}"), TURN_PASSWORD, TlsOptions::default()),
            Duration::from_millis(1200),
        )
        .await,
        probe_result(
            "turn-tls",
            turn(&format!("turns:127.0.0.1:{}?transport=tcp", coturn.tls_port), TURN_PASSWORD, tls),
            Duration::from_secs(5),
        )
        .await,
    ];
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["stun/timeout", "allocate/timeout", "success"],
        "{results:#?}"
    );
    // One finding, both probes' codes.
    let v = verdict_for(&results, "stun-udp");
    assert_eq!((v.rule, v.severity), ("udp_dropped_relay_works", Severity::Degraded));
    assert_eq!(
        v.text,
        format!(
            "UDP to {udp_port} is dropped (allocate/timeout, stun/timeout); TURN/TLS on {} works, so calls will relay over it with higher latency",
            coturn.tls_port
        )
    );
    assert_eq!(v, verdict_for(&results, "turn-udp"));
    assert_eq!(v.probes, ["stun-udp", "turn-udp"]);
    assert_eq!(verdicts(&results).len(), 2, "{:#?}", verdicts(&results));
    assert_eq!(verdicts(&results).last().map(String::as_str), Some("1 of 3 probes pass"));
    assert_eq!(contradictions(&assess(&results)), Vec::<String>::new());
    no_secret_in(&results);
    // The same STUN outcome with no TURN over TLS probed says so.
    let alone = verdict_for(&results[..1], "stun-udp");
    assert_eq!(
        alone.text,
        format!("UDP to {udp_port} is dropped (stun/timeout): media needs TURN over TLS (e.g. on 443); add a turns: probe to check that fallback")
    );
}

/// UDP dropped and TURN over TLS refuses the credentials: no media path at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_dropped_and_turn_over_tls_rejects_the_password() {
    let coturn = coturn_with_password();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = silent.local_addr().unwrap().port();
    let tls = TlsOptions {
        ca_file: Some(coturn.ca_file.clone()),
        ..Default::default()
    };
    let results = vec![
        probe_result("stun-udp", stun(&format!("stun:127.0.0.1:{udp_port}")), Duration::from_millis(1200)).await,
        probe_result(
            "turn-tls",
            turn(&format!("turns:127.0.0.1:{}?transport=tcp", coturn.tls_port), "wrong-pw", tls),
            Duration::from_secs(5),
        )
        .await,
    ];
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["stun/timeout", "allocate/auth"],
        "{results:#?}"
    );
    let v = verdict_for(&results, "stun-udp");
    assert_eq!(
        v.text,
        format!("UDP to {udp_port} is dropped (stun/timeout) and TURN over TCP/TLS fails too: calls will have no media path")
    );
    assert_eq!(
        verdict_for(&results, "turn-tls").text,
        format!(
            "TURN on {} rejects the credentials (allocate/auth): check the username/password or REST secret and the clock",
            coturn.tls_port
        )
    );
    no_secret_in(&results);
}

/// TURN over TLS through an interceptor: the chain is trusted but the pin does not match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_with_wrong_pin_is_intercepted() {
    let coturn = coturn_with_password();
    let tls = TlsOptions {
        ca_file: Some(coturn.ca_file.clone()),
        pin_sha256: vec!["cd".repeat(32)],
        ..Default::default()
    };
    let url = format!("turns:127.0.0.1:{}?transport=tcp", coturn.tls_port);
    let results = vec![probe_result("turn-tls", turn(&url, TURN_PASSWORD, tls), Duration::from_secs(5)).await];
    assert_eq!(code(&results[0]), "tls/pin_mismatch", "{results:#?}");
    assert_eq!(
        verdict_for(&results, "turn-tls").text,
        format!(
            "TLS on {} is intercepted (pin mismatch, issuer 'egress-probe test CA'): TURN over TLS will fail",
            coturn.tls_port
        )
    );
}

/// The strict-egress case on a real wire: coturn behind a firewall that drops UDP to
/// its port (TCP/TLS open), every probe in the client namespace. ICE with a `turns:` server
/// relays over TLS and passes; ICE with only a UDP TURN server finds no relay. The verdicts say
/// each finding once, which transport the relay needs, and never contradict themselves.
#[test]
fn strict_egress_verdicts_say_the_relay_needs_tls_and_never_contradict() {
    let net = NetPair::new("vstrict");
    let coturn = Coturn::start_in(
        CoturnOptions {
            auth: Auth::LongTerm {
                user: "test".into(),
                password: TURN_PASSWORD.into(),
            },
            extra: vec![],
        },
        &net.peer,
        PEER_IP,
    );
    net.nft(
        &net.peer,
        &format!(
            "table inet fw {{ chain input {{ type filter hook input priority 0; policy accept;
               udp dport {} drop
             }}
           }}",
            coturn.port
        ),
    );
    let (port, tls_port) = (coturn.port, coturn.tls_port);
    let tls = TlsOptions {
        ca_file: Some(coturn.ca_file.clone()),
        server_name: Some("relay.example.test".into()),
        ..Default::default()
    };
    let ice_spec = |servers: Vec<String>| IceSpec {
        servers: servers
            .into_iter()
            .map(|url| IceServer {
                url: IceUrl::parse(&url).unwrap(),
                credentials: url.starts_with("turn").then(|| Credentials::LongTerm {
                    username: Secret::literal("test"),
                    password: Secret::literal(TURN_PASSWORD),
                }),
            })
            .collect(),
        policy: IcePolicy::Relay,
        network_types: vec![NetworkType::Udp4],
        expect: vec![],
        connectivity: false,
        tls: tls.clone(),
    };
    let ice_tls = ice_spec(vec![
        format!("turn:{PEER_IP}:{port}"),
        format!("turns:{PEER_IP}:{tls_port}?transport=tcp"),
    ]);
    let ice_udp = ice_spec(vec![format!("turn:{PEER_IP}:{port}")]);
    let turn_tls = turn(&format!("turns:{PEER_IP}:{tls_port}?transport=tcp"), TURN_PASSWORD, tls.clone());
    let results = net.block_on_client(move || async move {
        let ice = |name: &'static str, spec: IceSpec| async move {
            let ctx = ProbeContext::with_timeout(Duration::from_millis(1500), None);
            let opts = IceOptions {
                host_interfaces: HostInterfaces::LoopbackOnly,
            };
            let outcome = probe_with(&spec, &ctx, opts).await;
            let spec = ProbeSpec::Ice(spec);
            ProbeResult::of(name, &spec, outcome)
        };
        let (a, b, c, d, e) = futures::join!(
            probe_result("stun-udp", stun(&format!("stun:{PEER_IP}:{port}")), Duration::from_millis(1200)),
            probe_result(
                "turn-udp",
                turn(&format!("turn:{PEER_IP}:{port}"), TURN_PASSWORD, TlsOptions::default()),
                Duration::from_millis(1200)
            ),
            probe_result("turn-tls", turn_tls, Duration::from_secs(3)),
            ice("ice-tls", ice_tls),
            ice("ice-udp", ice_udp),
        );
        vec![a, b, c, d, e]
    });
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["stun/timeout", "allocate/timeout", "success", "success", "gather/no_relay"],
        "{results:#?}"
    );
    let ice = results[3].outcome.detail.ice.as_ref().expect("ice details");
    let protocols: Vec<(&str, u32)> = ice.relay_protocols.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(protocols, [("tls", 1), ("udp", 0)]);
    assert_eq!(
        verdicts(&results),
        [
            format!(
                "UDP to {port} is dropped (allocate/timeout, stun/timeout); TURN/TLS on {tls_port} works, so calls will relay over it with higher latency"
            ),
            format!(
                "ICE gathered no relay candidate over UDP (gather/no_relay), but TURN/TLS on {tls_port} works: give softphones that server (turns:{PEER_IP}:{tls_port}) and calls will relay over it"
            ),
            "2 of 5 probes pass".to_string(),
        ]
    );
    assert_eq!(contradictions(&assess(&results)), Vec::<String>::new());
    no_secret_in(&results);
    // The ice probe alone (it passed): the verdict still says the relay needs TLS, and does
    // not claim "all paths work".
    let alone = &results[3..4];
    assert_eq!(
        verdicts(alone),
        [
            format!(
                "ICE got no relay over TURN/UDP, only over TURN/TLS on {tls_port}: calls will relay over TLS with higher latency (is UDP to the TURN server blocked?)"
            ),
            "1 of 1 probes pass".to_string(),
        ]
    );
    assert_eq!(contradictions(&assess(alone)), Vec::<String>::new());
}
