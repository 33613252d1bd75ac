//! `kind: path` and the origin of rejects, through a real routed chain of namespaces:
//! `inside` — `r1` — `r2` — `outside` (see `common::netns::Chain`). The binary runs
//! `check --output json` inside `inside`; the firewall rules sit in the routers' forward chains.
//! Every run is bounded (`timeout`) and must end within the probe's own timeout.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::netns::{Chain, CHAIN_R1_IP, CHAIN_R2_IP, CHAIN_TARGET_IP};
use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The probe timeout every config here uses; each run must end within it (plus start-up).
const TIMEOUT_MS: u64 = 6000;

fn chain(test: &str) -> Chain {
    Chain::new(&format!("pa{}{test}", SEQ.fetch_add(1, Ordering::Relaxed)))
}

struct Run {
    results: Value,
    table: String,
    /// The verdict lines `check --output json` prints on stderr.
    verdicts: String,
    wall: Duration,
}

/// Runs `check --output json` (and the table) inside, optionally through `prefix` (e.g. setpriv).
fn check(c: &Chain, yaml: &str, prefix: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("probes.yaml");
    std::fs::write(&file, yaml).expect("write config");
    let run = |output: &str| {
        let clock = Instant::now();
        let out = common::netns::check_in(&c.inside, 30, prefix, &file, &["--output", output]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "check exited {:?}\nstdout: {stdout}\nstderr: {}",
            out.status,
            stderr
        );
        (stdout, stderr, clock.elapsed())
    };
    let (json, verdicts, wall) = run("json");
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("check JSON: {e}\n{json}"));
    let (table, _, _) = run("table");
    Run {
        results: report["results"].clone(),
        table,
        verdicts,
        wall,
    }
}

fn outcome<'a>(r: &'a Run, name: &str) -> &'a Value {
    let all = r.results.as_array().expect("results");
    let one = all
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {all:?}"));
    let o = &one["outcome"];
    let total = o["total_ms"].as_f64().expect("total_ms");
    assert!(total <= TIMEOUT_MS as f64 + 300.0, "{name} took {total} ms, past its deadline");
    o
}

fn code(o: &Value) -> String {
    if o["success"] == true {
        return "pass".into();
    }
    format!(
        "{}/{}",
        o["failure"]["phase"].as_str().unwrap_or("?"),
        o["failure"]["reason"].as_str().unwrap_or("?")
    )
}

fn path_probe(name: &str, target: &str, protocol: &str) -> String {
    format!(
        "  - name: {name}\n    kind: path\n    target: {target}\n    protocol: {protocol}\n    max_hops: 8\n    probes_per_hop: 1\n    hop_timeout: 400ms\n"
    )
}

fn config(probes: &[String]) -> String {
    format!("defaults: {{ timeout: {TIMEOUT_MS}ms }}\nprobes:\n{}", probes.concat())
}

fn hop_addresses(o: &Value) -> Vec<String> {
    o["detail"]["path"]["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| h["address"].as_str().unwrap_or("*").to_string())
        .collect()
}

#[test]
fn open_path_reaches_the_target_in_three_hops_without_cap_net_raw() {
    let c = chain("open");
    let _l = c.listen_target(443);
    let target = format!("{CHAIN_TARGET_IP}:443");
    // No CAP_NET_RAW anywhere: dropped from the bounding and inheritable sets before exec.
    let drop_raw = ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--"];
    let caps = Command::new("timeout")
        .args(["10", "ip", "netns", "exec", &c.inside])
        .args(drop_raw)
        .args(["grep", "CapEff", "/proc/self/status"])
        .output()
        .expect("run setpriv");
    assert!(caps.status.success(), "setpriv: {}", String::from_utf8_lossy(&caps.stderr));
    let eff = String::from_utf8_lossy(&caps.stdout);
    let mask = u64::from_str_radix(eff.split_whitespace().nth(1).expect("CapEff value"), 16).expect("hex");
    assert_eq!(mask & (1 << 13), 0, "CAP_NET_RAW still effective: {eff}");

    let r = check(&c, &config(&[path_probe("p443", &target, "tcp")]), &drop_raw);
    let o = outcome(&r, "p443");
    assert_eq!(code(o), "pass", "{o}");
    let p = &o["detail"]["path"];
    assert_eq!(p["end"], "reached");
    assert_eq!(p["end_hop"], 3);
    assert!(p["mode"].as_str().unwrap_or_default().starts_with("unprivileged"), "{p}");
    assert_eq!(
        hop_addresses(o),
        [CHAIN_R1_IP.to_string(), CHAIN_R2_IP.to_string(), CHAIN_TARGET_IP.to_string()]
    );
    let answers: Vec<&str> = p["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["answer"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(answers, ["time_exceeded", "time_exceeded", "reached"]);
    for h in p["hops"].as_array().unwrap() {
        assert!(h["rtt_ms"].as_f64().is_some_and(|ms| (0.0..400.0).contains(&ms)), "{h}");
    }
    assert!(r.wall < Duration::from_millis(TIMEOUT_MS + 2000), "{:?}", r.wall);
    // A path that reached prints no hop table.
    assert!(!r.table.contains("time_exceeded"), "{}", r.table);
}

#[test]
fn drop_in_r2_forward_is_silence_after_hop_2() {
    let c = chain("drop");
    let _l = c.listen_target(443);
    c.forward(&c.r2, &["tcp dport 443 drop"]);
    let r = check(&c, &config(&[path_probe("p443", &format!("{CHAIN_TARGET_IP}:443"), "tcp")]), &[]);
    let o = outcome(&r, "p443");
    assert_eq!(code(o), "trace/timeout", "{o}");
    let p = &o["detail"]["path"];
    assert_eq!(p["end"], "silence");
    assert_eq!(p["end_hop"], 2);
    assert_eq!(p["last_answered"], 2);
    let hops = hop_addresses(o);
    assert_eq!(hops[..2], [CHAIN_R1_IP.to_string(), CHAIN_R2_IP.to_string()]);
    assert!(hops[2..].iter().all(|h| h == "*"), "{hops:?}");
    let msg = o["failure"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("silence after hop 2 ({CHAIN_R2_IP})")), "{msg}");
    // check prints the hops under the probe's row when the trace did not reach.
    assert!(
        r.table.contains(&CHAIN_R2_IP.to_string()) && r.table.contains("time_exceeded"),
        "{}",
        r.table
    );
}

#[test]
fn reject_admin_prohibited_in_r2_is_rejected_by_r2_two_hops_out() {
    let c = chain("rej");
    let _l = c.listen_target(443);
    c.forward(&c.r2, &["tcp dport 443 reject with icmpx admin-prohibited"]);
    let r = check(&c, &config(&[path_probe("p443", &format!("{CHAIN_TARGET_IP}:443"), "tcp")]), &[]);
    let o = outcome(&r, "p443");
    assert_eq!(code(o), "trace/refused", "{o}");
    let p = &o["detail"]["path"];
    assert_eq!(p["end"], "rejected");
    assert_eq!(p["end_hop"], 2);
    let by = &p["rejected_by"];
    assert_eq!(by["address"], CHAIN_R2_IP.to_string());
    assert_eq!(by["is_target"], false);
    assert_eq!(by["hop"], 2);
    assert_eq!(by["answer"], "admin_prohibited");
    let msg = o["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("rejected by {CHAIN_R2_IP} (not the server, 2 hops out")),
        "{msg}"
    );
}

#[test]
fn closed_port_is_refused_by_the_target_itself() {
    let c = chain("rst");
    let r = check(&c, &config(&[path_probe("p443", &format!("{CHAIN_TARGET_IP}:443"), "tcp")]), &[]);
    let o = outcome(&r, "p443");
    assert_eq!(code(o), "trace/refused", "{o}");
    let p = &o["detail"]["path"];
    assert_eq!(p["end"], "rejected");
    assert_eq!(p["end_hop"], 3);
    let by = &p["rejected_by"];
    assert_eq!(by["address"], CHAIN_TARGET_IP.to_string());
    assert_eq!(by["is_target"], true);
    assert_eq!(by["answer"], "rst");
    assert_eq!(
        hop_addresses(o),
        [CHAIN_R1_IP.to_string(), CHAIN_R2_IP.to_string(), CHAIN_TARGET_IP.to_string()]
    );
}

#[test]
fn udp_3478_dropped_on_r1_while_tcp_443_passes() {
    let c = chain("udp");
    let _l = c.listen_target(443);
    c.forward(&c.r1, &["udp dport 3478 drop"]);
    let r = check(
        &c,
        &config(&[
            path_probe("p443", &format!("{CHAIN_TARGET_IP}:443"), "tcp"),
            path_probe("p3478", &format!("{CHAIN_TARGET_IP}:3478"), "udp"),
        ]),
        &[],
    );
    let tcp = outcome(&r, "p443");
    assert_eq!(code(tcp), "pass", "{tcp}");
    assert_eq!(tcp["detail"]["path"]["end_hop"], 3);
    let udp = outcome(&r, "p3478");
    assert_eq!(code(udp), "trace/timeout", "{udp}");
    let p = &udp["detail"]["path"];
    assert_eq!(p["protocol"], "udp");
    assert_eq!(p["end"], "silence");
    assert_eq!(p["last_answered"], 1);
    assert_eq!(hop_addresses(udp)[0], CHAIN_R1_IP.to_string());
}

fn tcp_probe(name: &str, target: &str) -> String {
    format!("  - name: {name}\n    kind: tcp\n    target: {target}\n")
}

#[test]
fn tcp_connect_refused_by_r2_names_r2_not_the_server() {
    let c = chain("orig");
    let _l = c.listen_target(443);
    c.forward(&c.r2, &["tcp dport 443 reject with icmpx port-unreachable"]);
    let r = check(&c, &config(&[tcp_probe("t443", &format!("{CHAIN_TARGET_IP}:443"))]), &[]);
    let o = outcome(&r, "t443");
    assert_eq!(code(o), "connect/refused", "{o}");
    let origin = &o["detail"]["reject_origin"];
    assert_eq!(origin["address"], CHAIN_R2_IP.to_string(), "{o}");
    assert_eq!(origin["is_target"], false);
    assert_eq!(origin["answer"], "port_unreachable");
    let msg = o["failure"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("refused by {CHAIN_R2_IP} (not the server")), "{msg}");
    assert!(
        r.verdicts.contains(&format!(
            "the reject comes from {CHAIN_R2_IP}, not the server: a firewall before it"
        )),
        "{}",
        r.verdicts
    );
}

#[test]
fn tcp_connect_to_a_closed_port_is_refused_with_the_servers_own_address() {
    let c = chain("origt");
    let r = check(&c, &config(&[tcp_probe("t443", &format!("{CHAIN_TARGET_IP}:443"))]), &[]);
    let o = outcome(&r, "t443");
    assert_eq!(code(o), "connect/refused", "{o}");
    let origin = &o["detail"]["reject_origin"];
    assert_eq!(origin["address"], CHAIN_TARGET_IP.to_string(), "{o}");
    assert_eq!(origin["is_target"], true);
    assert_eq!(origin["answer"], "rst");
    let msg = o["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("refused with a RST from the server's own address {CHAIN_TARGET_IP}")),
        "{msg}"
    );
    // A RST always carries the server's address: the verdict cannot tell a closed port from a
    // firewall resetting in its name, and says both.
    assert!(
        r.verdicts.contains("a firewall rejects it or nothing listens there"),
        "{}",
        r.verdicts
    );
}

#[test]
fn a_trace_longer_than_its_timeout_ends_at_the_deadline_with_the_hops_it_saw() {
    let c = chain("dl");
    c.forward(&c.r1, &["tcp dport 443 drop"]);
    // 1 answering hop, then silent hops of 2 x 1 s each: far more than the 1.5 s timeout.
    let yaml = format!(
        "probes:\n  - name: slow\n    kind: path\n    target: {CHAIN_TARGET_IP}:443\n    timeout: 1500ms\n    probes_per_hop: 2\n    hop_timeout: 1s\n"
    );
    let r = check(&c, &yaml, &[]);
    let all = r.results.as_array().expect("results");
    let o = &all[0]["outcome"];
    let total = o["total_ms"].as_f64().expect("total_ms");
    assert!((1400.0..1800.0).contains(&total), "ended after {total} ms, the timeout is 1500 ms");
    assert_eq!(code(o), "trace/timeout", "{o}");
    assert_eq!(o["detail"]["path"]["last_answered"], 1);
    assert_eq!(hop_addresses(o)[0], CHAIN_R1_IP.to_string());
    assert!(r.wall < Duration::from_secs(5), "{:?}", r.wall);
}
