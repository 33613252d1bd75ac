//! Shared test lab: free ports, child processes that die with the test, certificates,
//! and a real coturn. Each test file uses the parts it needs.
#![allow(dead_code)]

pub mod certs;
pub mod coturn;
pub mod dns;
pub mod http;
pub mod impair;
pub mod netns;
pub mod outcome;
pub mod proc;
pub mod signalling;
pub mod tls_server;

use std::net::{TcpListener, UdpSocket};

/// A port free for both TCP and UDP on 127.0.0.1 right now (bind port 0 and release).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp 0");
        let port = t.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// `n` distinct free ports (TCP+UDP).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut v: Vec<u16> = Vec::new();
    while v.len() < n {
        let p = free_port();
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

/// Path of the built binary, for end-to-end tests.
pub fn bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_egress-probe"))
}

/// How a test starts the daemon; the default is plain `run --config CONFIG`, log discarded.
#[derive(Clone, Copy, Default)]
pub struct DaemonStart<'a> {
    /// Global flags, before `run` (e.g. `--log-format json`).
    pub global: &'a [&'a str],
    /// More `run` flags, after `--listen`.
    pub extra: &'a [&'a str],
    /// Environment variables set for it (secrets referenced as `env:`, `RUST_LOG`, hooks).
    pub env: &'a [(&'a str, &'a str)],
    /// The file its stderr (the log) goes to; discarded when `None`.
    pub log: Option<&'a std::path::Path>,
}

/// `egress-probe GLOBAL run --config CONFIG --listen 127.0.0.1:<free port> EXTRA`: its address
/// and its guard (killed on drop). stdin closed, stdout discarded. Waiting until it serves is
/// the caller's: what "ready" means differs per test.
pub fn spawn_daemon(config: &std::path::Path, how: DaemonStart) -> (std::net::SocketAddr, proc::ChildGuard) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stderr = match how.log {
        Some(path) => std::process::Stdio::from(std::fs::File::create(path).expect("create daemon log")),
        None => std::process::Stdio::null(),
    };
    let guard = proc::ChildGuard::spawn(
        "egress-probe run",
        std::process::Command::new(bin())
            .args(how.global)
            .args(["run", "--config"])
            .arg(config)
            .args(["--listen", &addr.to_string()])
            .args(how.extra)
            .envs(how.env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr),
    );
    (addr, guard)
}

/// `egress-probe --log-format FORMAT check --config CONFIG` at `RUST_LOG=trace` with `env`
/// set, bounded by `timeout 60`; the JSON log run prints the JSON report too (every outcome's
/// details), so a secret test sees both. Blocking: async tests call it in `spawn_blocking`.
pub fn check_at_trace(config: &std::path::Path, format: &str, env: &[(&str, String)]) -> std::process::Output {
    std::process::Command::new("timeout")
        .arg("60")
        .arg(bin())
        .args(["--log-format", format, "check", "--config"])
        .arg(config)
        .args(if format == "json" { &["--output", "json"][..] } else { &[][..] })
        .env("RUST_LOG", "trace")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run egress-probe check")
}

/// The `UDP reflexive addr: IP:PORT` that `turnutils_stunclient` prints from the server's
/// Binding response (XOR-MAPPED-ADDRESS).
pub fn stunclient_reflexive(output: &str) -> Option<std::net::SocketAddr> {
    let line = output.lines().find(|l| l.contains("UDP reflexive addr: "))?;
    line.rsplit("UDP reflexive addr: ").next()?.trim().parse().ok()
}
