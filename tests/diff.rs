//! `egress-probe diff` through the real binary on crafted before/after reports
//! (`tests/fixtures/reports/`): every change kind is listed, exit codes are 1 on a regression,
//! 0 otherwise, 2 on a report that cannot be read or has an unknown schema. A last test diffs
//! two reports made from real probe runs (a port that listened, then was closed).
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use egress_probe::config::{AddressMode, HostPort, ProbeSpec, TcpSpec};
use egress_probe::probe::{self, ProbeContext};
use egress_probe::report::{ProbeResult, Report, SCHEMA_VERSION};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reports").join(name)
}

fn diff(args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("diff")
        .args(args)
        .output()
        .expect("run egress-probe diff")
}

fn diff_fixtures(before: &str, after: &str, extra: &[&str]) -> Output {
    let (b, a) = (fixture(before), fixture(after));
    let mut args = vec![b.to_str().unwrap(), a.to_str().unwrap()];
    args.extend_from_slice(extra);
    diff(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The table row for `probe` whose first column is `change` (with or without the `!` mark).
fn row<'a>(table: &'a str, change: &str, probe: &str) -> Option<&'a str> {
    table.lines().find(|l| {
        let mut cols = l.split_whitespace();
        cols.next().map(|c| c.trim_start_matches('!')) == Some(change) && cols.next() == Some(probe)
    })
}

#[test]
fn every_change_kind_is_listed_and_a_regression_exits_1() {
    let out = diff_fixtures("before.json", "after.json", &[]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{table}\n{}", stderr(&out));
    let regressed = row(&table, "regressed", "tcp-8443").expect("pass→fail row");
    assert!(regressed.starts_with('!') && regressed.ends_with("connect/refused"), "{regressed}");
    assert!(row(&table, "fixed", "tls-443").unwrap().contains("tls/untrusted_issuer"));
    let reason = row(&table, "reason_changed", "wss-443").unwrap();
    assert!(
        reason.contains("connect/timeout") && reason.ends_with("upgrade/timeout"),
        "{reason}"
    );
    let slower = row(&table, "slower", "turn-tls-443").unwrap();
    assert!(
        slower.contains("total") && slower.contains("40.0 ms") && slower.contains("90.0 ms (+125%)"),
        "{slower}"
    );
    assert!(table
        .lines()
        .any(|l| l.starts_with("!slower") && l.contains("turn-tls-443") && l.contains(" tls ")));
    // allocate 8 → 9 ms and relay 20 → 24 ms stay under the default threshold.
    assert!(!table.contains(" allocate ") && !table.contains(" relay "), "{table}");
    assert!(row(&table, "faster", "tcp-443").unwrap().contains("100.0 ms"));
    assert!(row(&table, "appeared", "http-health").unwrap().ends_with("pass"));
    assert!(row(&table, "disappeared", "stun-3478").is_some());
    // dns-relay moved by 0.5 ms: unchanged.
    assert!(!table.contains("dns-relay"), "{table}");
    assert!(
        table.ends_with("3 regression(s), 6 other change(s), 1 probe(s) unchanged\n"),
        "{table}"
    );
    // Regressions come first.
    let first = table.lines().nth(1).unwrap();
    assert!(first.starts_with("!regressed"), "{table}");
}

#[test]
fn json_output_lists_the_same_changes() {
    let out = diff_fixtures("before.json", "after.json", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("diff JSON");
    assert_eq!(v["schema"], SCHEMA_VERSION);
    assert_eq!(v["regressed"], true);
    assert_eq!(v["unchanged"], 1);
    let changes = v["changes"].as_array().unwrap();
    let has = |kind: &str, probe: &str| changes.iter().any(|c| c["kind"] == kind && c["probe"] == probe);
    assert!(has("regressed", "tcp-8443"));
    assert!(has("fixed", "tls-443"));
    assert!(has("reason_changed", "wss-443"));
    assert!(has("slower", "turn-tls-443"));
    assert!(has("faster", "tcp-443"));
    assert!(has("appeared", "http-health"));
    assert!(has("disappeared", "stun-3478"));
    let tls_phase = changes
        .iter()
        .find(|c| c["probe"] == "turn-tls-443" && c["phase"] == "tls")
        .unwrap();
    assert_eq!(tls_phase["regression"], true);
}

#[test]
fn identical_reports_exit_0() {
    let out = diff_fixtures("before.json", "before.json", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "0 regression(s), 0 other change(s), 7 probe(s) unchanged: nothing regressed\n"
    );
}

#[test]
fn slower_beyond_threshold_exits_1_and_thresholds_are_configurable() {
    let out = diff_fixtures("slow-before.json", "slow-after.json", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(row(&stdout(&out), "slower", "turn-tls-443").is_some());

    // Timing listed but not a regression.
    let out = diff_fixtures("slow-before.json", "slow-after.json", &["--ignore-timing"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(row(&stdout(&out), "slower", "turn-tls-443").is_some());

    // +125 % total / +450 % tls: under a 10x ratio nothing counts.
    let out = diff_fixtures("slow-before.json", "slow-after.json", &["--threshold-ratio", "10"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("0 regression(s)"));

    // +50 ms total / +45 ms tls: under a 60 ms floor nothing counts.
    let out = diff_fixtures("slow-before.json", "slow-after.json", &["--threshold-ms", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Faster only: exit 0, listed.
    let out = diff_fixtures("slow-after.json", "slow-before.json", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(row(&stdout(&out), "faster", "turn-tls-443").is_some());

    let out = diff_fixtures("slow-before.json", "slow-after.json", &["--threshold-ms", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_schema_is_refused_with_exit_2() {
    let out = diff_fixtures("schema-3.json", "after.json", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("schema-3.json") && err.contains("schema 3 is not supported") && err.contains("schema 1 to 2"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = diff_fixtures("before.json", "no-schema.json", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no \"schema\" field"), "{}", stderr(&out));
}

#[test]
fn unreadable_reports_exit_2() {
    for (file, words) in [
        ("not-json.txt", "not a JSON report"),
        ("bad-results.json", "not a JSON report"),
        ("does-not-exist.json", "cannot read: No such file or directory (os error 2)"),
    ] {
        let out = diff_fixtures("before.json", file, &[]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        let err = stderr(&out);
        assert!(err.contains(file) && err.contains(words), "{file}: {err}");
        // The cause once, not once in the message and again as the error's source.
        assert_eq!(err.matches("os error").count(), usize::from(file.starts_with("does")), "{err}");
    }
    let out = diff(&[fixture("before.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "missing argument is a usage error");
}

#[test]
fn a_schema_1_report_diffs_against_one_this_build_writes() {
    // before.json is schema 1 (unit-less duration keys); rewrite it with this build's schema
    // and compare: the same report read two ways has no change at all.
    let old = fixture("before.json");
    let report = egress_probe::report::load(&old).unwrap();
    let mut now = report.clone();
    now.schema = SCHEMA_VERSION;
    let text = serde_json::to_string_pretty(&now).unwrap();
    assert!(
        text.contains("\"total_ms\"") && text.contains("\"duration_ms\"") && !text.contains("\"total\""),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("now.json");
    std::fs::write(&new, text).unwrap();
    let out = diff(&[old.to_str().unwrap(), new.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let n = report.results.len();
    assert!(
        stdout(&out).ends_with(&format!(
            "0 regression(s), 0 other change(s), {n} probe(s) unchanged: nothing regressed\n"
        )),
        "{}",
        stdout(&out)
    );
}

/// Reports written from real probe runs: a TCP port that listened, then was closed.
#[tokio::test]
async fn real_reports_from_a_port_that_closed_show_the_regression() {
    // A bound but never-listening socket holds the port for the whole test, so no parallel
    // test can take it once the listener (sharing it with SO_REUSEPORT) is gone: the second run
    // then meets a closed port for sure.
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.set_reuseport(true).unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = holder.local_addr().unwrap().port();
    let listener = tokio::net::TcpSocket::new_v4().unwrap();
    listener.set_reuseport(true).unwrap();
    listener.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    let listener = listener.listen(16).unwrap();
    let spec = ProbeSpec::Tcp(TcpSpec {
        target: HostPort {
            host: "127.0.0.1".into(),
            port,
        },
        addresses: AddressMode::First,
    });
    let report = |outcome| Report {
        schema: SCHEMA_VERSION,
        started_at: "2025-06-01T10:00:00Z".into(),
        wall_ms: None,
        results: vec![ProbeResult::of("tcp-lab", &spec, outcome)],
    };
    let ctx = || ProbeContext::with_timeout(Duration::from_secs(2), None);
    let before = report(probe::run(&spec, &ctx()).await);
    assert!(before.results[0].outcome.success, "{before:?}");
    drop(listener);
    let after = report(probe::run(&spec, &ctx()).await);

    let dir = tempfile::tempdir().unwrap();
    let (b, a) = (dir.path().join("before.json"), dir.path().join("after.json"));
    std::fs::write(&b, serde_json::to_string(&before).unwrap()).unwrap();
    std::fs::write(&a, serde_json::to_string(&after).unwrap()).unwrap();
    drop(holder);
    let out = diff(&[b.to_str().unwrap(), a.to_str().unwrap()]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{table}{}", stderr(&out));
    let line = row(&table, "regressed", "tcp-lab").unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("pass") && line.ends_with("connect/refused"), "{line}");
}
