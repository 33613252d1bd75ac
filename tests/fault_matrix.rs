//! Hostile servers, one per scenario, each a real socket on loopback: every probe must stop at
//! the right phase with the right reason, and within `timeout + 150 ms` — nothing a peer does
//! may hang a run or panic it. Servers are tasks of the test's runtime (stopped with it) or
//! sockets owned by the scenario (closed on drop).
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use common::outcome::code;
use egress_probe::config::{parse_str, ProbeSpec};
use egress_probe::outcome::Outcome;
use egress_probe::probe::{self, ProbeContext};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_millis(1000);
const SLACK: Duration = Duration::from_millis(150);

fn spec(yaml: &str) -> ProbeSpec {
    let text = format!("probes:\n  - name: p\n{yaml}");
    parse_str(&text, "matrix.yaml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .probes
        .remove(0)
        .spec
}

async fn run(spec: &ProbeSpec) -> Outcome {
    probe::run(spec, &ProbeContext::with_timeout(TIMEOUT, None)).await
}

/// Runs `yaml`'s probe and checks its code is one of `want` and that it ended in time.
async fn expect(name: &str, yaml: &str, want: &[&str]) {
    let o = run(&spec(yaml)).await;
    let got = code(&o);
    eprintln!("{name}: {got} in {:?}", o.total);
    assert!(want.contains(&got.as_str()), "{name}: got {got}, want one of {want:?}: {o:?}");
    assert!(o.total <= TIMEOUT + SLACK, "{name}: took {:?}", o.total);
    if let Some(f) = &o.failure {
        assert!(
            !f.message.contains("Other(") && !f.message.contains("{ "),
            "{name}: Debug dump: {}",
            f.message
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile TCP servers.

#[derive(Clone, Copy)]
enum Tcp {
    /// Accepts and never says anything.
    Silent,
    /// One byte of garbage per second.
    Drip,
    /// Garbage at once, then silence.
    Garbage,
    /// Reads the first bytes (a ClientHello, a request), then FIN.
    FinAfterFirst,
    /// Reads the first bytes, then RST.
    RstAfterFirst,
    /// Reads the request head, writes these bytes, then stays silent.
    Answer(&'static [u8]),
    /// Reads the WebSocket upgrade, completes it properly, then does `WsAfter`.
    Upgrade(WsAfter),
    /// Reads the upgrade and answers 101 with a wrong Sec-WebSocket-Accept.
    BadAccept,
}

#[derive(Clone, Copy)]
enum WsAfter {
    /// Never answers pings (reads nothing more).
    Deaf,
    /// Sends a close frame with code 1011 at once.
    Close1011,
}

async fn tcp_server(kind: Tcp) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(handle(s, kind));
        }
    });
    addr
}

async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    buf
}

async fn handle(mut s: TcpStream, kind: Tcp) {
    let hold = Duration::from_secs(5);
    match kind {
        Tcp::Silent => tokio::time::sleep(hold).await,
        Tcp::Drip => {
            for _ in 0..5 {
                if s.write_all(b"\x17").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Tcp::Garbage => {
            let _ = s.write_all(&[0x42; 512]).await;
            tokio::time::sleep(hold).await;
        }
        Tcp::FinAfterFirst => {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s.shutdown().await;
            tokio::time::sleep(hold).await;
        }
        Tcp::RstAfterFirst => {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s.set_zero_linger();
            drop(s);
        }
        Tcp::Answer(bytes) => {
            read_head(&mut s).await;
            let _ = s.write_all(bytes).await;
            tokio::time::sleep(hold).await;
        }
        Tcp::Upgrade(after) => {
            let head = read_head(&mut s).await;
            let key = String::from_utf8_lossy(&head)
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            let accept = base64::engine::general_purpose::STANDARD
                .encode(Sha1::digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes()));
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let _ = s.write_all(resp.as_bytes()).await;
            match after {
                WsAfter::Deaf => tokio::time::sleep(hold).await,
                WsAfter::Close1011 => {
                    // FIN + close opcode, payload: status 1011 + reason.
                    let _ = s.write_all(&[0x88, 0x06, 0x03, 0xF3, b'o', b'o', b'p', b's']).await;
                    tokio::time::sleep(hold).await;
                }
            }
        }
        Tcp::BadAccept => {
            read_head(&mut s).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
                )
                .await;
            tokio::time::sleep(hold).await;
        }
    }
}

fn tls_yaml(a: SocketAddr) -> String {
    format!("    kind: tls\n    target: {a}\n")
}
fn http_yaml(a: SocketAddr) -> String {
    format!("    kind: http\n    url: http://{a}/\n")
}
fn ws_yaml(a: SocketAddr) -> String {
    format!("    kind: websocket\n    url: ws://{a}/\n    ping: 1\n")
}

#[tokio::test]
async fn tls_against_hostile_servers() {
    let cases: [(&str, Tcp, &[&str]); 5] = [
        ("tls never speaks", Tcp::Silent, &["tls/timeout"]),
        ("tls one byte per second", Tcp::Drip, &["tls/timeout"]),
        ("tls garbage", Tcp::Garbage, &["tls/handshake"]),
        ("tls FIN after ClientHello", Tcp::FinAfterFirst, &["tls/closed"]),
        ("tls RST after ClientHello", Tcp::RstAfterFirst, &["tls/reset"]),
    ];
    for (name, kind, want) in cases {
        let a = tcp_server(kind).await;
        expect(name, &tls_yaml(a), want).await;
    }
}

#[tokio::test]
async fn http_against_hostile_servers() {
    let cases: [(&str, Tcp, &[&str]); 7] = [
        (
            "http 408",
            Tcp::Answer(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"),
            &["request/status_408"],
        ),
        (
            "http 429",
            Tcp::Answer(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"),
            &["request/status_429"],
        ),
        (
            "http 503",
            Tcp::Answer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
            &["request/status_503"],
        ),
        (
            "http stalled body",
            Tcp::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc"),
            &["body/timeout"],
        ),
        ("http silent", Tcp::Silent, &["request/timeout"]),
        ("http garbage", Tcp::Garbage, &["request/bad_response"]),
        ("http RST after request", Tcp::RstAfterFirst, &["request/reset"]),
    ];
    for (name, kind, want) in cases {
        let a = tcp_server(kind).await;
        expect(name, &http_yaml(a), want).await;
    }
}

#[tokio::test]
async fn websocket_against_hostile_servers() {
    let cases: [(&str, Tcp, &[&str]); 6] = [
        (
            "ws 200 instead of 101",
            Tcp::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            &["upgrade/not_upgraded"],
        ),
        ("ws bad accept key", Tcp::BadAccept, &["upgrade/bad_response"]),
        ("ws silent pings", Tcp::Upgrade(WsAfter::Deaf), &["ping/timeout"]),
        ("ws close 1011", Tcp::Upgrade(WsAfter::Close1011), &["ping/closed"]),
        ("ws silent upgrade", Tcp::Silent, &["upgrade/timeout"]),
        (
            "ws 403",
            Tcp::Answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
            &["upgrade/status_403"],
        ),
    ];
    for (name, kind, want) in cases {
        let a = tcp_server(kind).await;
        expect(name, &ws_yaml(a), want).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile STUN/TURN servers over UDP.

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

#[derive(Clone, Copy)]
enum Udp {
    Silent,
    Garbage,
    /// A success response with another transaction id.
    WrongTxid,
    /// A success response whose attribute claims more bytes than the message has.
    TruncatedAttribute,
    /// TURN: 401 with REALM and NONCE to the first Allocate, then this error code.
    Allocate401Then(u16),
}

fn stun_msg(kind: u16, txid: &[u8], attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(txid);
    m.extend_from_slice(attrs);
    m
}

fn attr(t: u16, v: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&t.to_be_bytes());
    a.extend_from_slice(&(v.len() as u16).to_be_bytes());
    a.extend_from_slice(v);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

fn error_code(code: u16) -> Vec<u8> {
    let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    v.extend_from_slice(b"no");
    attr(0x0009, &v)
}

async fn udp_server(kind: Udp) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        for _ in 0..64 {
            let Ok((n, peer)) = s.recv_from(&mut buf).await else { return };
            if n < 20 {
                continue;
            }
            let txid = buf[8..20].to_vec();
            let method = u16::from_be_bytes([buf[0], buf[1]]) & 0x3EEF;
            let reply = match kind {
                Udp::Silent => continue,
                Udp::Garbage => vec![0x99; 40],
                Udp::WrongTxid => {
                    let xor = attr(0x0020, &[0, 1, 0x21 ^ 0x12, 0x34, 0x7f ^ 0x21, 0x12, 0xA4, 0x43]);
                    stun_msg(0x0101, &[7u8; 12], &xor)
                }
                Udp::TruncatedAttribute => {
                    let mut m = stun_msg(0x0101, &txid, &[0x00, 0x20, 0x00, 0x40, 1, 2, 3, 4]);
                    m[2..4].copy_from_slice(&8u16.to_be_bytes());
                    m
                }
                Udp::Allocate401Then(code) => {
                    let has_integrity = buf[20..n].windows(2).step_by(1).any(|w| w == [0x00, 0x08]);
                    let class_err = 0x0110 | method;
                    if method != 0x0003 {
                        // Refresh (dealloc) or anything else: a plain error.
                        stun_msg(class_err, &txid, &error_code(400))
                    } else if !has_integrity {
                        let mut a = error_code(401);
                        a.extend(attr(0x0014, b"example.test"));
                        a.extend(attr(0x0015, b"nonce-123"));
                        stun_msg(class_err, &txid, &a)
                    } else {
                        let mut a = error_code(code);
                        if code == 438 {
                            a.extend(attr(0x0014, b"example.test"));
                            a.extend(attr(0x0015, b"nonce-456"));
                        }
                        stun_msg(class_err, &txid, &a)
                    }
                }
            };
            let _ = s.send_to(&reply, peer).await;
        }
    });
    (addr, task)
}

fn stun_yaml(a: SocketAddr) -> String {
    format!("    kind: stun\n    server: stun:{a}\n    count: 1\n")
}
fn turn_yaml(a: SocketAddr) -> String {
    format!("    kind: turn\n    server: turn:{a}?transport=udp\n    credentials: {{ username: u, password: p }}\n    count: 1\n")
}

#[tokio::test]
async fn stun_against_hostile_servers() {
    let cases: [(&str, Udp, &[&str]); 4] = [
        ("stun silent", Udp::Silent, &["stun/timeout"]),
        ("stun garbage", Udp::Garbage, &["stun/bad_response"]),
        ("stun wrong transaction id", Udp::WrongTxid, &["stun/timeout"]),
        ("stun truncated attribute", Udp::TruncatedAttribute, &["stun/bad_response"]),
    ];
    for (name, kind, want) in cases {
        let (a, task) = udp_server(kind).await;
        expect(name, &stun_yaml(a), want).await;
        task.abort();
    }
}

#[tokio::test]
async fn turn_against_hostile_servers() {
    let cases: [(&str, Udp, &[&str]); 7] = [
        ("turn silent", Udp::Silent, &["allocate/timeout"]),
        ("turn 401 then 403", Udp::Allocate401Then(403), &["allocate/forbidden"]),
        ("turn 401 then 437", Udp::Allocate401Then(437), &["allocate/mismatch"]),
        ("turn 401 then 438 twice", Udp::Allocate401Then(438), &["allocate/stale_nonce"]),
        ("turn 401 then 441", Udp::Allocate401Then(441), &["allocate/wrong_credentials"]),
        ("turn 401 then 486", Udp::Allocate401Then(486), &["allocate/quota"]),
        ("turn 401 then 508", Udp::Allocate401Then(508), &["allocate/capacity"]),
    ];
    for (name, kind, want) in cases {
        let (a, task) = udp_server(kind).await;
        expect(name, &turn_yaml(a), want).await;
        task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile DNS servers.

fn dns_yaml(a: SocketAddr, name: &str) -> String {
    format!("    kind: dns\n    query: {name}\n    resolver: {a}\n")
}

/// Answers every query with its id changed (a spoofed or confused answer).
async fn wrong_id_dns() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        for _ in 0..64 {
            let Ok((n, peer)) = s.recv_from(&mut buf).await else { return };
            if n < 12 {
                continue;
            }
            let mut r = buf[..n].to_vec();
            r[0] ^= 0xFF;
            r[2] |= 0x80; // QR = response
            let _ = s.send_to(&r, peer).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn dns_against_hostile_servers() {
    let both = common::dns::DnsServer::start().await;
    expect("dns TC with TCP", &dns_yaml(both.addr, "big.example.test"), &["success"]).await;
    expect("dns SERVFAIL", &dns_yaml(both.addr, "servfail.example.test"), &["resolve/servfail"]).await;
    let udp_only = common::dns::DnsServer::start_udp_only().await;
    expect(
        "dns TC without TCP",
        &dns_yaml(udp_only.addr, "big.example.test"),
        &["resolve/truncated_tcp_refused"],
    )
    .await;
    let (a, task) = wrong_id_dns().await;
    // Wrong ids are ignored over UDP; TCP then is refused: the story is the UDP timeout.
    expect("dns wrong id", &dns_yaml(a, "relay.example.test"), &["resolve/timeout"]).await;
    task.abort();
    let silent = common::dns::SilentDns::start();
    expect("dns silent", &dns_yaml(silent.addr, "relay.example.test"), &["resolve/timeout"]).await;
}
