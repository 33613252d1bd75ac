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
        let s = String::deserialize(d)?;
        PortRange::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl PortRange {
    /// Parses `49152-65535`.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| format!("port range {s:?}: expected MIN-MAX"))?;
        let min = a.trim().parse::<u16>().map_err(|_| format!("port range {s:?}: bad MIN"))?;
        let max = b.trim().parse::<u16>().map_err(|_| format!("port range {s:?}: bad MAX"))?;
        if min == 0 || min > max {
            return Err(format!("port range {s:?}: need 0 < MIN <= MAX"));
        }
        Ok(PortRange { min, max })
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
    #[serde(default)]
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
    #[serde(default)]
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
        serde_norway::from_str(text).map_err(|e| {
            let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
            ConfigError::Parse {
                path: format!("{origin}{at}"),
                message: e.to_string(),
            }
        })
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
    fn mistakes_have_positions() {
        let e = ResponderConfig::parse("web: [8443]\nwbe: [1]\n", "r.yaml").unwrap_err().to_string();
        assert!(e.starts_with("r.yaml:2:"), "{e}");
        assert!(ResponderConfig::parse("relay_ports: 5-1\n", "r").is_err());
        assert!(Listen::parse("nope").is_err());
    }
}
