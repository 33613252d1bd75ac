//! One definition per probe kind: its `kind:` word, the keys it takes besides the common ones,
//! whether it takes the shared TLS options, and the function that builds its spec.
//!
//! [`KINDS`] is the single source for both the accepted keys (the "allowed:" list of
//! unknown-field messages) and the parsing: a test builds every kind from an empty mapping and
//! checks that the keys its builder asks for are exactly the keys it declares, so the two cannot
//! drift apart.

use std::collections::BTreeMap;

use super::super::types::*;
use super::super::values::{HostPort, IceTransport, IceUrl, StatusRange};
use super::super::yaml::{Node, Val};
use super::media::media;
use super::node::*;
use super::{auth, credentials, headers, hold, tls_options, COMMON, TLS_OPTS};

/// A probe kind's definition.
pub struct Kind {
    /// The `kind:` word.
    pub name: &'static str,
    /// Keys of this kind besides [`COMMON`] (and the TLS options when `tls`).
    own: &'static [&'static str],
    /// Whether the shared TLS options (flat or under `tls:`) apply.
    tls: bool,
    /// Builds the spec from the probe's mapping; reads only the keys declared above.
    build: fn(&Fields, &Ctx, &mut Problems) -> Option<ProbeSpec>,
}

/// How a probe is named in messages.
pub struct Ctx {
    /// `probe `NAME`` (or `probe #N`).
    pub what: String,
    /// `probe `NAME` (kind K)`, for missing-field messages.
    pub need_what: String,
}

/// Every kind, in the order messages list them.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "dns",
        own: &["query", "record", "resolver", "expect"],
        tls: false,
        build: dns,
    },
    Kind {
        name: "tcp",
        own: &["target", "addresses"],
        tls: false,
        build: tcp,
    },
    Kind {
        name: "tls",
        own: &["target", "addresses"],
        tls: true,
        build: tls,
    },
    Kind {
        name: "http",
        own: &[
            "url",
            "method",
            "headers",
            "body",
            "expect_status",
            "expect_body",
            "follow_redirects",
            "auth",
        ],
        tls: true,
        build: http,
    },
    Kind {
        name: "websocket",
        own: &[
            "url",
            "headers",
            "ping",
            "send",
            "expect",
            "auth",
            "hold",
            "ping_interval",
            "idle",
            "concurrent",
        ],
        tls: true,
        build: websocket,
    },
    Kind {
        name: "stun",
        own: &[
            "server",
            "count",
            "nat_mapping",
            "second_server",
            "nat_filtering",
            "binding_lifetime",
        ],
        tls: true,
        build: stun,
    },
    Kind {
        name: "turn",
        own: &[
            "server",
            "credentials",
            "count",
            "size",
            "channel",
            "addresses",
            "media",
            "concurrent",
        ],
        tls: true,
        build: turn,
    },
    Kind {
        name: "ice",
        own: &["servers", "policy", "network_types", "expect", "connectivity"],
        tls: true,
        build: ice,
    },
    Kind {
        name: "path",
        own: &["target", "protocol", "max_hops", "probes_per_hop", "hop_timeout"],
        tls: false,
        build: path,
    },
    Kind {
        name: "udp_ports",
        own: &["host", "ports", "sample", "port_timeout"],
        tls: false,
        build: udp_ports,
    },
    Kind {
        name: "media",
        own: &["target", "media"],
        tls: false,
        build: media_kind,
    },
    Kind {
        name: "session",
        own: &["steps", "auth"],
        tls: true,
        build: session,
    },
];

pub(in crate::config) const STEP: &[&str] = &["http", "websocket", "extract"];
pub(in crate::config) const HTTP_STEP: &[&str] = &["url", "method", "headers", "body", "expect_status", "expect_body"];
pub(in crate::config) const WS_STEP: &[&str] = &["url", "headers", "ping", "send", "expect", "hold", "ping_interval", "idle"];

pub(in crate::config) const ICE_SERVER: &[&str] = &["url", "credentials"];
pub(in crate::config) const DNS_EXPECT: &[&str] = &["contains", "rcode"];
pub(in crate::config) const RCODES: &[&str] = &["noerror", "formerr", "servfail", "nxdomain", "notimp", "refused"];

impl Kind {
    /// The kind called `name`.
    pub fn find(name: &str) -> Option<&'static Kind> {
        KINDS.iter().find(|k| k.name == name)
    }

    /// Every key a probe of this kind accepts, in message order: common, own, TLS options.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = COMMON.to_vec();
        v.extend_from_slice(self.own);
        if self.tls {
            v.extend_from_slice(TLS_OPTS);
            v.push("tls");
        }
        v
    }

    /// The spec of a probe of this kind; `what` names the probe in messages.
    pub fn build(&self, f: &Fields, what: &str, p: &mut Problems) -> Option<ProbeSpec> {
        let c = Ctx {
            what: what.to_string(),
            need_what: format!("{what} (kind {})", self.name),
        };
        (self.build)(f, &c, p)
    }
}

/// `addresses: first|all` (tcp, tls, turn).
fn addresses(f: &Fields, p: &mut Problems) -> Option<AddressMode> {
    or_default(f, "addresses", AddressMode::First, p, |v, p| word(v, "addresses", p))
}

fn dns(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let query = f.need("query", &c.need_what, p).and_then(|v| non_empty(v, "query", p));
    let record = or_default(f, "record", RecordKind::A, p, |v, p| upper_word(v, "record", p));
    let resolver = optional(f, "resolver", p, |v, p| socket_addr(v, "resolver", Some(53), p));
    let expect = or_default(f, "expect", DnsExpect::default(), p, dns_expect);
    Some(ProbeSpec::Dns(DnsSpec {
        query: query?,
        record: record?,
        resolver: resolver?,
        expect: expect?,
    }))
}

fn tcp(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let target = f.need("target", &c.need_what, p).and_then(|v| host_port(v, "target", p));
    let addresses = addresses(f, p);
    Some(ProbeSpec::Tcp(TcpSpec {
        target: target?,
        addresses: addresses?,
    }))
}

fn path(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let target = f.need("target", &c.need_what, p).and_then(|v| host_port(v, "target", p));
    let protocol = or_default(f, "protocol", PathProtocol::Tcp, p, |v, p| word(v, "protocol", p));
    let max_hops = or_default(f, "max_hops", 16, p, |v, p| uint(v, "max_hops", 1, 64, p).map(|n| n as u32));
    let probes = or_default(f, "probes_per_hop", 2, p, |v, p| {
        uint(v, "probes_per_hop", 1, 5, p).map(|n| n as u32)
    });
    let hop_timeout = or_default(f, "hop_timeout", std::time::Duration::from_secs(1), p, |v, p| {
        let d = duration(v, "hop_timeout", p)?;
        if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(30) {
            p.at(v.pos, "hop_timeout: between 10ms and 30s");
            return None;
        }
        Some(d)
    });
    Some(ProbeSpec::Path(PathSpec {
        target: target?,
        protocol: protocol?,
        max_hops: max_hops?,
        probes_per_hop: probes?,
        hop_timeout: hop_timeout?,
    }))
}

fn udp_ports(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    use super::super::ports::{PortSet, PortSweep, MAX_SAMPLE};
    let host = f.need("host", &c.need_what, p).and_then(|v| {
        let text = non_empty(v, "host", p)?;
        let t = text.trim();
        // A bare IPv6 address, or a name/IPv4 without a port (ports go in `ports:`).
        if t.parse::<std::net::IpAddr>().is_ok() {
            return Some(t.to_string());
        }
        match HostPort::parse(t, Some(1)) {
            Ok(hp) if hp.host.len() == t.trim_start_matches('[').trim_end_matches(']').len() => Some(hp.host),
            Ok(_) => {
                p.at(v.pos, "host: a host name or IP address only; the ports go in `ports:`");
                None
            }
            Err(e) => {
                p.at(v.pos, format!("host: {e}"));
                None
            }
        }
    });
    let ports = f.need("ports", &c.need_what, p).and_then(|v| {
        let text = match &v.val {
            Val::Scalar { text, .. } if !v.is_null() => text.clone(),
            _ => {
                p.at(
                    v.pos,
                    format!(
                        "`ports` must be a string like \"16384-65535\" or \"3478, 10000-20000\", found {}",
                        v.describe()
                    ),
                );
                return None;
            }
        };
        PortSet::parse(&text).map_err(|e| p.at(v.pos, format!("ports: {e}"))).ok()
    });
    let sample = or_default(f, "sample", 64, p, |v, p| {
        uint(v, "sample", 1, u64::from(MAX_SAMPLE), p).map(|n| n as u32)
    });
    let port_timeout = or_default(f, "port_timeout", std::time::Duration::from_millis(500), p, |v, p| {
        let d = duration(v, "port_timeout", p)?;
        if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(10) {
            p.at(
                v.pos,
                format!("port_timeout must be between 10ms and 10s, got {}", humantime::format_duration(d)),
            );
            return None;
        }
        Some(d)
    });
    Some(ProbeSpec::UdpPorts(UdpPortsSpec {
        host: host?,
        ports: ports?,
        sample: sample?,
        port_timeout: port_timeout?,
        sweep: PortSweep::default(),
    }))
}

fn tls(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let target = f.need("target", &c.need_what, p).and_then(|v| host_port(v, "target", p));
    let addresses = addresses(f, p);
    let tls = tls_options(f, p);
    Some(ProbeSpec::Tls(TlsSpec {
        target: target?,
        addresses: addresses?,
        tls: tls?,
    }))
}

fn http(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let u = f.need("url", &c.need_what, p).and_then(|v| url(v, "url", &["http", "https"], p));
    let method = or_default(f, "method", HttpMethod::Get, p, |v, p| upper_word(v, "method", p));
    let headers = or_default(f, "headers", BTreeMap::new(), p, headers);
    let body = optional(f, "body", p, |v, p| string(v, "body", p));
    let expect_status = or_default(f, "expect_status", vec![StatusRange { low: 200, high: 399 }], p, status_ranges);
    let expect_body = optional(f, "expect_body", p, |v, p| regex(v, "expect_body", p));
    let follow = or_default(f, "follow_redirects", 0, p, |v, p| {
        uint(v, "follow_redirects", 0, 20, p).map(|n| n as u32)
    });
    let tls = tls_options(f, p);
    let auth = optional(f, "auth", p, |v, p| auth(v, &c.what, p));
    Some(ProbeSpec::Http(HttpSpec {
        url: u?,
        method: method?,
        headers: headers?,
        body: body?,
        expect_status: expect_status?,
        expect_body: expect_body?,
        follow_redirects: follow?,
        tls: tls?,
        auth: auth?,
    }))
}

fn websocket(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let u = f.need("url", &c.need_what, p).and_then(|v| url(v, "url", &["ws", "wss"], p));
    let headers = or_default(f, "headers", BTreeMap::new(), p, headers);
    let ping = or_default(f, "ping", 3, p, |v, p| uint(v, "ping", 0, 100, p).map(|n| n as u32));
    let send = optional(f, "send", p, |v, p| string(v, "send", p));
    let expect = optional(f, "expect", p, |v, p| regex(v, "expect", p));
    if let (Some(e), None) = (f.get("expect"), f.get("send")) {
        p.at(
            e.pos,
            format!("{}: `expect` needs `send` (the message whose answer it matches)", c.what),
        );
    }
    let tls = tls_options(f, p);
    let auth = optional(f, "auth", p, |v, p| auth(v, &c.what, p));
    let hold = hold(f, &c.what, p);
    let concurrent = or_default(f, "concurrent", 1, p, |v, p| uint(v, "concurrent", 1, 64, p).map(|n| n as u32));
    Some(ProbeSpec::Websocket(WebsocketSpec {
        url: u?,
        headers: headers?,
        ping: ping?,
        send: send?,
        expect: expect?,
        tls: tls?,
        auth: auth?,
        hold: hold?,
        concurrent: concurrent?,
    }))
}

fn stun(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let server = f.need("server", &c.need_what, p).and_then(|v| stun_url(v, "server", p));
    let count = or_default(f, "count", 3, p, |v, p| uint(v, "count", 1, 100, p).map(|n| n as u32));
    let nat_mapping = or_default(f, "nat_mapping", false, p, |v, p| boolean(v, "nat_mapping", p));
    let second = optional(f, "second_server", p, |v, p| stun_url(v, "second_server", p));
    let nat_filtering = or_default(f, "nat_filtering", false, p, |v, p| boolean(v, "nat_filtering", p));
    let lifetime = optional(f, "binding_lifetime", p, lifetime_search);
    let tls = tls_options(f, p);
    let server = server?;
    let udp = server.transport == IceTransport::Udp && !server.is_tls();
    let asked = [
        ("nat_mapping", nat_mapping == Some(true)),
        ("nat_filtering", nat_filtering == Some(true)),
        ("binding_lifetime", matches!(lifetime, Some(Some(_)))),
    ];
    // Every NAT test asked of a non-UDP server is named, not only the first.
    let mut refused = false;
    for (key, on) in asked {
        if let (Some(n), true, false) = (f.get(key), on, udp) {
            p.at(
                n.pos,
                format!(
                    "{}: `{key}` needs a UDP server (stun:host:port): NAT behaviour is about UDP mappings",
                    c.what
                ),
            );
            refused = true;
        }
    }
    if let (Some(Some(second)), Some(n)) = (&second, f.get("second_server")) {
        if second.host_port() == server.host_port() {
            p.at(
                n.pos,
                format!(
                    "{}: `second_server` is the server itself ({}): the mapping test needs another address",
                    c.what,
                    server.host_port()
                ),
            );
            refused = true;
        }
    }
    if refused {
        return None;
    }
    Some(ProbeSpec::Stun(StunSpec {
        server,
        count: count?,
        nat_mapping: nat_mapping?,
        second_server: second?,
        nat_filtering: nat_filtering?,
        binding_lifetime: lifetime?,
        tls: tls?,
    }))
}

/// `binding_lifetime: {max: 60s}`.
fn lifetime_search(v: &Node, p: &mut Problems) -> Option<LifetimeSearch> {
    let f = Fields::of(v, "binding_lifetime", p)?;
    f.reject_unknown(&["max"], "binding_lifetime", p);
    let n = f.need("max", "binding_lifetime", p)?;
    let max = duration(n, "max", p)?;
    if !(LifetimeSearch::MIN_MAX..=LifetimeSearch::MAX_MAX).contains(&max) {
        p.at(
            n.pos,
            format!(
                "binding_lifetime: max must be between {} and {} (the search takes up to twice max), got {}",
                humantime::format_duration(LifetimeSearch::MIN_MAX),
                humantime::format_duration(LifetimeSearch::MAX_MAX),
                humantime::format_duration(max)
            ),
        );
        return None;
    }
    Some(LifetimeSearch { max })
}

fn turn(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let server = f.need("server", &c.need_what, p).and_then(|v| turn_url(v, "server", p));
    let creds = f.need("credentials", &c.need_what, p).and_then(|v| credentials(v, &c.what, p));
    let count = or_default(f, "count", 5, p, |v, p| uint(v, "count", 1, 1000, p).map(|n| n as u32));
    let size = or_default(f, "size", 100, p, |v, p| uint(v, "size", 8, 16_384, p).map(|n| n as usize));
    let channel = or_default(f, "channel", false, p, |v, p| boolean(v, "channel", p));
    let addresses = addresses(f, p);
    let concurrent = or_default(f, "concurrent", 1, p, |v, p| uint(v, "concurrent", 1, 64, p).map(|n| n as u32));
    if let (Some(n @ 2..), Some(AddressMode::All), Some(v)) = (concurrent, addresses, f.get("concurrent")) {
        p.at(
            v.pos,
            format!(
                "{}: concurrent: {n} opens its allocations on one server address; it cannot be combined with addresses: all",
                c.what
            ),
        );
    }
    if let Some(n @ 2..) = concurrent {
        // N allocations at once measure a cap, not the relay: the round trip's keys do nothing.
        for key in ["count", "size", "channel"] {
            if let Some(v) = f.get(key) {
                p.at(
                    v.pos,
                    format!(
                        "{}: {key} shapes the relay round trip, which concurrent: {n} does not run (it only allocates and releases)",
                        c.what
                    ),
                );
            }
        }
    }
    let tls = tls_options(f, p);
    let media = optional(f, "media", p, |v, p| media(v, &c.what, true, p));
    // Each clash is reported, so one run of `validate` names them all.
    let mut clash = false;
    if let (Some(Some(_)), Some(AddressMode::All), Some(n)) = (&media, &addresses, f.get("media")) {
        p.at(
            n.pos,
            format!(
                "{}: `media` streams through one server; it does not combine with `addresses: all`",
                c.what
            ),
        );
        clash = true;
    }
    if let (Some(Some(_)), Some(n @ 2..), Some(v)) = (&media, concurrent, f.get("media")) {
        p.at(
            v.pos,
            format!(
                "{}: `media` streams through one allocation; concurrent: {n} only allocates and releases, so the two do not combine",
                c.what
            ),
        );
        clash = true;
    }
    if clash {
        return None;
    }
    Some(ProbeSpec::Turn(TurnSpec {
        server: server?,
        credentials: creds?,
        count: count?,
        size: size?,
        channel: channel?,
        addresses: addresses?,
        tls: tls?,
        media: media?,
        concurrent: concurrent?,
    }))
}

/// `kind: media`: the stream straight over UDP to a UDP echo (`target: host:port`).
fn media_kind(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let target = f.need("target", &c.need_what, p).and_then(|v| host_port(v, "target", p));
    let media = or_default(f, "media", MediaSpec::default(), p, |v, p| media(v, &c.what, false, p));
    Some(ProbeSpec::Media(MediaProbeSpec {
        target: target?,
        media: media?,
    }))
}

fn stun_url(v: &Node, key: &str, p: &mut Problems) -> Option<IceUrl> {
    let u = ice_url(v, key, p)?;
    if u.is_turn() {
        p.at(
            v.pos,
            format!(
                "{key}: a stun probe takes a stun: or stuns: URI (a TURN server answers Binding requests too: write stun:{})",
                u.host_port()
            ),
        );
        return None;
    }
    Some(u)
}

fn turn_url(v: &Node, key: &str, p: &mut Problems) -> Option<IceUrl> {
    let u = ice_url(v, key, p)?;
    if !u.is_turn() {
        p.at(v.pos, format!("{key}: a turn probe takes a turn: or turns: URI, got {u}"));
        return None;
    }
    Some(u)
}

fn dns_expect(v: &Node, p: &mut Problems) -> Option<DnsExpect> {
    let f = Fields::of(v, "expect", p)?;
    f.reject_unknown(DNS_EXPECT, "dns expect", p);
    let contains = or_default(&f, "contains", Vec::new(), p, |v, p| {
        list_of(v, "contains", p, |i, p| non_empty(i, "contains", p))
    });
    let rcode = optional(&f, "rcode", p, |v, p| {
        let s = string(v, "rcode", p)?.to_ascii_lowercase();
        let numeric = s.strip_prefix("rcode_").is_some_and(|n| n.parse::<u16>().is_ok_and(|n| n < 4096));
        if RCODES.contains(&s.as_str()) || numeric {
            Some(s)
        } else {
            p.at(
                v.pos,
                format!(
                    "rcode: unknown response code {s:?}; expected one of {} or rcode_<number>",
                    RCODES.join(", ")
                ),
            );
            None
        }
    });
    Some(DnsExpect {
        contains: contains?,
        rcode: rcode?,
    })
}

/// `expect_status`: one code/range/class or a list of them.
fn status_ranges(v: &Node, p: &mut Problems) -> Option<Vec<StatusRange>> {
    let one = |i: &Node, p: &mut Problems| {
        let s = string(i, "expect_status", p)?;
        StatusRange::parse(&s).map_err(|e| p.at(i.pos, format!("expect_status: {e}"))).ok()
    };
    match &v.val {
        Val::Seq(items) if items.is_empty() => {
            p.at(v.pos, "expect_status: empty list; omit it for the default 200-399");
            None
        }
        Val::Seq(_) => list_of(v, "expect_status", p, one),
        _ => one(v, p).map(|r| vec![r]),
    }
}

fn ice(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let what = c.what.as_str();
    let servers = f.need("servers", &c.need_what, p).and_then(|v| {
        let items = list(v, "servers", p)?;
        if items.is_empty() {
            p.at(v.pos, "servers: give at least one stun: or turn: server");
            return None;
        }
        list_of(v, "servers", p, |i, p| ice_server(i, what, p))
    });
    let policy = or_default(f, "policy", IcePolicy::All, p, |v, p| word(v, "policy", p));
    let network_types = or_default(f, "network_types", vec![NetworkType::Udp4], p, |v, p| {
        let l = list_of(v, "network_types", p, |i, p| word::<NetworkType>(i, "network_types", p))?;
        if l.is_empty() {
            p.at(v.pos, "network_types: empty list; omit it for the default [udp4]");
            return None;
        }
        Some(l)
    });
    let expect = or_default(f, "expect", Vec::new(), p, |v, p| {
        list_of(v, "expect", p, |i, p| word::<CandidateKind>(i, "expect", p))
    });
    let connectivity = or_default(f, "connectivity", false, p, |v, p| boolean(v, "connectivity", p));
    // Cross-checks: what the agent is asked to find must be findable with these servers.
    if let Some(servers) = &servers {
        let has_turn = servers.iter().any(|s| s.url.is_turn());
        if policy == Some(IcePolicy::Relay) && !has_turn {
            if let Some(v) = f.get("policy") {
                p.at(v.pos, format!("{what}: policy relay needs at least one turn: server"));
            }
        }
        if let (Some(exp), Some(v)) = (&expect, f.get("expect")) {
            if exp.contains(&CandidateKind::Relay) && !has_turn {
                p.at(v.pos, format!("{what}: expecting relay candidates needs at least one turn: server"));
            }
        }
        if connectivity == Some(true) && !has_turn {
            if let Some(v) = f.get("connectivity") {
                p.at(
                    v.pos,
                    format!("{what}: connectivity through the relay needs at least one turn: server"),
                );
            }
        }
    }
    let tls = tls_options(f, p);
    Some(ProbeSpec::Ice(IceSpec {
        servers: servers?,
        policy: policy?,
        network_types: network_types?,
        expect: expect?,
        connectivity: connectivity?,
        tls: tls?,
    }))
}

fn session(f: &Fields, c: &Ctx, p: &mut Problems) -> Option<ProbeSpec> {
    let tls = tls_options(f, p);
    let auth = optional(f, "auth", p, |v, p| auth(v, &c.what, p));
    let steps = f.need("steps", &c.need_what, p).and_then(|v| {
        let items = list(v, "steps", p)?;
        if items.is_empty() || items.len() > MAX_SESSION_STEPS {
            p.at(
                v.pos,
                format!("{}: steps: give 1 to {MAX_SESSION_STEPS} steps, found {}", c.what, items.len()),
            );
            return None;
        }
        let mut known = Vec::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match step(item, &format!("{} step {}", c.what, i + 1), &mut known, p) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    Some(ProbeSpec::Session(SessionSpec {
        steps: steps?,
        auth: auth?,
        tls: tls?,
    }))
}

/// The `${name}`s in `text`.
fn vars(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

fn is_var_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every `${var}` in `text` must have been extracted by an earlier step.
fn check_vars(v: &Node, key: &str, text: &str, known: &[String], what: &str, p: &mut Problems) -> bool {
    let mut ok = true;
    for name in vars(text) {
        if !known.contains(&name) {
            p.at(
                v.pos,
                format!("{what}: {key}: ${{{name}}} is not extracted by an earlier step (extract: {{{name}: /json/pointer}})"),
            );
            ok = false;
        }
    }
    ok
}

/// One step: `{http: {...}, extract: {var: /pointer}}` or `{websocket: {...}}`.
fn step(v: &Node, what: &str, known: &mut Vec<String>, p: &mut Problems) -> Option<SessionStep> {
    let f = Fields::of(v, what, p)?;
    f.reject_unknown(STEP, what, p);
    let (node, is_http) = match (f.get("http"), f.get("websocket")) {
        (Some(h), None) => (h, true),
        (None, Some(w)) => (w, false),
        _ => {
            p.at(f.pos, format!("{what}: give exactly one of `http:` or `websocket:`"));
            return None;
        }
    };
    let s = Fields::of(node, what, p)?;
    s.reject_unknown(if is_http { HTTP_STEP } else { WS_STEP }, what, p);
    let schemes: &[&str] = if is_http { &["http", "https"] } else { &["ws", "wss"] };
    let url_text = s.need("url", what, p).and_then(|n| {
        let text = non_empty(n, "url", p)?;
        if text.contains("${") {
            check_vars(n, "url", &text, known, what, p).then_some((text, None))
        } else {
            url(n, "url", schemes, p).map(|u| (text, Some(u)))
        }
    });
    let placeholder = url::Url::parse(if is_http {
        "http://session-step.invalid/"
    } else {
        "ws://session-step.invalid/"
    })
    .ok()?;
    let headers = or_default(&s, "headers", BTreeMap::new(), p, headers);
    let action = if is_http {
        let method = or_default(&s, "method", HttpMethod::Get, p, |v, p| upper_word(v, "method", p));
        let body = optional(&s, "body", p, |v, p| {
            let b = string(v, "body", p)?;
            check_vars(v, "body", &b, known, what, p).then_some(b)
        });
        let expect_status = or_default(&s, "expect_status", vec![StatusRange { low: 200, high: 399 }], p, status_ranges);
        let expect_body = optional(&s, "expect_body", p, |v, p| regex(v, "expect_body", p));
        Some(StepAction::Http(HttpSpec {
            url: placeholder,
            method: method?,
            headers: headers?,
            body: body?,
            expect_status: expect_status?,
            expect_body: expect_body?,
            follow_redirects: 0,
            tls: TlsOptions::default(),
            auth: None,
        }))
    } else {
        let ping = or_default(&s, "ping", 3, p, |v, p| uint(v, "ping", 0, 100, p).map(|n| n as u32));
        let send = optional(&s, "send", p, |v, p| string(v, "send", p));
        let expect = optional(&s, "expect", p, |v, p| regex(v, "expect", p));
        let hold = hold(&s, what, p);
        Some(StepAction::Websocket(WebsocketSpec {
            url: placeholder,
            headers: headers?,
            ping: ping?,
            send: send?,
            expect: expect?,
            tls: TlsOptions::default(),
            auth: None,
            hold: hold?,
            concurrent: 1,
        }))
    };
    let extract = or_default(&f, "extract", BTreeMap::new(), p, |v, p| {
        if !is_http {
            p.at(
                v.pos,
                format!("{what}: `extract` reads a JSON response body: only http steps have one"),
            );
            return None;
        }
        let e = Fields::of(v, "extract", p)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, k, val) in &e.entries {
            if !is_var_name(name) {
                p.at(k.pos, format!("extract: {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
                ok = false;
                continue;
            }
            match string(val, name, p) {
                Some(ptr) if ptr.is_empty() || ptr.starts_with('/') => {
                    out.insert(name.to_string(), ptr);
                }
                Some(ptr) => {
                    p.at(
                        val.pos,
                        format!("extract: {name}: {ptr:?} is not a JSON pointer (it starts with /, e.g. /connectUri)"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    let (url_text, _) = url_text?;
    let mut action = action?;
    let extract = extract?;
    if let Ok(u) = url::Url::parse(&url_text) {
        if !url_text.contains("${") {
            match &mut action {
                StepAction::Http(h) => h.url = u,
                StepAction::Websocket(w) => w.url = u,
            }
        }
    }
    known.extend(extract.keys().cloned());
    Some(SessionStep {
        action,
        url: url_text,
        extract,
    })
}

/// An ICE server: `stun:host` or `{url: turn:host, credentials: {...}}`.
fn ice_server(v: &Node, what: &str, p: &mut Problems) -> Option<IceServer> {
    let (url_node, creds) = match &v.val {
        Val::Map(_) => {
            let f = Fields::of(v, "ICE server", p)?;
            f.reject_unknown(ICE_SERVER, "ICE server", p);
            let u = f.need("url", "ICE server", p)?;
            let creds = match f.get("credentials") {
                None => Some(None),
                Some(c) => credentials(c, what, p).map(Some),
            };
            (u, creds)
        }
        _ => (v, Some(None)),
    };
    let url = ice_url(url_node, "servers", p)?;
    let creds = creds?;
    if url.is_turn() && creds.is_none() {
        p.at(
            v.pos,
            format!("{what}: TURN server {url} needs credentials: write {{url: ..., credentials: {{username: ..., password: ...}}}}"),
        );
        return None;
    }
    Some(IceServer { url, credentials: creds })
}
#[cfg(test)]
mod tests {
    use super::super::super::yaml;
    use super::*;

    /// The single-source guarantee: each kind's builder asks for exactly the keys the kind
    /// declares (its own, plus `tls` when it takes the TLS options), no more, no fewer.
    #[test]
    fn every_kind_reads_exactly_the_keys_it_declares() {
        let empty = yaml::parse("{}").unwrap().unwrap();
        for kind in KINDS {
            let mut p = Problems::default();
            let f = Fields::of(&empty, "probe", &mut p).unwrap();
            let _ = kind.build(&f, "probe `x`", &mut p);
            let mut asked = f.asked();
            asked.sort();
            let mut declared: Vec<String> = kind.own.iter().map(|s| s.to_string()).collect();
            if kind.tls {
                declared.push("tls".into());
            }
            declared.sort();
            assert_eq!(asked, declared, "kind {}", kind.name);
        }
    }

    #[test]
    fn kind_words_are_unique_and_keys_not_repeated() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(KINDS[..i].iter().all(|o| o.name != k.name), "{}", k.name);
            let fields = k.fields();
            for (j, f) in fields.iter().enumerate() {
                assert!(!fields[..j].contains(f), "kind {} lists `{f}` twice", k.name);
            }
        }
    }
}
