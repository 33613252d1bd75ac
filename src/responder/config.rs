//! The responder's own configuration (`egress-probe responder --config FILE`, flags override).
//!
//! Separate from the probe config on purpose: the responder runs *outside* the firewall, on
//! another machine, and shares nothing with the probe set but port numbers. Every listener
//! list may be empty (endpoint off); a listener is a bare port (on `bind`) or `ip:port`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::config::Secret;

/// Default STUN/TURN port over UDP and TCP (RFC 8489/8656).
pub const DEFAULT_TURN_PORT: u16 = 3478;
/// Default TURN-over-TLS port (RFC 8656 `turns:`).
pub const DEFAULT_TURNS_PORT: u16 = 5349;
/// Default HTTPS/WSS ports: 443 (what softphones use) and 8443 (the usual alternate).
pub const DEFAULT_WEB_PORTS: [u16; 2] = [443, 8443];
/// Default UDP echo peer port (next to 3478 so one firewall rule pair covers both).
pub const DEFAULT_UDP_ECHO_PORT: u16 = 3479;
/// Default address of the responder's own `/metrics` (plain HTTP, loopback only).
pub const DEFAULT_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9470);

/// The name the loopback responder's DNS answerer knows (`.test` is reserved, RFC 2606).
pub const DEMO_DNS_NAME: &str = "relay.egress-probe.test";

/// Why a responder config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause in the message, not as a `source` (printed once by `{:#}`).
    #[error("{path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// One listening address: a bare port binds on [`ResponderConfig::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Port(u16),
    Addr(SocketAddr),
}

impl Listen {
    /// The socket address to bind, given the default bind IP.
    pub fn resolve(self, bind: IpAddr) -> SocketAddr {
        match self {
            Listen::Port(p) => SocketAddr::new(bind, p),
            Listen::Addr(a) => a,
        }
    }

    /// Parses `3478` or `127.0.0.1:3478` / `[::1]:3478`.
    pub fn parse(s: &str) -> Result<Listen, String> {
        let t = s.trim();
        if let Ok(p) = t.parse::<u16>() {
            return Ok(Listen::Port(p));
        }
        t.parse::<SocketAddr>()
            .map(Listen::Addr)
            .map_err(|_| format!("listener {s:?}: expected a port (3478) or ip:port (127.0.0.1:3478)"))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Port(p) => write!(f, "{p}"),
            Listen::Addr(a) => write!(f, "{a}"),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u16),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Listen::Port(n)),
            Raw::S(s) => Listen::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Where the TLS endpoints get their certificate.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSource {
    /// PEM chain (leaf first). With `key`, used as is; otherwise a self-signed CA is made.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Names (DNS or IP) for the generated leaf. Default: `localhost`, `127.0.0.1`, `::1`,
    /// `relay_ip`, and the bind address if specific.
    #[serde(default)]
    pub names: Vec<String>,
    /// Directory where the generated CA and leaf are kept across restarts (`ca.pem`,
    /// `server.crt`, `server.key`): probes can then pin or trust `ca.pem` once.
    /// Default: a fresh CA per start, written to a temporary `ca.pem` whose path is printed.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// STUN/TURN listeners. STUN Binding is answered on every TURN listener (as coturn does).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnListeners {
    #[serde(default = "default_turn_ports")]
    pub udp: Vec<Listen>,
    #[serde(default = "default_turn_ports")]
    pub tcp: Vec<Listen>,
    #[serde(default = "default_turns_ports")]
    pub tls: Vec<Listen>,
}

impl TurnListeners {
    /// No STUN/TURN listener at all.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tcp.is_empty() && self.tls.is_empty()
    }
}

impl Default for TurnListeners {
    fn default() -> Self {
        TurnListeners {
            udp: default_turn_ports(),
            tcp: default_turn_ports(),
            tls: default_turns_ports(),
        }
    }
}

fn default_turn_ports() -> Vec<Listen> {
    vec![Listen::Port(DEFAULT_TURN_PORT)]
}
fn default_turns_ports() -> Vec<Listen> {
    vec![Listen::Port(DEFAULT_TURNS_PORT)]
}
fn default_web_ports() -> Vec<Listen> {
    DEFAULT_WEB_PORTS.iter().map(|p| Listen::Port(*p)).collect()
}
fn default_udp_echo() -> Vec<Listen> {
    vec![Listen::Port(DEFAULT_UDP_ECHO_PORT)]
}
fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
fn default_realm() -> String {
    "egress-probe".into()
}
fn default_metrics() -> Option<SocketAddr> {
    Some(DEFAULT_METRICS)
}

/// An inclusive UDP port range for relayed addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any YAML shape, so a number or a list gets a sentence naming it, not serde's words.
        let v = serde_norway::Value::deserialize(d)?;
        PortRange::from_value(&v).map_err(serde::de::Error::custom)
    }
}

/// `relay_ports` / `udp_echo_ports`: the key in front of the range's own sentence (serde
/// does not say which field a value-level error came from).
fn range_field<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Option<PortRange>, D::Error> {
    let v = serde_norway::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    PortRange::from_value(&v)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))
}
fn relay_ports_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PortRange>, D::Error> {
    range_field(d, "relay_ports")
}
fn udp_echo_ports_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PortRange>, D::Error> {
    range_field(d, "udp_echo_ports")
}

impl PortRange {
    /// Parses `49152-65535`.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let t = s.trim();
        if t.contains(['–', '—']) {
            return Err(format!(
                "expected a port range MIN-MAX, got {t:?}: write the dash as a plain hyphen ({})",
                t.replace(['–', '—'], "-")
            ));
        }
        let Some((a, b)) = t.split_once('-') else {
            return Err(format!(
                "expected a port range MIN-MAX (like 20000-20099), got {t:?}; a single port is {t}-{t}"
            ));
        };
        let port = |x: &str| x.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let (Some(min), Some(max)) = (port(a), port(b)) else {
            return Err(format!("expected a port range MIN-MAX with ports 1 to 65535, got {t:?}"));
        };
        if min > max {
            return Err(format!("the range {t} runs backwards (MIN above MAX); write {max}-{min}"));
        }
        Ok(PortRange { min, max })
    }

    /// From any YAML value: a `MIN-MAX` string; a bare number or a list is named in the error.
    fn from_value(v: &serde_norway::Value) -> Result<PortRange, String> {
        match v {
            serde_norway::Value::String(s) => PortRange::parse(s),
            serde_norway::Value::Number(n) => Err(format!(
                "expected a port range MIN-MAX (like 20000-20099), got the single number {n}; a single port is {n}-{n}"
            )),
            serde_norway::Value::Sequence(_) => Err("expected a port range MIN-MAX (like 20000-20099) as one string, got a list".into()),
            _ => Err("expected a port range MIN-MAX (like 20000-20099), got a mapping or other value".into()),
        }
    }

    /// How many ports the range holds.
    pub fn ports(self) -> u32 {
        u32::from(self.max) - u32::from(self.min) + 1
    }
}

/// The whole responder configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderConfig {
    /// IP every bare-port listener binds to. Default `0.0.0.0`.
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// Address put in XOR-RELAYED-ADDRESS: what peers reach relayed sockets on. Default: `bind`
    /// when it is specific, else the address of the default route's interface.
    #[serde(default)]
    pub relay_ip: Option<IpAddr>,
    /// UDP ports for relayed addresses; default: any ephemeral port.
    #[serde(default, deserialize_with = "relay_ports_field")]
    pub relay_ports: Option<PortRange>,
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Long-term credentials `user: password` (values may be `env:NAME` / `file:/path`).
    #[serde(default)]
    pub users: BTreeMap<String, Secret>,
    /// Shared secret for REST (ephemeral, coturn `use-auth-secret`) credentials.
    #[serde(default)]
    pub rest_secret: Option<Secret>,
    #[serde(default)]
    pub turn: TurnListeners,
    /// HTTPS + WSS echo over TLS (same listener serves both).
    #[serde(default = "default_web_ports")]
    pub web: Vec<Listen>,
    /// UDP echo peer for relay round trips.
    #[serde(default = "default_udp_echo")]
    pub udp_echo: Vec<Listen>,
    /// A range of UDP ports echoing on `bind`, one socket each (at most 1024), for
    /// `kind: udp_ports`; a whole media range is better redirected onto `udp_echo` with
    /// nftables (see `responder::udp_ports`). Default: none.
    #[serde(default, deserialize_with = "udp_echo_ports_field")]
    pub udp_echo_ports: Option<PortRange>,
    /// Plain-HTTP `/metrics` of the responder itself; `null` turns it off.
    #[serde(default = "default_metrics")]
    pub metrics: Option<SocketAddr>,
    #[serde(default)]
    pub tls: TlsSource,
    /// Optional DNS answerer for one test name (off by default).
    #[serde(default)]
    pub dns: Option<super::dns::DnsZone>,
    /// Per-client (source IP) cap on open WebSockets, like a platform's per-tenant limit:
    /// upgrades beyond it are answered `429 Too Many Requests` with `Retry-After: 5`.
    /// Default: no cap.
    #[serde(default)]
    pub websocket_cap: Option<u32>,
    /// WebSocket sessions with no message for this many seconds are closed by the responder
    /// (close frame 1001 "idle"): a proxy's idle cut to test `hold:` against. Default 300.
    #[serde(default = "default_ws_idle")]
    pub websocket_idle_timeout: u64,
    /// OAuth2 clients `client_id: secret` (values may be `env:NAME` / `file:/path`) for the
    /// `/oauth/token` endpoint; when set, `/api/channels` requires their bearer tokens.
    #[serde(default)]
    pub oauth2_clients: BTreeMap<String, Secret>,
    /// Lifetime of issued tokens in seconds (`expires_in`). Default 3600.
    #[serde(default = "default_token_ttl")]
    pub oauth2_token_ttl: u64,
    /// RFC 5780 NAT behaviour discovery server (off by default; see `nat_stun.rs`).
    #[serde(default)]
    pub nat_stun: Option<NatStunConfig>,
}

/// Default ports of the RFC 5780 server: next to the STUN/TURN and echo ports (3478, 3479),
/// so they never clash with those listeners on the same address.
pub const DEFAULT_NAT_STUN_PORTS: [u16; 2] = [3480, 3481];

/// `nat_stun: {primary: IP, alternate: IP, ports: [P1, P2]}`: the RFC 5780 server answers on
/// primary/alternate IP × primary/alternate port. Without `alternate` it says so: no
/// OTHER-ADDRESS in its answers and 420 to a CHANGE-REQUEST for another IP (a NAT's mapping
/// and filtering cannot be told from one address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatStunConfig {
    pub primary: IpAddr,
    pub alternate: Option<IpAddr>,
    /// Primary and alternate port (0 = pick free ports, the same number on both addresses).
    pub ports: [u16; 2],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNatStun {
    primary: IpAddr,
    #[serde(default)]
    alternate: Option<IpAddr>,
    #[serde(default = "default_nat_ports")]
    ports: Vec<u16>,
}

fn default_nat_ports() -> Vec<u16> {
    DEFAULT_NAT_STUN_PORTS.to_vec()
}

impl NatStunConfig {
    /// Checks and builds one (as the config file's `nat_stun:` is checked).
    pub fn new(primary: IpAddr, alternate: Option<IpAddr>, ports: Option<Vec<u16>>) -> Result<NatStunConfig, String> {
        NatStunConfig::try_from(RawNatStun {
            primary,
            alternate,
            ports: ports.unwrap_or_else(default_nat_ports),
        })
    }
}

impl<'de> Deserialize<'de> for NatStunConfig {
    // Validated inside the mapping's visitor, so that YAML errors point at `nat_stun:` itself
    // (a `try_from` error would come out without a position).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NatStunConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping {primary, alternate, ports}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<NatStunConfig, A::Error> {
                let raw = RawNatStun::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                NatStunConfig::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

impl TryFrom<RawNatStun> for NatStunConfig {
    type Error = String;
    fn try_from(r: RawNatStun) -> Result<Self, String> {
        let ports: [u16; 2] = r
            .ports
            .as_slice()
            .try_into()
            .map_err(|_| format!("nat_stun: ports must be two ports [primary, alternate], found {}", r.ports.len()))?;
        if ports[0] == ports[1] && ports[0] != 0 {
            return Err(format!("nat_stun: the alternate port must differ from the primary ({})", ports[0]));
        }
        if r.primary.is_unspecified() {
            return Err("nat_stun: primary must be a specific address (responses say which address answered)".into());
        }
        if let Some(a) = r.alternate {
            if a == r.primary || a.is_unspecified() || a.is_ipv4() != r.primary.is_ipv4() {
                return Err(format!(
                    "nat_stun: alternate {a} must be a second specific address of the same family as primary {}",
                    r.primary
                ));
            }
        }
        Ok(NatStunConfig {
            primary: r.primary,
            alternate: r.alternate,
            ports,
        })
    }
}

fn default_ws_idle() -> u64 {
    300
}

fn default_token_ttl() -> u64 {
    3600
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            bind: default_bind(),
            relay_ip: None,
            relay_ports: None,
            realm: default_realm(),
            users: BTreeMap::new(),
            rest_secret: None,
            turn: TurnListeners::default(),
            web: default_web_ports(),
            udp_echo: default_udp_echo(),
            udp_echo_ports: None,
            metrics: default_metrics(),
            tls: TlsSource::default(),
            dns: None,
            websocket_cap: None,
            websocket_idle_timeout: default_ws_idle(),
            oauth2_clients: BTreeMap::new(),
            oauth2_token_ttl: default_token_ttl(),
            nat_stun: None,
        }
    }
}

impl ResponderConfig {
    /// Reads and parses a YAML file.
    pub fn load(path: &Path) -> Result<ResponderConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text; `origin` names it in errors (with line:column when known).
    pub fn parse(text: &str, origin: &str) -> Result<ResponderConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ResponderConfig::default());
        }
        let cfg: ResponderConfig = serde_norway::from_str(text).map_err(|e| {
            let mut message = e.to_string();
            let mut at = e.location().map(|l| (l.line(), l.column()));
            if let Some((line, column)) = at {
                // The position goes in front, once.
                let suffix = format!(" at line {line} column {column}");
                if let Some(m) = message.strip_suffix(&suffix) {
                    message = m.to_string();
                }
            }
            // serde names the field and our own check does too: say it once.
            for key in ["nat_stun", "relay_ports", "udp_echo_ports"] {
                let twice = format!("{key}: {key}: ");
                if message.starts_with(&twice) {
                    message = message.replacen(&twice, &format!("{key}: "), 1);
                }
            }
            // A value-level error (untagged, custom) comes without a position or at 1:1:
            // point at the key it names instead.
            if at.is_none() || at == Some((1, 1)) {
                let key = message.split(':').next().unwrap_or_default();
                if let Some(found) = locate(text, key) {
                    at = Some(found);
                }
            }
            let at = at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
            ConfigError::Parse {
                path: format!("{origin}{at}"),
                message,
            }
        })?;
        if let Err((key, message)) = cfg.udp_clash() {
            let at = locate(text, key).map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
            return Err(ConfigError::Invalid(format!("{origin}{at}: {message}")));
        }
        Ok(cfg)
    }

    /// `udp_echo_ports` must not share a port with `relay_ports` or any UDP listener (TURN,
    /// `udp_echo`, DNS): binding it would fail at start, or worse, relayed media or TURN
    /// traffic would be answered by the echo.
    pub fn check_udp_overlaps(&self) -> Result<(), String> {
        self.udp_clash().map_err(|(_, message)| message)
    }

    /// [`Self::check_udp_overlaps`] with the top-level key the problem is at (for its
    /// position in the file). Also: at most [`MAX_ECHO_PORTS`](super::udp_ports::MAX_ECHO_PORTS)
    /// echo ports, and the RFC 5780 server's ports free of the other UDP listeners.
    fn udp_clash(&self) -> Result<(), (&'static str, String)> {
        let dns: &[Listen] = self.dns.as_ref().map_or(&[], |z| &z.listen);
        let listeners = [
            ("turn.udp", &self.turn.udp[..]),
            ("udp_echo", &self.udp_echo[..]),
            ("dns.listen", dns),
        ];
        if let Some(echo) = self.udp_echo_ports {
            let max = super::udp_ports::MAX_ECHO_PORTS;
            if echo.ports() > max {
                return Err((
                    "udp_echo_ports",
                    format!(
                        "udp_echo_ports {}-{} is {} ports, at most {max} (one socket each); for a whole media range, redirect it with nftables onto udp_echo (see docs/responder.md)",
                        echo.min,
                        echo.max,
                        echo.ports()
                    ),
                ));
            }
            let inside = |p: u16| p != 0 && (echo.min..=echo.max).contains(&p);
            if let Some(r) = self.relay_ports {
                if r.min <= echo.max && echo.min <= r.max {
                    return Err((
                        "udp_echo_ports",
                        format!(
                            "udp_echo_ports {}-{} overlaps relay_ports {}-{}: the echo and the TURN relay cannot share ports; give them separate ranges",
                            echo.min, echo.max, r.min, r.max
                        ),
                    ));
                }
            }
            for (what, list) in listeners {
                for l in list {
                    let port = l.resolve(self.bind).port();
                    if inside(port) {
                        return Err((
                            "udp_echo_ports",
                            format!(
                                "udp_echo_ports {}-{} includes port {port} of {what}: pick a range that leaves the other UDP listeners out",
                                echo.min, echo.max
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(n) = &self.nat_stun {
            let ips = std::iter::once(n.primary).chain(n.alternate);
            for ip in ips {
                for port in n.ports.into_iter().filter(|p| *p != 0) {
                    for (what, list) in listeners {
                        for l in list {
                            let a = l.resolve(self.bind);
                            let shared = a.ip() == ip || a.ip().is_unspecified();
                            if a.port() == port && shared {
                                return Err((
                                    "nat_stun",
                                    format!(
                                        "nat_stun: port {port} on {ip} is also {what}'s ({a}): two UDP listeners cannot share it; give nat_stun other ports (default {}, {})",
                                        DEFAULT_NAT_STUN_PORTS[0], DEFAULT_NAT_STUN_PORTS[1]
                                    ),
                                ));
                            }
                        }
                    }
                    let in_echo = self.udp_echo_ports.is_some_and(|r| (r.min..=r.max).contains(&port));
                    let shared = ip == self.bind || self.bind.is_unspecified();
                    if in_echo && shared {
                        return Err((
                            "nat_stun",
                            format!("nat_stun: port {port} on {ip} is inside udp_echo_ports: give nat_stun ports outside that range"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A config for tests and the demo: everything on 127.0.0.1, ephemeral ports, no metrics
    /// port clash, one long-term user and a REST secret.
    pub fn loopback_ephemeral() -> ResponderConfig {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any = Listen::Addr(SocketAddr::new(lo, 0));
        ResponderConfig {
            bind: lo,
            relay_ip: Some(lo),
            turn: TurnListeners {
                udp: vec![any],
                tcp: vec![any],
                tls: vec![any],
            },
            web: vec![any],
            udp_echo: vec![any],
            metrics: Some(SocketAddr::new(lo, 0)),
            dns: Some(super::dns::DnsZone {
                listen: vec![any],
                name: DEMO_DNS_NAME.into(),
                addresses: vec![],
            }),
            ..ResponderConfig::default()
        }
    }

    /// Whether TURN allocations can succeed at all (some credential is configured).
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty() || self.rest_secret.is_some()
    }
}

/// Line and column (1-based) of a top-level `key:`'s value in `text` (of the key itself when
/// its value starts on the next line); `None` when the key is not written at the top level.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let head = format!("{key}:");
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.strip_prefix(&head)?;
        let value = rest.trim_start();
        let column = if value.is_empty() || value.starts_with('#') {
            1
        } else {
            head.chars().count() + rest.chars().count() - value.chars().count() + 1
        };
        Some((i + 1, column))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = ResponderConfig::parse("", "t").unwrap();
        assert_eq!(c.turn.udp, vec![Listen::Port(3478)]);
        assert_eq!(c.web, vec![Listen::Port(443), Listen::Port(8443)]);
        assert_eq!(c.metrics, Some(DEFAULT_METRICS));
    }

    #[test]
    fn listeners_are_ports_or_addresses() {
        let c = ResponderConfig::parse(
            "bind: 127.0.0.1\nturn: { udp: [3478, '127.0.0.2:3479'], tcp: [], tls: [5349] }\nweb: [8443]\nusers: { test: secret }\nrelay_ports: 50000-50100\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.turn.udp[1], Listen::Addr("127.0.0.2:3479".parse().unwrap()));
        assert!(c.turn.tcp.is_empty());
        assert_eq!(c.turn.udp[0].resolve(c.bind), "127.0.0.1:3478".parse().unwrap());
        assert_eq!(c.relay_ports, Some(PortRange { min: 50000, max: 50100 }));
        assert!(c.has_credentials());
    }

    #[test]
    fn nat_stun_takes_two_addresses_and_two_ports() {
        let c = ResponderConfig::parse("nat_stun: { primary: 192.0.2.1, alternate: 192.0.2.2, ports: [3480, 3481] }\n", "t").unwrap();
        let n = c.nat_stun.unwrap();
        assert_eq!(n.alternate, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(n.ports, [3480, 3481]);
        let one = ResponderConfig::parse("nat_stun: { primary: 192.0.2.1 }\n", "t").unwrap();
        assert_eq!(one.nat_stun.unwrap().ports, DEFAULT_NAT_STUN_PORTS);
    }

    #[test]
    fn nat_stun_mistakes_have_positions() {
        for (text, want) in [
            ("web: [8443]\nnat_stun: { primary: 192.0.2.1, alternate: 192.0.2.1 }\n", "r.yaml:2:"),
            ("web: [8443]\nnat_stun:\n  primary: 192.0.2.1\n  ports: [3480]\n", "r.yaml:3:"),
            ("nat_stun: { primary: 192.0.2.1, alternate: '::1' }\n", "r.yaml:1:11"),
            ("nat_stun: { primary: 0.0.0.0 }\n", "r.yaml:1:"),
            ("nat_stun: { primary: 192.0.2.1, alternat: 192.0.2.2 }\n", "r.yaml:1:"),
        ] {
            let e = ResponderConfig::parse(text, "r.yaml").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn mistakes_have_positions() {
        let e = ResponderConfig::parse("web: [8443]\nwbe: [1]\n", "r.yaml").unwrap_err().to_string();
        assert!(e.starts_with("r.yaml:2:"), "{e}");
        assert!(ResponderConfig::parse("relay_ports: 5-1\n", "r").is_err());
        assert!(Listen::parse("nope").is_err());
    }

    #[test]
    fn an_echo_range_overlapping_the_relay_ports_or_a_udp_listener_is_refused() {
        for (yaml, word) in [
            ("relay_ports: 49152-65535\nudp_echo_ports: 50000-50099\n", "relay_ports"),
            ("udp_echo_ports: 3400-3499\n", "turn.udp"),
            ("turn: { udp: [] }\nudp_echo_ports: 3400-3499\n", "udp_echo"),
            (
                "turn: { udp: [] }\nudp_echo: []\ndns: { listen: [5353], name: a.test }\nudp_echo_ports: 5300-5399\n",
                "dns.listen",
            ),
        ] {
            let e = ResponderConfig::parse(yaml, "r.yaml").expect_err(yaml).to_string();
            assert!(
                e.starts_with("r.yaml:") && e.contains(": udp_echo_ports ") && e.contains(word),
                "{e}"
            );
        }
        let ok = ResponderConfig::parse("relay_ports: 49152-65535\nudp_echo_ports: 20000-20099\n", "r.yaml").expect("disjoint");
        assert_eq!(ok.udp_echo_ports, Some(PortRange { min: 20000, max: 20099 }));
    }
}
