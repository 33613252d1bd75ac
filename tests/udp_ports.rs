//! `kind: udp_ports` on a real kernel: the probe runs in a client namespace, the responder's
//! echo in a peer namespace (`common::netns::NetPair`), and nftables in the peer decides which
//! ports the datagrams reach. The probe is run in-process, several times with the same loaded
//! spec, as the daemon runs it, so its sweep state carries from run to run.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::netns::{NetPair, PEER_IP};
use egress_probe::config::{parse_str, ProbeSpec};
use egress_probe::outcome::Outcome;
use egress_probe::probe::ProbeContext;
use egress_probe::responder::{Responder, ResponderConfig};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn pair() -> NetPair {
    NetPair::new(&format!("up{}", SEQ.fetch_add(1, Ordering::Relaxed)))
}

/// The in-process responder running inside a namespace on its own thread; stopped on drop.
struct PeerResponder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerResponder {
    fn start(ns: &str, yaml: &str) -> PeerResponder {
        let cfg = ResponderConfig::parse(yaml, "responder.yaml").expect("responder config");
        let path = format!("/var/run/netns/{ns}");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                match Responder::start(&cfg).await {
                    Ok(r) => {
                        let _ = ready.send(Ok(()));
                        // Bounded: the test drops the guard (or dies) well before this.
                        let _ = tokio::time::timeout(Duration::from_secs(120), stop_rx).await;
                        drop(r);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                    }
                }
            });
        });
        let started = ready_rx.recv_timeout(Duration::from_secs(20)).expect("responder start in time");
        let guard = PeerResponder {
            stop: Some(stop),
            thread: Some(thread),
        };
        started.expect("responder started");
        guard
    }
}

impl Drop for PeerResponder {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn responder_yaml(extra: &str) -> String {
    format!("bind: {PEER_IP}\nturn: {{ udp: [], tcp: [], tls: [] }}\nweb: []\nmetrics: null\n{extra}")
}

fn spec(ports: &str, sample: u32) -> ProbeSpec {
    spec_with(ports, sample, "")
}

fn spec_with(ports: &str, sample: u32, extra: &str) -> ProbeSpec {
    let yaml = format!(
        "probes:\n  - name: media\n    kind: udp_ports\n    host: {PEER_IP}\n    ports: \"{ports}\"\n    sample: {sample}\n    port_timeout: 200ms\n{extra}"
    );
    let cfg = parse_str(&yaml, "probes.yaml").expect("probe config");
    cfg.probes[0].spec.clone()
}

/// Runs the probe `runs` times in the client namespace (same spec: one sweep).
fn run_times(net: &NetPair, spec: ProbeSpec, runs: usize) -> Vec<(Outcome, Duration)> {
    run_times_within(net, spec, runs, Duration::from_secs(5))
}

fn run_times_within(net: &NetPair, spec: ProbeSpec, runs: usize, timeout: Duration) -> Vec<(Outcome, Duration)> {
    net.block_on_client(move || async move {
        let mut out = Vec::new();
        for _ in 0..runs {
            let ctx = ProbeContext::with_timeout(timeout, None);
            let clock = Instant::now();
            let o = egress_probe::probe::run(&spec, &ctx).await;
            out.push((o, clock.elapsed()));
        }
        out
    })
}

fn code(o: &Outcome) -> String {
    o.failure.as_ref().map_or("pass".into(), |f| f.code())
}

fn range_start(r: &str) -> u16 {
    r.split('-').next().and_then(|p| p.parse().ok()).expect("range start")
}

#[test]
fn only_the_part_of_a_range_the_firewall_passes_is_reported_open_once_the_sweep_covered_it() {
    let net = pair();
    let _echo = PeerResponder::start(&net.peer, &responder_yaml("udp_echo: []\nudp_echo_ports: 20000-20099\n"));
    net.nft(
        &net.peer,
        "table inet fw {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    udp dport 20050-20099 drop\n  }\n}\n",
    );
    // 100 ports, 32 per run; the 50 dropped ones are each tried twice (silent in two runs
    // before closed): 150 tries, five runs, a sixth for the last run's first silences.
    let runs = run_times(&net, spec("20000-20099", 32), 7);
    let mut last_covered = 0;
    for (i, (o, wall)) in runs.iter().enumerate() {
        let u = o.detail.udp_ports.as_ref().unwrap_or_else(|| panic!("run {i}: no detail: {o:?}"));
        assert!(*wall < Duration::from_secs(5), "run {i} took {wall:?}");
        assert_eq!(u.sampled, 32, "run {i}");
        assert_eq!(
            u.sampled_open + u.sampled_closed + u.sampled_silent_once,
            32,
            "run {i}: every sampled port got a result: {u:?}"
        );
        assert_eq!(u.sampled_unknown, 0, "run {i}");
        for r in &u.sampled_closed_ranges {
            assert!(
                range_start(r) >= 20050,
                "run {i}: {r} reported closed, but only 20050-20099 is dropped"
            );
        }
        // Closed takes two runs: the first run passes (its silent ports are only silent once).
        if i == 0 {
            assert_eq!((code(o), u.sampled_closed, u.closed_ports), ("pass".to_string(), 0, 0), "{u:?}");
            assert!(
                u.sampled_silent_once > 0 && u.sampled_open > 0,
                "a sample is spread over the set: {u:?}"
            );
        }
        if i == 1 {
            assert_eq!(code(o), "udp/closed", "run 1 re-tests run 0's silent ports first: {u:?}");
        }
        assert!(u.covered >= last_covered, "run {i}: coverage never drops");
        last_covered = u.covered;
        let rtt = u.rtt.as_ref().expect("rtt");
        assert_eq!(rtt.received, u.sampled_open, "run {i}: answered on the first try on a quiet veth");
        assert_eq!(rtt.loss, 0.0, "run {i}: closed ports are not lost datagrams: {rtt:?}");
    }
    let (last, _) = runs.last().expect("runs");
    let u = last.detail.udp_ports.as_ref().expect("detail");
    assert_eq!((u.coverage, u.silent_once), (1.0, 0), "{u:?}");
    assert_eq!(u.open, ["20000-20049"]);
    assert_eq!(u.closed, ["20050-20099"]);
    assert_eq!((u.open_ports, u.closed_ports), (50, 50));
    // Whichever run closed the last ports said the whole picture.
    let closing = runs.iter().rev().find_map(|(o, _)| {
        o.failure
            .as_ref()
            .filter(|_| o.detail.udp_ports.as_ref().is_some_and(|u| u.coverage == 1.0))
    });
    if let Some(f) = closing {
        assert!(f.message.contains("open 20000-20049, closed 20050-20099"), "{}", f.message);
    }
}

#[test]
fn a_whole_range_redirected_by_nftables_onto_one_echo_socket_answers_from_every_port() {
    let net = pair();
    let _echo = PeerResponder::start(&net.peer, &responder_yaml(&format!("udp_echo: ['{PEER_IP}:3479']\n")));
    // One socket for 10,000 ports: conntrack rewrites each echo's source back to its port.
    net.nft(
        &net.peer,
        "table ip nat {\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n    udp dport 30000-39999 redirect to :3479\n  }\n}\n",
    );
    let runs = run_times(&net, spec("30000-39999", 256), 2);
    for (i, (o, _)) in runs.iter().enumerate() {
        let u = o.detail.udp_ports.as_ref().expect("detail");
        assert_eq!(code(o), "pass", "run {i}: {:?}", o.failure);
        assert_eq!((u.sampled, u.sampled_open, u.sampled_closed), (256, 256, 0), "run {i}");
        assert!(u.closed.is_empty());
    }
    let u = runs[1].0.detail.udp_ports.as_ref().expect("detail");
    assert_eq!(u.covered, 512, "two runs, two disjoint samples");
    assert_eq!(u.open_ports, 512);
}

#[test]
fn nothing_listening_reads_udp_closed_and_says_no_port_answered() {
    let net = pair();
    // No responder at all: every datagram is answered by ICMP port unreachable, or nothing.
    let runs = run_times(&net, spec("20000-20009", 10), 2);
    let (o, wall) = &runs[0];
    assert_eq!(code(o), "udp/closed");
    let u = o.detail.udp_ports.as_ref().expect("detail");
    // The whole host silent fails at once; each port is closed only after its second silence.
    assert_eq!((u.silent_once, u.closed_ports), (10, 0), "{u:?}");
    let message = &o.failure.as_ref().expect("failure").message;
    assert!(message.contains("none of the 10 sampled ports answered"), "{message}");
    // Two rounds of 200 ms, not the 5 s timeout.
    assert!(*wall < Duration::from_millis(1500), "{wall:?}");
    let u = runs[1].0.detail.udp_ports.as_ref().expect("detail");
    assert_eq!(
        (code(&runs[1].0), u.closed.as_slice()),
        ("udp/closed".to_string(), ["20000-20009".to_string()].as_slice())
    );
}

/// A run too short for any port to get a result must not pass (the old behaviour: a note),
/// and must not disturb the sweep: a port's verdict needs two full port_timeouts.
#[test]
fn a_budget_too_short_for_a_retry_fails_udp_timeout_and_leaves_the_sweep_alone() {
    let net = pair();
    let _echo = PeerResponder::start(&net.peer, &responder_yaml("udp_echo: []\nudp_echo_ports: 20000-20099\n"));
    // Everything dropped: the retry's wait is what the verdict hangs on.
    net.nft(
        &net.peer,
        "table inet fw {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    udp dport 20000-20099 drop\n  }\n}\n",
    );
    let s = spec("20000-20099", 16);
    // 150 ms: not even one port_timeout (200 ms), as a short scrape timeout gives /probe.
    let short = run_times_within(&net, s.clone(), 1, Duration::from_millis(150));
    let (o, _) = &short[0];
    assert_eq!(code(o), "udp/timeout", "{o:?}");
    assert!(o.failure.as_ref().expect("failure").message.contains("port_timeout 200 ms"));
    let egress_probe::config::ProbeSpec::UdpPorts(u) = &s else {
        panic!("kind")
    };
    assert_eq!((u.sweep.covered(), u.sweep.silent_once()), (0, 0), "no result recorded");
    // A full budget afterwards takes the first sample, as if the short run never happened.
    let full = run_times(&net, s.clone(), 1);
    let d = full[0].0.detail.udp_ports.as_ref().expect("detail");
    assert_eq!((d.sampled, d.sampled_silent_once, d.sampled_unknown), (16, 16, 0), "{d:?}");
}

/// The echo range and the plain echo are no reflectors: only the probe's own datagram is
/// answered (with the reply marker), never a reply, a generic datagram on the range, or a
/// source port below 1024; media datagrams on the plain echo still come back unchanged.
#[test]
fn the_echoes_answer_only_probe_datagrams_and_media_never_replies_or_service_ports() {
    let net = pair();
    let _echo = PeerResponder::start(
        &net.peer,
        &responder_yaml(&format!("udp_echo: ['{PEER_IP}:3479']\nudp_echo_ports: 20000-20003\n")),
    );
    let answers = net.block_on_client(|| async {
        use tokio::net::UdpSocket;
        async fn ask(from_port: u16, to: u16, data: &[u8]) -> Option<Vec<u8>> {
            let s = UdpSocket::bind(("0.0.0.0", from_port)).await.expect("bind");
            s.send_to(data, (PEER_IP, to)).await.expect("send");
            let mut buf = [0u8; 2048];
            match tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
                _ => None,
            }
        }
        let request = |port: u16| {
            let mut d = [0u8; 16];
            d[..4].copy_from_slice(b"EPUP");
            d[4..12].copy_from_slice(&42u64.to_be_bytes());
            d[14..16].copy_from_slice(&port.to_be_bytes());
            d
        };
        let mut reply = request(20001);
        reply[..4].copy_from_slice(b"EPUR");
        let media = vec![0x80u8; 172];
        vec![
            ("range: probe request", ask(0, 20001, &request(20001)).await),
            ("range: request naming another port", ask(0, 20001, &request(20002)).await),
            ("range: generic datagram", ask(0, 20001, &media).await),
            ("range: our own reply", ask(0, 20001, &reply).await),
            ("range: from port 123", ask(123, 20001, &request(20001)).await),
            ("echo: media", ask(0, 3479, &media).await),
            ("echo: probe request", ask(0, 3479, &request(3479)).await),
            ("echo: our own reply", ask(0, 3479, &reply).await),
            ("echo: from port 53", ask(53, 3479, &media).await),
        ]
    });
    let mut expected_reply = [0u8; 16];
    expected_reply[..4].copy_from_slice(b"EPUR");
    expected_reply[4..12].copy_from_slice(&42u64.to_be_bytes());
    for (what, got) in &answers {
        match *what {
            "range: probe request" => {
                expected_reply[14..16].copy_from_slice(&20001u16.to_be_bytes());
                assert_eq!(got.as_deref(), Some(&expected_reply[..]), "{what}");
            }
            "echo: probe request" => {
                expected_reply[14..16].copy_from_slice(&3479u16.to_be_bytes());
                assert_eq!(got.as_deref(), Some(&expected_reply[..]), "{what}");
            }
            "echo: media" => assert_eq!(got.as_deref(), Some(&[0x80u8; 172][..]), "{what}"),
            _ => assert_eq!(got, &None, "{what} must not be answered"),
        }
    }
}

#[test]
fn bad_port_sets_and_samples_are_config_errors_with_their_position() {
    let yaml = "probes:\n  - name: media\n    kind: udp_ports\n    host: 192.0.2.1\n    ports: \"20000-10000\"\n    sample: 1000\n";
    let e = parse_str(yaml, "p.yaml").expect_err("invalid").to_string();
    assert!(e.contains("p.yaml:5:") && e.contains("runs backwards"), "{e}");
    assert!(e.contains("p.yaml:6:") && e.contains("between 1 and 256"), "{e}");
    let yaml = "probes:\n  - name: media\n    kind: udp_ports\n    host: 192.0.2.1:3478\n    ports: 3478\n";
    let e = parse_str(yaml, "p.yaml").expect_err("invalid").to_string();
    assert!(e.contains("p.yaml:4:") && e.contains("ports go in"), "{e}");
}

#[test]
fn a_timeout_shorter_than_two_port_timeouts_is_a_config_error_at_its_position() {
    let yaml = "probes:\n  - name: media\n    kind: udp_ports\n    host: 192.0.2.1\n    ports: \"20000-20099\"\n    port_timeout: 2s\n    timeout: 3s\n";
    let e = parse_str(yaml, "p.yaml").expect_err("invalid").to_string();
    assert!(e.contains("p.yaml:7:") && e.contains("twice port_timeout"), "{e}");
    // Defaulted timeout: the error points at port_timeout.
    let yaml = "defaults:\n  timeout: 1s\nprobes:\n  - name: media\n    kind: udp_ports\n    host: 192.0.2.1\n    ports: \"20000-20099\"\n    port_timeout: 600ms\n";
    let e = parse_str(yaml, "p.yaml").expect_err("invalid").to_string();
    assert!(e.contains("p.yaml:8:") && e.contains("twice port_timeout"), "{e}");
    let ok = "probes:\n  - name: media\n    kind: udp_ports\n    host: 192.0.2.1\n    ports: \"20000-20099\"\n    port_timeout: 2s\n    timeout: 5s\n";
    assert!(parse_str(ok, "p.yaml").is_ok());
}
