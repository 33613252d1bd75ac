//! `egress-probe check` through the real binary: the table and the JSON report (read back
//! into `report::Report`), exit codes 0 (all pass) / 1 (any fails) / 2 (config or usage
//! error), the `--probe` filter, `--quiet`, no colour or progress when not on a terminal, and
//! probes running concurrently.
mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use egress_probe::report::{Report, SCHEMA_VERSION};

/// A config with a probe to a listening port (`up`) and one to a closed port (`down`).
/// The listener is returned so it stays open; the kernel completes handshakes on its own.
fn lab(extra: &str) -> (tempfile::TempDir, PathBuf, TcpListener, u16) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  timeout: 2s\nprobes:\n  - name: up\n    kind: tcp\n    target: 127.0.0.1:{}\n  - name: down\n    kind: tcp\n    target: 127.0.0.1:{closed}\n{extra}",
            up.local_addr().unwrap().port()
        ),
    )
    .unwrap();
    (dir, path, up, closed)
}

fn check(path: &PathBuf, args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("check")
        .arg("--config")
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn all_passing_probes_exit_0_with_a_table() {
    let (_d, path, _up, _) = lab("");
    let o = check(&path, &["--probe", "up"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("TOTAL ms") && lines[0].contains("FAILURE"));
    assert!(lines[1].starts_with("up ") && lines[1].contains("PASS"), "{out}");
    assert!(!out.contains("down"), "--probe must select only `up`: {out}");
    assert!(!out.contains('\x1b'), "no colour when stdout is not a terminal");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains('\r'),
        "no progress line when stderr is not a terminal"
    );
}

#[test]
fn a_failing_probe_exits_1_and_names_phase_and_reason() {
    let (_d, path, _up, closed) = lab("");
    let o = check(&path, &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let down = out.lines().find(|l| l.starts_with("down ")).unwrap();
    assert!(down.contains("FAIL") && down.ends_with("connect/refused"), "{out}");
    let result_col = out.lines().next().unwrap().find("RESULT").unwrap();
    assert!(
        out.lines()
            .skip(1)
            .take(2)
            .all(|l| l.find("PASS").or(l.find("FAIL")) == Some(result_col)),
        "{out}"
    );
    // The human line with the message follows the table (not with --quiet).
    assert!(out.contains("down: connect/refused: "), "{out}");
    assert!(out.contains(&closed.to_string()));
    let quiet = stdout(&check(&path, &["--quiet"]));
    assert_eq!(quiet.lines().count(), 3, "--quiet prints only the table: {quiet}");
}

#[test]
fn json_output_parses_back_into_the_report() {
    let (_d, path, _up, _) = lab("");
    let o = check(&path, &["--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: Report = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(report.schema, SCHEMA_VERSION);
    assert!(humantime::parse_rfc3339(&report.started_at).is_ok(), "{}", report.started_at);
    let names: Vec<&str> = report.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["up", "down"], "config order");
    assert!(report.results[0].outcome.success);
    let f = report.results[1].outcome.failure.as_ref().unwrap();
    assert_eq!(f.code(), "connect/refused");
    assert_eq!(report.results[1].kind, "tcp");
    let only_up = check(&path, &["-o", "json", "-p", "up"]);
    assert_eq!(only_up.status.code(), Some(0));
    let r: Report = serde_json::from_slice(&only_up.stdout).unwrap();
    assert_eq!(r.results.len(), 1);
}

#[test]
fn usage_and_config_errors_exit_2() {
    let (dir, path, _up, _) = lab("");
    let o = check(&path, &["--probe", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown probe nope"));
    assert!(o.stdout.is_empty());

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "probes:\n  - name: x\n    kind: tcp\n    target: nowhere\n").unwrap();
    let o = check(&bad, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:4:", bad.display())), "{err}");

    let o = check(&dir.path().join("missing.yaml"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(common::bin()).args(["check", "--output", "xml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn probes_run_concurrently() {
    // Three probes that each wait out a 1 s timeout on a DNS server that never answers
    // (UDP bound, TCP listening but never accepting): sequentially that is 3 s.
    let port = common::free_port();
    let _udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let _tcp = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    let mut yaml = String::from("defaults:\n  timeout: 1s\nprobes:\n");
    for i in 0..3 {
        yaml += &format!("  - name: silent{i}\n    kind: dns\n    query: a{i}.example.test\n    resolver: 127.0.0.1:{port}\n");
    }
    std::fs::write(&path, yaml).unwrap();
    let t = Instant::now();
    let o = check(&path, &["-o", "json"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1));
    let r: Report = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r.results
            .iter()
            .all(|x| x.outcome.failure.as_ref().unwrap().code() == "resolve/timeout"),
        "{}",
        stdout(&o)
    );
    assert!(took < Duration::from_millis(2000), "3 × 1 s probes took {took:?}: not concurrent");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    // `script` (util-linux, Essential on Debian) gives the child a pseudo-terminal.
    let (_d, path, _up, _) = lab("");
    let cmd = format!("{} check --config {} --probe up", common::bin().display(), path.display());
    let tty = |no_color: bool| {
        let mut c = Command::new("timeout");
        c.args(["20", "script", "-qec", &cmd, "/dev/null"]);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let o = c.output().expect("script(1) from util-linux");
        assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
        stdout(&o)
    };
    assert!(tty(false).contains("\x1b[32mPASS"), "green PASS on a terminal");
    assert!(!tty(true).contains("\x1b[32m"), "NO_COLOR disables colour");
}

#[test]
fn the_progress_line_on_a_terminal_ends_at_n_of_n() {
    let (_d, path, _up, _) = lab("");
    let cmd = format!("{} check --config {}", common::bin().display(), path.display());
    let o = Command::new("timeout")
        .args(["20", "script", "-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .expect("script(1) from util-linux");
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "one probe fails: {text}");
    // Frames are separated by carriage returns; the last one drawn before the table is 2/2.
    let last_frame = text.split("NAME").next().unwrap().rsplit('\r').find(|f| f.contains("probes done"));
    assert!(last_frame.is_some_and(|f| f.contains("2/2 probes done")), "{text:?}");
}

#[test]
fn logs_on_stderr_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    // The daemon logs a WARN line per failed run of `down`; 1.5 s (bounded by timeout(1))
    // covers several runs at a 200 ms interval.
    let (dir, _, _up, closed) = lab("");
    let path = dir.path().join("daemon.yaml");
    std::fs::write(
        &path,
        format!("defaults:\n  interval: 200ms\n  timeout: 150ms\n  jitter: 0%\nprobes:\n  - name: down\n    kind: tcp\n    target: 127.0.0.1:{closed}\n"),
    )
    .unwrap();
    let run = format!(
        "timeout 1.5 {} run --config {} --listen 127.0.0.1:0",
        common::bin().display(),
        path.display()
    );
    // Piped: stderr is a pipe, so plain text.
    let piped = Command::new("sh").args(["-c", &run]).env_remove("NO_COLOR").output().unwrap();
    assert_eq!(piped.status.code(), Some(124), "stopped by timeout(1), not by itself");
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(err.contains("probe failed"), "{err}");
    assert!(!err.contains('\x1b'), "ANSI codes in piped stderr: {err:?}");
    // Text log fields: every string quoted the same way, the time in ms with a fraction (a
    // refused loopback connect is far below 1 ms: it used to read total_ms=0).
    let line = err.lines().find(|l| l.contains("probe failed")).unwrap();
    assert!(
        line.contains(r#"probe="down" kind="tcp" phase="connect" reason="refused" total_ms="#),
        "{line}"
    );
    assert!(line.contains(&format!(r#" error="connect to 127.0.0.1:{closed}: "#)), "{line}");
    let total: &str = line.split("total_ms=").nth(1).and_then(|r| r.split(' ').next()).unwrap();
    assert!(
        total.contains('.') && total.parse::<f64>().is_ok_and(|v| v > 0.0),
        "total_ms={total} in {line}"
    );
    // On a terminal (script(1) gives stderr a pseudo-terminal): coloured unless NO_COLOR.
    let tty = |no_color: bool| {
        let mut c = Command::new("timeout");
        c.args(["10", "script", "-qec", &run, "/dev/null"]);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let o = c.output().expect("script(1) from util-linux");
        let text = stdout(&o);
        assert!(text.contains("probe failed"), "{text}");
        text
    };
    assert!(tty(false).contains("\x1b["), "coloured logs on a terminal");
    assert!(!tty(true).contains('\x1b'), "NO_COLOR disables colour in logs");
}

#[test]
fn a_panicking_probe_reads_internal_panic_and_exits_1() {
    // The test build has the `fault-injection` hook: the named probe's task panics.
    let (_d, path, _up, _) = lab("");
    let o = Command::new("timeout")
        .arg("30")
        .arg(common::bin())
        .args(["check", "--config"])
        .arg(&path)
        .args(["--output", "json"])
        .env("EGRESS_PROBE_FAULT_PANIC", "up")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Report = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let codes: Vec<(&str, String)> = r
        .results
        .iter()
        .map(|x| (x.name.as_str(), x.outcome.failure.as_ref().map_or("pass".into(), |f| f.code())))
        .collect();
    assert_eq!(
        codes,
        [("up", "internal/panic".to_string()), ("down", "connect/refused".to_string())],
        "the panic is the program's failure, and the other probe still ran"
    );

    // The table names it the same way.
    let o = Command::new("timeout")
        .arg("30")
        .arg(common::bin())
        .args(["check", "--config"])
        .arg(&path)
        .args(["--probe", "up"])
        .env("EGRESS_PROBE_FAULT_PANIC", "up")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let up = out.lines().find(|l| l.starts_with("up ")).unwrap_or_else(|| panic!("{out}"));
    assert!(up.contains("FAIL") && up.ends_with("internal/panic"), "{out}");
}

#[test]
fn a_media_stream_to_a_closed_port_says_no_packet_came_back_and_reports_no_zero_round_trip() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (_d, path, _up, _) = lab(&format!(
        "  - name: call\n    kind: media\n    target: \"{closed}\"\n    media: {{duration: 1s}}\n"
    ));
    let o = check(&path, &["--probe", "call"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("call: media (udp_echo, ") && out.contains("no packet came back"),
        "{out}"
    );
    assert!(!out.contains("MOS 1.00") && !out.contains("jitter 0.0 ms"), "{out}");
    let json = check(&path, &["--probe", "call", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let media = &v["results"][0]["outcome"]["detail"]["media"];
    assert_eq!(media["received"], 0, "{media}");
    for key in ["rtt_min_ms", "rtt_avg_ms", "rtt_p95_ms", "rtt_max_ms", "jitter_ms", "jitter_max_ms"] {
        assert!(media.get(key).is_none(), "{key} absent with nothing back: {media}");
    }
}

#[test]
fn a_udp_ports_probe_gets_a_line_of_open_and_closed_ranges_and_coverage_under_the_table() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_d, path, _up, _) = lab(&format!(
        "  - name: ports\n    kind: udp_ports\n    host: 127.0.0.1\n    ports: \"{closed}\"\n    port_timeout: 50ms\n"
    ));
    let o = check(&path, &["--probe", "ports"]);
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("ports: UDP ports {closed}: open none")))
        .unwrap_or_else(|| panic!("no udp_ports line: {out}"));
    assert!(line.contains("coverage "), "{line}");
    assert!(
        !stdout(&check(&path, &["--probe", "ports", "--quiet"])).contains("UDP ports"),
        "--quiet: the table only"
    );
}
