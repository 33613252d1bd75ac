//! Verdicts from REAL outcomes: each test runs real probes against real local servers (closed
//! ports, in-process rustls servers with rcgen certificates, a hickory DNS server, a private
//! network namespace pair with an nftables DROP) and checks the sentence the verdict table
//! derives from what the probes actually reported. The unit tests in `src/verdict/tests.rs`
//! cover every rule on constructed outcomes; these prove the rules read real outcomes right.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::certs::TestCa;
use common::dns::{DnsServer, SilentDns};
use common::netns::{NetPair, PEER_IP};
use egress_probe::config::{AddressMode, DnsSpec, HostPort, ProbeSpec, RecordKind, TcpSpec, TlsOptions, TlsSpec};
use egress_probe::probe::{self, ProbeContext};
use egress_probe::report::ProbeResult;
use egress_probe::verdict::{assess, verdicts, Severity, Verdict};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const T: Duration = Duration::from_secs(3);

async fn probe_result(name: &str, spec: ProbeSpec, timeout: Duration) -> ProbeResult {
    let outcome = probe::run(&spec, &ProbeContext::with_timeout(timeout, None)).await;
    ProbeResult {
        name: name.into(),
        kind: spec.kind().into(),
        target: spec.target(),
        outcome,
    }
}

fn code(r: &ProbeResult) -> String {
    r.outcome.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "success".into())
}

/// The verdict about `probe` (there must be exactly one).
fn verdict_for(results: &[ProbeResult], probe: &str) -> Verdict {
    let all = assess(results);
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

/// An in-process TLS server on 127.0.0.1 (handshake, then read to EOF); aborted on drop.
struct TlsServer {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_server(config: Arc<rustls::ServerConfig>) -> TlsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
                }
            });
        }
    });
    TlsServer { port, task }
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn dns(server: std::net::SocketAddr, query: &str) -> ProbeSpec {
    ProbeSpec::Dns(DnsSpec {
        query: query.into(),
        record: RecordKind::A,
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
    let _listeners: Vec<_> = [7100, 7101, 7102].into_iter().map(|p| net.listen_peer(p)).collect();
    net.nft(
        &net.peer,
        "table inet fw { chain input { type filter hook input priority 0; policy accept;
           tcp dport 7101 drop
           tcp dport 7102 reject with tcp reset
         }
       }",
    );
    let peer = PEER_IP.to_string();
    let results = net.block_on_client(move || async move {
        vec![
            probe_result("open-7100", tcp(&peer, 7100), Duration::from_secs(2)).await,
            probe_result("drop-7101", tcp(&peer, 7101), Duration::from_millis(600)).await,
            probe_result("reject-7102", tcp(&peer, 7102), Duration::from_secs(2)).await,
        ]
    });
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(codes, ["success", "connect/timeout", "connect/refused"]);
    assert_eq!(
        verdict_for(&results, "drop-7101").text,
        "TCP to 7101 on 10.201.0.2 is silently dropped (connect/timeout): a firewall DROP rule"
    );
    assert_eq!(verdict_for(&results, "reject-7102").rule, "rejected");
    assert_eq!(verdicts(&results).last().map(String::as_str), Some("1 of 3 probes pass"));
}

#[tokio::test]
async fn unknown_ca_is_untrusted_and_names_the_proxy_ca() {
    let pki = Pki::new();
    let proxy_ca = TestCa::new("Corp Proxy CA");
    let server = tls_server(proxy_ca.leaf(&["127.0.0.1"], None).rustls_server_config(Some(&proxy_ca), &[])).await;
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
    let server = tls_server(pki.ca.leaf(&["127.0.0.1"], None).rustls_server_config(Some(&pki.ca), &[])).await;
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
    let expired = tls_server(
        pki.ca
            .leaf(&["127.0.0.1"], Some((now() - 10 * 86400, now() - 86400)))
            .rustls_server_config(Some(&pki.ca), &[]),
    )
    .await;
    let wrong = tls_server(pki.ca.leaf(&["other.example.test"], None).rustls_server_config(Some(&pki.ca), &[])).await;
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
    ];
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["resolve/nxdomain", "resolve/servfail", "resolve/timeout"]
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
    let tls = tls_server(pki.ca.leaf(&["127.0.0.1"], None).rustls_server_config(Some(&pki.ca), &[])).await;
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
