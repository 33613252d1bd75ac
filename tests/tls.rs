//! `kind: tls` against an in-process tokio-rustls server presenting rcgen certificates.
//! Each test starts its own server on its own port and stops it when the test ends.
mod common;

use common::certs::now;
use common::tls_server::{serve, serve_on, Seen};

use common::outcome::{code, phases, run};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::certs::{Leaf, TestCa};
use egress_probe::config::{AddressMode, HostPort, ProbeSpec, TlsOptions, TlsSpec, TlsVersion};
use egress_probe::outcome::Phase;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

fn server_config_with_versions(
    leaf: &Leaf,
    chain: Option<&TestCa>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut certs = vec![CertificateDer::from(leaf.cert_der.clone())];
    if let Some(ca) = chain {
        certs.push(CertificateDer::from(ca.cert_der.clone()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

fn spec(port: u16, ca_file: &Path, tweak: impl FnOnce(&mut TlsOptions)) -> ProbeSpec {
    let mut tls = TlsOptions {
        ca_file: Some(ca_file.to_path_buf()),
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

/// Trusted CA, a leaf for 127.0.0.1 valid for `days`, and the CA written to a temp dir.
struct Lab {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Egress Test Root");
        ca.write_ca(dir.path());
        Lab { ca, dir }
    }
    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

#[tokio::test]
async fn valid_chain_passes_with_version_expiry_issuer_and_close_notify() {
    let lab = Lab::new();
    let not_after = now() + 10 * 86400;
    let leaf = lab.ca.leaf(&["relay.example.test", "127.0.0.1"], Some((now() - 3600, not_after)));
    let mut server = serve(leaf.rustls_server_config(Some(&lab.ca), &["h2"])).await;
    let s = spec(server.port, &lab.ca_file(), |t| t.alpn = vec!["h2".into()]);
    let o = run(&s, Duration::from_secs(3)).await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(phases(&o), vec![Phase::Resolve, Phase::Connect, Phase::Tls]);
    let tls = o.detail.tls.as_ref().expect("tls details");
    assert_eq!(tls.version, "TLSv1.3");
    assert_eq!(tls.alpn.as_deref(), Some("h2"));
    assert_eq!(tls.earliest_expiry_unix, Some(not_after), "expiry must be the leaf's notAfter");
    assert_eq!(tls.issuer, "CN=Egress Test Root");
    assert_eq!(tls.subject, "CN=relay.example.test");
    assert_eq!(tls.chain_len, 2);
    assert_eq!(tls.pin_matched, None);
    assert_eq!(o.detail.peer.map(|p| p.port()), Some(server.port));
    let seen = tokio::time::timeout(Duration::from_secs(3), server.seen.recv()).await.unwrap();
    assert!(matches!(seen, Some(Seen::Closed { clean: true })), "server saw {seen:?}");
}

#[tokio::test]
async fn unknown_ca_is_untrusted_issuer_naming_the_issuer() {
    let lab = Lab::new();
    let rogue = TestCa::new("Corp Inspection CA");
    let leaf = rogue.leaf(&["127.0.0.1"], None);
    let _server = serve(leaf.rustls_server_config(Some(&rogue), &[])).await;
    let o = run(&spec(_server.port, &lab.ca_file(), |_| {}), Duration::from_secs(3)).await;
    assert_eq!(code(&o), "tls/untrusted_issuer", "{o:?}");
    let tls = o.detail.tls.as_ref().expect("tls details on failure");
    assert_eq!(tls.issuer, "CN=Corp Inspection CA");
}

#[tokio::test]
async fn expired_chain_is_expired() {
    let lab = Lab::new();
    let leaf = lab.ca.leaf(&["127.0.0.1"], Some((now() - 10 * 86400, now() - 86400)));
    let server = serve(leaf.rustls_server_config(Some(&lab.ca), &[])).await;
    let o = run(&spec(server.port, &lab.ca_file(), |_| {}), Duration::from_secs(3)).await;
    assert_eq!(code(&o), "tls/expired", "{o:?}");
    assert!(o.detail.tls.as_ref().unwrap().earliest_expiry_unix.unwrap() < now());
}

#[tokio::test]
async fn wrong_name_is_name_mismatch() {
    let lab = Lab::new();
    let leaf = lab.ca.leaf(&["relay.example.test", "127.0.0.1"], None);
    let server = serve(leaf.rustls_server_config(Some(&lab.ca), &[])).await;
    let o = run(
        &spec(server.port, &lab.ca_file(), |t| t.server_name = Some("turn.other.test".into())),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "tls/name_mismatch", "{o:?}");
}

fn spki_sha256(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    Sha256::digest(cert.tbs_certificate.subject_pki.raw).to_vec()
}

#[tokio::test]
async fn trusted_chain_with_wrong_pin_is_pin_mismatch() {
    let lab = Lab::new();
    let leaf = lab.ca.leaf(&["127.0.0.1"], None);
    let server = serve(leaf.rustls_server_config(Some(&lab.ca), &[])).await;
    let other = lab.ca.leaf(&["127.0.0.1"], None);
    let wrong = hex::encode(spki_sha256(&other.cert_der));
    let o = run(
        &spec(server.port, &lab.ca_file(), |t| t.pin_sha256 = vec![wrong]),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "tls/pin_mismatch", "{o:?}");
    assert_eq!(o.detail.tls.as_ref().unwrap().pin_matched, Some(false));
}

#[tokio::test]
async fn right_pin_passes_in_hex_and_base64() {
    let lab = Lab::new();
    let leaf = lab.ca.leaf(&["127.0.0.1"], None);
    let server = serve(leaf.rustls_server_config(Some(&lab.ca), &[])).await;
    let digest = spki_sha256(&leaf.cert_der);
    for pin in [hex::encode(&digest), base64::engine::general_purpose::STANDARD.encode(&digest)] {
        let o = run(
            &spec(server.port, &lab.ca_file(), |t| t.pin_sha256 = vec![pin.clone()]),
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(code(&o), "success", "pin {pin}: {o:?}");
        assert_eq!(o.detail.tls.as_ref().unwrap().pin_matched, Some(true));
    }
    // A pin of the CA (anywhere in the chain) also matches.
    let ca_pin = hex::encode(spki_sha256(&lab.ca.cert_der));
    let o = run(
        &spec(server.port, &lab.ca_file(), |t| t.pin_sha256 = vec![ca_pin]),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "success", "{o:?}");
}

#[tokio::test]
async fn silent_server_is_tls_timeout_at_the_deadline() {
    let lab = Lab::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // accept and never speak
        }
    });
    let timeout = Duration::from_millis(600);
    let o = run(&spec(port, &lab.ca_file(), |_| {}), timeout).await;
    holder.abort();
    assert_eq!(code(&o), "tls/timeout", "{o:?}");
    assert!(o.total >= timeout - Duration::from_millis(20), "ended early: {:?}", o.total);
    assert!(o.total <= timeout + Duration::from_millis(150), "ended late: {:?}", o.total);
}

#[tokio::test]
async fn alpn_not_offered_by_server_is_alpn() {
    let lab = Lab::new();
    let leaf = lab.ca.leaf(&["127.0.0.1"], None);
    // Server without ALPN: handshake completes, but nothing was selected.
    let mut none = serve(leaf.rustls_server_config(Some(&lab.ca), &[])).await;
    let o = run(
        &spec(none.port, &lab.ca_file(), |t| t.alpn = vec!["h2".into()]),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "tls/alpn", "{o:?}");
    let seen = tokio::time::timeout(Duration::from_secs(3), none.seen.recv()).await.unwrap();
    assert!(matches!(seen, Some(Seen::Closed { clean: true })), "server saw {seen:?}");
    // Server with other ALPN protocols: it refuses with a no_application_protocol alert.
    let mut other = serve(leaf.rustls_server_config(Some(&lab.ca), &["http/1.1"])).await;
    let o = run(
        &spec(other.port, &lab.ca_file(), |t| t.alpn = vec!["h2".into()]),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "tls/alpn", "{o:?}");
    match tokio::time::timeout(Duration::from_secs(3), other.seen.recv()).await.unwrap() {
        Some(Seen::HandshakeFailed(e)) => assert!(e.contains("protocol"), "server error: {e}"),
        seen => panic!("server saw {seen:?}"),
    }
}

#[tokio::test]
async fn min_version_13_against_tls12_only_server_is_version() {
    let lab = Lab::new();
    let leaf = lab.ca.leaf(&["127.0.0.1"], None);
    let server = serve(server_config_with_versions(&leaf, Some(&lab.ca), &[&rustls::version::TLS12])).await;
    let o = run(
        &spec(server.port, &lab.ca_file(), |t| t.min_version = Some(TlsVersion::Tls13)),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "tls/version", "{o:?}");
    // Without the minimum, the same server passes on TLS 1.2.
    let o = run(&spec(server.port, &lab.ca_file(), |_| {}), Duration::from_secs(3)).await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(o.detail.tls.as_ref().unwrap().version, "TLSv1.2");
}

#[tokio::test]
async fn closed_port_is_connect_refused_before_tls() {
    let lab = Lab::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = run(&spec(port, &lab.ca_file(), |_| {}), Duration::from_secs(2)).await;
    assert_eq!(code(&o), "connect/refused", "{o:?}");
    assert_eq!(phases(&o), vec![Phase::Resolve, Phase::Connect]);
}

#[tokio::test]
async fn unreadable_ca_file_is_a_config_failure() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&spec(443, &dir.path().join("missing.pem"), |_| {}), Duration::from_secs(2)).await;
    assert_eq!(code(&o), "tls/config", "{o:?}");
}

#[test]
fn addresses_all_checks_each_address_and_reports_its_chain() {
    // pool.example.test → 127.0.0.1 (valid certificate) and 127.0.0.2 (expired), same port,
    // names from a private /etc/hosts (bind-mounted in a private mount namespace).
    let lab = Lab::new();
    let good_expiry = now() + 5 * 86400;
    let good = lab.ca.leaf(&["pool.example.test"], Some((now() - 3600, good_expiry)));
    let expired = lab.ca.leaf(&["pool.example.test"], Some((now() - 10 * 86400, now() - 86400)));
    let ca_file = lab.ca_file();
    let (good_cfg, expired_cfg) = (
        good.rustls_server_config(Some(&lab.ca), &[]),
        expired.rustls_server_config(Some(&lab.ca), &[]),
    );
    let o = common::netns::NetPair::with_hosts_file("127.0.0.1 pool.example.test\n127.0.0.2 pool.example.test\n", move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l1.local_addr().unwrap().port();
            let l2 = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
            let _s1 = serve_on(l1, good_cfg);
            let _s2 = serve_on(l2, expired_cfg);
            let spec = ProbeSpec::Tls(TlsSpec {
                target: HostPort {
                    host: "pool.example.test".into(),
                    port,
                },
                addresses: AddressMode::All,
                tls: TlsOptions {
                    ca_file: Some(ca_file),
                    ..Default::default()
                },
            });
            run(&spec, Duration::from_secs(3)).await
        })
    });
    assert_eq!(code(&o), "tls/expired", "{o:?}");
    let r = &o.detail.per_address;
    assert_eq!(r.len(), 2, "{o:?}");
    assert!(r[0].success, "{r:?}");
    assert_eq!(r[0].tls.as_ref().unwrap().earliest_expiry_unix, Some(good_expiry));
    assert_eq!(r[1].failure.as_ref().map(|f| f.code()).as_deref(), Some("tls/expired"));
    assert!(o.failure.as_ref().unwrap().message.contains("127.0.0.2"));
    // The run's own TLS detail is the chain that expires first (what the expiry alert needs).
    assert!(o.detail.tls.as_ref().unwrap().earliest_expiry_unix.unwrap() < now());
}

/// A certificate made the way coturn's docs make one: `openssl req -x509` (self-signed, and
/// OpenSSL's default `v3_ca` section marks it CA:TRUE), for 127.0.0.1. Returns (cert PEM path,
/// rustls server config presenting it).
fn openssl_self_signed(dir: &Path, cn: &str, san: &str) -> (std::path::PathBuf, Arc<rustls::ServerConfig>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = dir.join(format!("{cn}.pem"));
    let key = dir.join(format!("{cn}.key"));
    let status = std::process::Command::new("timeout")
        .arg("30")
        .args([
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-addext")
        .arg(format!("subjectAltName={san}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl req -x509 failed: {status}");
    let text = std::process::Command::new("timeout")
        .args(["10", "openssl", "x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "the test certificate must be CA:TRUE like coturn's"
    );
    let chain = vec![CertificateDer::from_pem_file(&cert).expect("cert pem")];
    let key = PrivateKeyDer::from_pem_file(&key).expect("key pem");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (cert, Arc::new(cfg))
}

fn assert_readable(msg: &str) {
    for dump in ["CaUsedAsEndEntity", "Other(", "OtherError", "InvalidCertificate", "{", "::"] {
        assert!(!msg.contains(dump), "message is a Debug dump ({dump}): {msg}");
    }
}

#[tokio::test]
async fn self_signed_ca_true_certificate_in_ca_file_is_trusted_as_the_servers_own() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, cfg) = openssl_self_signed(dir.path(), "turn.example.test", "DNS:turn.example.test,IP:127.0.0.1");
    let mut server = serve(cfg).await;
    let o = run(&spec(server.port, &cert, |_| {}), Duration::from_secs(3)).await;
    assert_eq!(code(&o), "success", "{o:?}");
    let tls = o.detail.tls.as_ref().expect("tls details");
    assert_eq!(tls.issuer, "CN=turn.example.test");
    assert!(tls.issuer_configured, "the leaf is the configured anchor: {tls:?}");
    let seen = tokio::time::timeout(Duration::from_secs(3), server.seen.recv()).await.unwrap();
    assert!(matches!(seen, Some(Seen::Closed { clean: true })), "server saw {seen:?}");
}

#[tokio::test]
async fn self_signed_anchor_is_still_checked_for_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, cfg) = openssl_self_signed(dir.path(), "turn.example.test", "DNS:turn.example.test,IP:127.0.0.1");
    let server = serve(cfg).await;
    let o = run(
        &spec(server.port, &cert, |t| t.server_name = Some("turn.other.test".into())),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(code(&o), "tls/name_mismatch", "{o:?}");
    assert_readable(&o.failure.as_ref().unwrap().message);
}

#[tokio::test]
async fn self_signed_ca_certificate_not_in_ca_file_is_untrusted_with_a_readable_message() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = openssl_self_signed(dir.path(), "turn.example.test", "IP:127.0.0.1");
    let server = serve(cfg).await;
    let o = run(&spec(server.port, &lab.ca_file(), |_| {}), Duration::from_secs(3)).await;
    assert_eq!(code(&o), "tls/untrusted_issuer", "{o:?}");
    let msg = &o.failure.as_ref().unwrap().message;
    assert_readable(msg);
    assert!(msg.contains("CA:TRUE") && msg.contains("ca_file"), "{msg}");
    assert!(msg.contains("turn.example.test"), "the message names the issuer: {msg}");
    assert!(!o.detail.tls.as_ref().unwrap().issuer_configured, "{o:?}");
}

#[tokio::test]
async fn untrusted_chain_from_a_configured_issuer_name_is_marked_configured() {
    // Same issuer name as the configured CA, different key (the CA was re-issued, or the wrong
    // ca_file was deployed): untrusted, but a configuration problem, not interception.
    let lab = Lab::new();
    let reissued = TestCa::new("Egress Test Root");
    let leaf = reissued.leaf(&["127.0.0.1"], None);
    let server = serve(leaf.rustls_server_config(None, &[])).await;
    let o = run(&spec(server.port, &lab.ca_file(), |_| {}), Duration::from_secs(3)).await;
    assert_eq!(code(&o), "tls/untrusted_issuer", "{o:?}");
    assert_readable(&o.failure.as_ref().unwrap().message);
    assert!(o.detail.tls.as_ref().unwrap().issuer_configured, "{o:?}");
}
