//! The deploy/ files are valid for the tools that consume them: Prometheus' scrape config and
//! alert rules (`promtool check config`, `promtool check rules`), the alert rules' own unit
//! tests (`promtool test rules`), the systemd unit (`systemd-analyze verify`), and no rule or
//! doc names a metric that `src/metrics.rs` does not export (or leaves one undocumented).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
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
    let text = run_ok(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(repo("deploy/prometheus.yml")),
    );
    assert!(text.contains("1 rule files found"), "{text}");
    let text = run_ok(Command::new("promtool").args(["check", "rules"]).arg(repo("deploy/alerts.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alert_rules_unit_tests_pass() {
    let text = run_ok(Command::new("promtool").args(["test", "rules"]).arg(repo("deploy/alerts_test.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn systemd_unit_verifies() {
    assert!(
        Command::new("systemd-analyze").arg("--version").output().is_ok(),
        "systemd-analyze is missing: scripts/test installs it (Debian package systemd)"
    );
    // Point the unit at the binary under test (verify insists ExecStart exists).
    let unit = std::fs::read_to_string(repo("deploy/egress-probe.service"))
        .unwrap()
        .replace("/usr/local/bin/egress-probe", env!("CARGO_BIN_EXE_egress-probe"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress-probe.service");
    std::fs::write(&path, unit).unwrap();
    run_ok(Command::new("systemd-analyze").arg("verify").arg(&path));
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
