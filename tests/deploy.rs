//! The deploy/ files are valid for the tools that consume them: Prometheus' scrape config and
//! alert rules (`promtool check config`, `promtool check rules`), the alert rules' own unit
//! tests (`promtool test rules`), the systemd unit (`systemd-analyze verify`), and no rule or
//! doc names a metric that `src/metrics.rs` does not export (or leaves one undocumented), and
//! every family a real daemon, `/probe` and a real responder export is in docs/metrics.md.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `program` bounded by timeout(1): a wedged tool fails the test instead of hanging the suite.
fn bounded(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", program]);
    c
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/test, which installs promtool)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let text = run_ok(bounded("promtool").args(["check", "config"]).arg(repo("deploy/prometheus.yml")));
    assert!(text.contains("1 rule files found"), "{text}");
    let text = run_ok(bounded("promtool").args(["check", "rules"]).arg(repo("deploy/alerts.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alert_rules_unit_tests_pass() {
    let text = run_ok(bounded("promtool").args(["test", "rules"]).arg(repo("deploy/alerts_test.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn systemd_unit_verifies() {
    assert!(
        bounded("systemd-analyze").arg("--version").status().is_ok_and(|s| s.success()),
        "systemd-analyze is missing: scripts/test installs it (Debian package systemd)"
    );
    // Point the unit at the binary under test (verify insists ExecStart exists).
    let unit = std::fs::read_to_string(repo("deploy/egress-probe.service"))
        .unwrap()
        .replace("/usr/local/bin/egress-probe", env!("CARGO_BIN_EXE_egress-probe"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress-probe.service");
    std::fs::write(&path, unit).unwrap();
    run_ok(bounded("systemd-analyze").arg("verify").arg(&path));
}

/// `egress_probe_*` names in `text`, histogram/counter sample suffixes folded onto the family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("egress_probe_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(family);
    }
    names
}

#[test]
fn rules_and_docs_name_only_exported_metrics_and_docs_cover_them_all() {
    let source = std::fs::read_to_string(repo("src/metrics.rs")).unwrap();
    let exported: BTreeSet<String> = metric_names(&source)
        .into_iter()
        .filter(|n| source.contains(&format!("\"{n}\"")))
        .collect();
    assert!(exported.len() >= 19, "{exported:?}");
    let alerts = metric_names(&std::fs::read_to_string(repo("deploy/alerts.yml")).unwrap());
    let unknown: Vec<_> = alerts.difference(&exported).collect();
    assert!(unknown.is_empty(), "alerts.yml uses metrics that are not exported: {unknown:?}");
    let docs = metric_names(&std::fs::read_to_string(repo("docs/metrics.md")).unwrap());
    let undocumented: Vec<_> = exported.difference(&docs).collect();
    assert!(undocumented.is_empty(), "docs/metrics.md lacks: {undocumented:?}");
    let stale: Vec<_> = docs.difference(&exported).collect();
    assert!(stale.is_empty(), "docs/metrics.md names metrics that do not exist: {stale:?}");
}

/// Every metric family name with `prefix` in `text` (sample suffixes folded onto the family).
fn families(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        // Only whole names: `xegress_probe_…` or `…_egress_probe_…` are not ours.
        if text[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        // A bare prefix (`egress_responder_` in prose) is not a family.
        if !family.ends_with('_') {
            names.insert(family);
        }
    }
    names
}

/// Families a real exposition declares (`# TYPE name kind` lines).
fn typed_families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A plain HTTP/1.0 GET with timeouts; the body of a 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

#[test]
fn every_family_a_real_daemon_and_responder_export_is_in_metrics_md() {
    use common::proc::{wait_until, ChildGuard};
    use std::io::BufRead;
    use std::process::Stdio;
    use std::time::Duration;

    // The daemon on the demo (every probe kind passes), then a /probe run that fails, for
    // the families that only appear after a failure.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _daemon = ChildGuard::spawn(
        "egress-probe run --demo",
        Command::new(common::bin())
            .args(["run", "--demo", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_until(Duration::from_secs(20), || http_get(&listen, "/ready").is_some()),
        "the demo daemon never became ready"
    );
    let daemon = http_get(&listen, "/metrics").expect("daemon /metrics");
    // A failing /probe run: `/probe` only takes other targets from `web.probe_targets`, so a
    // second daemon allows loopback and points its module at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("probe.yaml");
    std::fs::write(
        &cfg,
        format!("web: {{ probe_targets: [\"127.0.0.1/32\"] }}\nprobes:\n  - {{ name: t, kind: tcp, target: \"127.0.0.1:{}\" }}\n", closed.port()),
    )
    .unwrap();
    let listen2 = format!("127.0.0.1:{}", common::free_port());
    let _probe_daemon = ChildGuard::spawn(
        "egress-probe run (probe targets)",
        Command::new(common::bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--listen", &listen2])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_until(Duration::from_secs(20), || http_get(&listen2, "/healthz").is_some()),
        "the second daemon never answered /healthz"
    );
    let one_run = http_get(&listen2, &format!("/probe?module=t&target={closed}")).expect("/probe");
    assert!(one_run.contains("probe_success 0"), "{one_run}");

    // The responder with every endpoint on (ephemeral ports) and its own /metrics.
    let mut responder = ChildGuard::spawn(
        "egress-probe responder",
        Command::new(common::bin())
            .args(["responder", "--bind", "127.0.0.1", "--user", "u:p", "--metrics", "127.0.0.1:0"])
            .args(["--turn-udp", "0", "--turn-tcp", "0", "--turn-tls", "0", "--web", "0"])
            .args(["--udp-echo", "0", "--dns", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let out = responder.child.stdout.take().unwrap();
    let metrics_addr = std::io::BufReader::new(out)
        .lines()
        .take(40)
        .map_while(Result::ok)
        .find_map(|l| l.trim().strip_prefix("metrics (http)").map(|a| a.trim().to_string()))
        .expect("the responder prints its metrics address");
    let responder_text = http_get(&metrics_addr, "/metrics").expect("responder /metrics");

    let docs = std::fs::read_to_string(repo("docs/metrics.md")).unwrap();
    let documented: BTreeSet<String> = families(&docs, "egress_probe_")
        .union(&families(&docs, "egress_responder_"))
        .cloned()
        .collect();
    let mut scraped = typed_families(&daemon);
    scraped.extend(typed_families(&one_run));
    scraped.extend(typed_families(&responder_text));
    // Ours only: `/probe`'s blackbox-compatible pair is documented under its own heading.
    for f in ["probe_success", "probe_duration_seconds"] {
        assert!(scraped.remove(f), "/probe lacks {f}");
        assert!(docs.contains(&format!("`{f}`")), "docs/metrics.md lacks {f}");
    }
    let undocumented: Vec<_> = scraped.difference(&documented).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/metrics.md: {undocumented:?}");
    for prefix in ["egress_probe_", "egress_responder_"] {
        assert!(scraped.iter().any(|f| f.starts_with(prefix)), "nothing scraped with {prefix}");
    }
    // Both prefixes, and the families the issue found missing, came from the scrape.
    for f in ["egress_probe_failures_total", "egress_responder_dns_responses_total"] {
        assert!(scraped.contains(f), "{f} was not exported by the scrape");
    }
    // No documented name that the source does not define (families that appear only after
    // an event the scrape did not cause are still defined in the source).
    let source =
        std::fs::read_to_string(repo("src/metrics.rs")).unwrap() + &std::fs::read_to_string(repo("src/responder/metrics.rs")).unwrap();
    let stale: Vec<_> = documented
        .iter()
        .filter(|f| !scraped.contains(*f) && !source.contains(&format!("\"{f}\"")))
        .collect();
    assert!(stale.is_empty(), "docs/metrics.md names families nothing exports: {stale:?}");
}

/// The words of a bash array `name=(…)` in `scripts/test` (it may span lines).
fn bash_array(script: &str, name: &str) -> Vec<String> {
    let start = script
        .find(&format!("{name}=("))
        .unwrap_or_else(|| panic!("no {name}=( in scripts/test"))
        + name.len()
        + 2;
    let end = start + script[start..].find(')').expect("closing )");
    script[start..end].split_whitespace().map(str::to_string).collect()
}

/// Every file under `dir` (recursively) with one of `exts`, concatenated.
fn sources(dir: &Path, exts: &[&str]) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let p = entry.path();
        if p.is_dir() {
            out += &sources(&p, exts);
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)) {
            out += &std::fs::read_to_string(&p).unwrap_or_default();
        }
    }
    out
}

#[test]
fn readme_and_scripts_test_list_what_the_tests_really_run() {
    let script = std::fs::read_to_string(repo("scripts/test")).unwrap();
    let packages = bash_array(&script, "packages");
    let binaries = bash_array(&script, "binaries");
    // Every binary scripts/test installs for the tests is run by some test (named as a quoted
    // string, as Command::new and argument lists do).
    let tests = sources(&repo("tests"), &["rs", "py", "sh"]);
    let unused: Vec<&String> = binaries.iter().filter(|b| !tests.contains(&format!("\"{b}\""))).collect();
    assert!(unused.is_empty(), "scripts/test installs what no test runs: {unused:?}");
    // README names exactly the packages scripts/test installs.
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let from = readme.find("Debian packages (").expect("README: the test lab's package list") + "Debian packages (".len();
    let list = &readme[from..from + readme[from..].find(')').unwrap()];
    let named: BTreeSet<&str> = list.split('`').skip(1).step_by(2).collect();
    let installed: BTreeSet<&str> = packages.iter().map(String::as_str).collect();
    assert_eq!(named, installed, "README's package list vs scripts/test's packages=(...)");
}
