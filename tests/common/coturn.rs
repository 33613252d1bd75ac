//! A real coturn (`turnserver` from Debian) on loopback with per-test ports, killed on drop.
//! Recipe from shared/LAB.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::certs::TestCa;
use super::proc::{wait_until, ChildGuard};

/// How coturn authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `lt-cred-mech` with `user=USER:PASS`.
    LongTerm { user: String, password: String },
    /// `use-auth-secret` with `static-auth-secret=SECRET`.
    Rest { secret: String },
}

/// Options for one coturn instance.
#[derive(Clone, Debug)]
pub struct CoturnOptions {
    pub auth: Auth,
    /// Extra config lines (e.g. `user-quota=1`).
    pub extra: Vec<String>,
}

impl Default for CoturnOptions {
    fn default() -> Self {
        CoturnOptions {
            auth: Auth::LongTerm {
                user: "test".into(),
                password: "secret".into(),
            },
            extra: vec![],
        }
    }
}

/// A running coturn.
pub struct Coturn {
    pub port: u16,
    pub tls_port: u16,
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub log: PathBuf,
    _guard: ChildGuard,
}

impl Coturn {
    /// Starts coturn on 127.0.0.1 with fresh ports and a certificate for
    /// `relay.example.test` and 127.0.0.1 signed by a fresh test CA.
    pub fn start(opts: CoturnOptions) -> Coturn {
        Coturn::start_at(opts, None)
    }

    /// Starts coturn inside network namespace `ns`, listening and relaying on `ip` (an address
    /// of that namespace), e.g. behind a firewall built with `netns::NetPair`. The certificate
    /// still names `relay.example.test` (use it as `server_name`).
    pub fn start_in(opts: CoturnOptions, ns: &str, ip: std::net::Ipv4Addr) -> Coturn {
        Coturn::start_at(opts, Some((ns.to_string(), ip)))
    }

    fn start_at(opts: CoturnOptions, place: Option<(String, std::net::Ipv4Addr)>) -> Coturn {
        let ip = place.as_ref().map(|(_, ip)| *ip).unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = super::free_ports(2);
        let (port, tls_port) = (ports[0], ports[1]);
        let ca = TestCa::new("egress-probe test CA");
        let leaf = ca.leaf(&["relay.example.test", "127.0.0.1"], None);
        let (crt, key) = leaf.write(dir.path(), "turn", Some(&ca));
        let ca_file = ca.write_ca(dir.path());
        // A relay port range unique enough per instance to run tests in parallel.
        let base = 20000 + (port as u32 % 400) * 100;
        let mut conf = vec![
            format!("listening-ip={ip}"),
            format!("relay-ip={ip}"),
            format!("listening-port={port}"),
            format!("tls-listening-port={tls_port}"),
            format!("alt-listening-port=0"),
            format!("alt-tls-listening-port=0"),
            format!("cert={}", crt.display()),
            format!("pkey={}", key.display()),
            "realm=example.test".into(),
            "allow-loopback-peers".into(),
            "no-multicast-peers".into(),
            format!("min-port={base}"),
            format!("max-port={}", base + 99),
            "verbose".into(),
        ];
        match &opts.auth {
            Auth::LongTerm { user, password } => {
                conf.push("lt-cred-mech".into());
                conf.push(format!("user={user}:{password}"));
            }
            Auth::Rest { secret } => {
                conf.push("use-auth-secret".into());
                conf.push(format!("static-auth-secret={secret}"));
            }
        }
        conf.extend(opts.extra.iter().cloned());
        let (guard, log) = spawn_conf(dir.path(), conf, place.as_ref().map(|(ns, _)| ns.as_str()));
        let check = move || {
            wait_until(Duration::from_secs(5), || {
                std::net::TcpStream::connect((ip, port)).is_ok()
                    && std::net::TcpStream::connect((ip, tls_port)).is_ok()
                    && udp_answers(ip, port)
            })
        };
        let ready = match &place {
            Some((ns, _)) => super::netns::NetPair::run_in(ns, check),
            None => check(),
        };
        assert!(
            ready,
            "coturn did not start listening on {port}/{tls_port}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Coturn {
            port,
            tls_port,
            dir,
            ca,
            ca_file,
            log,
            _guard: guard,
        }
    }

    /// coturn's PID (to signal it from a test).
    pub fn pid(&self) -> u32 {
        self._guard.pid()
    }

    /// Allocation lifecycle in coturn's verbose log: (created, released by Refresh(0)).
    /// coturn logs `session N: new, realm=<..>, username=<..>, lifetime=600` when it creates an
    /// allocation and `session N: refreshed, realm=<..>, username=<..>, lifetime=0` when a
    /// client deletes it.
    pub fn allocation_counts(&self) -> (usize, usize) {
        let log = self.log_text();
        let created = log.lines().filter(|l| l.contains(": new, realm=")).count();
        let deleted = log
            .lines()
            .filter(|l| l.contains(": refreshed, realm=") && (l.ends_with("lifetime=0") || l.contains("lifetime=0,")))
            .count();
        (created, deleted)
    }

    /// coturn's log so far (to prove allocations were deleted).
    pub fn log_text(&self) -> String {
        // coturn may add a date suffix to the log file name.
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("turn") && name.ends_with(".log") && e.path() != self.log {
                    text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        text
    }
}

/// Starts `turnserver` on `lines` plus what every lab coturn shares (no CLI, no DTLS, pid and
/// log file in `dir`, a simple log, nothing on stdout), written to `dir/turnserver.conf`;
/// inside namespace `ns` if given (`ip netns exec` execs turnserver: the guard's PID is
/// turnserver's own). Killed with the guard; waiting until it answers is the caller's (its
/// addresses and ports are). Returns the guard and the log file's path.
pub fn spawn_conf(dir: &Path, mut lines: Vec<String>, ns: Option<&str>) -> (ChildGuard, PathBuf) {
    let log = dir.join("turn.log");
    lines.extend([
        "no-cli".into(),
        "no-dtls".into(),
        format!("pidfile={}", dir.join("turn.pid").display()),
        format!("log-file={}", log.display()),
        "simple-log".into(),
        "no-stdout-log".into(),
    ]);
    let conf_path = dir.join("turnserver.conf");
    std::fs::write(&conf_path, lines.join("\n") + "\n").expect("write coturn conf");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "turnserver"]);
            c
        }
        None => Command::new("turnserver"),
    };
    let guard = ChildGuard::spawn(
        "turnserver",
        cmd.arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    (guard, log)
}

/// Whether coturn answers a STUN Binding on UDP `port` (its UDP listener starts after TCP).
pub fn udp_answers(ip: std::net::Ipv4Addr, port: u16) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind((ip, 0)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    // Binding request: type 0x0001, length 0, magic cookie, fixed transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"readycheck12");
    if sock.send_to(&req, (ip, port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 20 && buf[0] == 0x01 && buf[1] == 0x01)
}
