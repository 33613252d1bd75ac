//! Vendor presets (`probes/presets/*.yaml`, embedded in the binary): every preset in every
//! region expands and validates with the one config checker, inputs left out drop exactly the
//! probes that need them, a user's config merges with a preset (the user's probe wins on a name
//! clash), mistakes point at the user's `preset:` line, and `check --preset generic-webrtc` runs
//! green against a real `egress-probe responder` on loopback.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use egress_probe::config::{self, preset, PresetRequest, ProbeSpec};

/// A plausible value for every input a preset declares (literal credentials: this is a
/// validation test, nothing is sent).
fn all_inputs(info: &preset::PresetInfo) -> BTreeMap<String, String> {
    // A real CA certificate (the checker reads the bundle), written once per test process under
    // target/tmp (a static is never dropped, so no temp dir that would outlive the test).
    static CA: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let ca = CA.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        common::certs::TestCa::new("preset test CA").write_ca(&dir)
    });
    info.inputs
        .keys()
        .map(|k| {
            let v = match k.as_str() {
                k if k.ends_with("_port") => "3478".to_string(),
                // Any file that exists and holds PEM would do; ca_file is only opened here.
                "ca_file" => ca.display().to_string(),
                "instance" => "example-alias".to_string(),
                k if k.ends_with("_host") || k == "host" || k == "dns_name" => "relay.example.net".to_string(),
                _ => format!("test-{k}"),
            };
            (k.clone(), v)
        })
        .collect()
}

fn regions(info: &preset::PresetInfo) -> Vec<Option<String>> {
    if info.regions.is_empty() {
        vec![None]
    } else {
        info.regions.keys().cloned().map(Some).collect()
    }
}

#[test]
fn every_preset_lists_the_six_vendors() {
    assert_eq!(
        preset::names(),
        vec![
            "amazon-connect",
            "generic-webrtc",
            "genesys-cloud",
            "microsoft-teams",
            "twilio-voice",
            "zoom"
        ]
    );
}

#[test]
fn embedded_presets_are_the_shipped_files() {
    for name in preset::names() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("probes/presets/{name}.yaml"));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(preset::text(name), Some(on_disk.as_str()), "{}", path.display());
    }
}

#[test]
fn every_preset_in_every_region_validates_with_all_inputs() {
    let mut checked = 0;
    for name in preset::names() {
        let info = preset::info(name).unwrap();
        for region in regions(&info) {
            let req = PresetRequest {
                name: name.to_string(),
                region: region.clone(),
                inputs: all_inputs(&info),
            };
            let cfg = config::load_preset(&req).unwrap_or_else(|e| panic!("{name} {region:?}:\n{e}"));
            let all = preset::expand(&req).unwrap();
            assert!(all.left_out.is_empty(), "{name} {region:?}: {:?}", all.left_out);
            assert_eq!(cfg.probes.len(), all.probes.len(), "{name} {region:?}");
            for p in &cfg.probes {
                assert_eq!(p.labels.get("preset").map(String::as_str), Some(name), "{name}: {}", p.name);
                let text = format!("{:?}", p.spec);
                assert!(!text.contains("${"), "{name} {region:?}: unfilled placeholder in {}", p.name);
            }
            checked += 1;
        }
    }
    // 15 Genesys regions, 9 Twilio edges, 7 Amazon Connect regions, 3 without regions.
    assert_eq!(checked, 15 + 9 + 7 + 3);
}

#[test]
fn every_preset_without_inputs_runs_the_probes_that_need_none() {
    for name in preset::names() {
        let info = preset::info(name).unwrap();
        let req = PresetRequest {
            name: name.to_string(),
            ..PresetRequest::default()
        };
        let x = preset::expand(&req).unwrap();
        for (probe, missing) in &x.left_out {
            for m in missing {
                assert!(info.inputs.contains_key(m), "{name}: {probe} misses undeclared {m}");
                assert!(!info.defaults.contains_key(m), "{name}: {m} has a default");
            }
        }
        if !x.probes.is_empty() {
            config::load_preset(&req).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        }
    }
    // Credentials and run-time servers are never guessed: these need inputs.
    let left_out = |name: &str| -> Vec<String> {
        let req = PresetRequest {
            name: name.into(),
            ..PresetRequest::default()
        };
        preset::expand(&req).unwrap().left_out.into_iter().map(|(p, _)| p).collect()
    };
    assert!(
        left_out("twilio-voice").iter().all(|p| p.contains("turn")),
        "{:?}",
        left_out("twilio-voice")
    );
    assert_eq!(left_out("twilio-voice").len(), 4);
    assert!(left_out("genesys-cloud").contains(&"genesys-turn-udp-3478".to_string()));
    assert_eq!(left_out("amazon-connect"), vec!["connect-ccp-https".to_string()]);
}

#[test]
fn amazon_connect_probes_dns_of_the_regions_turn_load_balancer() {
    let req = PresetRequest {
        name: "amazon-connect".into(),
        region: Some("eu-central-1".into()),
        inputs: BTreeMap::new(),
    };
    let cfg = config::load_preset(&req).unwrap();
    let dns = cfg.probes.iter().find(|p| p.name == "connect-turn-nlb-dns").unwrap();
    match &dns.spec {
        ProbeSpec::Dns(d) => assert_eq!(d.query, "TurnNlb-ea5316ebe2759cbc.elb.eu-central-1.amazonaws.com"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_region_and_unknown_input_are_errors_naming_the_choices() {
    let req = PresetRequest {
        name: "genesys-cloud".into(),
        region: Some("mars-1".into()),
        inputs: BTreeMap::from([("turn_server".to_string(), "x".to_string())]),
    };
    let e = config::load_preset(&req).unwrap_err().to_string();
    assert!(e.contains("unknown region \"mars-1\"") && e.contains("eu-west-1"), "{e}");
    assert!(e.contains("unknown input \"turn_server\"") && e.contains("turn_host"), "{e}");
    let e = config::load_preset(&PresetRequest {
        name: "nope".into(),
        ..PresetRequest::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown preset \"nope\"") && e.contains("genesys-cloud"), "{e}");
}

#[test]
fn config_with_preset_merges_and_the_users_probe_wins_on_a_name_clash() {
    let text = "\
preset: genesys-cloud
region: eu-west-1
inputs: { turn_host: turn.example.net, turn_username: u, turn_password: p }
defaults: { interval: 60s }
probes:
  - name: genesys-api-https
    kind: http
    url: https://proxy-test.example.net/
  - name: my-own
    kind: tcp
    target: example.net:443
";
    let cfg = config::parse_str(text, "merged.yaml").unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = cfg.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names[..2], ["genesys-api-https", "my-own"]);
    assert_eq!(names.iter().filter(|n| **n == "genesys-api-https").count(), 1, "{names:?}");
    assert!(
        names.contains(&"genesys-turn-tcp-3478") && names.contains(&"genesys-streaming-tls"),
        "{names:?}"
    );
    match &cfg.probes[0].spec {
        ProbeSpec::Http(h) => assert_eq!(h.url.as_str(), "https://proxy-test.example.net/"),
        other => panic!("{other:?}"),
    }
    let streaming = cfg.probes.iter().find(|p| p.name == "genesys-streaming-tls").unwrap();
    assert_eq!(streaming.spec.target(), "streaming.mypurecloud.ie:443");
    assert_eq!(cfg.defaults.interval, Duration::from_secs(60));
}

#[test]
fn config_with_only_a_preset_needs_no_probes_list() {
    let cfg = config::parse_str("preset: microsoft-teams\n", "teams.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.probes.len(), 7);
}

#[test]
fn preset_mistakes_point_at_the_users_preset_line() {
    let text = "listen: 127.0.0.1:9469\npreset: zoom\nregion: eu\ninputs: { media_host: 192.0.2.1 }\n";
    let e = config::parse_str(text, "bad.yaml").unwrap_err();
    // Besides "missing probes" (none came in), the preset's problem, at the user's `preset:` value.
    let at = e
        .errors
        .iter()
        .find(|x| x.message.contains("has no regions"))
        .unwrap_or_else(|| panic!("{e}"));
    assert_eq!((at.line, at.column), (2, 9), "{e}");
    let e = config::parse_str("region: eu-west-1\nprobes: []\n", "bad.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.yaml:1:1: `region` only applies with `preset:`"), "{e}");
}

#[test]
fn an_input_cannot_change_the_yaml_structure() {
    // A value that would be YAML if pasted as text stays one string.
    let text = "preset: zoom\ninputs: { media_host: \"x\\n  kind: dns\" }\n";
    let e = config::parse_str(text, "inject.yaml").unwrap_err().to_string();
    assert!(e.contains("target") || e.contains("host"), "{e}");
    assert!(!e.contains("kind dns"), "{e}");
}

/// `check --preset generic-webrtc` against a real responder (wss, STUN, TURN UDP/TCP/TLS, ICE)
/// on loopback ports picked for this test: exit 0, every probe passed.
#[test]
fn check_preset_generic_webrtc_passes_against_the_responder() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let ports = common::free_ports(3);
    let (stun, turns, web) = (ports[0], ports[1], ports[2]);
    let mut responder = common::proc::ChildGuard::spawn(
        "egress-probe responder",
        std::process::Command::new(common::bin())
            .args(["responder", "--bind", "127.0.0.1", "--metrics", "none", "--udp-echo", "none"])
            .args(["--turn-udp", &stun.to_string(), "--turn-tcp", &stun.to_string()])
            .args(["--turn-tls", &turns.to_string(), "--web", &web.to_string()])
            .args(["--user", "preset:env:EGRESS_PRESET_TEST_PASS", "--tls-dir"])
            .arg(dir.path())
            .env("EGRESS_PRESET_TEST_PASS", "preset-secret")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    );
    // The responder prints its endpoints, ending with the pin, once it listens.
    let stdout = responder.child.stdout.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufReader::new(stdout).lines().take(100) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("pin_sha256") {
            break;
        }
    }
    assert!(seen.contains("pin_sha256"), "responder did not come up:\n{seen}");
    let ca = dir.path().join("ca.pem");
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            common::bin().to_str().unwrap(),
            "check",
            "--preset",
            "generic-webrtc",
            "--output",
            "json",
        ])
        .args(["--input", "host=127.0.0.1", "--input", &format!("web_port={web}")])
        .args(["--input", &format!("stun_port={stun}"), "--input", &format!("turns_port={turns}")])
        .args([
            "--input",
            "turn_username=preset",
            "--input",
            "turn_password=env:EGRESS_PRESET_TEST_PASS",
        ])
        .arg("--input")
        .arg(format!("ca_file={}", ca.display()))
        .env("EGRESS_PRESET_TEST_PASS", "preset-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let probes = report["results"].as_array().unwrap();
    let names: Vec<&str> = probes.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "webrtc-signal-wss",
            "webrtc-stun-udp",
            "webrtc-stun-tcp",
            "webrtc-turn-udp",
            "webrtc-turn-tcp",
            "webrtc-turn-tls",
            "webrtc-ice-relay"
        ],
        "{stdout}"
    );
    assert!(probes.iter().all(|p| p["outcome"]["success"] == true), "{stdout}");
    // The DNS probe was left out for its missing input, and the run said so.
    assert!(stderr.contains("webrtc-dns left out: give input(s) dns_name"), "{stderr}");
    assert!(!stdout.contains("preset-secret") && !stderr.contains("preset-secret"));
    assert!(responder.terminate(Duration::from_secs(5)).is_some());
}
