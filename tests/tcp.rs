//! `kind: tcp`: a listening port passes, a closed port is refused, and — in a private pair of
//! network namespaces with nftables in the peer — a DROP is `connect/timeout` at the deadline,
//! a `reject with tcp reset` is `connect/refused`, an ICMP host-unreachable or a missing route
//! is `connect/unreachable`. `addresses: all` reports every address.
mod common;

use common::outcome::{code, phases, run};

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::{NetPair, PEER_IP};
use egress_probe::config::{AddressMode, HostPort, ProbeSpec, TcpSpec};
use egress_probe::outcome::{Outcome, Phase};

fn tcp(host: &str, port: u16, addresses: AddressMode) -> ProbeSpec {
    ProbeSpec::Tcp(TcpSpec {
        target: HostPort { host: host.into(), port },
        addresses,
    })
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn listening_port_passes_with_peer_recorded() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server sees the client's FIN: the probe closes cleanly instead of leaking the socket.
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 8];
        tokio::io::AsyncReadExt::read(&mut s, &mut buf).await.unwrap()
    });
    let o = run(&tcp("127.0.0.1", addr.port(), AddressMode::First), Duration::from_secs(2)).await;
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(phases(&o), vec![Phase::Resolve, Phase::Connect]);
    assert_eq!(o.detail.peer, Some(addr));
    let read = tokio::time::timeout(Duration::from_secs(2), server).await.unwrap().unwrap();
    assert_eq!(read, 0, "server should see EOF (FIN) from the probe");
}

#[tokio::test]
async fn closed_port_is_refused() {
    let o = run(&tcp("127.0.0.1", closed_port(), AddressMode::First), Duration::from_secs(2)).await;
    assert_eq!(code(&o), "connect/refused", "{o:?}");
    assert_eq!(phases(&o), vec![Phase::Resolve, Phase::Connect]);
    assert!(o.total < Duration::from_millis(500), "refusal is immediate: {:?}", o.total);
}

#[test]
fn addresses_all_checks_every_address_of_a_name() {
    // A name with two A records (system resolver, from a private /etc/hosts): a listener on
    // 127.0.0.1, nothing on 127.0.0.2 at the same port. The probe fails, naming the bad address,
    // and reports both.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spec = tcp("pool.example.test", port, AddressMode::All);
    let o = NetPair::with_hosts_file("127.0.0.1 pool.example.test\n127.0.0.2 pool.example.test\n", move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&spec, Duration::from_secs(2)))
    });
    assert_eq!(code(&o), "connect/refused", "{o:?}");
    let good: SocketAddr = ([127, 0, 0, 1], port).into();
    let bad: SocketAddr = ([127, 0, 0, 2], port).into();
    assert_eq!(o.detail.resolved, vec![good, bad]);
    let results = &o.detail.per_address;
    assert_eq!(results.len(), 2, "{o:?}");
    assert_eq!((results[0].address, results[0].success), (good, true));
    assert_eq!((results[1].address, results[1].success), (bad, false));
    assert_eq!(results[1].failure.as_ref().map(|f| f.code()).as_deref(), Some("connect/refused"));
    assert!(o.failure.unwrap().message.contains("127.0.0.2"));
    // First-address mode on the same name: the refused address is skipped, the good one answers.
    let spec = tcp("pool.example.test", port, AddressMode::First);
    let o = NetPair::with_hosts_file("127.0.0.2 pool.example.test\n127.0.0.1 pool.example.test\n", move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&spec, Duration::from_secs(2)))
    });
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(o.detail.peer, Some(good));
    drop(listener);
}

/// The firewalled lab: a pass port, a DROP port, a REJECT port, an ICMP-unreachable port.
struct Lab {
    net: NetPair,
    _listeners: Vec<std::net::TcpListener>,
}

const OPEN: u16 = 7000;
const DROPPED: u16 = 7001;
const REJECTED: u16 = 7002;
const ICMP_UNREACH: u16 = 7003;

fn lab(test: &str) -> Lab {
    let net = NetPair::new(test);
    // Every port has a listener: whatever fails, fails because of the firewall.
    let listeners = [OPEN, DROPPED, REJECTED, ICMP_UNREACH]
        .into_iter()
        .map(|p| net.listen_peer(p))
        .collect();
    net.nft(
        &net.peer,
        &format!(
            "table inet fw {{ chain input {{ type filter hook input priority 0; policy accept;
               tcp dport {DROPPED} drop
               tcp dport {REJECTED} reject with tcp reset
               tcp dport {ICMP_UNREACH} reject with icmpx type host-unreachable
             }}
           }}"
        ),
    );
    Lab {
        net,
        _listeners: listeners,
    }
}

fn probe_in_client(net: &NetPair, host: &str, port: u16, timeout: Duration) -> Outcome {
    let spec = tcp(host, port, AddressMode::First);
    net.block_on_client(move || async move { run(&spec, timeout).await })
}

#[test]
fn firewall_drop_is_connect_timeout_at_the_deadline() {
    let lab = lab("tcpdrop");
    let peer = PEER_IP.to_string();
    let open = probe_in_client(&lab.net, &peer, OPEN, Duration::from_secs(2));
    assert_eq!(code(&open), "success", "control: the open port passes through the lab: {open:?}");
    // Several runs: the deadline is honoured every time, not on average.
    let timeout = Duration::from_millis(500);
    let spec = tcp(&peer, DROPPED, AddressMode::First);
    let outcomes = lab.net.block_on_client(move || async move {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(run(&spec, timeout).await);
        }
        v
    });
    for o in &outcomes {
        assert_eq!(code(o), "connect/timeout", "{o:?}");
        assert!(o.total >= timeout - Duration::from_millis(20), "ended early: {:?}", o.total);
        assert!(o.total <= timeout + Duration::from_millis(150), "ended late: {:?}", o.total);
        let connect = o.phase_time(Phase::Connect).unwrap();
        assert!(connect >= timeout - Duration::from_millis(50), "connect phase {connect:?}");
    }
    let over: Vec<f64> = outcomes
        .iter()
        .map(|o| (o.total.as_secs_f64() - timeout.as_secs_f64()) * 1000.0)
        .collect();
    eprintln!("connect/timeout overshoot past the deadline (ms): {over:.2?}");
}

#[test]
fn firewall_reject_with_tcp_reset_is_connect_refused() {
    let lab = lab("tcprej");
    let o = probe_in_client(&lab.net, &PEER_IP.to_string(), REJECTED, Duration::from_secs(2));
    assert_eq!(code(&o), "connect/refused", "{o:?}");
    assert!(o.total < Duration::from_millis(500), "a reset is immediate: {:?}", o.total);
}

#[test]
fn icmp_host_unreachable_and_missing_route_are_unreachable() {
    let lab = lab("tcpunr");
    let o = probe_in_client(&lab.net, &PEER_IP.to_string(), ICMP_UNREACH, Duration::from_secs(2));
    assert_eq!(code(&o), "connect/unreachable", "{o:?}");
    // 10.202.0.9 has no route inside the client namespace: ENETUNREACH at once.
    let o = probe_in_client(&lab.net, "10.202.0.9", OPEN, Duration::from_secs(2));
    assert_eq!(code(&o), "connect/unreachable", "{o:?}");
    assert!(o.total < Duration::from_millis(200), "{:?}", o.total);
}

/// A name with two addresses in the peer namespace, the first one blackholed (DROP).
fn pool_lab(test: &str) -> (NetPair, std::net::TcpListener) {
    let net = NetPair::new(test);
    net.add_peer_address("10.201.0.3/24");
    let listener = net.listen_peer_on("0.0.0.0:7010".parse().unwrap());
    net.nft(
        &net.peer,
        "table inet fw { chain input { type filter hook input priority 0; policy accept;
           ip daddr 10.201.0.2 tcp dport 7010 drop
         }
       }",
    );
    (net, listener)
}

fn probe_pool(net: &NetPair, addresses: AddressMode, timeout: Duration) -> Outcome {
    let spec = tcp("pool.example.test", 7010, addresses);
    let hosts = "10.201.0.2 pool.example.test\n10.201.0.3 pool.example.test\n";
    NetPair::isolated(Some(&net.client), &[("/etc/hosts", hosts)], move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(&spec, timeout))
    })
}

#[test]
fn blackholed_first_address_costs_250ms_not_the_timeout() {
    let (net, _l) = pool_lab("tcphe");
    let o = probe_pool(&net, AddressMode::First, Duration::from_secs(2));
    assert_eq!(code(&o), "success", "{o:?}");
    assert_eq!(o.detail.peer, Some("10.201.0.3:7010".parse().unwrap()));
    let connect = o.phase_time(Phase::Connect).unwrap();
    assert!(
        connect >= Duration::from_millis(240) && connect < Duration::from_millis(600),
        "second address tried after the 250 ms stagger: {connect:?}"
    );
}

#[test]
fn addresses_all_reports_the_blackholed_address_as_timeout() {
    let (net, _l) = pool_lab("tcpall");
    let timeout = Duration::from_millis(800);
    let o = probe_pool(&net, AddressMode::All, timeout);
    assert_eq!(code(&o), "connect/timeout", "{o:?}");
    assert!(o.total <= timeout + Duration::from_millis(150), "{:?}", o.total);
    let r = &o.detail.per_address;
    assert_eq!(r.len(), 2, "{o:?}");
    assert_eq!(r[0].address, "10.201.0.2:7010".parse().unwrap());
    assert_eq!(r[0].failure.as_ref().map(|f| f.code()).as_deref(), Some("connect/timeout"));
    assert!(r[1].success, "{r:?}");
}

/// Measurement (run with `--ignored --nocapture`): the `connect` phase against the wire. tshark
/// captures the client's veth; each SYN → SYN/ACK delta is compared with the phase time.
#[test]
#[ignore = "measurement; needs tshark, prints figures"]
fn connect_phase_matches_the_wire() {
    let lab = lab("tcpwire");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("c.pcap");
    let mut cap = common::proc::ChildGuard::spawn(
        "tshark",
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.net.client,
                "tshark",
                "-q",
                "-i",
                "ep0",
                "-f",
                "tcp port 7000",
                "-w",
            ])
            .arg(&pcap)
            .stderr(std::process::Stdio::piped()),
    );
    // tshark says "Capturing on" on stderr once it listens.
    let mut err = cap.child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("Capturing on") {
        let n = std::io::Read::read(&mut err, &mut buf).unwrap();
        assert!(n > 0, "tshark: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::sleep(Duration::from_millis(500)); // "Capturing on" comes slightly before the capture is live
    let spec = tcp(&PEER_IP.to_string(), OPEN, AddressMode::First);
    let outcomes = lab.net.block_on_client(move || async move {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(run(&spec, Duration::from_secs(2)).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        v
    });
    std::thread::sleep(Duration::from_millis(300));
    cap.terminate(Duration::from_secs(3));
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args([
            "-Y",
            "tcp.flags.syn==1",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.flags.ack",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<(f64, bool)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split('\t');
            Some((it.next()?.parse().ok()?, matches!(it.next()?, "1" | "True")))
        })
        .collect();
    let wire: Vec<f64> = rows
        .windows(2)
        .filter(|w| !w[0].1 && w[1].1)
        .map(|w| (w[1].0 - w[0].0) * 1e6)
        .collect();
    let phase: Vec<f64> = outcomes
        .iter()
        .map(|o| o.phase_time(Phase::Connect).unwrap().as_secs_f64() * 1e6)
        .collect();
    assert_eq!(wire.len(), phase.len(), "wire {wire:?} phase {phase:?}\n{text}");
    let diff: Vec<f64> = phase.iter().zip(&wire).map(|(p, w)| p - w).collect();
    eprintln!("SYN→SYN/ACK on the wire (µs): {wire:.0?}");
    eprintln!("connect phase (µs):          {phase:.0?}");
    eprintln!("phase − wire (µs):           {diff:.0?}");
    // The phase can only be longer than the wire (it includes socket setup and the wake-up).
    assert!(diff.iter().all(|d| *d > -50.0 && *d < 2000.0), "{diff:?}");
}

/// The real binary inside the client namespace (`ip netns exec`), as an operator would run it:
/// one `check` over the firewalled lab gives pass / timeout / refused / unreachable per probe.
#[test]
fn check_binary_in_the_namespace_reports_drop_reject_and_pass() {
    let lab = lab("tcpbin");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fw.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults: {{ timeout: 700ms }}
probes:
  - {{ name: open, kind: tcp, target: \"{PEER_IP}:{OPEN}\" }}
  - {{ name: dropped, kind: tcp, target: \"{PEER_IP}:{DROPPED}\" }}
  - {{ name: rejected, kind: tcp, target: \"{PEER_IP}:{REJECTED}\" }}
  - {{ name: icmp, kind: tcp, target: \"{PEER_IP}:{ICMP_UNREACH}\" }}
"
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(common::bin());
    cmd.arg("check").arg("--config").arg(&config).args(["--output", "json", "--quiet"]);
    let started = std::time::Instant::now();
    let out = lab.net.exec(&lab.net.client, &mut cmd);
    let wall = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "one or more fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: egress_probe::report::Report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let codes: std::collections::BTreeMap<String, String> = report.results.iter().map(|r| (r.name.clone(), code(&r.outcome))).collect();
    let want: std::collections::BTreeMap<String, String> = [
        ("open", "success"),
        ("dropped", "connect/timeout"),
        ("rejected", "connect/refused"),
        ("icmp", "connect/unreachable"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(codes, want, "{}", String::from_utf8_lossy(&out.stdout));
    let dropped = report.results.iter().find(|r| r.name == "dropped").unwrap();
    assert!(dropped.outcome.total <= Duration::from_millis(850), "{:?}", dropped.outcome.total);
    // Probes run concurrently: the whole check takes about one timeout, not four.
    assert!(wall < Duration::from_secs(3), "check took {wall:?}");
}
