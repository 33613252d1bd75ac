//! Firewall scenarios: the real binary (`check`, `run`) inside a client namespace behind a
//! router namespace whose nftables **forward** chain is the firewall (with NAT), the servers
//! outside (`egress-probe responder` for HTTPS/WSS/DNS/429, coturn for STUN/TURN on 3478 and
//! TLS on 443), third-party middleboxes on the router (Debian's squid with basic auth,
//! mitmproxy re-signing TLS), and headless Chromium gathering ICE with the same servers from
//! the same namespace as the ground truth for media.
//!
//! Every scenario checks every probe's `phase/reason` and the verdict sentences of
//! `check --output json`; the media scenarios also check that egress-probe's `ice` result
//! (candidate types, relay protocols) and its verdict agree with Chromium's.
//!
//! With `EGRESS_FIREWALL_SUMMARY_DIR=DIR` each scenario writes `DIR/<scenario>.json` (expected,
//! egress-probe, Chromium); `scripts/firewall-scenarios` runs the suite that way and renders
//! `docs/firewall-scenarios.md`.
//!
//! At most two scenarios run at once (two cores, Chromium is heavy); each takes < 20 s.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use common::certs::TestCa;
use common::netns::{NetPair, Routed, FW_INSIDE_IP, RELAY_IP, SIGNALLING_IP};
use common::proc::{bounded, wait_until, ChildGuard};
use serde_json::{json, Value};

const TURN_USER: &str = "softphone";
const TURN_PASS: &str = "turn-lab-pass";
const PROXY_USER: &str = "agent";
const PROXY_PASS: &str = "proxy-lab-pass";
const DNS_NAME: &str = "relay.fw.test";
/// How long Chromium (and egress-probe's ICE probes) gather.
const GATHER: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Two scenarios at a time.

static SLOTS: Mutex<u32> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();
const MAX_PARALLEL: u32 = 2;

struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= MAX_PARALLEL {
            used = SLOT_FREED.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// The lab.

/// One scenario's network, servers and files. Field order is drop order: servers first, then
/// the namespaces (whose drop kills anything left in them, Chromium included), then files.
struct Lab {
    scenario: String,
    started: Instant,
    extra: Vec<ChildGuard>,
    _coturn: ChildGuard,
    _responder: ChildGuard,
    net: Routed,
    /// CA of the servers' certificates (what a correctly configured probe trusts).
    ca_file: PathBuf,
    /// SPKI pin of the signalling server's leaf, as the responder prints it.
    web_pin: String,
    dir: tempfile::TempDir,
    _slot: Slot,
}

fn bin() -> PathBuf {
    common::bin()
}

impl Lab {
    /// Namespaces, certificates, coturn (STUN/TURN on RELAY_IP 3478 udp+tcp, TLS on 443) and
    /// the responder (HTTPS/WSS on SIGNALLING_IP 443 and 8443, DNS on 53) outside.
    fn new(scenario: &str) -> Lab {
        let slot = Slot::take();
        let started = Instant::now();
        let short: String = scenario.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
        let net = Routed::new(&format!("fw{short}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("egress-probe firewall lab CA");
        let ca_file = ca.write_ca(dir.path());
        let (web_crt, web_key) = ca
            .leaf(&["sig.fw.test", &SIGNALLING_IP.to_string()], None)
            .write(dir.path(), "web", Some(&ca));
        let (turn_crt, turn_key) = ca
            .leaf(&[DNS_NAME, &RELAY_IP.to_string()], None)
            .write(dir.path(), "turn", Some(&ca));

        // coturn, the reference TURN server (Chromium and egress-probe both use it).
        let conf = vec![
            format!("listening-ip={RELAY_IP}"),
            format!("relay-ip={RELAY_IP}"),
            "listening-port=3478".into(),
            "tls-listening-port=443".into(),
            "alt-listening-port=0".into(),
            "alt-tls-listening-port=0".into(),
            format!("cert={}", turn_crt.display()),
            format!("pkey={}", turn_key.display()),
            "lt-cred-mech".into(),
            format!("user={TURN_USER}:{TURN_PASS}"),
            "realm=fw.test".into(),
            "no-multicast-peers".into(),
            "min-port=49160".into(),
            "max-port=49260".into(),
        ];
        let (coturn, turn_log) = common::coturn::spawn_conf(dir.path(), conf, Some(&net.outside));

        // The responder: signalling endpoints and a DNS answerer for DNS_NAME (→ RELAY_IP).
        let mut responder = ChildGuard::spawn(
            "egress-probe responder",
            Command::new("ip")
                .args(["netns", "exec", &net.outside])
                .arg(bin())
                .args([
                    "responder",
                    "--bind",
                    &SIGNALLING_IP.to_string(),
                    "--relay-ip",
                    &RELAY_IP.to_string(),
                ])
                .args([
                    "--turn-udp",
                    "none",
                    "--turn-tcp",
                    "none",
                    "--turn-tls",
                    "none",
                    "--udp-echo",
                    "none",
                ])
                .args([
                    "--web",
                    "443",
                    "--web",
                    "8443",
                    "--dns",
                    &format!("{SIGNALLING_IP}:53"),
                    "--dns-name",
                    DNS_NAME,
                ])
                .args(["--metrics", "127.0.0.1:9470", "--tls-cert"])
                .arg(&web_crt)
                .arg("--tls-key")
                .arg(&web_key)
                .env("RUST_LOG", "off")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let web_pin = read_pin(&mut responder);

        let ready = NetPair::run_in(&net.outside, || {
            wait_until(Duration::from_secs(8), || {
                std::net::TcpStream::connect((RELAY_IP, 3478)).is_ok()
                    && std::net::TcpStream::connect((RELAY_IP, 443)).is_ok()
                    && common::coturn::udp_answers(RELAY_IP, 3478)
                    && std::net::TcpStream::connect((SIGNALLING_IP, 443)).is_ok()
            })
        });
        assert!(
            ready,
            "coturn/responder not ready in {}; coturn log: {}",
            net.outside,
            std::fs::read_to_string(&turn_log).unwrap_or_default()
        );
        Lab {
            scenario: scenario.to_string(),
            started,
            extra: vec![],
            _coturn: coturn,
            _responder: responder,
            net,
            ca_file,
            web_pin,
            dir,
            _slot: slot,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `yaml` and runs `egress-probe check --output json` inside (`--probe` for each of
    /// `only`), bounded; verdicts are what it prints on stderr (logs are off).
    fn check(&self, yaml: &str, only: &[&str]) -> Check {
        let file = self.path(&format!("check-{}.yaml", rand::random::<u32>()));
        std::fs::write(&file, yaml).expect("write config");
        let clock = Instant::now();
        let mut args = vec!["--output", "json"];
        for p in only {
            args.extend(["--probe", p]);
        }
        let out = common::netns::check_in(&self.net.inside, 30, &[], &file, &args);
        let wall = clock.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "check exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("check JSON: {e}\n{stdout}"));
        let verdicts: Vec<String> = stderr.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
        let mut codes = BTreeMap::new();
        for r in report["results"].as_array().expect("results") {
            codes.insert(r["name"].as_str().unwrap_or_default().to_string(), code_of(&r["outcome"]));
        }
        Check {
            report,
            verdicts,
            codes,
            wall,
        }
    }

    /// Headless Chromium inside gathers ICE with `servers` under both policies; with `proxy`
    /// (`{"proxy": URL, "proxy_auth": [USER, PASSWORD], "warm_url": URL}`) through that proxy.
    fn chromium(&self, servers: &Value, proxy: Option<&Value>) -> Value {
        let home = self.path("chrome-home");
        let nss = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nss).expect("nss dir");
        let db = format!("sql:{}", nss.display());
        let out = bounded(20, "certutil", &["-N", "-d", &db, "--empty-password"]);
        assert!(out.status.success(), "certutil -N: {}", String::from_utf8_lossy(&out.stderr));
        let ca = self.ca_file.to_string_lossy().to_string();
        let out = bounded(20, "certutil", &["-A", "-d", &db, "-n", "fw-lab-ca", "-t", "C,,", "-i", &ca]);
        assert!(out.status.success(), "certutil -A: {}", String::from_utf8_lossy(&out.stderr));
        let mut spec = json!({
            "ice_servers": servers,
            "policies": ["all", "relay"],
            "gather_ms": GATHER.as_millis() as u64,
            "user_data_dir": self.path("chrome-profile"),
            "home": home,
        });
        if let Some(Value::Object(p)) = proxy {
            for (k, v) in p {
                spec[k] = v.clone();
            }
        }
        let spec_file = self.path("chromium-spec.json");
        std::fs::write(&spec_file, spec.to_string()).expect("write spec");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/chromium_ice.py");
        let out = Command::new("timeout")
            .args(["40", "ip", "netns", "exec", &self.net.inside, "/usr/bin/python3"])
            .arg(&script)
            .arg(&spec_file)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("run chromium driver");
        // Whatever happened, nothing of Chromium may stay behind.
        // Whatever happened, nothing of Chromium may stay behind: the driver kills its process
        // group; renderer/zygote processes outside that group are killed here.
        let left = wait_until(Duration::from_secs(3), || {
            let left = chromium_processes(&self.net.inside);
            for pid in &left {
                let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
            }
            left.is_empty()
        });
        assert!(
            out.status.success(),
            "chromium driver: {:?}\n{}\nchromium log: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(home.join("chromium.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            left,
            "Chromium processes left in {}: {:?}",
            self.net.inside,
            chromium_processes(&self.net.inside)
        );
        serde_json::from_slice(&out.stdout).expect("chromium driver JSON")
    }

    /// `check` and Chromium side by side (they do not disturb each other: separate sockets,
    /// separate TURN allocations).
    fn check_with_chromium(&self, yaml: &str) -> (Check, Value) {
        self.check_with_chromium_via(yaml, &[], None)
    }

    /// As [`Lab::check_with_chromium`], for the probes `only` (all if empty), Chromium
    /// through `proxy` (see [`Lab::chromium`]).
    fn check_with_chromium_via(&self, yaml: &str, only: &[&str], proxy: Option<&Value>) -> (Check, Value) {
        std::thread::scope(|s| {
            let browser = s.spawn(|| self.chromium(&chromium_servers(), proxy));
            let check = self.check(yaml, only);
            (check, browser.join().expect("chromium thread"))
        })
    }

    /// A server on the router (proxy), killed with the lab; waits until `port` accepts on
    /// FW_INSIDE_IP.
    fn start_on_router(&mut self, name: &str, port: u16, program: &str, args: &[&str]) {
        let guard = ChildGuard::spawn(
            name,
            Command::new("timeout")
                .args(["60", "ip", "netns", "exec", &self.net.fw, program])
                .args(args)
                .env("HOME", self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.extra.push(guard);
        let ok = NetPair::run_in(&self.net.fw, move || {
            wait_until(Duration::from_secs(15), || {
                std::net::TcpStream::connect((FW_INSIDE_IP, port)).is_ok()
            })
        });
        assert!(ok, "{name} did not listen on {FW_INSIDE_IP}:{port}");
    }

    /// Plain HTTP GET of `path` on `addr` from inside namespace `ns` (metrics scrapes).
    fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Option<String> {
        let path = path.to_string();
        NetPair::run_in(ns, move || {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
            let mut body = String::new();
            s.take(4 << 20).read_to_string(&mut body).ok()?;
            body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
        })
    }

    /// Writes this scenario's summary for `scripts/firewall-scenarios`, if asked to.
    fn summarize(&self, summary: Value) {
        let Some(dir) = std::env::var_os("EGRESS_FIREWALL_SUMMARY_DIR") else {
            return;
        };
        let mut summary = summary;
        summary["scenario"] = json!(self.scenario);
        summary["wall_s"] = json!((self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("summary dir");
        std::fs::write(
            dir.join(format!("{}.json", self.scenario)),
            serde_json::to_string_pretty(&summary).unwrap(),
        )
        .expect("write summary");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        eprintln!("scenario {}: {:.1} s", self.scenario, took.as_secs_f64());
        if !std::thread::panicking() {
            assert!(
                took < Duration::from_secs(20),
                "scenario {} took {took:?} (limit 20 s)",
                self.scenario
            );
        }
    }
}

/// PIDs of live (not zombie) Chromium processes in namespace `ns` (`check` may be running
/// there at the same time).
fn chromium_processes(ns: &str) -> Vec<String> {
    let pids = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&pids)
        .split_whitespace()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.contains("chrom")))
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) STATE ..."
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        })
        .map(str::to_string)
        .collect()
}

/// Reads the responder's start banner until its pin line (bounded).
fn read_pin(responder: &mut ChildGuard) -> String {
    let stdout = responder.child.stdout.take().expect("responder stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pin) = line.trim().strip_prefix("TLS pin_sha256") {
                let _ = tx.send(pin.trim().to_string());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(15)).expect("responder printed its pin")
}

/// `pass` or `phase/reason`.
fn code_of(outcome: &Value) -> String {
    if outcome["success"].as_bool() == Some(true) {
        return "pass".into();
    }
    let f = &outcome["failure"];
    format!("{}/{}", f["phase"].as_str().unwrap_or("?"), f["reason"].as_str().unwrap_or("?"))
}

/// One `check --output json` run: the report, its verdict lines, each probe's code.
struct Check {
    report: Value,
    verdicts: Vec<String>,
    codes: BTreeMap<String, String>,
    wall: Duration,
}

impl Check {
    fn result(&self, name: &str) -> &Value {
        self.report["results"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("no result for {name}"))
    }

    /// Every probe in `expected` has exactly that code, and no probe is missing or extra
    /// (probes listed in `skip` are left to another assertion).
    fn assert_codes(&self, expected: &BTreeMap<String, String>, skip: &[&str]) {
        let got: BTreeMap<_, _> = self
            .codes
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let want: BTreeMap<_, _> = expected
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got, want, "probe codes (verdicts: {:#?})", self.verdicts);
    }

    /// Some verdict sentence contains `part`.
    fn assert_verdict(&self, part: &str) {
        assert!(
            self.verdicts.iter().any(|v| v.contains(part)),
            "no verdict contains {part:?}: {:#?}",
            self.verdicts
        );
    }

    /// Some verdict sentence contains every one of `parts`.
    fn assert_verdict_all(&self, parts: &[&str]) {
        assert!(
            self.verdicts.iter().any(|v| parts.iter().all(|p| v.contains(p))),
            "no verdict contains all of {parts:?}: {:#?}",
            self.verdicts
        );
    }

    /// No sentence is printed twice.
    fn assert_no_repeats(&self) {
        let unique: BTreeSet<_> = self.verdicts.iter().collect();
        assert_eq!(unique.len(), self.verdicts.len(), "a verdict repeats: {:#?}", self.verdicts);
    }

    /// Whether the verdicts say softphones have no media path at all.
    fn says_no_media(&self) -> bool {
        self.verdicts
            .iter()
            .any(|v| v.contains("no media path") || v.contains("cannot fall back to the relay"))
    }
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// The probe set and the ICE servers (the same for egress-probe and Chromium).

fn turn_urls() -> [String; 3] {
    [
        format!("turn:{RELAY_IP}:3478?transport=udp"),
        format!("turn:{RELAY_IP}:3478?transport=tcp"),
        format!("turns:{RELAY_IP}:443?transport=tcp"),
    ]
}

fn chromium_servers() -> Value {
    json!([
        {"urls": format!("stun:{RELAY_IP}:3478")},
        {"urls": turn_urls(), "username": TURN_USER, "credential": TURN_PASS},
    ])
}

/// The softphone's path: DNS, signalling on 443/8443, STUN, TURN over UDP/TCP/TLS-443, ICE
/// (policy all and relay, the servers Chromium gets).
fn softphone_probes(ca: &Path) -> String {
    let ca = ca.display();
    let creds = format!("credentials: {{ username: {TURN_USER}, password: {TURN_PASS} }}");
    let timeout = format!("{}s", GATHER.as_secs());
    let [udp, tcp, tls] = turn_urls();
    // The CA of the `turns:` server, as Chromium has it in its NSS db.
    let ice_tls = format!("\n    ca_file: {ca}");
    format!(
        "defaults: {{ interval: 30s, timeout: 3s }}
probes:
  - name: dns
    kind: dns
    query: {DNS_NAME}
    resolver: {SIGNALLING_IP}:53
    expect: {{ contains: [\"{RELAY_IP}\"] }}
  - name: https-443
    kind: http
    url: https://{SIGNALLING_IP}:443/
    ca_file: {ca}
    expect_status: [200]
  - name: wss-443
    kind: websocket
    url: wss://{SIGNALLING_IP}:443/
    ca_file: {ca}
  - name: https-8443
    kind: http
    url: https://{SIGNALLING_IP}:8443/
    ca_file: {ca}
    expect_status: [200]
  - name: stun-udp
    kind: stun
    server: stun:{RELAY_IP}:3478
  - name: turn-udp
    kind: turn
    server: {udp}
    {creds}
  - name: turn-tcp
    kind: turn
    server: {tcp}
    {creds}
  - name: turn-tls-443
    kind: turn
    server: {tls}
    {creds}
    ca_file: {ca}
  - name: ice
    kind: ice
    timeout: {timeout}{ice_tls}
    servers:
      - stun:{RELAY_IP}:3478
      - {{ url: \"{udp}\", {creds} }}
      - {{ url: \"{tcp}\", {creds} }}
      - {{ url: \"{tls}\", {creds} }}
  - name: ice-relay
    kind: ice
    timeout: {timeout}{ice_tls}
    policy: relay
    expect: [relay]
    servers:
      - {{ url: \"{udp}\", {creds} }}
      - {{ url: \"{tcp}\", {creds} }}
      - {{ url: \"{tls}\", {creds} }}
"
    )
}

// ---------------------------------------------------------------------------------------------
// ICE views and agreement.

/// Candidate types (without prflx) and relay protocols (udp/tcp/tls).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct IceView {
    types: BTreeSet<String>,
    relay: BTreeSet<String>,
}

impl IceView {
    fn json(&self) -> Value {
        json!({"types": self.types, "relay": self.relay})
    }
}

/// `turns:` → tls, `turn:…?transport=tcp` → tcp, other `turn:` → udp.
fn protocol_of_url(url: &str) -> Option<String> {
    let url = url.trim();
    if url.starts_with("turns:") {
        Some("tls".into())
    } else if url.starts_with("turn:") {
        Some(if url.contains("transport=tcp") { "tcp" } else { "udp" }.into())
    } else {
        None
    }
}

fn chromium_view(browser: &Value, policy: &str) -> IceView {
    let mut v = IceView::default();
    for c in browser["gathers"][policy]["candidates"].as_array().into_iter().flatten() {
        let ty = c["type"].as_str().unwrap_or("?").to_string();
        if ty == "relay" {
            // Chromium 156 says relayProtocol "tls"/"tcp" but null for UDP: the URL says it.
            let proto = c["relayProtocol"]
                .as_str()
                .map(str::to_string)
                .or_else(|| c["url"].as_str().and_then(protocol_of_url))
                .unwrap_or_else(|| "?".into());
            v.relay.insert(proto);
        }
        v.types.insert(ty);
    }
    v
}

/// egress-probe's view from `detail.ice`, plus the relay protocols it says it cannot gather
/// (`unsupported`): those are no claim either way.
fn egress_view(result: &Value) -> (IceView, BTreeSet<String>) {
    let ice = &result["outcome"]["detail"]["ice"];
    let mut v = IceView::default();
    if let Some(m) = ice["candidates"].as_object() {
        for (ty, n) in m {
            if ty != "prflx" && n.as_u64().unwrap_or(0) > 0 {
                v.types.insert(ty.clone());
            }
        }
    }
    for s in ice["relay_servers"].as_array().into_iter().flatten() {
        if let Some(url) = s.as_str().and_then(|s| s.split(" via ").nth(1)) {
            if let Some(p) = url.split_whitespace().filter_map(protocol_of_url).next() {
                v.relay.insert(p);
            }
        }
    }
    // Per-protocol facts, when the probe reports them: `relay_protocols` {proto: count} and
    // `relays` [{protocol, ...}].
    if let Some(m) = ice["relay_protocols"].as_object() {
        v.relay
            .extend(m.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0).map(|(p, _)| p.clone()));
    }
    for r in ice["relays"].as_array().into_iter().flatten() {
        if let Some(p) = r["protocol"].as_str() {
            v.relay.insert(p.to_string());
        }
    }
    // Entries read `URL: why`.
    let unsupported = ice["unsupported"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().and_then(|s| s.split(": ").next()).and_then(protocol_of_url))
        .collect();
    (v, unsupported)
}

/// Whether egress-probe's ice results and verdict agree with Chromium's; the explanation
/// lists each comparison.
fn agreement(check: &Check, browser: &Value) -> (bool, Vec<String>) {
    let mut ok = true;
    let mut notes = vec![];
    for (probe, policy) in [("ice", "all"), ("ice-relay", "relay")] {
        let (mine, unsupported) = egress_view(check.result(probe));
        let theirs = chromium_view(browser, policy);
        let comparable: BTreeSet<String> = theirs.relay.difference(&unsupported).cloned().collect();
        let agree = mine.types == theirs.types && mine.relay == comparable;
        ok &= agree;
        notes.push(format!(
            "{probe} (policy {policy}): egress-probe {:?} relay {:?}{} vs Chromium {:?} relay {:?}: {}",
            mine.types,
            mine.relay,
            if unsupported.is_empty() {
                String::new()
            } else {
                format!(" (not gathered: {unsupported:?})")
            },
            theirs.types,
            theirs.relay,
            if agree { "agree" } else { "DISAGREE" }
        ));
    }
    let chromium_relays = !chromium_view(browser, "relay").relay.is_empty();
    let verdict_agrees = check.says_no_media() != chromium_relays;
    ok &= verdict_agrees;
    notes.push(format!(
        "verdict says no media path: {}; Chromium has a relay: {chromium_relays}: {}",
        check.says_no_media(),
        if verdict_agrees { "agree" } else { "DISAGREE" }
    ));
    (ok, notes)
}

/// A scenario's summary for the generated document: the firewall, the expected and actual
/// codes, the verdicts, and (for media scenarios) both ICE views and whether they agree.
fn summary(policy: &str, expected: &BTreeMap<String, String>, checks: &[&Check], browser: Option<&Value>, notes: &[String]) -> Value {
    let mut egress = BTreeMap::new();
    let mut verdicts = vec![];
    for c in checks {
        egress.extend(c.codes.clone());
        verdicts.extend(c.verdicts.clone());
    }
    let mut s = json!({
        "policy": policy,
        "expected": expected,
        "egress_probe": egress,
        "verdicts": verdicts,
        "check_wall_s": checks.iter().map(|c| (c.wall.as_secs_f64() * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "notes": notes,
    });
    if let (Some(b), Some(c)) = (browser, checks.first()) {
        let (agree, lines) = agreement(c, b);
        s["chromium"] = json!({
            "version": b["version"],
            "all": chromium_view(b, "all").json(),
            "relay": chromium_view(b, "relay").json(),
            "first_relay_ms": first_relay_ms(b),
        });
        s["egress_ice"] = json!({
            "ice": egress_view(c.result("ice")).0.json(),
            "ice-relay": egress_view(c.result("ice-relay")).0.json(),
        });
        s["agree"] = json!(agree);
        s["agreement"] = json!(lines);
    }
    s
}

/// Chromium's time to the first relay candidate per protocol (policy relay).
fn first_relay_ms(browser: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in browser["gathers"]["relay"]["candidates"].as_array().into_iter().flatten() {
        let proto = c["relayProtocol"]
            .as_str()
            .map(str::to_string)
            .or_else(|| c["url"].as_str().and_then(protocol_of_url));
        if let (Some(p), Some(ms)) = (proto, c["ms"].as_u64()) {
            let e = m.entry(p).or_insert(ms);
            *e = (*e).min(ms);
        }
    }
    m
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

const OPEN: &str = "forward: accept everything";
const STRICT_RULES: &[&str] = &["iifname \"fwi0\" tcp dport { 443, 8443 } accept"];
const STRICT: &str = "forward: drop, except TCP 443 and 8443 (UDP, DNS and TCP 3478 dropped)";

#[test]
fn open_network_every_probe_passes_and_chromium_agrees() {
    let lab = Lab::new("open");
    lab.net.policy("accept", &[]);
    let (check, browser) = lab.check_with_chromium(&softphone_probes(&lab.ca_file));
    let expected = expect(&[
        ("dns", "pass"),
        ("https-443", "pass"),
        ("wss-443", "pass"),
        ("https-8443", "pass"),
        ("stun-udp", "pass"),
        ("turn-udp", "pass"),
        ("turn-tcp", "pass"),
        ("turn-tls-443", "pass"),
        ("ice", "pass"),
        ("ice-relay", "pass"),
    ]);
    let (agree, notes) = agreement(&check, &browser);
    lab.summarize(summary(OPEN, &expected, &[&check], Some(&browser), &[]));
    check.assert_codes(&expected, &[]);
    assert_eq!(check.verdicts, ["all paths work (10 probes passed)"]);
    // Chromium itself: every candidate type, a relay over every transport.
    assert_eq!(chromium_view(&browser, "all").types, set(&["host", "srflx", "relay"]), "{browser}");
    assert_eq!(chromium_view(&browser, "relay").relay, set(&["udp", "tcp", "tls"]), "{browser}");
    assert!(agree, "{notes:#?}");
}

#[test]
fn strict_egress_drops_udp_and_passes_only_tcp_443_and_8443() {
    let lab = Lab::new("strict");
    lab.net.policy("drop", STRICT_RULES);
    let (check, browser) = lab.check_with_chromium(&softphone_probes(&lab.ca_file));
    let expected = expect(&[
        ("dns", "resolve/timeout"),
        ("https-443", "pass"),
        ("wss-443", "pass"),
        ("https-8443", "pass"),
        ("stun-udp", "stun/timeout"),
        ("turn-udp", "allocate/timeout"),
        ("turn-tcp", "connect/timeout"),
        ("turn-tls-443", "pass"),
        // What Chromium shows: no srflx (UDP dropped), a relay over TLS on 443.
        ("ice", "gather/no_srflx"),
        ("ice-relay", "pass"),
    ]);
    lab.summarize(summary(STRICT, &expected, &[&check], Some(&browser), &[]));
    // The ICE probes are checked against Chromium in strict_egress_ice_agrees_with_chromium.
    check.assert_codes(&expected, &["ice", "ice-relay"]);
    check.assert_verdict_all(&["UDP to 3478 is dropped", "TLS on 443 works"]);
    check.assert_verdict(&format!("DNS for {DNS_NAME} fails (resolve/timeout)"));
    check.assert_verdict(&format!("TCP to 3478 on {RELAY_IP} is silently dropped (connect/timeout)"));
    check.assert_no_repeats();
    // Chromium: host and a relay over TLS only; nothing over UDP or TCP 3478.
    assert_eq!(chromium_view(&browser, "all").types, set(&["host", "relay"]), "{browser}");
    assert_eq!(chromium_view(&browser, "all").relay, set(&["tls"]), "{browser}");
    assert_eq!(
        chromium_view(&browser, "relay"),
        IceView {
            types: set(&["relay"]),
            relay: set(&["tls"])
        },
        "{browser}"
    );
}

#[test]
fn strict_egress_ice_agrees_with_chromium() {
    let lab = Lab::new("strictice");
    lab.net.policy("drop", STRICT_RULES);
    let (check, browser) = lab.check_with_chromium(&softphone_probes(&lab.ca_file));
    let (agree, notes) = agreement(&check, &browser);
    assert_eq!(check.codes["ice"], "gather/no_srflx", "{:#?}", check.result("ice"));
    assert_eq!(check.codes["ice-relay"], "pass", "{:#?}", check.result("ice-relay"));
    assert_eq!(egress_view(check.result("ice-relay")).0.relay, set(&["tls"]));
    assert!(!check.says_no_media(), "{:#?}", check.verdicts);
    assert!(agree, "{notes:#?}\nverdicts: {:#?}", check.verdicts);
}

#[test]
fn port_8443_reject_is_refused_and_drop_is_a_timeout() {
    let lab = Lab::new("8443");
    let base = [
        ("dns", "pass"),
        ("https-443", "pass"),
        ("wss-443", "pass"),
        ("stun-udp", "pass"),
        ("turn-udp", "pass"),
        ("turn-tcp", "pass"),
        ("turn-tls-443", "pass"),
        ("ice", "pass"),
        ("ice-relay", "pass"),
    ];
    lab.net.policy("accept", &["tcp dport 8443 reject with tcp reset"]);
    let (rejected, browser) = lab.check_with_chromium(&softphone_probes(&lab.ca_file));
    lab.net.policy("accept", &["tcp dport 8443 drop"]);
    let dropped = lab.check(&softphone_probes(&lab.ca_file), &["https-8443"]);

    let mut expected = expect(&base);
    expected.insert("https-8443".into(), "connect/refused".into());
    let (agree, notes) = agreement(&rejected, &browser);
    let mut shown = expected.clone();
    shown.insert("https-8443".into(), "connect/refused (REJECT), connect/timeout (DROP)".into());
    let mut s = summary(
        "forward: accept, `tcp dport 8443 reject with tcp reset`, then `drop` (https-8443 again)",
        &shown,
        &[&rejected],
        Some(&browser),
        &[],
    );
    s["egress_probe"]["https-8443"] = json!(format!(
        "{} (REJECT), {} (DROP)",
        rejected.codes["https-8443"],
        dropped.codes.get("https-8443").map(String::as_str).unwrap_or("-")
    ));
    if let Some(v) = s["verdicts"].as_array_mut() {
        v.extend(dropped.verdicts.iter().map(|x| json!(format!("(DROP) {x}"))));
    }
    lab.summarize(s);
    rejected.assert_codes(&expected, &[]);
    rejected.assert_verdict(&format!("TCP to 8443 on {SIGNALLING_IP} is rejected (connect/refused)"));
    assert_eq!(dropped.codes.get("https-8443").map(String::as_str), Some("connect/timeout"));
    dropped.assert_verdict(&format!("TCP to 8443 on {SIGNALLING_IP} is silently dropped (connect/timeout)"));
    assert!(agree, "{notes:#?}");
}

#[test]
fn dns_blocked_fails_resolve_while_probes_by_ip_pass() {
    let lab = Lab::new("dns");
    lab.net.policy("accept", &["udp dport 53 drop", "tcp dport 53 drop"]);
    let (check, browser) = lab.check_with_chromium(&softphone_probes(&lab.ca_file));
    let expected = expect(&[
        ("dns", "resolve/timeout"),
        ("https-443", "pass"),
        ("wss-443", "pass"),
        ("https-8443", "pass"),
        ("stun-udp", "pass"),
        ("turn-udp", "pass"),
        ("turn-tcp", "pass"),
        ("turn-tls-443", "pass"),
        ("ice", "pass"),
        ("ice-relay", "pass"),
    ]);
    let (agree, notes) = agreement(&check, &browser);
    lab.summarize(summary(
        "forward: accept, UDP and TCP 53 dropped",
        &expected,
        &[&check],
        Some(&browser),
        &[],
    ));
    check.assert_codes(&expected, &[]);
    check.assert_verdict(&format!("DNS for {DNS_NAME} fails (resolve/timeout)"));
    check.assert_verdict("9 of 10 probes pass");
    check.assert_no_repeats();
    assert_eq!(chromium_view(&browser, "relay").relay, set(&["udp", "tcp", "tls"]), "{browser}");
    assert!(agree, "{notes:#?}");
}

#[test]
fn everything_dropped_fails_every_probe_and_chromium_gets_host_only() {
    let lab = Lab::new("alldrop");
    lab.net.policy("drop", &[]);
    let (check, browser) = lab.check_with_chromium(&softphone_probes(&lab.ca_file));
    let expected = expect(&[
        ("dns", "resolve/timeout"),
        ("https-443", "connect/timeout"),
        ("wss-443", "connect/timeout"),
        ("https-8443", "connect/timeout"),
        ("stun-udp", "stun/timeout"),
        ("turn-udp", "allocate/timeout"),
        ("turn-tcp", "connect/timeout"),
        ("turn-tls-443", "connect/timeout"),
        ("ice", "gather/no_srflx"),
        ("ice-relay", "gather/no_relay"),
    ]);
    let (agree, notes) = agreement(&check, &browser);
    lab.summarize(summary("forward: drop everything", &expected, &[&check], Some(&browser), &[]));
    check.assert_codes(&expected, &[]);
    check.assert_verdict("no media path");
    check.assert_no_repeats();
    assert_eq!(chromium_view(&browser, "all").types, set(&["host"]), "{browser}");
    assert!(chromium_view(&browser, "relay").types.is_empty(), "{browser}");
    assert!(agree, "{notes:#?}");
}

/// The proxy-only network: forward drops everything; squid on the router allows CONNECT to 443
/// only, with basic auth. Returns the lab, the probe config and Chromium's proxy settings.
fn squid_lab(scenario: &str) -> (Lab, String, Value) {
    let mut lab = Lab::new(scenario);
    lab.net.policy("drop", &[]);
    // squid drops privileges to `proxy`: its config, password file, logs and pid live in a
    // directory of their own that it may write.
    let squid_dir = lab.path("squid");
    std::fs::create_dir_all(&squid_dir).expect("squid dir");
    let passwd = squid_dir.join("squid.passwd");
    let out = bounded(10, "htpasswd", &["-bc", &passwd.to_string_lossy(), PROXY_USER, PROXY_PASS]);
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    let d = squid_dir.display().to_string();
    let conf = format!(
        "http_port {FW_INSIDE_IP}:3128
pid_filename {d}/squid.pid
cache deny all
cache_mem 8 MB
access_log stdio:{d}/squid-access.log
cache_log {d}/squid-cache.log
coredump_dir {d}
auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/squid.passwd
auth_param basic realm egress-lab
acl SSL_ports port 443
acl CONNECT method CONNECT
acl authed proxy_auth REQUIRED
http_access deny CONNECT !SSL_ports
http_access allow authed
http_access deny all
shutdown_lifetime 0 seconds
"
    );
    std::fs::write(squid_dir.join("squid.conf"), conf).expect("squid.conf");
    let out = bounded(5, "chmod", &["-R", "a+rwX", &d]);
    assert!(out.status.success(), "chmod {d}");
    let conf_path = squid_dir.join("squid.conf").to_string_lossy().to_string();
    lab.start_on_router("squid", 3128, "squid", &["-N", "-f", &conf_path]);

    let proxy = format!("http://{PROXY_USER}:{PROXY_PASS}@{FW_INSIDE_IP}:3128");
    let ca = lab.ca_file.display().to_string();
    let [_, _, tls] = turn_urls();
    let yaml = format!(
        "defaults: {{ interval: 30s, timeout: 3s }}
proxy: {proxy}
probes:
  - {{ name: https-443, kind: http, url: \"https://{SIGNALLING_IP}:443/\", ca_file: {ca}, expect_status: [200] }}
  - {{ name: wss-443, kind: websocket, url: \"wss://{SIGNALLING_IP}:443/\", ca_file: {ca} }}
  - {{ name: https-8443, kind: http, url: \"https://{SIGNALLING_IP}:8443/\", ca_file: {ca} }}
  - {{ name: turn-tls-443, kind: turn, server: \"{tls}\", ca_file: {ca}, credentials: {{ username: {TURN_USER}, password: {TURN_PASS} }} }}
  - {{ name: https-443-direct, kind: http, url: \"https://{SIGNALLING_IP}:443/\", ca_file: {ca}, proxy: none }}
  - {{ name: stun-udp, kind: stun, server: \"stun:{RELAY_IP}:3478\" }}
  - {{ name: https-443-wrong-creds, kind: http, url: \"https://{SIGNALLING_IP}:443/\", ca_file: {ca}, proxy: \"http://{PROXY_USER}:wrong-{PROXY_PASS}@{FW_INSIDE_IP}:3128\" }}
"
    );
    // The softphone's ICE probes with the same servers (they do not go through a proxy).
    let ice: String = softphone_probes(&lab.ca_file)
        .split("  - name: ice\n")
        .nth(1)
        .map(|t| format!("  - name: ice\n{t}"))
        .expect("ice probes");
    let yaml = yaml + &ice;
    let browser_proxy = json!({
        "proxy": format!("http://{FW_INSIDE_IP}:3128"),
        "proxy_auth": [PROXY_USER, PROXY_PASS],
        "warm_url": format!("https://{SIGNALLING_IP}:443/"),
    });
    (lab, yaml, browser_proxy)
}

const SQUID: &str = "forward: drop everything; squid on the router: CONNECT to 443 only, basic auth";
const SQUID_MAIN: &[&str] = &[
    "https-443",
    "wss-443",
    "https-8443",
    "turn-tls-443",
    "https-443-direct",
    "stun-udp",
    "ice",
    "ice-relay",
];

#[test]
fn proxy_only_egress_through_squid_allows_connect_to_443_with_credentials() {
    let (lab, yaml, browser_proxy) = squid_lab("squid");
    let (through, browser) = lab.check_with_chromium_via(&yaml, SQUID_MAIN, Some(&browser_proxy));
    // squid may answer a right and a wrong password for one user crossed when they come in
    // one burst (LAB.md): the wrong-credentials probe runs on its own.
    let wrong = lab.check(&yaml, &["https-443-wrong-creds"]);
    let expected = expect(&[
        ("https-443", "pass"),
        ("wss-443", "pass"),
        ("https-8443", "proxy/status_403"),
        ("turn-tls-443", "pass"),
        ("https-443-direct", "connect/timeout"),
        ("stun-udp", "stun/timeout"),
        ("https-443-wrong-creds", "proxy/auth"),
        // What Chromium shows: a relay over TLS through the proxy (CONNECT 443), no srflx.
        ("ice", "gather/no_srflx"),
        ("ice-relay", "pass"),
    ]);
    lab.summarize(summary(
        SQUID,
        &expected,
        &[&through, &wrong],
        Some(&browser),
        &["Chromium runs with --proxy-server and answers squid's 407 once (as a user answers the prompt); its TURN/TLS then goes through CONNECT 443".into()],
    ));
    let mut got = through.codes.clone();
    got.extend(wrong.codes.clone());
    // The ICE probes are checked against Chromium in proxy_only_egress_ice_agrees_with_chromium.
    got.remove("ice");
    got.remove("ice-relay");
    let mut want = expected.clone();
    want.remove("ice");
    want.remove("ice-relay");
    assert_eq!(got, want, "verdicts: {:#?} {:#?}", through.verdicts, wrong.verdicts);
    through.assert_verdict(&format!(
        "The HTTP proxy does not let {SIGNALLING_IP}:8443 through (proxy/status_403)"
    ));
    through.assert_verdict(&format!("TCP to 443 on {SIGNALLING_IP} is silently dropped (connect/timeout)"));
    through.assert_verdict_all(&["UDP to 3478 is dropped", "TLS on 443 works"]);
    through.assert_no_repeats();
    wrong.assert_verdict(&format!(
        "The HTTP proxy demands authentication for {SIGNALLING_IP}:443 (proxy/auth)"
    ));
    // Chromium: host, and a relay over TLS through the proxy only.
    assert_eq!(
        chromium_view(&browser, "all"),
        IceView {
            types: set(&["host", "relay"]),
            relay: set(&["tls"])
        },
        "{browser}"
    );
    assert_eq!(
        chromium_view(&browser, "relay"),
        IceView {
            types: set(&["relay"]),
            relay: set(&["tls"])
        },
        "{browser}"
    );
}

#[test]
fn proxy_only_egress_ice_agrees_with_chromium() {
    let (lab, yaml, browser_proxy) = squid_lab("squidice");
    let (check, browser) = lab.check_with_chromium_via(&yaml, SQUID_MAIN, Some(&browser_proxy));
    let (agree, notes) = agreement(&check, &browser);
    assert_eq!(check.codes["ice-relay"], "pass", "{:#?}", check.result("ice-relay"));
    assert!(!check.says_no_media(), "{:#?}", check.verdicts);
    assert!(agree, "{notes:#?}\nverdicts: {:#?}", check.verdicts);
}

#[test]
fn tls_interception_by_mitmproxy_is_untrusted_or_a_pin_mismatch() {
    let mut lab = Lab::new("mitm");
    lab.net.policy("drop", &[]);
    let confdir = lab.path("mitmproxy");
    std::fs::create_dir_all(&confdir).expect("mitmproxy confdir");
    let confset = format!("confdir={}", confdir.display());
    lab.start_on_router(
        "mitmdump",
        8080,
        "mitmdump",
        &[
            "--listen-host",
            &FW_INSIDE_IP.to_string(),
            "--listen-port",
            "8080",
            "--set",
            &confset,
            "--ssl-insecure",
            "-q",
        ],
    );
    let mitm_ca = confdir.join("mitmproxy-ca-cert.pem");
    assert!(mitm_ca.exists(), "mitmproxy wrote its CA");
    let ca = lab.ca_file.display().to_string();
    let mca = mitm_ca.display().to_string();
    let pin = &lab.web_pin;
    let [_, _, tls] = turn_urls();
    let yaml = format!(
        "defaults: {{ interval: 30s, timeout: 3s }}
proxy: http://{FW_INSIDE_IP}:8080
probes:
  - {{ name: https-443, kind: http, url: \"https://{SIGNALLING_IP}:443/\", ca_file: {ca} }}
  - {{ name: wss-443, kind: websocket, url: \"wss://{SIGNALLING_IP}:443/\", ca_file: {ca} }}
  - {{ name: turn-tls-443, kind: turn, server: \"{tls}\", ca_file: {ca}, credentials: {{ username: {TURN_USER}, password: {TURN_PASS} }} }}
  - {{ name: https-443-pinned, kind: http, url: \"https://{SIGNALLING_IP}:443/\", ca_file: {mca}, pin_sha256: [{pin}] }}
  - {{ name: https-443-trusted, kind: http, url: \"https://{SIGNALLING_IP}:443/\", ca_file: {mca} }}
"
    );
    let check = lab.check(&yaml, &[]);
    let expected = expect(&[
        ("https-443", "tls/untrusted_issuer"),
        ("wss-443", "tls/untrusted_issuer"),
        ("turn-tls-443", "tls/untrusted_issuer"),
        ("https-443-pinned", "tls/pin_mismatch"),
        ("https-443-trusted", "pass"),
    ]);
    lab.summarize(summary(
        "forward: drop everything; mitmproxy (explicit proxy) on the router re-signs TLS",
        &expected,
        &[&check],
        None,
        &["`https-443-trusted` trusts mitmproxy's CA without a pin: interception is invisible to it".into()],
    ));
    check.assert_codes(&expected, &[]);
    for probe in ["https-443", "https-443-pinned"] {
        let issuer = check.result(probe)["outcome"]["detail"]["tls"]["issuer"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(issuer.contains("mitmproxy"), "{probe} names the issuer: {}", check.result(probe));
    }
    check.assert_verdict("untrusted issuer 'mitmproxy' (tls/untrusted_issuer)");
    check.assert_verdict("is intercepted (pin mismatch, issuer 'mitmproxy')");
    check.assert_no_repeats();
}

/// The responder's own count of HTTP responses with status `code` (its `/metrics`, scraped
/// from the outside namespace).
fn responder_count(lab: &Lab, code: &str) -> Option<f64> {
    let body = Lab::http_get(&lab.net.outside, SocketAddr::from((Ipv4Addr::LOCALHOST, 9470)), "/metrics")?;
    let key = format!("egress_responder_http_responses_total{{code=\"{code}\"}}");
    Some(metric(&body, &key).unwrap_or(0.0))
}

/// Value of the exposition line starting with `key` (exact series).
fn metric(body: &str, key: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<f64>().ok()))
}

/// Sum of every series of `family` whose labels contain all of `labels`.
fn metric_sum(body: &str, family: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// `egress-probe run` inside with `yaml`, /metrics on 127.0.0.1:9469 of the inside namespace.
fn start_daemon(lab: &mut Lab, yaml: &str) {
    let file = lab.path("run.yaml");
    std::fs::write(&file, yaml).expect("write run config");
    let guard = ChildGuard::spawn(
        "egress-probe run",
        Command::new("ip")
            .args(["netns", "exec", &lab.net.inside])
            .arg(bin())
            .args(["run", "--listen", "127.0.0.1:9469", "--config"])
            .arg(&file)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    lab.extra.push(guard);
    let ns = lab.net.inside.clone();
    assert!(
        wait_until(Duration::from_secs(5), || Lab::http_get(
            &ns,
            "127.0.0.1:9469".parse().unwrap(),
            "/healthz"
        )
        .is_some()),
        "daemon did not serve /healthz"
    );
}

fn daemon_metrics(lab: &Lab) -> String {
    Lab::http_get(&lab.net.inside, "127.0.0.1:9469".parse().unwrap(), "/metrics").expect("daemon /metrics")
}

#[test]
fn rate_limit_429_is_reported_and_the_daemon_honours_retry_after_on_the_wire() {
    let mut lab = Lab::new("ratelimit");
    lab.net.policy("accept", &[]);
    let ca = lab.ca_file.display().to_string();
    let url = format!("https://{SIGNALLING_IP}:443/status/429");
    let yaml = format!(
        "defaults: {{ interval: 1s, timeout: 900ms, jitter: 0% }}
probes:
  - {{ name: api-429, kind: http, url: \"{url}\", ca_file: {ca}, expect_status: [200] }}
"
    );
    let check = lab.check(&yaml, &[]);
    assert_eq!(check.codes["api-429"], "request/status_429");
    assert_eq!(
        check.result("api-429")["outcome"]["detail"]["retry_after_ms"].as_f64(),
        Some(5000.0)
    );
    check.assert_verdict("Retry-After 5 s");
    let before = responder_count(&lab, "429").expect("responder metrics");

    // The daemon, every 1 s; the responder answers 429 + Retry-After: 5 every time. Count the
    // requests where they arrive and when.
    start_daemon(&mut lab, &yaml);
    let window = Duration::from_millis(13_500);
    let start = Instant::now();
    let mut last = before;
    let mut arrivals: Vec<f64> = vec![];
    while start.elapsed() < window {
        if let Some(n) = responder_count(&lab, "429") {
            for _ in 0..(n - last).max(0.0) as u64 {
                arrivals.push(start.elapsed().as_secs_f64());
            }
            last = n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let runs = metric_sum(&daemon_metrics(&lab), "egress_probe_runs_total", &["probe=\"api-429\""]);
    let gaps: Vec<f64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let naive = (window.as_secs_f64()).floor() as usize;
    lab.summarize(json!({
        "policy": "forward: accept; the responder answers 429 with Retry-After: 5",
        "measured": true,
        "expected": {"api-429": "request/status_429; under `run` no two requests closer than Retry-After (5 s)"},
        "egress_probe": {"api-429": format!(
            "{}; under `run` {} requests in {:.1} s, gaps {:?} s",
            check.codes["api-429"],
            arrivals.len(),
            window.as_secs_f64(),
            gaps.iter().map(|t| (t * 10.0).round() / 10.0).collect::<Vec<_>>()
        )},
        "verdicts": check.verdicts,
        "notes": [format!(
            "daemon `run`, interval 1 s, {:.1} s: {} requests reached the responder (at {:?} s; without backoff ~{naive}); gaps {:?} s",
            window.as_secs_f64(),
            arrivals.len(),
            arrivals.iter().map(|t| (t * 10.0).round() / 10.0).collect::<Vec<_>>(),
            gaps.iter().map(|t| (t * 10.0).round() / 10.0).collect::<Vec<_>>(),
        )],
    }));
    assert!(
        (2..=3).contains(&arrivals.len()),
        "requests at the responder: {arrivals:?} (interval 1 s, Retry-After 5 s)"
    );
    // Polling granularity is 100 ms; the backoff's own jitter never goes below Retry-After.
    assert!(gaps.iter().all(|g| *g >= 4.8), "requests closer than Retry-After: {arrivals:?}");
    assert!(
        (runs - arrivals.len() as f64).abs() <= 1.0,
        "daemon counted {runs} runs, responder {} requests",
        arrivals.len()
    );
}

#[test]
fn flapping_rule_failure_share_matches_the_share_dropped_on_the_wire() {
    let mut lab = Lab::new("flap");
    // Count every SYN to 8443 at the router, and those the flapping rule drops.
    lab.net.nft_in(
        &lab.net.fw,
        "table inet filter {}\ndelete table inet filter\ntable inet filter {
  counter syn_all { }
  counter syn_dropped { }
  chain flap { }
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    tcp dport 8443 tcp flags & (syn | ack) == syn counter name \"syn_all\" jump flap
  }
}
",
    );
    // A 400 ms run ends before the kernel's first SYN retransmission (1 s): one SYN per run.
    // Four probes on jittered grids: each backs off on its own after a failure (2 s floor), so
    // one probe alone would give only ~7 runs in 15 s.
    let mut yaml = "defaults: { interval: 1s, timeout: 400ms, jitter: 50% }\nprobes:\n".to_string();
    for i in ["a", "b", "c", "d"] {
        yaml.push_str(&format!(
            "  - {{ name: flap-8443-{i}, kind: tcp, target: \"{SIGNALLING_IP}:8443\" }}\n"
        ));
    }
    start_daemon(&mut lab, &yaml);
    // Down/up periods in ms (a fixed irregular pattern); the rule drops new connections.
    // Short downs: after a failure the daemon backs off (2 s floor), so long downs would
    // leave few runs to compare.
    let pattern = [
        (true, 1000),
        (false, 1800),
        (true, 1500),
        (false, 1500),
        (true, 1000),
        (false, 2200),
        (true, 1800),
        (false, 1600),
        (true, 1200),
        (false, 1400),
    ];
    let mut down_time = Duration::ZERO;
    let start = Instant::now();
    for (down, ms) in pattern {
        if down {
            lab.net.nft_cmd(
                &lab.net.fw,
                &["add", "rule", "inet", "filter", "flap", "counter", "name", "syn_dropped", "drop"],
            );
        } else {
            lab.net.nft_cmd(&lab.net.fw, &["flush", "chain", "inet", "filter", "flap"]);
        }
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(ms));
        if down {
            down_time += t.elapsed();
        }
    }
    lab.net.nft_cmd(&lab.net.fw, &["flush", "chain", "inet", "filter", "flap"]);
    let flapping = start.elapsed();

    // A consistent snapshot: every SYN seen at the router is a finished run in /metrics.
    let counter = |name: &str| -> f64 {
        let text = lab.net.nft_cmd(&lab.net.fw, &["list", "counter", "inet", "filter", name]);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("nft counter")
    };
    let mut snapshot = None;
    for _ in 0..30 {
        let m1 = daemon_metrics(&lab);
        let (all, dropped) = (counter("syn_all"), counter("syn_dropped"));
        let m2 = daemon_metrics(&lab);
        let runs = metric_sum(&m1, "egress_probe_runs_total", &["probe=\"flap-8443-"]);
        let fails = metric_sum(&m1, "egress_probe_failures_total", &["probe=\"flap-8443-"]);
        if runs == metric_sum(&m2, "egress_probe_runs_total", &["probe=\"flap-8443-"]) && runs == all {
            snapshot = Some((runs, fails, all, dropped));
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let (runs, fails, all, dropped) = snapshot.expect("a snapshot where runs and SYNs at the router match");
    let daemon_share = fails / runs;
    let wire_share = dropped / all;
    let time_share = down_time.as_secs_f64() / flapping.as_secs_f64();
    lab.summarize(json!({
        "policy": "forward: accept; `tcp dport 8443 drop` toggled while `run` probes every 1 s",
        "measured": true,
        "expected": {"flap-8443-{a,b,c,d}": "failures_total/runs_total within ±5 points of the share of SYNs the router dropped"},
        "egress_probe": {"flap-8443-{a,b,c,d}": format!(
            "{fails}/{runs} runs failed = {:.1} %; router dropped {dropped}/{all} SYNs = {:.1} %",
            daemon_share * 100.0,
            wire_share * 100.0
        )},
        "verdicts": [],
        "notes": [format!(
            "router: {dropped}/{all} SYNs dropped = {:.1} %; rule down {:.1} % of the {:.1} s (runs after a failure back off, so time share is not the sample share)",
            wire_share * 100.0, time_share * 100.0, flapping.as_secs_f64()
        )],
    }));
    assert!(runs >= 16.0, "too few runs: {runs}");
    assert!(dropped >= 2.0 && dropped <= all - 2.0, "the rule dropped {dropped} of {all}");
    assert!(
        (daemon_share - wire_share).abs() <= 0.05,
        "daemon failure share {daemon_share:.3} vs dropped on the wire {wire_share:.3}"
    );
}
