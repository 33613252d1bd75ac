//! A private two-namespace network for firewall tests: a `client` namespace (where the probe
//! runs) and a `peer` namespace (servers, and the firewall rules), joined by a veth pair with
//! addresses that exist only inside them (10.201.0.1 ↔ 10.201.0.2/24). Nothing reaches the
//! host's network. Both namespaces are deleted on drop, also when the test panics.
//!
//! Rules go into the *peer* namespace (its input chain, like a firewall in front of the
//! server): a `drop` there is a silent drop on the wire, `reject with tcp reset` a real RST.
//! Never an `output` chain in the client's own namespace: that makes `connect` fail at once
//! with EPERM, which no network firewall produces.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output, Stdio};

/// Every external command here runs under `timeout`, so a wedged `ip` or `nft` fails the
/// test instead of hanging it.
fn bounded(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["10", program]);
    c
}

/// The real binary's `check --config CONFIG ARGS` inside namespace `ns`, as an operator would
/// run it there (through `prefix` first, e.g. `setpriv`), bounded by `timeout SECS`, logs off
/// and no colour, so stderr holds only the verdicts. The status is the caller's to check.
pub fn check_in(ns: &str, secs: u32, prefix: &[&str], config: &std::path::Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .args([&secs.to_string(), "ip", "netns", "exec", ns])
        .args(prefix)
        .arg(super::bin())
        .args(["check", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "off")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run check")
}

/// Address of the client end of the veth pair.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Address of the peer end.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

/// Two namespaces and a veth pair between them.
pub struct NetPair {
    pub client: String,
    pub peer: String,
}

fn ip(args: &[&str]) -> Output {
    let out = bounded("ip").args(args).stdin(Stdio::null()).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl NetPair {
    /// Creates `ep-<test>-<pid>-c` and `ep-<test>-<pid>-p`, linked and addressed, loopback up.
    pub fn new(test: &str) -> NetPair {
        let base = format!("ep-{test}-{}", std::process::id());
        let pair = NetPair {
            client: format!("{base}-c"),
            peer: format!("{base}-p"),
        };
        for ns in [&pair.client, &pair.peer] {
            // A namespace left behind by a killed earlier run of this very test+pid: remove it.
            let _ = bounded("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Interface names are per namespace, so fixed short names cannot collide.
        ip(&[
            "-n",
            &pair.client,
            "link",
            "add",
            "ep0",
            "type",
            "veth",
            "peer",
            "name",
            "ep1",
            "netns",
            &pair.peer,
        ]);
        ip(&["-n", &pair.client, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "ep0"]);
        ip(&["-n", &pair.peer, "addr", "add", &format!("{PEER_IP}/24"), "dev", "ep1"]);
        ip(&["-n", &pair.client, "link", "set", "ep0", "up"]);
        ip(&["-n", &pair.peer, "link", "set", "ep1", "up"]);
        pair
    }

    /// Adds another address (e.g. `10.201.0.3/24`) to the peer's end of the veth pair.
    pub fn add_peer_address(&self, cidr: &str) {
        ip(&["-n", &self.peer, "addr", "add", cidr, "dev", "ep1"]);
    }

    /// A TCP listener on `addr` inside the peer namespace.
    pub fn listen_peer_on(&self, addr: SocketAddr) -> std::net::TcpListener {
        NetPair::run_in(&self.peer, move || {
            std::net::TcpListener::bind(addr).expect("bind in peer namespace")
        })
    }

    /// Loads an nftables ruleset (text for `nft -f -`) into namespace `ns`.
    pub fn nft(&self, ns: &str, ruleset: &str) {
        use std::io::Write;
        let mut child = bounded("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nft: {}\n{ruleset}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs a command inside namespace `ns` (`ip netns exec`) and returns its output.
    pub fn exec(&self, ns: &str, cmd: &mut Command) -> Output {
        // Longer bound than the plumbing: callers run servers and clients this way.
        let mut full = Command::new("timeout");
        full.args(["120", "ip", "netns", "exec", ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => full.env(k, v),
                None => full.env_remove(k),
            };
        }
        full.output().expect("ip netns exec")
    }

    /// Runs `f` on a fresh thread that has entered namespace `ns`: every socket `f` opens
    /// lives there. The thread's namespace dies with the thread; the test's own stays put.
    pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Runs `f` on a fresh thread with a private mount namespace in which `hosts` is bind-mounted
    /// over `/etc/hosts`: the system resolver (getaddrinfo) then answers names from it, as for
    /// a name with several A records, without touching the real `/etc/hosts`.
    pub fn with_hosts_file<T: Send + 'static>(hosts: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        NetPair::isolated(None, &[("/etc/hosts", hosts)], f)
    }

    /// Runs `f` on a fresh thread that entered network namespace `ns` (if any) and, if `files`
    /// is not empty, a private mount namespace where each `(path, content)` is bind-mounted over
    /// `path` (e.g. `/etc/resolv.conf`). Threads `f` spawns (tokio's blocking pool, where
    /// getaddrinfo runs) inherit both. The real files are never touched.
    pub fn isolated<T: Send + 'static>(ns: Option<&str>, files: &[(&str, &str)], f: impl FnOnce() -> T + Send + 'static) -> T {
        use nix::mount::{mount, MsFlags};
        let temps: Vec<(String, tempfile::NamedTempFile)> = files
            .iter()
            .map(|(target, content)| {
                let t = tempfile::NamedTempFile::new().expect("temp file");
                std::fs::write(t.path(), content).expect("write temp file");
                (target.to_string(), t)
            })
            .collect();
        let mounts: Vec<(String, std::path::PathBuf)> = temps.iter().map(|(t, f)| (t.clone(), f.path().to_path_buf())).collect();
        let ns_path = ns.map(|n| format!("/var/run/netns/{n}"));
        let out = std::thread::spawn(move || {
            if let Some(path) = ns_path {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            }
            if !mounts.is_empty() {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
                mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).expect("make / private");
                for (target, src) in &mounts {
                    mount(Some(src), target.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind mount");
                }
            }
            f()
        })
        .join()
        .expect("isolated thread panicked");
        drop(temps);
        out
    }

    /// Runs an async block to completion on a current-thread runtime inside the client namespace.
    pub fn block_on_client<T, F>(&self, make: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        NetPair::run_in(&self.client, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(make())
        })
    }

    /// A TCP listener on PEER_IP:port inside the peer namespace (the kernel completes
    /// handshakes from its backlog; nothing needs to accept).
    pub fn listen_peer(&self, port: u16) -> std::net::TcpListener {
        NetPair::run_in(&self.peer, move || {
            std::net::TcpListener::bind(SocketAddr::from((PEER_IP, port))).expect("bind in peer namespace")
        })
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.peer] {
            let _ = bounded("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// Address of the client (`inside`) in a [`Routed`] network.
pub const INSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 2);
/// The router's address towards `inside` (the client's default gateway; proxies listen here).
pub const FW_INSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 1);
/// The router's address towards `outside` (every connection from inside is NATed to it).
pub const FW_OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
/// First server address in `outside` (signalling: HTTPS, WSS, DNS).
pub const SIGNALLING_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
/// Second server address in `outside` (media: STUN/TURN, relayed addresses).
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 3);

/// Three namespaces with a router in the middle, as a customer network looks from a softphone:
/// `inside` (10.202.0.2, default route via the router) — `fw` (10.202.0.1 / 10.203.0.1, IP
/// forwarding on, source NAT to 10.203.0.1 towards outside) — `outside` (10.203.0.2 and
/// 10.203.0.3, the servers). The policy goes into `fw`'s **forward** chain ([`Routed::policy`]),
/// where a `drop` is a silent drop on the wire and `reject` sends a real RST/ICMP, as a
/// network firewall does. Proxies run on `fw` itself (its input chain is open to inside).
///
/// On drop every process still running in the three namespaces is killed (they can only be
/// processes this test started: the names are unique per test and pid), then the namespaces
/// are deleted.
pub struct Routed {
    pub inside: String,
    pub fw: String,
    pub outside: String,
}

impl Routed {
    /// Creates `ep-<test>-<pid>-{in,fw,out}`, links, addresses, routes, forwarding and NAT.
    pub fn new(test: &str) -> Routed {
        let base = format!("ep-{test}-{}", std::process::id());
        let net = Routed {
            inside: format!("{base}-in"),
            fw: format!("{base}-fw"),
            outside: format!("{base}-out"),
        };
        for ns in [&net.inside, &net.fw, &net.outside] {
            kill_all_in(ns);
            let _ = bounded("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &net.inside,
            "link",
            "add",
            "in0",
            "type",
            "veth",
            "peer",
            "name",
            "fwi0",
            "netns",
            &net.fw,
        ]);
        ip(&[
            "-n",
            &net.fw,
            "link",
            "add",
            "fwo0",
            "type",
            "veth",
            "peer",
            "name",
            "out0",
            "netns",
            &net.outside,
        ]);
        ip(&["-n", &net.inside, "addr", "add", &format!("{INSIDE_IP}/24"), "dev", "in0"]);
        ip(&["-n", &net.fw, "addr", "add", &format!("{FW_INSIDE_IP}/24"), "dev", "fwi0"]);
        ip(&["-n", &net.fw, "addr", "add", &format!("{FW_OUTSIDE_IP}/24"), "dev", "fwo0"]);
        ip(&["-n", &net.outside, "addr", "add", &format!("{SIGNALLING_IP}/24"), "dev", "out0"]);
        ip(&["-n", &net.outside, "addr", "add", &format!("{RELAY_IP}/24"), "dev", "out0"]);
        ip(&["-n", &net.inside, "link", "set", "in0", "up"]);
        ip(&["-n", &net.fw, "link", "set", "fwi0", "up"]);
        ip(&["-n", &net.fw, "link", "set", "fwo0", "up"]);
        ip(&["-n", &net.outside, "link", "set", "out0", "up"]);
        ip(&["-n", &net.inside, "route", "add", "default", "via", &FW_INSIDE_IP.to_string()]);
        let out = bounded("ip")
            .args(["netns", "exec", &net.fw, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .output()
            .expect("run sysctl");
        assert!(out.status.success(), "ip_forward: {}", String::from_utf8_lossy(&out.stderr));
        // Outside never learns inside's addresses: everything leaves the router as 10.203.0.1.
        net.nft_in(
            &net.fw,
            "table ip nat {\n  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n    oifname \"fwo0\" masquerade\n  }\n}\n",
        );
        net
    }

    /// Replaces the router's filter table (`table inet filter`) with one whose forward chain
    /// has `policy` (`accept`/`drop`) and `rules` (one per line, before the policy applies).
    /// Established/related traffic is always accepted, so answers come back.
    pub fn policy(&self, policy: &str, rules: &[&str]) {
        let mut text = String::from("table inet filter {}\ndelete table inet filter\ntable inet filter {\n");
        text.push_str(&format!(
            "  chain forward {{\n    type filter hook forward priority 0; policy {policy};\n"
        ));
        text.push_str("    ct state established,related accept\n");
        for r in rules {
            text.push_str(&format!("    {r}\n"));
        }
        text.push_str("  }\n}\n");
        self.nft_in(&self.fw, &text);
    }

    /// Loads an nftables script (text for `nft -f -`) into namespace `ns`.
    pub fn nft_in(&self, ns: &str, script: &str) {
        use std::io::Write;
        let mut child = Command::new("timeout")
            .args(["10", "ip", "netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).expect("write nft script");
        }
        let out = child.wait_with_output().expect("wait for nft");
        assert!(out.status.success(), "nft: {}\n{script}", String::from_utf8_lossy(&out.stderr));
    }

    /// `nft ARGS` in namespace `ns`, bounded; returns stdout.
    pub fn nft_cmd(&self, ns: &str, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["10", "ip", "netns", "exec", ns, "nft"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// SIGKILLs every process running in namespace `ns` (`ip netns pids`).
pub fn kill_all_in(ns: &str) {
    let Ok(out) = bounded("ip").args(["netns", "pids", ns]).stderr(Stdio::null()).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        for ns in [&self.inside, &self.fw, &self.outside] {
            kill_all_in(ns);
        }
        for ns in [&self.inside, &self.fw, &self.outside] {
            let _ = bounded("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// Addresses of a [`Chain`]: `inside` 10.210.0.2 — (10.210.0.1) `r1` (10.210.1.1) —
/// (10.210.1.2) `r2` (10.210.2.1) — (10.210.2.2) `outside`.
pub const CHAIN_INSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 2);
/// r1's address towards inside (the client's gateway; hop 1 answers from it).
pub const CHAIN_R1_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 1);
/// r1's address towards r2.
pub const CHAIN_R1_NEXT_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 1, 1);
/// r2's address towards r1 (hop 2 answers from it: the route back to inside leaves there).
pub const CHAIN_R2_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 1, 2);
/// r2's address towards outside.
pub const CHAIN_R2_NEXT_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 2, 1);
/// The server in `outside`, three hops from inside.
pub const CHAIN_TARGET_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 2, 2);

/// Four namespaces in a routed line, `inside` — `r1` — `r2` — `outside`, joined by veth pairs,
/// forwarding on in both routers, no NAT: every router decrements the TTL and answers ICMP time
/// exceeded from its own address (`icmp_ratelimit` 0 so a quick trace is never starved).
/// Firewall rules go into a router's forward chain ([`Chain::forward`]). Namespaces are named
/// `ep-<test>-<pid>-{in,r1,r2,out}`; on drop every process in them is killed and they are deleted.
pub struct Chain {
    pub inside: String,
    pub r1: String,
    pub r2: String,
    pub outside: String,
}

impl Chain {
    /// Creates the four namespaces, links, addresses, routes and forwarding.
    pub fn new(test: &str) -> Chain {
        let base = format!("ep-{test}-{}", std::process::id());
        let c = Chain {
            inside: format!("{base}-in"),
            r1: format!("{base}-r1"),
            r2: format!("{base}-r2"),
            outside: format!("{base}-out"),
        };
        for ns in c.all() {
            kill_all_in(ns);
            let _ = bounded("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let link = |a: &str, an: &str, b: &str, bn: &str| {
            ip(&["-n", a, "link", "add", an, "type", "veth", "peer", "name", bn, "netns", b]);
            ip(&["-n", a, "link", "set", an, "up"]);
            ip(&["-n", b, "link", "set", bn, "up"]);
        };
        link(&c.inside, "in0", &c.r1, "r1a");
        link(&c.r1, "r1b", &c.r2, "r2a");
        link(&c.r2, "r2b", &c.outside, "out0");
        let addr = |ns: &str, a: Ipv4Addr, dev: &str| ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", dev]);
        addr(&c.inside, CHAIN_INSIDE_IP, "in0");
        addr(&c.r1, CHAIN_R1_IP, "r1a");
        addr(&c.r1, CHAIN_R1_NEXT_IP, "r1b");
        addr(&c.r2, CHAIN_R2_IP, "r2a");
        addr(&c.r2, CHAIN_R2_NEXT_IP, "r2b");
        addr(&c.outside, CHAIN_TARGET_IP, "out0");
        ip(&["-n", &c.inside, "route", "add", "default", "via", &CHAIN_R1_IP.to_string()]);
        ip(&["-n", &c.r1, "route", "add", "default", "via", &CHAIN_R2_IP.to_string()]);
        ip(&["-n", &c.r2, "route", "add", "10.210.0.0/24", "via", &CHAIN_R1_NEXT_IP.to_string()]);
        ip(&["-n", &c.outside, "route", "add", "default", "via", &CHAIN_R2_NEXT_IP.to_string()]);
        for ns in [&c.r1, &c.r2] {
            for setting in ["net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"] {
                let out = Command::new("timeout")
                    .args(["10", "ip", "netns", "exec", ns, "sysctl", "-qw", setting])
                    .stdin(Stdio::null())
                    .output()
                    .expect("run sysctl");
                assert!(out.status.success(), "{setting}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        c
    }

    fn all(&self) -> [&String; 4] {
        [&self.inside, &self.r1, &self.r2, &self.outside]
    }

    /// Replaces router `ns`'s `table inet filter` with a forward chain (policy accept) holding
    /// `rules` (one per line), e.g. `tcp dport 443 drop`.
    pub fn forward(&self, ns: &str, rules: &[&str]) {
        use std::io::Write;
        let mut text = String::from("table inet filter {}\ndelete table inet filter\ntable inet filter {\n");
        text.push_str("  chain forward {\n    type filter hook forward priority 0; policy accept;\n");
        for r in rules {
            text.push_str(&format!("    {r}\n"));
        }
        text.push_str("  }\n}\n");
        let mut child = Command::new("timeout")
            .args(["10", "ip", "netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).expect("write nft script");
        }
        let out = child.wait_with_output().expect("wait for nft");
        assert!(out.status.success(), "nft: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }

    /// A TCP listener on the target's `port` inside `outside` (the kernel completes handshakes
    /// from its backlog; nothing needs to accept).
    pub fn listen_target(&self, port: u16) -> std::net::TcpListener {
        NetPair::run_in(&self.outside, move || {
            std::net::TcpListener::bind(SocketAddr::from((CHAIN_TARGET_IP, port))).expect("bind in outside")
        })
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for ns in self.all() {
            kill_all_in(ns);
        }
        for ns in self.all() {
            let _ = bounded("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}
