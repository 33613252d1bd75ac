//! The deploy/ files are valid for the tools that consume them: Prometheus' scrape config and
//! alert rules (`promtool check config`, `promtool check rules`), the alert rules' own unit
//! tests (`promtool test rules`), the systemd unit (`systemd-analyze verify`), and no rule or
//! doc names a metric that `src/metrics/` does not export (or leaves one undocumented), and
//! every family a real daemon, `/probe` and a real responder export is in docs/metrics.md; the
//! Kubernetes manifests (`kubernetes-validate --strict` offline, the Prometheus Operator monitors
//! against a strict schema with `check-jsonschema`), hardened and wired to each other, their
//! config valid for `egress-probe validate`; and the Grafana dashboard, whose every panel query
//! a real Prometheus answers with data after scraping a real `run --demo` daemon.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// The daemon's metric code: `src/metrics/` (the registry's families and the hand-kept
/// per-probe table).
fn metrics_source() -> String {
    std::fs::read_to_string(repo("src/metrics/mod.rs")).unwrap() + &std::fs::read_to_string(repo("src/metrics/table.rs")).unwrap()
}

#[test]
fn rules_and_docs_name_only_exported_metrics_and_docs_cover_them_all() {
    let source = metrics_source();
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
        format!(
            "web: {{ probe_targets: [\"127.0.0.1/32\"] }}\nprobes:\n  - {{ name: t, kind: tcp, target: \"127.0.0.1:{}\" }}\n",
            closed.port()
        ),
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
    let source = metrics_source() + &std::fs::read_to_string(repo("src/responder/metrics.rs")).unwrap();
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

fn k8s(rel: &str) -> PathBuf {
    repo(&format!("deploy/kubernetes/{rel}"))
}

const K8S_CORE: &[&str] = &["configmap.yaml", "secret.yaml", "deployment.yaml", "daemonset.yaml", "service.yaml"];
const K8S_MONITORS: &[&str] = &["servicemonitor.yaml", "podmonitor.yaml"];

/// Runs a command under `timeout`, returning (success, stdout+stderr).
fn run_bounded(secs: u32, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_norway::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(v).unwrap()
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_offline() {
    let files: Vec<String> = K8S_CORE.iter().map(|f| k8s(f).display().to_string()).collect();
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let (ok, text) = run_bounded(120, "kubernetes-validate", &args);
    assert!(ok, "kubernetes-validate:\n{text}");
    for f in K8S_CORE {
        assert!(
            text.lines().any(|l| l.contains(f) && l.contains("passed")),
            "{f} not validated:\n{text}"
        );
    }
    // A wrong field is caught (the validator is not vacuous).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let broken = std::fs::read_to_string(k8s("deployment.yaml"))
        .unwrap()
        .replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    std::fs::write(&bad, broken).unwrap();
    let (ok, text) = run_bounded(120, "kubernetes-validate", &["--strict", bad.to_str().unwrap()]);
    assert!(!ok && text.contains("readOnlyRootFileSystem"), "{text}");
}

/// kubernetes-validate has no schemas for CRDs: the ServiceMonitor and PodMonitor are checked
/// against deploy/kubernetes/schemas/ (a strict subset of the Prometheus Operator v1 CRDs).
#[test]
fn prometheus_operator_monitors_pass_their_schema() {
    let schema = k8s("schemas/monitoring.coreos.com-v1.schema.json");
    let mut args = vec!["--schemafile".to_string(), schema.display().to_string()];
    args.extend(K8S_MONITORS.iter().map(|f| k8s(f).display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = run_bounded(120, "check-jsonschema", &args);
    assert!(ok, "{text}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let broken = std::fs::read_to_string(k8s("podmonitor.yaml"))
        .unwrap()
        .replace("interval: 30s", "interval: 30 seconds");
    std::fs::write(&bad, broken).unwrap();
    let (ok, text) = run_bounded(
        120,
        "check-jsonschema",
        &["--schemafile", schema.to_str().unwrap(), bad.to_str().unwrap()],
    );
    assert!(!ok && text.contains("30 seconds"), "{text}");
}

#[test]
fn kubernetes_pods_are_hardened_probed_and_wired_to_config_secret_and_monitors() {
    let secret = yaml(&k8s("secret.yaml"));
    let configmap = yaml(&k8s("configmap.yaml"));
    let service = yaml(&k8s("service.yaml"));
    for file in ["deployment.yaml", "daemonset.yaml"] {
        let w = yaml(&k8s(file));
        let meta = &w["metadata"]["annotations"];
        assert_eq!(
            meta["configmap.reloader.stakater.com/reload"], configmap["metadata"]["name"],
            "{file}"
        );
        assert_eq!(meta["secret.reloader.stakater.com/reload"], secret["metadata"]["name"], "{file}");
        let pod = &w["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{file}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{file}");
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{file}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{file}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{file}");
        assert!(sc["capabilities"]["add"].is_null(), "{file}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{file}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{file}");
        assert_eq!(c["ports"][0]["containerPort"], 9469, "{file}");
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"], "{file}");
        assert_eq!(pod["volumes"][0]["configMap"]["name"], configmap["metadata"]["name"], "{file}");
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
        let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
        assert!(args.contains(&format!("{mount}/config.yaml").as_str()), "{file}: {args:?}");
        // The selector picks the pod template, and the Service picks the pods.
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        for (k, v) in w["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{file}: selector {k}");
        }
        for (k, v) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "service selector {k} misses {file}");
        }
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    for file in K8S_MONITORS {
        let m = yaml(&k8s(file));
        for (k, v) in m["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&service["metadata"]["labels"][k], v, "{file}: {k}");
        }
    }
    // No real credential is shipped: every Secret value is a placeholder.
    for (k, v) in secret["stringData"].as_object().unwrap() {
        assert!(v.as_str().unwrap().contains("REPLACE-ME"), "{k}");
    }
}

#[test]
fn kubernetes_configmap_config_validates_with_the_secrets_env() {
    let configmap = yaml(&k8s("configmap.yaml"));
    let secret = yaml(&k8s("secret.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, configmap["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_egress-probe"));
    cmd.args(["validate", "--config"]).arg(&path);
    for (k, v) in secret["stringData"].as_object().unwrap() {
        cmd.env(k, v.as_str().unwrap());
    }
    let text = run_ok(&mut cmd);
    assert!(text.contains("ok (3 probes)"), "{text}");
    // Without the Secret's variables the same file is rejected (the env refs are real).
    let (ok, text) = run_bounded(
        30,
        env!("CARGO_BIN_EXE_egress-probe"),
        &["validate", "--config", path.to_str().unwrap()],
    );
    assert!(!ok && text.contains("TURN_REST_SECRET"), "{text}");
}

/// Panels of `egress_probe_push_*`: the daemons in this test push nowhere (no `push:` in their
/// config), so these four may answer empty; their queries must still parse. Every other panel
/// must return data.
const PUSH_PANELS_MAY_BE_EMPTY: &[&str] = &[
    "Push: samples by result",
    "Push: failures (phase/reason)",
    "Push: queued samples",
    "Push: delivery lag",
];

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/egress-probe.json")).unwrap()).unwrap()
}

/// (panel title, expr) of every query in the dashboard, rows' nested panels included.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((p["title"].as_str().unwrap_or_default().to_string(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// Grafana's substitution for this test: every template variable at its "All" value, the
/// built-in interval at a window that holds several 1 s scrapes.
fn substitute(expr: &str, d: &serde_json::Value) -> String {
    let mut e = expr.replace("$__rate_interval", "15s").replace("$__interval", "5s");
    for v in d["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        if let Some(all) = v["allValue"].as_str() {
            e = e.replace(&format!("${{{name}}}"), all).replace(&format!("${name}"), all);
        }
    }
    assert!(!e.contains('$'), "unsubstituted variable in {e}");
    e
}

#[test]
fn dashboard_names_only_exported_metrics() {
    let source = metrics_source();
    let d = dashboard();
    let used = metric_names(&serde_json::to_string(&d).unwrap());
    for m in &used {
        let exported = source.contains(&format!("\"{m}\""));
        // Push families come with the push delivery; until it is in metrics.rs they are allowed.
        assert!(
            exported || m.starts_with("egress_probe_push_"),
            "dashboard uses {m}, which is not exported"
        );
    }
    // The panels the issue asks for are there.
    let titles: Vec<String> = dashboard_queries(&d).into_iter().map(|(t, _)| t).collect();
    for want in [
        "Pass/fail matrix per probe and site",
        "Failure ratio per probe",
        "Failure reasons over time (phase/reason)",
        "Phase latency p95",
        "TURN relay RTT p95",
        "TURN relay loss",
        "Call quality: MOS (media:)",
        "ICE candidate types (last run)",
        "Days until the earliest certificate expires",
        "Push: samples by result",
    ] {
        assert!(titles.iter().any(|t| t == want), "no panel {want:?}");
    }
    for p in PUSH_PANELS_MAY_BE_EMPTY {
        assert!(titles.iter().any(|t| t == p), "allowance names a panel that does not exist: {p}");
    }
}

fn curl(url: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "curl", "-sS", "--max-time", "5", "-G", url]);
    for (k, v) in query {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("curl (scripts/test installs it)");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn query(prom: &str, q: &str) -> serde_json::Value {
    let v = curl(&format!("{prom}/api/v1/query"), &[("query", q)]);
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].clone()
}

fn has_data(prom: &str, q: &str) -> bool {
    query(prom, q).as_array().is_some_and(|r| !r.is_empty())
}

/// A real Prometheus (Debian's) scrapes two real daemons every second: `run --demo` (every probe
/// kind against the embedded responder) and a daemon with failing probes (a closed loopback
/// port, over TCP and as a media stream's UDP echo, beside a stream to a responder's echo) — two sites. Every panel's query, variables substituted, is sent to /api/v1/query: it
/// must parse and return data (the push panels may be empty, see PUSH_PANELS_MAY_BE_EMPTY), and
/// every template variable's label_values query must list values.
#[test]
fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let d = dashboard();
    let dir = tempfile::tempdir().unwrap();
    let ports = common::free_ports(5);
    let (demo_port, fail_port, prom_port, closed_port, echo_port) = (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let bin = env!("CARGO_BIN_EXE_egress-probe");
    // A UDP echo for a stream that comes back (jitter is exported only for one that does).
    let _echo = common::proc::ChildGuard::spawn(
        "egress-probe responder (udp echo)",
        Command::new(bin)
            .args(["responder", "--bind", "127.0.0.1", "--turn-udp", "none", "--turn-tcp", "none"])
            .args(["--turn-tls", "none", "--web", "none", "--metrics", "none", "--udp-echo"])
            .arg(echo_port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let _demo = common::proc::ChildGuard::spawn(
        "egress-probe run --demo",
        Command::new(bin)
            .args(["run", "--demo", "--listen", &format!("127.0.0.1:{demo_port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let fail_config = dir.path().join("fail.yaml");
    std::fs::write(
        &fail_config,
        format!(
            "defaults: {{ interval: 1s, timeout: 500ms }}\nprobes:\n  - name: closed-port\n    kind: tcp\n    target: 127.0.0.1:{closed_port}\n  - name: demo-daemon-health\n    kind: http\n    url: http://127.0.0.1:{demo_port}/healthz\n  - name: call-quality\n    kind: media\n    target: 127.0.0.1:{closed_port}\n    interval: 2s\n    media: {{ duration: 1s }}\n  - name: call-quality-echo\n    kind: media\n    target: 127.0.0.1:{echo_port}\n    interval: 2s\n    media: {{ duration: 1s }}\n"
        ),
    )
    .unwrap();
    let _failing = common::proc::ChildGuard::spawn(
        "egress-probe run (failing probe)",
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&fail_config)
            .args(["--listen", &format!("127.0.0.1:{fail_port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: egress-probe\n    static_configs:\n      - targets: ['127.0.0.1:{demo_port}', '127.0.0.1:{fail_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = common::proc::ChildGuard::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    // Bounded wait: both targets up, the failing probe has failed, the demo's ICE and relay
    // series are in, and a few more scrapes for the rate windows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let ok = Command::new("timeout")
            .args(["5", "curl", "-sf", "--max-time", "2", &format!("{prom}/-/ready")])
            .output()
            .is_ok_and(|o| o.status.success())
            && has_data(&prom, "count(up == 1) == 2")
            && has_data(&prom, r#"egress_probe_failures_total{probe="closed-port"} > 2"#)
            && has_data(&prom, "egress_probe_ice_candidates")
            && has_data(&prom, "egress_probe_relay_rtt_seconds_bucket")
            && has_data(&prom, "egress_probe_tls_cert_expiry_timestamp_seconds")
            && has_data(&prom, "egress_probe_media_mos")
            && has_data(&prom, "egress_probe_media_jitter_seconds");
        if ok || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ready, "Prometheus never saw both daemons' series: {}", query(&prom, "up"));
    std::thread::sleep(Duration::from_secs(3));

    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "{}", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let q = substitute(expr, &d);
        let result = query(&prom, &q);
        if result.as_array().is_none_or(|r| r.is_empty()) {
            empty.push(title.clone());
        }
    }
    let unexpected: Vec<&String> = empty.iter().filter(|t| !PUSH_PANELS_MAY_BE_EMPTY.contains(&t.as_str())).collect();
    assert!(unexpected.is_empty(), "panels without data: {unexpected:?}");
    // Both sites show in the matrix, the failing probe as 0.
    let matrix = query(&prom, &substitute(&queries[0].1, &d));
    let sites: BTreeSet<&str> = matrix
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"]["instance"].as_str())
        .collect();
    assert_eq!(sites.len(), 2, "{matrix}");
    assert!(
        matrix
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["metric"]["probe"] == "closed-port" && s["value"][1] == "0"),
        "{matrix}"
    );
    // The failure reasons panel says why: connect/refused.
    let reasons = query(
        &prom,
        &substitute(
            r#"sum by (probe, phase, reason) (increase(egress_probe_failures_total{job=~"$job", instance=~"$instance", probe=~"$probe"}[$__rate_interval]))"#,
            &d,
        ),
    );
    assert!(reasons.to_string().contains("\"reason\":\"refused\""), "{reasons}");

    // Template variables: label_values(METRIC{SEL}, LABEL) lists values.
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(def) = v["definition"].as_str() else { continue };
        let inner = def.strip_prefix("label_values(").and_then(|x| x.strip_suffix(')')).unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim(), &d);
        let values = curl(&format!("{prom}/api/v1/label/{}/values", label.trim()), &[("match[]", &selector)]);
        assert_eq!(values["status"], "success", "{def}: {values}");
        assert!(values["data"].as_array().is_some_and(|a| !a.is_empty()), "{def}: {values}");
    }
}
