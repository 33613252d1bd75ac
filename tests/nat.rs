//! NAT behaviour (RFC 5780) against real kernels and a real reference client.
//!
//! - Loopback: the responder's RFC 5780 server (127.0.0.1 + 127.0.0.2) and the stun probe
//!   (library) with no NAT in between: everything endpoint-independent; with one address the
//!   responder says so and the probe notes why it cannot tell. coturn's
//!   `turnutils_natdiscovery` (an independent RFC 5780 client) reads our responder the same,
//!   and our probe reads coturn's own RFC 5780 server (two listening IPs) the same. The
//!   daemon exports the results as small state sets (23 series for a stun probe with every
//!   NAT test, within a TURN probe's budget of 40).
//! - Namespaces (`Routed`: inside — fw — outside): the real binary's `check` inside, the
//!   responder binary outside on 10.203.0.2 + 10.203.0.3, the NAT and the firewall in fw's
//!   nftables. Plain `masquerade` keeps the source port (endpoint-independent mapping);
//!   `masquerade fully-random` picks a new port per destination (address-and-port-dependent);
//!   without NAT an open router is endpoint-independent filtering, a `ct state new` drop of
//!   inbound is address-and-port-dependent, and a set of (remote address, local port) seen
//!   outbound admits only known addresses (address-dependent); the binding lifetime search
//!   finds fw's conntrack UDP timeout. An open router also shows `local == mapped` and the
//!   "No NAT" verdict; a router dropping the first two answers from the alternate address
//!   shows the filtering test asking again before silence counts; a small STUN server outside
//!   whose OTHER-ADDRESS has the primary port (behind `fully-random`) shows the mapping test
//!   stopping at `endpoint_dependent`; a router that drops every new flow to the server after
//!   the lifetime search's first round shows the bracket found being kept, with a note.
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{NetPair, Routed, FW_OUTSIDE_IP, RELAY_IP, SIGNALLING_IP};
use common::proc::{bounded, wait_until, ChildGuard};
use egress_probe::config::{IceUrl, LifetimeSearch, ProbeSpec, StunSpec, TlsOptions};
use egress_probe::outcome::Outcome;
use egress_probe::probe::{self, ProbeContext};
use egress_probe::responder::config::NatStunConfig;
use egress_probe::responder::{Responder, ResponderConfig};
use serde_json::Value;

fn spec(url: &str) -> StunSpec {
    StunSpec {
        server: IceUrl::parse(url).expect("url"),
        count: 2,
        nat_mapping: true,
        second_server: None,
        nat_filtering: true,
        binding_lifetime: None,
        tls: TlsOptions::default(),
    }
}

async fn run(spec: StunSpec, timeout: Duration) -> Outcome {
    let ctx = ProbeContext::with_timeout(timeout, None);
    probe::run(&ProbeSpec::Stun(spec), &ctx).await
}

/// A responder with only the RFC 5780 server, on 127.0.0.1 (and 127.0.0.2), free ports.
async fn loopback_responder(two: bool) -> Responder {
    let cfg = ResponderConfig {
        turn: egress_probe::responder::config::TurnListeners {
            udp: vec![],
            tcp: vec![],
            tls: vec![],
        },
        web: vec![],
        udp_echo: vec![],
        metrics: None,
        nat_stun: Some(NatStunConfig {
            primary: IpAddr::V4(Ipv4Addr::LOCALHOST),
            alternate: two.then_some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            ports: [0, 0],
        }),
        ..ResponderConfig::default()
    };
    Responder::start(&cfg).await.expect("responder")
}

#[tokio::test]
async fn without_nat_mapping_and_filtering_are_endpoint_independent_on_loopback() {
    let r = loopback_responder(true).await;
    let primary = r.addrs.nat_stun[0];
    let mut s = spec(&format!("stun:{primary}"));
    let search = LifetimeSearch {
        max: Duration::from_secs(2),
    };
    s.binding_lifetime = Some(search);
    let started = Instant::now();
    // What the scheduler gives a run: the timeout plus the search's budget.
    let out = run(s, Duration::from_secs(3) + search.budget()).await;
    let took = started.elapsed();
    assert!(out.success, "{:?}", out.failure);
    let stun = out.detail.stun.as_ref().expect("stun detail");
    assert_eq!(
        stun.other_address,
        Some(r.addrs.nat_stun[3]),
        "OTHER-ADDRESS is the alternate IP and port"
    );
    assert_eq!(stun.nat_mapping.as_deref(), Some("endpoint_independent"), "{:?}", out.detail.notes);
    assert_eq!(stun.second_mapped, stun.mapped);
    assert_eq!(
        stun.nat_filtering.as_deref(),
        Some("endpoint_independent"),
        "{:?}",
        out.detail.notes
    );
    let life = stun.binding_lifetime.as_ref().expect("lifetime");
    // Nothing expires on loopback: the mapping survived the longest idle time asked.
    assert!(life.alive >= Duration::from_secs(2) && life.expired.is_none(), "{life:?}");
    assert!(life.checks >= 2, "{life:?}");
    assert!(out.detail.notes.is_empty(), "{:?}", out.detail.notes);
    // Two idle checks (1 s, 2 s) answered at once: the search costs its longest idle time.
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn a_responder_with_one_address_says_so_and_the_probe_notes_it() {
    let r = loopback_responder(false).await;
    assert_eq!(r.addrs.nat_stun.len(), 2, "one IP, two ports");
    let out = run(spec(&format!("stun:{}", r.addrs.nat_stun[0])), Duration::from_secs(3)).await;
    assert!(out.success, "the Binding itself works: {:?}", out.failure);
    let stun = out.detail.stun.as_ref().expect("stun detail");
    assert_eq!(
        (stun.other_address, stun.nat_mapping.as_deref(), stun.nat_filtering.as_deref()),
        (None, None, None)
    );
    let notes = out.detail.notes.join(" | ");
    assert!(notes.contains("nat_mapping:") && notes.contains("OTHER-ADDRESS"), "{notes}");
    assert!(notes.contains("nat_filtering:"), "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturns_natdiscovery_reads_our_responder_as_rfc5780() {
    let r = loopback_responder(true).await;
    let port = r.addrs.nat_stun[0].port().to_string();
    let out = tokio::task::spawn_blocking(move || bounded(20, "turnutils_natdiscovery", &["-m", "-f", "-p", &port, "127.0.0.1"]))
        .await
        .expect("join");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{text}", out.status);
    assert!(text.contains("NAT with Endpoint Independent Mapping"), "{text}");
    assert!(text.contains("NAT with Endpoint Independent Filtering"), "{text}");
    // It saw answers from the alternate address, i.e. CHANGE-REQUEST and OTHER-ADDRESS worked.
    assert!(text.contains(&format!("Response origin: : {}", r.addrs.nat_stun[3])), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_probe_reads_coturns_rfc5780_server() {
    // coturn with two listening IPs and an alternate port is an independent RFC 5780 server
    // (OTHER-ADDRESS, CHANGE-REQUEST, RESPONSE-PORT).
    let dir = tempfile::tempdir().expect("tempdir");
    let free = common::free_ports(2);
    let ports = [free[0], free[1]];
    let conf = vec![
        "listening-ip=127.0.0.1".to_string(),
        "listening-ip=127.0.0.2".to_string(),
        format!("listening-port={}", ports[0]),
        format!("alt-listening-port={}", ports[1]),
        "no-tls".into(),
        "no-tcp".into(),
        "realm=nat.test".into(),
        "lt-cred-mech".into(),
        "user=a:b".into(),
    ];
    let (_coturn, log) = common::coturn::spawn_conf(dir.path(), conf, None);
    let ready = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(8), || {
            common::coturn::udp_answers(Ipv4Addr::LOCALHOST, ports[0]) && common::coturn::udp_answers(Ipv4Addr::new(127, 0, 0, 2), ports[1])
        })
    })
    .await
    .expect("join");
    assert!(ready, "coturn not ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let mut s = spec(&format!("stun:127.0.0.1:{}", ports[0]));
    let search = LifetimeSearch {
        max: Duration::from_secs(2),
    };
    s.binding_lifetime = Some(search);
    let out = run(s, Duration::from_secs(3) + search.budget()).await;
    assert!(out.success, "{:?}", out.failure);
    let stun = out.detail.stun.as_ref().expect("stun detail");
    let other: SocketAddr = format!("127.0.0.2:{}", ports[1]).parse().unwrap();
    assert_eq!(stun.other_address, Some(other));
    assert_eq!(stun.nat_mapping.as_deref(), Some("endpoint_independent"), "{:?}", out.detail.notes);
    assert_eq!(
        stun.nat_filtering.as_deref(),
        Some("endpoint_independent"),
        "{:?}",
        out.detail.notes
    );
    let life = stun.binding_lifetime.as_ref().expect("lifetime (coturn honours RESPONSE-PORT)");
    assert!(life.alive >= Duration::from_secs(2) && life.expired.is_none(), "{life:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exports_nat_behaviour_as_small_state_sets() {
    let r = loopback_responder(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nat.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  interval: 30s\n  timeout: 3s\n  jitter: 0%\nprobes:\n  - name: nat\n    kind: stun\n    server: stun:{}\n    nat_mapping: true\n    nat_filtering: true\n    binding_lifetime: {{max: 2s}}\n",
            r.addrs.nat_stun[0]
        ),
    )
    .expect("write config");
    let (addr, mut daemon) = common::spawn_daemon(&path, common::DaemonStart::default());
    let done = r#"egress_probe_runs_total{kind="stun",probe="nat",result="success"} 1"#;
    let text = tokio::task::spawn_blocking(move || {
        let mut last = String::new();
        wait_until(Duration::from_secs(20), || {
            last = match common::http::get(addr, "/metrics") {
                Some((200, body)) => body,
                _ => String::new(),
            };
            last.contains(done)
        });
        last
    })
    .await
    .expect("join");
    assert!(text.contains(done), "the probe did not pass:\n{text}");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("probe=\"nat\""))
        .collect();
    let of = |family: &str| series.iter().filter(|l| l.starts_with(family)).count();
    assert_eq!(of("egress_probe_nat_mapping{"), 4, "{text}");
    assert_eq!(of("egress_probe_nat_filtering{"), 3, "{text}");
    // Nothing expires on loopback: the search found no lifetime, so none is exported (the
    // search's `max` would read as a lifetime found).
    assert_eq!(of("egress_probe_nat_binding_lifetime_seconds{"), 0, "{text}");
    for line in [
        r#"egress_probe_nat_mapping{behavior="endpoint_independent",probe="nat"} 1"#,
        r#"egress_probe_nat_mapping{behavior="address_and_port_dependent",probe="nat"} 0"#,
        r#"egress_probe_nat_filtering{behavior="endpoint_independent",probe="nat"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // The same budget as a TURN probe (tests/daemon.rs); no address ever becomes a label.
    assert!(
        series.len() <= 40,
        "{} series for one stun probe with NAT tests:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(!text.contains("127.0.0.2"), "{text}");
    eprintln!("series for a stun probe with every NAT test: {}", series.len());
    let _ = daemon.terminate(Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Namespaces: the binary inside, the responder binary outside, NAT and firewall in between.

/// Primary and alternate port of the responder outside (the namespaces are private).
const PRIMARY_PORT: u16 = 3478;
const ALTERNATE_PORT: u16 = 3479;

struct Lab {
    net: Routed,
    dir: tempfile::TempDir,
    _responder: ChildGuard,
}

impl Lab {
    /// The routed namespaces with `nat` as fw's `table ip nat` postrouting rule (`None`: no
    /// NAT, outside routes back to inside), and the responder's RFC 5780 server outside.
    fn new(test: &str, nat: Option<&str>) -> Lab {
        let net = Routed::new(test);
        match nat {
            Some(rule) => net.nft_in(
                &net.fw,
                &format!(
                    "delete table ip nat\ntable ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    oifname \"fwo0\" {rule}\n  }}\n}}\n"
                ),
            ),
            None => {
                net.nft_in(&net.fw, "delete table ip nat\n");
                let out = bounded(10, "ip", &["-n", &net.outside, "route", "add", "10.202.0.0/24", "via", &FW_OUTSIDE_IP.to_string()]);
                assert!(out.status.success(), "route: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("responder.yaml");
        std::fs::write(
            &conf,
            format!(
                "turn: {{ udp: [], tcp: [], tls: [] }}\nweb: []\nudp_echo: []\nmetrics: null\nnat_stun: {{ primary: {SIGNALLING_IP}, alternate: {RELAY_IP}, ports: [{PRIMARY_PORT}, {ALTERNATE_PORT}] }}\n"
            ),
        )
        .expect("write responder config");
        let responder = ChildGuard::spawn(
            "egress-probe responder",
            Command::new("ip")
                .args(["netns", "exec", &net.outside])
                .arg(common::bin())
                .args(["responder", "--config"])
                .arg(&conf)
                .env("RUST_LOG", "off")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let ready = NetPair::run_in(&net.outside, || {
            wait_until(Duration::from_secs(8), || {
                [SIGNALLING_IP, RELAY_IP]
                    .iter()
                    .all(|ip| [PRIMARY_PORT, ALTERNATE_PORT].iter().all(|p| common::coturn::udp_answers(*ip, *p)))
            })
        });
        assert!(ready, "responder's RFC 5780 server not ready in {}", net.outside);
        Lab {
            net,
            dir,
            _responder: responder,
        }
    }

    /// Sets the router's idle timeout for UDP flows (`nf_conntrack_udp_timeout`) to `secs`.
    fn udp_timeout(&self, secs: u32) {
        let setting = format!("net.netfilter.nf_conntrack_udp_timeout={secs}");
        let out = bounded(10, "ip", &["netns", "exec", &self.net.fw, "sysctl", "-qw", &setting]);
        assert!(out.status.success(), "sysctl: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs `check --output json` inside with one stun probe (`extra` YAML lines added to it);
    /// returns the probe's outcome and the verdict lines.
    fn check(&self, extra: &str, timeout_s: u32) -> (Value, Vec<String>) {
        self.check_port(PRIMARY_PORT, extra, timeout_s)
    }

    /// [`Lab::check`] against the STUN server on `port` of the signalling address.
    fn check_port(&self, port: u16, extra: &str, timeout_s: u32) -> (Value, Vec<String>) {
        let file = self.dir.path().join(format!("check-{}.yaml", rand::random::<u32>()));
        let yaml = format!(
            "probes:\n  - name: nat\n    kind: stun\n    server: stun:{SIGNALLING_IP}:{port}\n    timeout: 10s\n    interval: 2m\n{extra}"
        );
        std::fs::write(&file, yaml).expect("write config");
        let out = common::netns::check_in(&self.net.inside, timeout_s, &[], &file, &["--output", "json"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "check: {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("check JSON: {e}\n{stdout}"));
        let outcome = report["results"][0]["outcome"].clone();
        let verdicts = stderr.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
        (outcome, verdicts)
    }
}

fn stun(outcome: &Value) -> &Value {
    &outcome["detail"]["stun"]
}

fn addr(v: &Value) -> SocketAddr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("address expected, found {v}"))
}

const MAPPING_AND_FILTERING: &str = "    nat_mapping: true\n    nat_filtering: true\n";

#[test]
fn plain_masquerade_keeps_one_mapping_for_every_destination() {
    let lab = Lab::new("natmasq", Some("masquerade"));
    let (o, verdicts) = lab.check(MAPPING_AND_FILTERING, 30);
    let s = stun(&o);
    assert_eq!(s["nat_mapping"], "endpoint_independent", "{o:#}");
    let mapped = addr(&s["mapped"]);
    assert_eq!(mapped.ip(), IpAddr::V4(FW_OUTSIDE_IP), "the server sees the router's address");
    assert_eq!(addr(&s["second_mapped"]), mapped);
    // Linux NAT only lets in answers to a conntrack entry: another address or port is dropped.
    assert_eq!(s["nat_filtering"], "address_and_port_dependent", "{o:#}");
    assert!(
        verdicts
            .iter()
            .any(|v| v.contains("NAT mapping is endpoint-independent") && v.contains("Genesys")),
        "{verdicts:#?}"
    );
}

#[test]
fn fully_random_masquerade_maps_every_destination_apart() {
    let lab = Lab::new("natrand", Some("masquerade fully-random"));
    let (o, verdicts) = lab.check(MAPPING_AND_FILTERING, 30);
    let s = stun(&o);
    assert_eq!(s["nat_mapping"], "address_and_port_dependent", "{o:#}");
    let (first, second, third) = (addr(&s["mapped"]), addr(&s["second_mapped"]), addr(&s["third_mapped"]));
    assert!(first != second && second != third && first != third, "{first} {second} {third}");
    assert!(
        verdicts
            .iter()
            .any(|v| v.starts_with("Symmetric NAT (address-and-port-dependent mapping") && v.contains("calls need the relay")),
        "{verdicts:#?}"
    );
    assert!(!verdicts.iter().any(|v| v.starts_with("all paths work")), "{verdicts:#?}");
}

#[test]
fn an_open_router_without_nat_lets_every_address_in() {
    let lab = Lab::new("natopen", None);
    let (o, verdicts) = lab.check(MAPPING_AND_FILTERING, 30);
    let s = stun(&o);
    assert_eq!(addr(&s["mapped"]).ip(), IpAddr::V4(common::netns::INSIDE_IP), "no NAT: {o:#}");
    // The NAT tests' socket is unconnected: `local` still names the address used, not 0.0.0.0.
    assert_eq!(addr(&s["local"]), addr(&s["mapped"]), "{o:#}");
    assert_eq!(s["nat_mapping"], "endpoint_independent", "{o:#}");
    assert_eq!(s["nat_filtering"], "endpoint_independent", "{o:#}");
    assert!(
        verdicts
            .iter()
            .any(|v| v.starts_with("No NAT between this host and the STUN server")),
        "{verdicts:#?}"
    );
    assert!(
        !verdicts.iter().any(|v| v.contains("NAT mapping is endpoint-independent")),
        "{verdicts:#?}"
    );
}

#[test]
fn a_lost_filtering_answer_is_asked_again_before_it_counts_as_filtered() {
    let lab = Lab::new("natloss", None);
    // The router drops the first two packets from the alternate address and port: both
    // transmissions of the first change-IP-and-port request go unanswered, as if lost.
    lab.net.policy(
        "accept",
        &[&format!(
            "iifname \"fwo0\" ip saddr {RELAY_IP} udp sport {ALTERNATE_PORT} numgen inc mod 1000000 < 2 drop"
        )],
    );
    let (o, _) = lab.check(MAPPING_AND_FILTERING, 30);
    let s = stun(&o);
    assert_eq!(s["nat_filtering"], "endpoint_independent", "{o:#}");
    let counter = lab.net.nft_cmd(&lab.net.fw, &["list", "chain", "inet", "filter", "forward"]);
    assert!(counter.contains("numgen"), "{counter}");
}

/// A STUN server outside (signalling and relay address, one port) whose OTHER-ADDRESS names
/// the relay address on the *same* port; it answers Binding only. Stopped on drop.
struct SamePortServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SamePortServer {
    fn start(ns: &str, port: u16) -> SamePortServer {
        use stun_rs::attributes::discovery::OtherAddress;
        use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
        use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};
        let sockets = NetPair::run_in(ns, move || {
            [SIGNALLING_IP, RELAY_IP].map(|ip| std::net::UdpSocket::bind((ip, port)).expect("bind outside"))
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = SocketAddr::new(IpAddr::V4(RELAY_IP), port);
        let threads = sockets
            .into_iter()
            .map(|socket| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
                    let started = Instant::now();
                    let mut buf = [0u8; 1500];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                        let Ok((req, _)) = MessageDecoderBuilder::default().build().decode(&buf[..n]) else {
                            continue;
                        };
                        if req.method() != stun_rs::methods::BINDING || req.class() != MessageClass::Request {
                            continue;
                        }
                        let msg = StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::SuccessResponse)
                            .with_transaction_id(*req.transaction_id())
                            .with_attribute(XorMappedAddress::from(from))
                            .with_attribute(OtherAddress::from(other))
                            .with_attribute(Fingerprint::default())
                            .build();
                        let mut out = [0u8; 512];
                        if let Ok(len) = MessageEncoderBuilder::default().build().encode(&mut out, &msg) {
                            let _ = socket.send_to(&out[..len], from);
                        }
                    }
                })
            })
            .collect();
        SamePortServer { stop, threads }
    }
}

impl Drop for SamePortServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn other_address_on_the_primary_port_stops_the_mapping_test_at_endpoint_dependent() {
    let lab = Lab::new("natsame", Some("masquerade fully-random"));
    let port = 3490;
    let _server = SamePortServer::start(&lab.net.outside, port);
    let (o, verdicts) = lab.check_port(port, "    nat_mapping: true\n", 30);
    let s = stun(&o);
    assert_eq!(addr(&s["other_address"]), SocketAddr::new(IpAddr::V4(RELAY_IP), port), "{o:#}");
    // Tests II and III would ask the same destination: the second answer cannot tell the
    // dependent kinds apart, so the probe does not pretend to.
    assert_eq!(s["nat_mapping"], "endpoint_dependent", "{o:#}");
    assert!(s.get("third_mapped").is_none_or(Value::is_null), "{o:#}");
    assert!(
        verdicts.iter().any(|v| v.starts_with("Symmetric NAT (endpoint-dependent mapping")
            && v.contains("direct media fails towards peers behind NAT; calls need the relay")),
        "{verdicts:#?}"
    );
}

#[test]
fn a_stateful_firewall_dropping_new_inbound_filters_by_address_and_port() {
    let lab = Lab::new("natct", None);
    lab.net.policy("accept", &["iifname \"fwo0\" ct state new drop"]);
    let (o, _) = lab.check(MAPPING_AND_FILTERING, 30);
    let s = stun(&o);
    assert_eq!(s["nat_mapping"], "endpoint_independent", "{o:#}");
    assert_eq!(s["nat_filtering"], "address_and_port_dependent", "{o:#}");
}

#[test]
fn a_firewall_admitting_known_addresses_filters_by_address() {
    let lab = Lab::new("nataddr", None);
    // Outbound UDP records (remote address, local port); new inbound UDP is let in only from
    // a recorded remote address to that port, whatever the remote port.
    lab.net.nft_in(
        &lab.net.fw,
        "table inet filter {}\ndelete table inet filter\ntable inet filter {\n  set seen {\n    type ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s;\n  }\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    iifname \"fwi0\" meta l4proto udp update @seen { ip daddr . udp sport }\n    ct state established,related accept\n    iifname \"fwo0\" meta l4proto udp ip saddr . udp dport @seen accept\n    iifname \"fwo0\" ct state new drop\n  }\n}\n",
    );
    let (o, _) = lab.check(MAPPING_AND_FILTERING, 30);
    let s = stun(&o);
    assert_eq!(s["nat_filtering"], "address_dependent", "{o:#}");
}

#[test]
fn binding_lifetime_search_finds_the_routers_udp_timeout() {
    let lab = Lab::new("natlife", Some("masquerade"));
    // An unanswered-twice UDP flow lives nf_conntrack_udp_timeout seconds after its last packet.
    lab.udp_timeout(4);
    let started = Instant::now();
    let (o, verdicts) = lab.check("    binding_lifetime: { max: 10s }\n", 60);
    let took = started.elapsed();
    let life = &stun(&o)["binding_lifetime"];
    let alive = life["alive_ms"].as_f64().expect("alive_ms");
    let expired = life["expired_ms"].as_f64().expect("expired_ms");
    // The check's packet reaches fw a little after the idle time the probe counts: allow that.
    assert!(alive <= 4500.0 && expired >= 3500.0, "the 4 s timeout lies in the bracket: {life}");
    assert!(expired - alive <= 1000.0, "bracket narrowed to 1 s: {life}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    eprintln!(
        "binding lifetime bracket {alive}..{expired} ms, {} checks, check took {took:?}",
        life["checks"]
    );
    assert!(
        verdicts.iter().any(|v| v.starts_with("Idle UDP mappings expire after about 4 s")
            || v.starts_with("Idle UDP mappings expire after about 3 s")
            || v.starts_with("Idle UDP mappings expire after about 5 s")),
        "{verdicts:#?}"
    );
}

#[test]
fn a_lifetime_search_cut_short_in_a_later_round_keeps_the_bracket_found() {
    let lab = Lab::new("natcut", Some("masquerade"));
    lab.udp_timeout(5);
    // Round 1 opens 7 flows to the server (the main socket, the trigger, 5 idle mappings for
    // 1, 2, 4, 8, 10 s); every newer flow is dropped, so round 2 cannot open its mappings.
    lab.net.policy(
        "accept",
        &[&format!(
            "iifname \"fwi0\" ip daddr {SIGNALLING_IP} udp dport {PRIMARY_PORT} ct state new numgen inc mod 1000000 >= 7 drop"
        )],
    );
    let (o, verdicts) = lab.check("    binding_lifetime: { max: 10s }\n", 60);
    let life = &stun(&o)["binding_lifetime"];
    let alive = life["alive_ms"].as_f64().unwrap_or_else(|| panic!("the bracket is kept: {o:#}"));
    let expired = life["expired_ms"].as_f64().unwrap_or_else(|| panic!("the bracket is kept: {o:#}"));
    assert!(alive < 5000.0 && expired > 5000.0 && alive < expired, "{life}");
    let notes = o["detail"]["notes"].to_string();
    assert!(notes.contains("search stopped in round 2"), "{notes}");
    assert!(
        verdicts.iter().any(|v| v.starts_with("Idle UDP mappings expire after about")),
        "{verdicts:#?}"
    );
}
