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
    let yaml = format!(
        "probes:\n  - name: media\n    kind: udp_ports\n    host: {PEER_IP}\n    ports: \"{ports}\"\n    sample: {sample}\n    port_timeout: 200ms\n"
    );
    let cfg = parse_str(&yaml, "probes.yaml").expect("probe config");
    cfg.probes[0].spec.clone()
}

/// Runs the probe `runs` times in the client namespace (same spec: one sweep).
fn run_times(net: &NetPair, spec: ProbeSpec, runs: usize) -> Vec<(Outcome, Duration)> {
    net.block_on_client(move || async move {
        let mut out = Vec::new();
        for _ in 0..runs {
            let ctx = ProbeContext::with_timeout(Duration::from_secs(5), None);
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

#[test]
fn only_the_part_of_a_range_the_firewall_passes_is_reported_open_once_the_sweep_covered_it() {
    let net = pair();
    let _echo = PeerResponder::start(&net.peer, &responder_yaml("udp_echo: []\nudp_echo_ports: 20000-20099\n"));
    net.nft(
        &net.peer,
        "table inet fw {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    udp dport 20050-20099 drop\n  }\n}\n",
    );
    // 100 ports, 32 per run: four runs cover the set.
    let runs = run_times(&net, spec("20000-20099", 32), 4);
    let mut last_coverage = 0.0;
    for (i, (o, wall)) in runs.iter().enumerate() {
        let u = o.detail.udp_ports.as_ref().unwrap_or_else(|| panic!("run {i}: no detail: {o:?}"));
        assert!(*wall < Duration::from_secs(5), "run {i} took {wall:?}");
        assert_eq!(u.sampled, 32, "run {i}");
        assert_eq!(u.sampled_open + u.sampled_closed, 32, "run {i}: every sampled port got a verdict");
        // A sample is spread over the set: both halves show up in every run.
        assert!(u.sampled_open > 0 && u.sampled_closed > 0, "run {i}: {u:?}");
        assert_eq!(code(o), "udp/closed", "run {i}");
        for r in &u.sampled_closed_ranges {
            let lo: u16 = r.split('-').next().and_then(|p| p.parse().ok()).expect("range start");
            assert!(lo >= 20050, "run {i}: {r} reported closed, but only 20050-20099 is dropped");
        }
        assert!(
            u.coverage > last_coverage,
            "run {i}: coverage must grow ({} after {last_coverage})",
            u.coverage
        );
        last_coverage = u.coverage;
        let rtt = u.rtt.as_ref().expect("rtt");
        assert_eq!(rtt.received, u.sampled_open, "run {i}: answered on the first try on a quiet veth");
    }
    let (last, _) = runs.last().expect("runs");
    let u = last.detail.udp_ports.as_ref().expect("detail");
    assert_eq!(u.coverage, 1.0);
    assert_eq!(u.open, ["20000-20049"]);
    assert_eq!(u.closed, ["20050-20099"]);
    assert_eq!((u.open_ports, u.closed_ports), (50, 50));
    let message = &last.failure.as_ref().expect("failure").message;
    assert!(message.contains("open 20000-20049, closed 20050-20099"), "{message}");
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
    let runs = run_times(&net, spec("20000-20009", 10), 1);
    let (o, wall) = &runs[0];
    assert_eq!(code(o), "udp/closed");
    let u = o.detail.udp_ports.as_ref().expect("detail");
    assert_eq!(u.closed, ["20000-20009"]);
    assert!(o
        .failure
        .as_ref()
        .expect("failure")
        .message
        .contains("none of the sampled ports answered"));
    // Two rounds of 200 ms, not the 5 s timeout.
    assert!(*wall < Duration::from_millis(1500), "{wall:?}");
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
