//! The responder against real clients: coturn's own `turnutils_uclient`/`turnutils_stunclient`
//! (UDP, TCP, TLS; long-term and REST credentials), a tokio-tungstenite WebSocket client, a
//! raw HTTPS client over rustls, and the binary itself under SIGTERM. After every client is
//! done, the responder's own /metrics must show nothing left open.
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_probe::config::Secret;
use egress_probe::responder::{Responder, ResponderConfig};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const USER: &str = "test";
const PASS: &str = "secret";
const REST_SECRET: &str = "labsecret";

async fn start() -> Responder {
    let mut cfg = ResponderConfig::loopback_ephemeral();
    cfg.users = BTreeMap::from([(USER.to_string(), Secret::literal(PASS))]);
    cfg.rest_secret = Some(Secret::literal(REST_SECRET));
    Responder::start(&cfg).await.expect("responder starts")
}

/// GET over plain HTTP, returns the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("metrics answer in time")
        .unwrap();
    out
}

/// The value of one sample line (`name{labels} value`) in exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls the responder's /metrics until `series` equals `want` (or 5 s pass); returns the text.
async fn wait_metric(r: &Responder, series: &str, want: f64) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = http_get(r.addrs.metrics.unwrap(), "/metrics").await;
        if sample(&text, series) == Some(want) || Instant::now() > end {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a coturn client bounded twice: timeout(1) kills it after 25 s (exit 124), and the
/// test gives up at 30 s. Returns its exit code and stdout+stderr.
async fn run_tool(program: &str, args: &[String]) -> (i32, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("timeout")
            .arg("25")
            .arg(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} did not finish in 30 s"))
    .unwrap_or_else(|e| panic!("cannot run {program}: {e} (scripts/test installs coturn)"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn uclient_args(extra: &[&str], port: u16) -> Vec<String> {
    let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    a.extend(["-y", "-n", "5", "-m", "1", "-l", "100", "-p"].iter().map(|s| s.to_string()));
    a.push(port.to_string());
    a.push("127.0.0.1".into());
    a
}

/// turnutils_uclient makes one allocation up front (a lifetime-777 "probe" session) that it
/// never releases with Refresh(0): coturn's own log shows the same session refreshed and left
/// to expire. So after a UDP uclient run exactly one allocation is legitimately alive; over
/// TCP/TLS it ends with its connection.
const UCLIENT_UNRELEASED: f64 = 1.0;

/// Asserts connections and WebSockets went back to 0 and live allocations to `udp_allocs`
/// (TCP/TLS to 0); returns the metrics text.
async fn assert_nothing_left(r: &Responder, udp_allocs: f64) -> String {
    for (t, want) in [("udp", udp_allocs), ("tcp", 0.0), ("tls", 0.0)] {
        let series = format!("egress_responder_turn_allocations_active{{transport=\"{t}\"}}");
        let text = wait_metric(r, &series, want).await;
        assert_eq!(sample(&text, &series), Some(want), "allocations over {t}:\n{text}");
    }
    for e in ["turn_tcp", "turn_tls", "web"] {
        let series = format!("egress_responder_connections_open{{endpoint=\"{e}\"}}");
        let text = wait_metric(r, &series, 0.0).await;
        assert_eq!(sample(&text, &series), Some(0.0), "{e} connections left open:\n{text}");
    }
    let text = wait_metric(r, "egress_responder_websockets_open", 0.0).await;
    assert_eq!(sample(&text, "egress_responder_websockets_open"), Some(0.0), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_stunclient_gets_a_binding_from_us_over_udp() {
    let r = start().await;
    let port = r.addrs.turn_udp[0].port();
    let (code, out) = run_tool("turnutils_stunclient", &["-p".into(), port.to_string(), "127.0.0.1".into()]).await;
    assert_eq!(code, 0, "{out}");
    // What we sent back: the client's own socket (a port its command line never named).
    let mapped = common::stunclient_reflexive(&out).unwrap_or_else(|| panic!("no mapped address in:\n{out}"));
    assert_eq!(mapped.ip().to_string(), "127.0.0.1", "{out}");
    assert_ne!(mapped.port(), port, "{out}");
    let text = wait_metric(
        &r,
        "egress_responder_turn_messages_total{method=\"binding\",transport=\"udp\"}",
        1.0,
    )
    .await;
    assert!(sample(&text, "egress_responder_turn_messages_total{method=\"binding\",transport=\"udp\"}").unwrap_or(0.0) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_relays_through_our_turn_over_udp_and_frees_allocations() {
    let r = start().await;
    let (code, out) = run_tool(
        "turnutils_uclient",
        &uclient_args(&["-u", USER, "-w", PASS], r.addrs.turn_udp[0].port()),
    )
    .await;
    assert_eq!(code, 0, "uclient failed against our UDP TURN:\n{out}");
    assert!(out.contains("Total lost packets 0"), "loss over loopback UDP:\n{out}");
    let text = assert_nothing_left(&r, UCLIENT_UNRELEASED).await;
    // Two clients x (RTP + RTCP) allocations, each released with Refresh(0).
    assert_eq!(
        sample(&text, "egress_responder_turn_allocations_closed_total{transport=\"udp\"}"),
        Some(4.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_relays_through_our_turn_over_tcp() {
    let r = start().await;
    let (code, out) = run_tool(
        "turnutils_uclient",
        &uclient_args(&["-t", "-u", USER, "-w", PASS], r.addrs.turn_tcp[0].port()),
    )
    .await;
    assert_eq!(code, 0, "uclient -t failed against our TCP TURN:\n{out}");
    assert!(out.contains("Total lost packets 0"), "loss over loopback TCP:\n{out}");
    let text = assert_nothing_left(&r, 0.0).await;
    assert!(
        sample(&text, "egress_responder_connections_total{endpoint=\"turn_tcp\"}").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "egress_responder_turn_allocations_closed_total{transport=\"tcp\"}").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_relays_through_our_turn_over_tls() {
    let r = start().await;
    let ca = r.tls.ca_file.clone().unwrap();
    let (code, out) = run_tool(
        "turnutils_uclient",
        &uclient_args(
            &["-t", "-S", "-E", ca.to_str().unwrap(), "-u", USER, "-w", PASS],
            r.addrs.turn_tls[0].port(),
        ),
    )
    .await;
    assert_eq!(code, 0, "uclient -t -S failed against our TLS TURN:\n{out}");
    assert!(out.contains("Total transmit time"), "{out}");
    let text = assert_nothing_left(&r, 0.0).await;
    assert!(
        sample(&text, "egress_responder_connections_total{endpoint=\"turn_tls\"}").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    // (uclient first tries TLS 1.0/1.1 contexts, which rustls refuses: handshake failures
    // here are expected and not asserted.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_credentials_are_accepted_and_wrong_passwords_refused() {
    let r = start().await;
    let port = r.addrs.turn_udp[0].port();
    let (code, out) = run_tool("turnutils_uclient", &uclient_args(&["-u", "alice", "-W", REST_SECRET], port)).await;
    assert_eq!(code, 0, "uclient with REST secret failed:\n{out}");
    // Refused with 401 (RFC 8489 §9.2.4), what coturn answers too: not the turn crate's 400,
    // which clients do not read as "credentials refused". (uclient exits 0 either way.)
    let (code, out) = run_tool("turnutils_uclient", &uclient_args(&["-u", "alice", "-W", "not-the-secret"], port)).await;
    assert!(
        out.contains("error 401") && !out.contains("error 400"),
        "a wrong REST secret must get 401 (exit {code}):\n{out}"
    );
    assert!(!out.contains("Total lost packets"), "no relay with a wrong secret:\n{out}");
    let (code, out) = run_tool("turnutils_uclient", &uclient_args(&["-u", USER, "-w", "wrong"], port)).await;
    assert!(
        out.contains("error 401") && !out.contains("error 400"),
        "a wrong password must get 401 (exit {code}):\n{out}"
    );
    assert_nothing_left(&r, UCLIENT_UNRELEASED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_reaches_our_udp_echo_peer_through_our_relay() {
    let r = start().await;
    let echo = r.addrs.udp_echo[0];
    let args: Vec<String> = [
        "-u",
        USER,
        "-w",
        PASS,
        "-n",
        "5",
        "-m",
        "1",
        "-l",
        "100",
        "-c",
        "-e",
        "127.0.0.1",
        "-r",
        &echo.port().to_string(),
        "-p",
        &r.addrs.turn_udp[0].port().to_string(),
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, out) = run_tool("turnutils_uclient", &args).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Total lost packets 0"), "{out}");
    let text = assert_nothing_left(&r, UCLIENT_UNRELEASED).await;
    assert!(
        sample(&text, "egress_responder_udp_echo_datagrams_total").unwrap_or(0.0) >= 5.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_turn_probe_reads_wrong_credentials_as_allocate_auth_on_every_transport() {
    let r = start().await;
    let ca = r.tls.ca_file.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    let (udp, tcp, tls) = (r.addrs.turn_udp[0].port(), r.addrs.turn_tcp[0].port(), r.addrs.turn_tls[0].port());
    std::fs::write(
        &path,
        format!(
            "defaults: {{ timeout: 5s }}\nprobes:\n  - {{ name: udp, kind: turn, server: 'turn:127.0.0.1:{udp}', credentials: {{ username: {USER}, password: wrong }} }}\n  - {{ name: tcp, kind: turn, server: 'turn:127.0.0.1:{tcp}?transport=tcp', credentials: {{ rest_secret: not-the-secret }} }}\n  - {{ name: tls, kind: turn, server: 'turns:127.0.0.1:{tls}?transport=tcp', ca_file: {ca}, credentials: {{ username: nobody, password: {PASS} }} }}\n  - {{ name: good, kind: turn, server: 'turn:127.0.0.1:{udp}', credentials: {{ username: {USER}, password: {PASS} }} }}\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new("timeout")
        .arg("30")
        .arg(common::bin())
        .args(["check", "-o", "json", "--config"])
        .arg(&path)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let report: egress_probe::report::Report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let codes: Vec<(String, String)> = report
        .results
        .iter()
        .map(|x| {
            (
                x.name.clone(),
                x.outcome.failure.as_ref().map(|f| f.code()).unwrap_or_else(|| "pass".into()),
            )
        })
        .collect();
    let want = [
        ("udp", "allocate/auth"),
        ("tcp", "allocate/auth"),
        ("tls", "allocate/auth"),
        ("good", "pass"),
    ];
    assert_eq!(codes, want.map(|(a, b)| (a.to_string(), b.to_string())), "exit {:?}", out.status);
    assert_eq!(out.status.code(), Some(1));
    assert_nothing_left(&r, 0.0).await;
}

fn tls_connector(r: &Responder) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(r.tls.ca_file.as_ref().unwrap()).unwrap();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap()).collect()
}

async fn https_request(r: &Responder, path: &str) -> String {
    let addr = r.addrs.web[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tls_connector(r)
        .connect(name, tcp)
        .await
        .expect("TLS to our HTTPS trusts the printed CA");
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_200_and_requested_status_codes() {
    let r = start().await;
    let root = https_request(&r, "/").await;
    assert!(root.starts_with("HTTP/1.1 200"), "{root}");
    let busy = https_request(&r, "/status/429").await;
    assert!(busy.starts_with("HTTP/1.1 429"), "{busy}");
    assert!(busy.to_ascii_lowercase().contains("retry-after: 5"), "{busy}");
    let text = assert_nothing_left(&r, 0.0).await;
    assert_eq!(
        sample(&text, "egress_responder_http_responses_total{code=\"200\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "egress_responder_connections_total{endpoint=\"web\"}"),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_answers_pings_and_closes_cleanly() {
    let r = start().await;
    let addr = r.addrs.web[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_connector(&r).connect(name, tcp).await.unwrap();
    let req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("wss://localhost:{}/echo", addr.port()))
            .unwrap();
    let mut req = req;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.expect("upgrade");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "sip");
    let open = wait_metric(&r, "egress_responder_websockets_open", 1.0).await;
    assert_eq!(sample(&open, "egress_responder_websockets_open"), Some(1.0), "{open}");

    ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"p1".to_vec().into()));
    ws.send(Message::Text("hello responder".into())).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::Text("hello responder".into()));

    ws.close(None).await.unwrap();
    // The server answers our close frame; then the stream ends.
    let mut got_close = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        match m {
            Ok(Message::Close(_)) => got_close = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(got_close, "server did not answer the close frame");
    let text = assert_nothing_left(&r, 0.0).await;
    assert_eq!(sample(&text, "egress_responder_websockets_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "egress_responder_websocket_messages_total"), Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_websockets_with_going_away() {
    let r = start().await;
    let addr = r.addrs.web[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tls_connector(&r)
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), tls)
        .await
        .unwrap();
    wait_metric(&r, "egress_responder_websockets_open", 1.0).await;
    r.shutdown().await;
    let m = tokio::time::timeout(Duration::from_secs(3), ws.next())
        .await
        .expect("close frame in time");
    match m {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a 1001 close frame, got {other:?}"),
    }
}

#[test]
fn binary_prints_endpoints_and_trust_and_exits_0_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::proc::ChildGuard::spawn(
        "egress-probe responder",
        std::process::Command::new(common::bin())
            .args([
                "responder",
                "--bind",
                "127.0.0.1",
                "--turn-udp",
                "0",
                "--turn-tcp",
                "0",
                "--turn-tls",
                "0",
                "--web",
                "0",
                "--udp-echo",
                "0",
                "--metrics",
                "127.0.0.1:0",
                "--user",
                "test:env:EGRESS_RESPONDER_TEST_PASS",
                "--tls-dir",
                dir.path().to_str().unwrap(),
            ])
            .env("EGRESS_RESPONDER_TEST_PASS", "secret")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    );
    let stdout = child.child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut summary = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        summary.push_str(&line);
        summary.push('\n');
        if line.contains("pin_sha256") {
            break;
        }
    }
    assert!(
        summary.contains(&format!("TLS ca_file            {}", dir.path().join("ca.pem").display())),
        "{summary}"
    );
    assert!(!summary.contains("secret"), "a password reached stdout:\n{summary}");
    let udp_port: u16 = summary
        .lines()
        .find(|l| l.contains("STUN/TURN udp"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .expect("udp port in summary");
    // Bounded: against a dead port turnutils_stunclient retries forever.
    let out = std::process::Command::new("timeout")
        .args(["10", "turnutils_stunclient", "-p", &udp_port.to_string(), "127.0.0.1"])
        .output()
        .expect("timeout(1) and turnutils_stunclient (scripts/test installs coturn)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stun client failed or timed out: {text}");
    let mapped = common::stunclient_reflexive(&text).unwrap_or_else(|| panic!("no mapped address in: {text}"));
    assert_eq!(mapped.ip().to_string(), "127.0.0.1", "{text}");
    assert_ne!(mapped.port(), udp_port, "{text}");
    // The README's promise for every long-running command: exit within 1 s of SIGTERM.
    let t = Instant::now();
    let status = child.terminate(Duration::from_secs(1)).expect("exits within 1 s of SIGTERM");
    eprintln!("responder: SIGTERM → exit in {:?}", t.elapsed());
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_turn_client_round_trips_via_echo_peer_and_its_allocation_is_released() {
    use webrtc_util::Conn;
    let r = start().await;
    let server = r.addrs.turn_udp[0].to_string();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: server.clone(),
        turn_serv_addr: server,
        username: USER.into(),
        password: PASS.into(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(socket),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let relay = tokio::time::timeout(Duration::from_secs(5), client.allocate())
        .await
        .unwrap()
        .unwrap();
    let text = wait_metric(&r, "egress_responder_turn_allocations_active{transport=\"udp\"}", 1.0).await;
    assert_eq!(
        sample(&text, "egress_responder_turn_allocations_active{transport=\"udp\"}"),
        Some(1.0),
        "{text}"
    );
    let echo = r.addrs.udp_echo[0];
    let mut buf = [0u8; 1500];
    let mut answered = 0;
    for i in 0..5u8 {
        relay.send_to(&[i; 100], echo).await.unwrap();
        if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_secs(2), relay.recv_from(&mut buf)).await {
            assert_eq!((n, from, buf[0]), (100, echo, i));
            answered += 1;
        }
    }
    assert_eq!(answered, 5, "echo peer answers every datagram through the relay");
    relay.close().await.unwrap();
    client.close().await.unwrap();
    let text = assert_nothing_left(&r, 0.0).await;
    assert_eq!(
        sample(&text, "egress_responder_turn_allocations_closed_total{transport=\"udp\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn responder_help_states_the_real_default_ports() {
    use clap::CommandFactory;
    use egress_probe::cli::Cli;
    use egress_probe::responder::config::{DEFAULT_TURNS_PORT, DEFAULT_TURN_PORT, DEFAULT_UDP_ECHO_PORT};
    let mut cmd = Cli::command();
    let help = cmd.find_subcommand_mut("responder").unwrap().render_help().to_string();
    let line = |flag: &str| help.lines().find(|l| l.contains(flag)).unwrap_or_default().to_string();
    assert!(line("--turn-tls").contains(&format!("default {DEFAULT_TURNS_PORT}")), "{help}");
    assert!(!help.contains("443 if nothing else uses it"), "{help}");
    assert!(line("--turn-udp").contains(&format!("default {DEFAULT_TURN_PORT}")), "{help}");
    assert!(line("--udp-echo").contains(&format!("default {DEFAULT_UDP_ECHO_PORT}")), "{help}");
}

/// A responder config error as the user sees it: `FILE:LINE:COLUMN: sentence`.
fn responder_config_error(yaml: &str) -> String {
    ResponderConfig::parse(yaml, "r.yaml").expect_err(yaml).to_string()
}

#[test]
fn responder_config_mistakes_read_file_line_column_and_a_sentence_with_the_value_got() {
    for (yaml, at, said) in [
        (
            "web: [8443]\nudp_echo_ports: 43600-43500\n",
            "r.yaml:2:17: ",
            "udp_echo_ports: the range 43600-43500 runs backwards (MIN above MAX); write 43500-43600",
        ),
        (
            "web: [8443]\nudp_echo_ports: 43600\n",
            "r.yaml:2:17: ",
            "udp_echo_ports: expected a port range MIN-MAX (like 20000-20099), got the single number 43600",
        ),
        (
            "web: [8443]\nudp_echo_ports: [43500, 43600]\n",
            "r.yaml:2:17: ",
            "udp_echo_ports: expected a port range MIN-MAX (like 20000-20099) as one string, got a list",
        ),
        (
            "relay_ports: 16384–65535\n",
            "r.yaml:1:14: ",
            "relay_ports: expected a port range MIN-MAX, got \"16384–65535\": write the dash as a plain hyphen (16384-65535)",
        ),
        (
            "web: [8443]\nudp_echo_ports: 20000-21999\n",
            "r.yaml:2:17: ",
            "udp_echo_ports 20000-21999 is 2000 ports, at most 1024",
        ),
        (
            "relay_ports: 49152-65535\nudp_echo_ports: 50000-50099\n",
            "r.yaml:2:17: ",
            "udp_echo_ports 50000-50099 overlaps relay_ports 49152-65535",
        ),
        (
            "web: [8443]\nudp_echo: [3480]\nnat_stun: { primary: 192.0.2.1 }\n",
            "r.yaml:3:11: ",
            "nat_stun: port 3480 on 192.0.2.1 is also udp_echo's (0.0.0.0:3480)",
        ),
        (
            "web: [8443]\nnat_stun: { primary: 192.0.2.1, ports: [3478, 3490] }\n",
            "r.yaml:2:11: ",
            "nat_stun: port 3478 on 192.0.2.1 is also turn.udp's (0.0.0.0:3478)",
        ),
    ] {
        let e = responder_config_error(yaml);
        assert!(e.starts_with(&format!("{at}{said}")), "{yaml}→ {e}");
    }
    // A nat_stun mistake says the key and the position once, in front.
    let e = responder_config_error("web: [8443]\n\n\n\n\n\n\nnat_stun: { primary: 192.0.2.1, alternate: 192.0.2.1 }\n");
    assert!(e.starts_with("r.yaml:8:"), "{e}");
    assert_eq!(e.matches("nat_stun").count(), 1, "{e}");
    assert!(!e.contains(" at line "), "{e}");
}

#[test]
fn nat_stun_port_flags_override_the_config_files_nat_stun() {
    use clap::Parser;
    use egress_probe::cli::{Cli, Command};
    use egress_probe::commands::responder::build_config;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.yaml");
    std::fs::write(
        &file,
        "nat_stun: { primary: 192.0.2.1, alternate: 192.0.2.2, ports: [3490, 3491] }\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut argv = vec!["egress-probe", "responder", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(extra);
        let Command::Responder(a) = Cli::try_parse_from(argv).expect("flags parse").command else {
            unreachable!("a responder command")
        };
        build_config(&a)
    };
    let n = build(&["--nat-stun-ports", "3500,3501"])
        .expect("ports alone override")
        .nat_stun
        .unwrap();
    assert_eq!(
        (n.primary.to_string(), n.alternate.map(|a| a.to_string()), n.ports),
        ("192.0.2.1".into(), Some("192.0.2.2".into()), [3500, 3501])
    );
    let n = build(&["--nat-stun", "192.0.2.9"])
        .expect("addresses alone override")
        .nat_stun
        .unwrap();
    assert_eq!(
        (n.primary.to_string(), n.alternate, n.ports),
        ("192.0.2.9".into(), None, [3490, 3491]),
        "the file's ports stay"
    );
    std::fs::write(&file, "web: [8443]\n").unwrap();
    let e = build(&["--nat-stun-ports", "3500,3501"]).expect_err("nothing to set ports of");
    assert!(format!("{e:#}").contains("--nat-stun-ports needs"), "{e:#}");
}
