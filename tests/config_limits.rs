//! Bounded config inputs, through the real `validate` binary: every file a config names
//! (`ca_file`, `file:` secrets) is read only if it is a regular file of at most 1 MiB, durations
//! stop at 24 h, regexes are capped in length and compiled size. Each refusal is a
//! `FILE:LINE:COLUMN: message` at the offending value, exit 2, within seconds, and never echoes
//! a huge value back.
//!
//! Every run of the binary goes through `timeout` (or a guard that kills it), so a regression
//! (a FIFO that blocks, a device read forever) fails the test instead of hanging it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::proc::wait_until;

use egress_probe::config::parse_str;

/// Longest a refused config may take to be refused (the binary is killed at twice this).
const QUICK: Duration = Duration::from_secs(5);

/// `egress-probe validate --config PATH` under `timeout`, with how long it took.
fn validate(config: &Path) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "2", &(2 * QUICK.as_secs()).to_string()])
        .arg(env!("CARGO_BIN_EXE_egress-probe"))
        .arg("validate")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run timeout egress-probe validate");
    (out, start.elapsed())
}

/// Asserts exit 2 within [`QUICK`] and exactly one problem, at `pos`, containing `phrase`.
fn assert_refused(config: &Path, pos: &str, phrase: &str) {
    let (out, took) = validate(config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit (124 = killed by timeout); stderr:\n{stderr}");
    assert!(took < QUICK, "took {took:?}");
    let want = format!("{}:{pos}: ", config.display());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with(&want), "{:?} should start with {want:?}", lines[0]);
    assert!(lines[0].contains(phrase), "{:?} should contain {phrase:?}", lines[0]);
}

/// The files no config may name, with what the refusal says, made in `dir`.
fn hostile_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let fifo = dir.join("fifo");
    let status = Command::new("timeout")
        .args(["5", "mkfifo"])
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo: {status}");
    let big = dir.join("big.pem");
    std::fs::write(&big, vec![b'A'; 2 << 20]).unwrap();
    let sub = dir.join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    vec![
        (fifo, "is a FIFO, not a regular file"),
        (PathBuf::from("/dev/zero"), "is a character device, not a regular file"),
        (PathBuf::from("/dev/urandom"), "is a character device, not a regular file"),
        (big, "is larger than the 1 MiB limit"),
        (sub, "is a directory, not a regular file"),
    ]
}

#[test]
fn ca_file_that_is_a_fifo_device_directory_or_too_large_is_refused_at_its_value() {
    let dir = tempfile::tempdir().unwrap();
    for (path, phrase) in hostile_files(dir.path()) {
        let config = dir.path().join("ca.yaml");
        std::fs::write(
            &config,
            format!(
                "probes:\n  - name: t\n    kind: tls\n    target: 127.0.0.1:443\n    ca_file: {}\n",
                path.display()
            ),
        )
        .unwrap();
        assert_refused(&config, "5:14", &format!("ca_file: \"{}\" {phrase}", path.display()));
    }
}

#[test]
fn file_secret_that_is_a_fifo_device_directory_or_too_large_is_refused_at_its_value() {
    let dir = tempfile::tempdir().unwrap();
    for (path, phrase) in hostile_files(dir.path()) {
        let config = dir.path().join("secret.yaml");
        std::fs::write(
            &config,
            format!(
                "probes:\n  - name: t\n    kind: turn\n    server: turn:127.0.0.1:3478\n    credentials:\n      username: u\n      password: file:{}\n",
                path.display()
            ),
        )
        .unwrap();
        assert_refused(
            &config,
            "7:17",
            &format!("password: secret reference file:{} {phrase}", path.display()),
        );
    }
}

#[test]
fn config_file_itself_that_is_a_fifo_or_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The config itself may be up to 16 MiB: a sparse 17 MiB file stands for "too large".
    let huge = dir.path().join("huge.yaml");
    std::fs::File::create(&huge).unwrap().set_len(17 << 20).unwrap();
    let mut cases = hostile_files(dir.path());
    cases.retain(|(_, phrase)| !phrase.contains("larger"));
    cases.push((huge, "is larger than the 16 MiB limit"));
    for (path, phrase) in cases {
        let (out, took) = validate(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(took < QUICK, "took {took:?}");
        let want = format!("{}: cannot read config: the file {phrase}", path.display());
        assert_eq!(stderr.trim_end(), want);
    }
}

#[test]
fn readable_ca_file_and_file_secret_of_normal_size_still_validate() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["relay.example.test".into()]).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    let config = dir.path().join("ok.yaml");
    std::fs::write(
        &config,
        format!(
            "probes:\n  - name: t\n    kind: turn\n    server: turns:127.0.0.1:5349\n    ca_file: {}\n    credentials:\n      username: u\n      password: file:{}\n",
            ca_path.display(),
            secret.display()
        ),
    )
    .unwrap();
    let (out, _) = validate(&config);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let c = parse_str(&std::fs::read_to_string(&config).unwrap(), "ok.yaml").unwrap();
    let egress_probe::config::ProbeSpec::Turn(t) = &c.probes[0].spec else {
        panic!("turn")
    };
    assert_eq!(
        t.tls.ca.as_ref().map(|b| b.certs().len()),
        Some(1),
        "the bundle is loaded with the config"
    );
}

#[test]
fn ca_file_without_a_certificate_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "probes:\n  - name: t\n    kind: tls\n    target: 127.0.0.1:443\n    ca_file: {}\n",
            empty.display()
        ),
    )
    .unwrap();
    assert_refused(&config, "5:14", "no PEM certificate in the file");
}

#[test]
fn durations_beyond_24h_are_validation_errors_not_run_time_panics() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("d.yaml");
    std::fs::write(
        &config,
        "probes:\n  - name: t\n    kind: tcp\n    target: 127.0.0.1:443\n    interval: 18446744073709551615s\n",
    )
    .unwrap();
    assert_refused(
        &config,
        "5:15",
        "interval: duration \"18446744073709551615s\" is longer than the maximum of 24h",
    );
    // The bound itself is accepted, one more second is not (also for timeouts and REST ttl).
    let at = |iv: &str, extra: &str| format!("probes:\n  - name: t\n    kind: tcp\n    target: 127.0.0.1:443\n    interval: {iv}\n{extra}");
    assert!(parse_str(&at("24h", ""), "x").is_ok());
    let e = parse_str(&at("86401s", ""), "x").unwrap_err().to_string();
    assert!(
        e.contains("x:5:15: interval: duration \"86401s\" is longer than the maximum of 24h"),
        "{e}"
    );
    let e = parse_str(
        "defaults:\n  timeout: 25h\nprobes: [{name: t, kind: turn, server: 'turn:a', credentials: {rest_secret: s, ttl: 2d}}]\n",
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x:2:12: timeout: duration \"25h\""), "{e}");
    assert!(e.contains("ttl: duration \"2d\" is longer than the maximum of 24h"), "{e}");
}

/// Peak resident memory of the largest child this test process has waited for, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss
}

#[test]
fn ten_megabyte_regex_is_refused_quickly_with_a_short_prefix_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("re.yaml");
    let pattern = "(a|b)*c".repeat(10_000_000 / 7);
    std::fs::write(
        &config,
        format!("probes:\n  - name: t\n    kind: http\n    url: http://127.0.0.1/\n    expect_body: '{pattern}'\n"),
    )
    .unwrap();
    let (out, took) = validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", &stderr[..stderr.len().min(500)]);
    assert!(took < QUICK, "took {took:?}");
    assert!(stderr.len() < 300, "the pattern is not echoed: {} bytes of stderr", stderr.len());
    let line = stderr.trim_end();
    assert!(
        line.starts_with(&format!(
            "{}:5:18: expect_body: regex of {} bytes is longer than the limit of 4096 bytes (\"(a|b)*c",
            config.display(),
            pattern.len()
        )),
        "{line}"
    );
    let shown = line.split('"').nth(1).unwrap();
    assert!(shown.chars().count() <= 61, "prefix of at most 60 chars and an ellipsis: {shown:?}");
    // Far below the ~1 GB the compile took before the cap (this is the largest child so far).
    let rss = children_max_rss_kib();
    eprintln!("peak RSS of the largest validate run: {rss} KiB");
    assert!(rss < 256 * 1024, "peak RSS of a child {rss} KiB");
}

#[test]
fn regex_that_compiles_too_large_is_refused_with_regex_size_limit() {
    let start = Instant::now();
    let e = parse_str(
        "probes:\n  - name: t\n    kind: websocket\n    url: ws://127.0.0.1/\n    send: hi\n    expect: '\\w{1000}{1000}'\n",
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(start.elapsed() < QUICK, "{:?}", start.elapsed());
    assert!(e.starts_with("x:6:13: expect: invalid regex \"\\\\w{1000}{1000}\": "), "{e}");
    assert!(e.contains("exceeds size limit"), "{e}");
}

/// A plain HTTP/1.0 GET with a short read timeout (2 s); (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    common::http::get_within(addr, path, Duration::from_secs(2))
}

#[test]
fn sighup_with_fifo_device_or_fifo_config_keeps_the_daemon_serving_and_sigterm_exits_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let good = format!(
        "defaults:\n  interval: 300ms\n  timeout: 250ms\nprobes:\n  - name: closed\n    kind: tcp\n    target: 127.0.0.1:{closed}\n"
    );
    let config = dir.path().join("probes.yaml");
    std::fs::write(&config, &good).unwrap();
    let log = dir.path().join("daemon.log");
    let (addr, mut daemon) = common::spawn_daemon(
        &config,
        common::DaemonStart {
            log: Some(&log),
            ..Default::default()
        },
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || get(addr, "/healthz").map(|r| r.0) == Some(200)),
        "daemon did not serve /healthz: {}",
        log_text()
    );
    let reload_success = || {
        get(addr, "/metrics").and_then(|(_, b)| {
            b.lines()
                .find(|l| l.starts_with("egress_probe_config_reload_success"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        })
    };
    let hup = || {
        let st = Command::new("timeout")
            .args(["5", "kill", "-HUP", &daemon.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -HUP: {st}");
    };
    let fifo = dir.path().join("fifo");
    let st = Command::new("timeout").args(["5", "mkfifo"]).arg(&fifo).status().unwrap();
    assert!(st.success(), "mkfifo: {st}");
    let hostile = [
        format!("{good}  - name: t\n    kind: tls\n    target: 127.0.0.1:{closed}\n    ca_file: {}\n", fifo.display()),
        format!("{good}  - name: r\n    kind: turn\n    server: turn:127.0.0.1:{closed}\n    credentials: {{username: u, password: 'file:/dev/zero'}}\n"),
    ];
    for text in hostile {
        // A good reload first, so the failure below is this reload's.
        std::fs::write(&config, &good).unwrap();
        hup();
        assert!(
            wait_until(Duration::from_secs(5), || reload_success() == Some(1.0)),
            "{}",
            log_text()
        );
        std::fs::write(&config, &text).unwrap();
        hup();
        assert!(
            wait_until(Duration::from_secs(5), || reload_success() == Some(0.0)),
            "reload should fail: {}",
            log_text()
        );
        assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));
    }
    // The config path itself replaced by a FIFO.
    std::fs::remove_file(&config).unwrap();
    let st = Command::new("timeout").args(["5", "mkfifo"]).arg(&config).status().unwrap();
    assert!(st.success(), "mkfifo: {st}");
    hup();
    assert!(
        wait_until(Duration::from_secs(5), || log_text()
            .contains("cannot read config: the file is a FIFO, not a regular file")),
        "{}",
        log_text()
    );
    assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));
    let started = Instant::now();
    let status = daemon.terminate(Duration::from_secs(1));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: {status:?} after {:?}: {}",
        started.elapsed(),
        log_text()
    );
}
