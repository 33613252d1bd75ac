//! Day one: the config's JSON Schema (`egress-probe schema`) is the committed
//! `docs/config.schema.json` and a real validator (PyPI `check-jsonschema`, installed by
//! scripts/test) accepts every shipped config and preset with it and rejects what `validate`
//! rejects; shell completions and the man page come from the one clap definition; and the
//! Debian package (scripts/package) installs into a throwaway root with its unit verified by
//! `systemd-analyze verify` and a binary that runs from the installed path.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::proc::bounded;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn need(tool: &str) {
    assert!(
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success()),
        "{tool} is missing: scripts/test installs it"
    );
}

fn shipped_yaml() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["probes", "probes/presets"] {
        for e in std::fs::read_dir(repo(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = bounded(30, common::bin().to_str().unwrap(), &["schema"]);
    assert!(out.status.success(), "{}", text(&out));
    let committed = std::fs::read_to_string(repo("docs/config.schema.json")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "docs/config.schema.json is stale: egress-probe schema > docs/config.schema.json"
    );
}

#[test]
fn every_shipped_config_and_preset_names_the_schema_for_editors() {
    let files = shipped_yaml();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let first = std::fs::read_to_string(&f).unwrap().lines().next().unwrap_or_default().to_string();
        let rel = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}: {first}", f.display()));
        assert!(f.parent().unwrap().join(rel).canonicalize().unwrap() == repo("docs/config.schema.json").canonicalize().unwrap());
    }
}

#[test]
fn check_jsonschema_accepts_every_shipped_config_and_preset() {
    need("check-jsonschema");
    let schema = repo("docs/config.schema.json");
    let mut args = vec!["--schemafile".to_string(), schema.display().to_string()];
    args.extend(shipped_yaml().iter().map(|p| p.display().to_string()));
    // The Debian package's conffile too (its $schema line names the installed copy).
    args.push(repo("deploy/debian/config.yaml").display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bounded(120, "check-jsonschema", &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok -- validation done"), "{}", text(&out));
}

/// The schema is not vacuous: what `validate` rejects for a wrong key, type or word, the real
/// validator rejects too, and a minimal valid file passes both.
#[test]
fn check_jsonschema_rejects_what_validate_rejects() {
    need("check-jsonschema");
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("ok", "probes:\n  - { name: a, kind: tcp, target: example.net:443 }\n", true),
        (
            "unknown-key",
            "probes:\n  - { name: a, kind: tcp, target: example.net:443, sni: x }\n",
            false,
        ),
        (
            "tls-key-on-tcp",
            "probes:\n  - { name: a, kind: tcp, target: example.net:443, alpn: [h2] }\n",
            false,
        ),
        ("missing-target", "probes:\n  - { name: a, kind: tcp }\n", false),
        ("bad-kind", "probes:\n  - { name: a, kind: icmp, target: x }\n", false),
        (
            "bad-word",
            "probes:\n  - { name: a, kind: dns, query: example.net, record: MX }\n",
            false,
        ),
        (
            "count-range",
            "probes:\n  - { name: a, kind: stun, server: 'stun:example.net', count: 0 }\n",
            false,
        ),
        ("no-probes", "listen: 127.0.0.1:9469\n", false),
        ("unknown-preset", "preset: skype\n", false),
        ("preset-only", "preset: zoom\n", true),
    ];
    let schema = repo("docs/config.schema.json");
    for (name, yaml, valid) in cases {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let v = bounded(
            30,
            common::bin().to_str().unwrap(),
            &["validate", "--config", path.to_str().unwrap()],
        );
        assert_eq!(v.status.success(), valid, "validate, {name}: {}", text(&v));
        let s = bounded(
            60,
            "check-jsonschema",
            &["--schemafile", schema.to_str().unwrap(), path.to_str().unwrap()],
        );
        assert_eq!(s.status.success(), valid, "check-jsonschema, {name}: {}", text(&s));
    }
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let bin = common::bin();
    let bin = bin.to_str().unwrap();
    let bash = bounded(30, bin, &["completions", "bash"]);
    assert!(bash.status.success(), "{}", text(&bash));
    let script = String::from_utf8_lossy(&bash.stdout);
    for word in ["check", "validate", "diff", "--preset", "genesys-cloud", "schema"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // bash itself parses the script.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress-probe.bash");
    std::fs::write(&path, script.as_bytes()).unwrap();
    let syntax = bounded(30, "bash", &["-n", path.to_str().unwrap()]);
    assert!(syntax.status.success(), "{}", text(&syntax));
    for shell in ["zsh", "fish"] {
        let o = bounded(30, bin, &["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}: {}", text(&o));
    }
    let man = bounded(30, bin, &["man"]);
    assert!(man.status.success(), "{}", text(&man));
    let roff = String::from_utf8_lossy(&man.stdout);
    assert!(roff.starts_with(".ie") || roff.contains(".TH egress-probe"), "{roff}");
    assert!(roff.contains("completions") && roff.contains("check"), "{roff}");
}

/// scripts/package (dpkg-deb path, the debug binary: a release build is minutes on 2 cores;
/// scripts/package without --binary packages the release one) builds a .deb that `dpkg-deb -x`
/// installs into a throwaway root with every file in place, the config as a conffile, a unit
/// that `systemd-analyze verify` accepts, and a binary that runs from the installed path.
#[test]
fn debian_package_installs_into_a_throwaway_root() {
    need("dpkg-deb");
    need("dpkg-shlibdeps");
    need("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let build = bounded(
        300,
        repo("scripts/package").to_str().unwrap(),
        &[
            "--fast",
            "--binary",
            common::bin().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(build.status.success(), "scripts/package: {}", text(&build));
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb in --out");
    let name = deb.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with(&format!("egress-probe_{}_", env!("CARGO_PKG_VERSION"))), "{name}");

    let fields = bounded(30, "dpkg-deb", &["-f", deb.to_str().unwrap(), "Package", "Depends", "Version"]);
    assert!(fields.status.success(), "{}", text(&fields));
    let fields = String::from_utf8_lossy(&fields.stdout).to_string();
    assert!(fields.contains("Package: egress-probe") && fields.contains("libc6"), "{fields}");

    let ctrl = dir.path().join("DEBIAN");
    let e = bounded(30, "dpkg-deb", &["-e", deb.to_str().unwrap(), ctrl.to_str().unwrap()]);
    assert!(e.status.success(), "{}", text(&e));
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/egress-probe/config.yaml\n");
    for script in ["postinst", "prerm", "postrm"] {
        let p = ctrl.join(script);
        let syntax = bounded(30, "sh", &["-n", p.to_str().unwrap()]);
        assert!(syntax.status.success(), "{script}: {}", text(&syntax));
    }
    let postinst = std::fs::read_to_string(ctrl.join("postinst")).unwrap();
    assert!(
        postinst.contains("systemd-sysusers egress-probe.conf") && postinst.contains("adduser --system"),
        "{postinst}"
    );

    let root = dir.path().join("root");
    let x = bounded(60, "dpkg-deb", &["-x", deb.to_str().unwrap(), root.to_str().unwrap()]);
    assert!(x.status.success(), "{}", text(&x));
    for f in [
        "usr/bin/egress-probe",
        "usr/lib/systemd/system/egress-probe.service",
        "etc/egress-probe/config.yaml",
        "usr/lib/sysusers.d/egress-probe.conf",
        "usr/share/man/man1/egress-probe.1.gz",
        "usr/share/bash-completion/completions/egress-probe",
        "usr/share/zsh/vendor-completions/_egress-probe",
        "usr/share/fish/vendor_completions.d/egress-probe.fish",
        "usr/share/egress-probe/config.schema.json",
        "usr/share/egress-probe/example.yaml",
        "usr/share/egress-probe/presets/genesys-cloud.yaml",
        "usr/share/doc/egress-probe/copyright",
    ] {
        assert!(root.join(f).is_file(), "{f} missing from the package");
    }
    let sysusers = std::fs::read_to_string(root.join("usr/lib/sysusers.d/egress-probe.conf")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u egress-probe ")), "{sysusers}");

    // The unit: the hardened one from deploy/, on the package's paths and system user.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/egress-probe.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/egress-probe --log-format json run --config /etc/egress-probe/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=egress-probe",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line:?}:\n{unit}");
    }
    assert!(!unit.contains("DynamicUser") && !unit.contains("/usr/local/bin"), "{unit}");
    // verify needs ExecStart to exist on this host: point it at the installed binary.
    let installed = root.join("usr/bin/egress-probe");
    let vdir = dir.path().join("verify");
    std::fs::create_dir(&vdir).unwrap();
    let vunit = vdir.join("egress-probe.service");
    std::fs::write(&vunit, unit.replace("/usr/bin/egress-probe", installed.to_str().unwrap())).unwrap();
    let verify = bounded(60, "systemd-analyze", &["verify", vunit.to_str().unwrap()]);
    assert!(verify.status.success(), "systemd-analyze verify: {}", text(&verify));

    let version = bounded(30, installed.to_str().unwrap(), &["--version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("egress-probe {}", env!("CARGO_PKG_VERSION"))
    );
    let conf = root.join("etc/egress-probe/config.yaml");
    let validate = bounded(30, installed.to_str().unwrap(), &["validate", "--config", conf.to_str().unwrap()]);
    assert!(
        validate.status.success(),
        "the shipped config does not validate: {}",
        text(&validate)
    );
    // The man page is roff and names the command.
    let man = bounded(
        30,
        "sh",
        &[
            "-c",
            &format!("gzip -dc {}", root.join("usr/share/man/man1/egress-probe.1.gz").display()),
        ],
    );
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH egress-probe"), "{}", text(&man));
}
