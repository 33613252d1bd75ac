//! `egress-probe validate`: every broken config names the right `line:column` and says what is
//! wrong, through the real binary (exit codes 0/2, stdout/stderr) and through `parse_str`.
//!
//! Broken configs live in `tests/fixtures/invalid/`; each test pins the exact positions and a key
//! phrase of each message, and that nothing else is reported.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use egress_probe::config::{parse_str, Credentials, MediaSpec, ProbeSpec, ProxySetting};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid").join(name)
}

fn validate(path: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::bin());
    cmd.arg("validate").arg("--config").arg(path);
    // The fixtures reference this variable expecting it unset.
    cmd.env_remove("EGRESS_PROBE_TEST_SURELY_UNSET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run egress-probe validate")
}

/// Runs `validate` on a fixture and asserts exit 2 and exactly these `(line:col, phrase)`
/// problems, in order, each printed as `FILE:LINE:COLUMN: message` on stderr.
fn assert_invalid(name: &str, expected: &[(&str, &str)]) {
    let path = fixture(name);
    let out = validate(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: expected exit 2; stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "{name}: nothing on stdout when invalid");
    let prefix = format!("{}:", path.display());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "{name}: expected {} problems, got:\n{stderr}",
        expected.len()
    );
    for (line, (pos, phrase)) in lines.iter().zip(expected) {
        let rest = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{name}: no FILE: prefix in {line:?}"));
        let (at, msg) = rest.split_at(rest.find(": ").unwrap_or_else(|| panic!("{name}: no ': ' in {line:?}")));
        assert_eq!(at, *pos, "{name}: wrong position for {line:?}");
        assert!(msg.contains(phrase), "{name}: {line:?} should contain {phrase:?}");
    }
}

#[test]
fn unknown_top_level_field_is_named_with_a_hint() {
    assert_invalid(
        "unknown_top_field.yaml",
        &[
            ("1:1", "missing required field `probes`"),
            (
                "2:1",
                "unknown field `probe` in the top level (did you mean `probes`?); allowed: listen, defaults, proxy, probes, push",
            ),
        ],
    );
}

#[test]
fn unknown_probe_field_lists_the_fields_of_its_kind() {
    assert_invalid(
        "unknown_probe_field.yaml",
        &[(
            "5:5",
            "unknown field `adresses` in probe `relay-443` (kind tcp) (did you mean `addresses`?); allowed: name, kind, interval, timeout, labels, proxy, target, addresses",
        )],
    );
}

#[test]
fn wrong_types_point_at_the_values() {
    assert_invalid(
        "wrong_type.yaml",
        &[
            ("5:12", "`count` must be a whole number from 1 to 100, found a string"),
            ("6:18", "`nat_mapping` must be true or false"),
        ],
    );
}

#[test]
fn bad_durations_in_defaults_and_probe() {
    assert_invalid(
        "bad_duration.yaml",
        &[
            ("3:12", "timeout: bad duration \"10 seconds please\""),
            ("8:15", "interval: bad duration"),
        ],
    );
}

#[test]
fn bad_url_and_wrong_scheme() {
    assert_invalid(
        "bad_url.yaml",
        &[
            ("4:10", "url: bad URL \"https//api.example/health\""),
            ("7:10", "scheme must be ws or wss, got \"https\""),
        ],
    );
}

#[test]
fn bad_host_port() {
    assert_invalid(
        "bad_host_port.yaml",
        &[("4:13", "missing :port"), ("7:13", "write IPv6 addresses in brackets")],
    );
}

#[test]
fn bad_stun_and_turn_uris() {
    assert_invalid(
        "bad_ice_url.yaml",
        &[
            ("4:13", "transport must be udp or tcp, got \"sctp\""),
            ("7:13", "unknown scheme \"http\""),
        ],
    );
}

#[test]
fn bad_status_ranges_and_regex() {
    assert_invalid(
        "bad_status_and_regex.yaml",
        &[
            ("5:26", "bad status \"299-200\""),
            ("5:35", "bad status \"6xx\""),
            ("6:18", "expect_body: invalid regex \"(unclosed\": unclosed group"),
        ],
    );
}

#[test]
fn duplicate_probe_name_points_at_the_second_and_names_the_first_line() {
    assert_invalid(
        "duplicate_name.yaml",
        &[("6:11", "duplicate probe name `relay` (first defined at line 2)")],
    );
}

#[test]
fn missing_required_fields_point_at_the_probe() {
    assert_invalid(
        "missing_required.yaml",
        &[
            ("2:5", "probe `tls-no-target` (kind tls): missing required field `target`"),
            ("5:5", "missing required field `name`"),
        ],
    );
}

#[test]
fn unknown_kind_lists_the_kinds() {
    assert_invalid(
        "unknown_kind.yaml",
        &[(
            "3:11",
            "unknown kind \"sip\"; expected one of dns, tcp, tls, http, websocket, stun, turn, ice",
        )],
    );
}

#[test]
fn unset_env_and_unreadable_file_secrets() {
    assert_invalid(
        "unset_secret.yaml",
        &[
            ("6:17", "environment variable EGRESS_PROBE_TEST_SURELY_UNSET is not set"),
            (
                "7:17",
                "file:/nonexistent/egress-probe/password: cannot read: No such file or directory",
            ),
        ],
    );
}

#[test]
fn credentials_need_exactly_one_scheme() {
    assert_invalid(
        "credentials_both_and_neither.yaml",
        &[("6:7", "not both"), ("12:18", "give username and password, or rest_secret")],
    );
}

#[test]
fn jitter_out_of_range_and_zero_concurrency() {
    assert_invalid(
        "defaults_out_of_range.yaml",
        &[
            ("2:11", "jitter must be between 0% and 50%"),
            ("3:16", "`concurrency` must be between 1 and 10000, got 0"),
        ],
    );
}

#[test]
fn timeout_longer_than_interval() {
    assert_invalid(
        "timeout_over_interval.yaml",
        &[("7:14", "probe `slow`: timeout 30s is longer than interval 10s")],
    );
}

#[test]
fn empty_probe_list_is_an_error() {
    assert_invalid("empty_probes.yaml", &[("2:9", "`probes` is empty")]);
}

#[test]
fn yaml_syntax_error_has_a_position() {
    assert_invalid("yaml_syntax.yaml", &[("4:4", "YAML syntax error")]);
}

#[test]
fn three_problems_are_all_reported() {
    assert_invalid(
        "three_problems.yaml",
        &[
            ("2:13", "interval: bad duration \"soon\""),
            ("7:13", "record: unknown value `MX`"),
            ("11:5", "unknown field `pings`"),
        ],
    );
}

#[test]
fn a_missing_file_reads_no_such_file_or_directory_once_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = missing.to_str().unwrap();
    let cfg = dir.path().join("p.yaml");
    std::fs::write(
        &cfg,
        format!(
            "probes:\n  - name: t\n    kind: tls\n    target: 127.0.0.1:443\n    ca_file: {m}\n  - name: u\n    kind: turn\n    server: turn:127.0.0.1:3478\n    credentials:\n      username: u\n      password: file:{m}\n"
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let no_listeners = ["--metrics", "none", "--web", "none", "--udp-echo", "none"];
    let no_turn = ["--turn-udp", "none", "--turn-tcp", "none", "--turn-tls", "none"];
    let mut tls_files = vec!["responder", "--tls-cert", m, "--tls-key", m];
    tls_files.extend(no_listeners);
    tls_files.extend(no_turn);
    // (arguments, how many missing files the message names)
    let cases: Vec<(Vec<&str>, usize)> = vec![
        (vec!["check", "--config", m], 1),
        (vec!["run", "--config", m], 1),
        (vec!["validate", "--config", m], 1),
        (vec!["validate", "--config", c], 2), // ca_file and a file: secret
        (vec!["diff", m, m], 1),
        (vec!["responder", "--config", m], 1),
        (tls_files, 1),
    ];
    for (args, files) in cases {
        let out = Command::new("timeout")
            .arg("20")
            .arg(common::bin())
            .args(&args)
            .output()
            .expect("timeout(1) from coreutils");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.matches("No such file or directory").count(), files, "{args:?}: {err}");
        assert!(!err.contains("not found"), "{args:?}: {err}");
        assert!(err.contains(m), "{args:?} names the file: {err}");
    }
}

#[test]
fn missing_file_exits_2_with_a_clear_message() {
    let path = Path::new("/nonexistent/egress-probe/config.yaml");
    let out = validate(path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.starts_with("/nonexistent/egress-probe/config.yaml: cannot read config"),
        "{stderr}"
    );
}

#[test]
fn valid_config_exits_0_and_counts_probes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(
        &path,
        "probes:\n  - {name: a, kind: tcp, target: 'a.example:443'}\n  - {name: b, kind: dns, query: b.example}\n",
    )
    .unwrap();
    let out = validate(&path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}: ok (2 probes)\n", path.display()));
    assert!(out.stderr.is_empty());
}

/// `probes/example.yaml` validates once the secrets it references exist: its env variables are
/// set and its `file:` secret path is rewritten into a temporary directory.
#[test]
fn example_yaml_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/example.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("turn-password"), "turn-pass\n").unwrap();
    assert!(
        text.contains("file:/run/secrets/egress-probe/"),
        "example should show a file: secret"
    );
    let path = dir.path().join("example.yaml");
    std::fs::write(
        &path,
        text.replace("/run/secrets/egress-probe/", &format!("{}/", secrets.display())),
    )
    .unwrap();
    let env = [
        ("EGRESS_TURN_USER", "probe"),
        ("EGRESS_TURN_REST_SECRET", "rest-secret"),
        ("EGRESS_API_TOKEN", "Bearer abc"),
    ];
    let out = validate(&path, &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with(": ok (13 probes)\n"), "{stdout}");

    // Without the secrets, every reference is reported, and no secret value is printed.
    let out = validate(&example, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    for needle in ["EGRESS_TURN_USER", "EGRESS_TURN_REST_SECRET", "EGRESS_API_TOKEN", "turn-password"] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
}

/// Every kind appears in the example, so the reference in docs/config.md stays honest.
#[test]
fn example_yaml_covers_every_kind() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/example.yaml")).unwrap();
    for kind in [
        "dns",
        "tcp",
        "tls",
        "http",
        "websocket",
        "stun",
        "turn",
        "ice",
        "path",
        "udp_ports",
        "media",
    ] {
        let found = text.lines().any(|l| {
            let mut w = l.split_whitespace();
            (w.next(), w.next()) == (Some("kind:"), Some(kind))
        });
        assert!(found, "kind {kind} missing");
    }
}

// ---- library level: parse_str ----------------------------------------------------------------

#[test]
fn parse_str_builds_typed_values() {
    let text = r#"
listen: 127.0.0.1:9470
defaults: {interval: 2m, timeout: 500ms, jitter: 0.2, concurrency: 4}
proxy: env
probes:
  - name: turn
    kind: turn
    server: turns:turn.example:443?transport=tcp
    credentials: {rest_secret: literal-secret, ttl: 10m}
    proxy: http://user:p%40ss@proxy.example:3128
  - name: api
    kind: http
    url: https://api.example/
    method: post
    expect_status: 2xx
"#;
    let c = parse_str(text, "inline.yaml").unwrap();
    assert_eq!(c.listen.unwrap().port(), 9470);
    assert_eq!(c.defaults.interval.as_secs(), 120);
    assert_eq!(c.defaults.timeout.as_millis(), 500);
    assert!((c.defaults.jitter - 0.2).abs() < 1e-9);
    assert_eq!(c.defaults.concurrency, 4);
    assert!(matches!(c.proxy, Some(ProxySetting::Env)));
    let ProbeSpec::Turn(t) = &c.probes[0].spec else { panic!("turn") };
    assert_eq!((t.server.port, t.server.is_tls()), (443, true));
    let Credentials::Rest { user, ttl, .. } = &t.credentials else {
        panic!("rest")
    };
    assert_eq!((user.as_str(), ttl.as_secs()), ("egress-probe", 600));
    let Some(ProxySetting::Url(p)) = &c.probes[0].proxy else {
        panic!("proxy url")
    };
    assert_eq!(
        (p.host.as_str(), p.port, p.password.as_ref().unwrap().expose()),
        ("proxy.example", 3128, "p@ss")
    );
    let ProbeSpec::Http(h) = &c.probes[1].spec else { panic!("http") };
    assert_eq!(h.expect_status.len(), 1);
    assert!(h.expect_status[0].contains(204) && !h.expect_status[0].contains(301));
}

#[test]
fn parse_str_display_is_one_problem_per_line() {
    let text = "probes:\n  - name: x\n    kind: tcp\n    target: x\n    extra: 1\n";
    let e = parse_str(text, "c.yaml").unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with("c.yaml:4:13: target:"), "{shown}");
    assert!(lines[1].starts_with("c.yaml:5:5: unknown field `extra`"), "{shown}");
}

#[test]
fn parse_str_never_shows_secret_values() {
    let text = "probes:\n  - name: t\n    kind: turn\n    server: turn:t.example\n    credentials: {username: hunter2-user, password: hunter2-pass, rest_user: x}\n  - name: w\n    kind: websocket\n    url: ws://w.example/\n    headers: {Authorization: \"bad\\nvalue-hunter2\"}\n";
    let e = parse_str(text, "c.yaml").unwrap_err().to_string();
    assert!(e.contains("`rest_user` only applies with rest_secret"), "{e}");
    assert!(e.contains("Authorization (literal) is not a valid header value"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn parse_str_ice_servers_need_credentials_for_turn_and_relay_policy_needs_turn() {
    let text = "probes:\n  - name: i\n    kind: ice\n    servers: [stun:s.example, turn:t.example]\n  - name: j\n    kind: ice\n    servers: [stun:s.example]\n    policy: relay\n    expect: [relay]\n";
    let e = parse_str(text, "c.yaml").unwrap_err();
    let got: Vec<(usize, usize)> = e.errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(got, vec![(4, 31), (8, 13), (9, 13)], "{e}");
    assert!(e.errors[0].message.contains("needs credentials"));
    assert!(e.errors[1].message.contains("policy relay needs at least one turn: server"));
}

#[test]
fn parse_str_anchors_and_merge_keys_share_blocks() {
    let text = r#"
x-creds: &creds {username: u, password: p}
probes:
  - &base
    name: turn-udp
    kind: turn
    server: turn:turn.example:3478
    credentials: *creds
  - <<: *base
    name: turn-tcp
    server: turn:turn.example:3478?transport=tcp
  - name: ice
    kind: ice
    servers: [{url: "turn:turn.example", credentials: *creds}]
"#;
    let c = parse_str(text, "c.yaml").unwrap();
    let names: Vec<&str> = c.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["turn-udp", "turn-tcp", "ice"]);
    let ProbeSpec::Turn(t) = &c.probes[1].spec else { panic!("turn") };
    assert_eq!(t.server.transport_label(), "tcp");
    assert!(matches!(t.credentials, Credentials::LongTerm { .. }));
}

#[test]
fn parse_str_empty_required_value_points_at_the_key() {
    let e = parse_str("probes:\n  - name: a\n    kind: tcp\n    target:\n  - name: b\n", "c.yaml").unwrap_err();
    let got: Vec<(usize, usize, &str)> = e.errors.iter().map(|e| (e.line, e.column, e.message.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (4, 5, "probe `a` (kind tcp): required field `target` has no value"),
            (5, 5, "probe `b`: missing required field `kind`"),
        ],
        "{e}"
    );
}

#[test]
fn parse_str_tls_options_flat_or_grouped_but_not_twice() {
    let text = "probes:\n  - name: a\n    kind: https-typo\n  - name: b\n    kind: http\n    url: https://api.example/\n    alpn: [h2]\n    tls: {min_version: '1.3', server_name: api.example}\n";
    let e = parse_str(text, "c.yaml").unwrap_err();
    assert_eq!(e.errors.len(), 1, "only the unknown kind: {e}");
    let ok = parse_str(&text.replace("https-typo", "tcp\n    target: 'a.example:1'"), "c.yaml").unwrap();
    let ProbeSpec::Http(h) = &ok.probes[1].spec else { panic!("http") };
    assert_eq!(h.tls.alpn, ["h2"]);
    assert_eq!(h.tls.server_name.as_deref(), Some("api.example"));
    assert_eq!(
        h.tls.min_version,
        Some(egress_probe::config::TlsVersion::Tls13),
        "the grouped `tls:` value"
    );

    let text = "probes:\n  - name: t\n    kind: tls\n    target: 'a.example:443'\n    min_version: '1.2'\n    tls:\n      min_version: '1.3'\n      ca_fil: x\n";
    let e = parse_str(text, "c.yaml").unwrap_err();
    let got: Vec<(usize, usize)> = e.errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(got, vec![(7, 7), (8, 7)], "{e}");
    assert!(
        e.errors[0].message.contains("`min_version` is given twice: here and at line 5"),
        "{e}"
    );
    assert!(
        e.errors[1]
            .message
            .contains("unknown field `ca_fil` in tls (did you mean `ca_file`?)"),
        "{e}"
    );
}

#[test]
fn metrics_histograms_word_is_checked_at_its_value() {
    let ok = "metrics:\n  histograms: per_phase\nprobes:\n  - name: a\n    kind: tcp\n    target: example.test:443\n";
    let cfg = parse_str(ok, "m.yaml").expect("per_phase is accepted");
    assert_eq!(cfg.metrics.histograms, egress_probe::config::Histograms::PerPhase);
    let default = parse_str(&ok.replacen("metrics:\n  histograms: per_phase\n", "", 1), "m.yaml").expect("valid");
    assert_eq!(default.metrics.histograms, egress_probe::config::Histograms::PerProbe);

    let bad = "metrics:\n  histograms: all\n  bucket: 3\nprobes:\n  - name: a\n    kind: tcp\n    target: example.test:443\n";
    let e = parse_str(bad, "m.yaml").expect_err("unknown word and key are problems");
    let got: Vec<(usize, usize, &str)> = e.errors.iter().map(|x| (x.line, x.column, x.message.as_str())).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .any(|(l, c, m)| (*l, *c) == (2, 15) && m.contains("histograms") && m.contains("per_phase")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|(l, c, m)| (*l, *c) == (3, 3) && m.contains("unknown field `bucket`")),
        "{got:?}"
    );
}

#[test]
fn nat_tests_need_udp_and_a_bounded_lifetime_search_that_fits_the_interval() {
    let ok = "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480\n    nat_mapping: true\n    nat_filtering: true\n    binding_lifetime: {max: 30s}\n    interval: 2m\n";
    let c = parse_str(ok, "c.yaml").unwrap();
    let ProbeSpec::Stun(s) = &c.probes[0].spec else { panic!("stun") };
    assert!(s.nat_mapping && s.nat_filtering);
    assert_eq!(s.binding_lifetime.map(|l| l.max.as_secs()), Some(30));
    // The search's budget (2 x max + 4 s) is part of the run time.
    assert_eq!(c.probes[0].run_time(&c.defaults).as_secs(), 10 + 64);
    for (text, want) in [
        (
            "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480?transport=tcp\n    nat_filtering: true\n",
            "c.yaml:5:20: probe `n`: `nat_filtering` needs a UDP server",
        ),
        (
            "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480\n    binding_lifetime: {max: 1h}\n    interval: 1h\n",
            "c.yaml:5:29: binding_lifetime: max must be between 2s and 10m",
        ),
        (
            "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480\n    binding_lifetime: {mx: 10s}\n",
            "c.yaml:5:23: binding_lifetime: missing required field `max`\nc.yaml:5:24: unknown field `mx`",
        ),
        (
            "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480\n    binding_lifetime: {max: 30s}\n    interval: 1m\n",
            "c.yaml:6:15: probe `n`: binding_lifetime search (2 x max + 4s) 1m 4s plus timeout 10s is longer than interval 1m",
        ),
        (
            "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480\n    nat_mapping: true\n    second_server: stun:nat.example:3480\n",
            "c.yaml:6:20: probe `n`: `second_server` is the server itself (nat.example:3480)",
        ),
    ] {
        let e = parse_str(text, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with(want), "{text}\n→ {e}");
    }
}

#[test]
fn media_values_are_range_checked_at_their_line_and_column() {
    let text = "defaults: {interval: 2m, timeout: 5s}\nprobes:\n  - name: t\n    kind: turn\n    server: turn:t.example\n    credentials: {username: u, password: p}\n    media: {duration: 90s, packet_ms: 5, payload: 8, max_loss: 150%, max_jitter: 0s, min_mos: 5, peer: nowhere}\n  - name: m\n    kind: media\n    target: echo.example:7\n    media: {peer: 127.0.0.1:7, max_rtt: 20s}\n";
    let e = parse_str(text, "c.yaml").unwrap_err();
    let got: Vec<(usize, usize, &str)> = e.errors.iter().map(|e| (e.line, e.column, e.message.as_str())).collect();
    let expect = [
        (7, 23, "duration must be between 1s and 1m, got 1m 30s"),
        (7, 39, "`packet_ms` must be between 10 and 120, got 5"),
        (7, 51, "`payload` must be between 16 and 1200, got 8"),
        (7, 64, "max_loss must be between 0% and 100%"),
        (7, 82, "max_jitter: duration \"0s\" must be greater than zero"),
        (7, 95, "min_mos must be between 1.0 and 4.5, got 5"),
        (7, 104, "peer: \"nowhere\" is not an IP address and port"),
        (11, 13, "unknown field `peer` in probe `m` media"),
        (11, 41, "max_rtt must be between 1ms and 10s, got 20s"),
    ];
    assert_eq!(got.len(), expect.len(), "{e}");
    for ((line, col, msg), (el, ec, phrase)) in got.iter().zip(expect) {
        assert_eq!((*line, *col), (el, ec), "{msg}");
        assert!(msg.contains(phrase), "{msg:?} should contain {phrase:?}");
    }
}

#[test]
fn media_defaults_are_the_teams_targets_and_the_interval_must_cover_timeout_plus_duration() {
    let text = "defaults: {interval: 30s, timeout: 5s}\nprobes:\n  - name: m\n    kind: media\n    target: 127.0.0.1:7\n    media: true\n  - name: t\n    kind: turn\n    server: turn:t.example\n    credentials: {username: u, password: p}\n    media: {duration: 3s, max_loss: 2.5%, min_mos: 3.6, peer: 192.0.2.1:7}\n";
    let cfg = parse_str(text, "c.yaml").expect("valid");
    let ProbeSpec::Media(m) = &cfg.probes[0].spec else {
        panic!("media kind")
    };
    assert_eq!(m.media, MediaSpec::default());
    assert_eq!(m.media.duration, Duration::from_secs(10));
    assert_eq!((m.media.packet, m.media.payload), (Duration::from_millis(20), 160));
    let t = m.media.thresholds;
    assert_eq!(
        (t.max_rtt, t.max_jitter, t.min_mos),
        (Duration::from_millis(100), Duration::from_millis(30), None)
    );
    assert!((t.max_loss - 0.01).abs() < 1e-12);
    assert_eq!(cfg.probes[0].run_time(&cfg.defaults), Duration::from_secs(15));
    let ProbeSpec::Turn(turn) = &cfg.probes[1].spec else {
        panic!("turn kind")
    };
    let media = turn.media.as_ref().expect("media");
    assert!((media.thresholds.max_loss - 0.025).abs() < 1e-12);
    assert_eq!(media.thresholds.min_mos, Some(3.6));
    assert_eq!(media.peer, Some("192.0.2.1:7".parse().unwrap()));
    assert_eq!(cfg.probes[1].run_time(&cfg.defaults), Duration::from_secs(8));

    let e = parse_str(&text.replace("interval: 30s", "interval: 12s"), "c.yaml").unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(
        (e.errors[0].line, e.errors[0].column),
        (6, 12),
        "at `media`, not the probe's first line: {e}"
    );
    assert!(
        e.errors[0]
            .message
            .contains("probe `m`: media duration 10s plus timeout 5s is longer than interval 12s"),
        "{e}"
    );
}

#[test]
fn every_nat_test_on_a_tcp_stun_server_and_every_turn_clash_is_reported_in_one_run() {
    let stun = "probes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480?transport=tcp\n    nat_mapping: true\n    nat_filtering: true\n    binding_lifetime: {max: 30s}\n    interval: 2m\n";
    let e = parse_str(stun, "c.yaml").unwrap_err();
    let keys: Vec<&str> = ["nat_mapping", "nat_filtering", "binding_lifetime"]
        .into_iter()
        .filter(|k| e.errors.iter().any(|x| x.message.contains(&format!("`{k}` needs a UDP server"))))
        .collect();
    assert_eq!(keys, ["nat_mapping", "nat_filtering", "binding_lifetime"], "{e}");
    let turn = "probes:\n  - name: t\n    kind: turn\n    server: turn:t.example\n    credentials: {username: u, password: p}\n    concurrent: 8\n    media: true\n    addresses: all\n";
    let e = parse_str(turn, "c.yaml").unwrap_err();
    for phrase in [
        "concurrent: 8 opens its allocations on one server address",
        "does not combine with `addresses: all`",
        "concurrent: 8 only allocates and releases, so the two do not combine",
    ] {
        assert!(e.errors.iter().any(|x| x.message.contains(phrase)), "{phrase} missing: {e}");
    }
}

#[test]
fn probe_config_messages_say_the_value_got_and_point_at_the_key_that_made_the_run_long() {
    let lifetime = "defaults: {interval: 1m}\nprobes:\n  - name: n\n    kind: stun\n    server: stun:nat.example:3480\n    binding_lifetime: {max: 30s}\n";
    let e = parse_str(lifetime, "c.yaml").unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(e.errors[0].line, 6, "at binding_lifetime, not the probe's first line: {e}");
    assert!(e.errors[0].message.contains("binding_lifetime search (2 x max + 4s) 1m 4s"), "{e}");
    let probe = |body: &str| format!("probes:\n  - name: x\n{body}");
    for (body, want) in [
        (
            "    kind: udp_ports\n    host: 127.0.0.1\n    ports: 20000-20010\n    port_timeout: 5ms\n",
            "port_timeout must be between 10ms and 10s, got 5ms",
        ),
        (
            "    kind: stun\n    server: stun:nat.example:3480\n    binding_lifetime: {max: 1s}\n",
            "binding_lifetime: max must be between 2s and 10m (the search takes up to twice max), got 1s",
        ),
        (
            "    kind: turn\n    server: turn:t.example\n    credentials: {username: u, password: p}\n    media: {peer: nowhere}\n",
            "peer: \"nowhere\" is not an IP address and port (e.g. 198.51.100.7:3479",
        ),
        (
            "    kind: udp_ports\n    host: 127.0.0.1\n    ports: \"16384–65535\"\n",
            "has an en dash where a range needs a plain hyphen: write \"16384-65535\"",
        ),
        (
            "    kind: media\n    target: 127.0.0.1:7\n    media: {max_loss: 1}\n",
            "max_loss: 1 is ambiguous (1 % or a fraction meaning 100 %?): write a percentage like 1% or a fraction below 1 like 0.01",
        ),
    ] {
        let e = parse_str(&probe(body), "c.yaml").unwrap_err();
        assert!(e.errors.iter().any(|x| x.message.contains(want)), "{body}\n→ {e}");
    }
    let fraction = parse_str(
        &probe("    kind: media\n    target: 127.0.0.1:7\n    media: {max_loss: 0.02}\n"),
        "c.yaml",
    )
    .expect("a fraction below 1");
    let ProbeSpec::Media(m) = &fraction.probes[0].spec else {
        panic!("media")
    };
    assert!((m.media.thresholds.max_loss - 0.02).abs() < 1e-12);
}
