//! Small value types of the config: `host:port`, STUN/TURN URIs, durations, percentages and
//! secret references. Each parses from a string and says precisely what is wrong with it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `host:port` (IPv6 in brackets). The host may be a name or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port`, `[v6]:port`, or `host` with `default_port`.
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<HostPort, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host:port".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(format!("{s:?}: unexpected text after ']'")),
            }
        } else if s.matches(':').count() > 1 {
            return Err(format!("{s:?}: write IPv6 addresses in brackets, e.g. [::1]:443"));
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: missing host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{s:?}: port {p:?} is not a number from 1 to 65535"))?,
            None => default_port.ok_or_else(|| format!("{s:?}: missing :port"))?,
        };
        if port == 0 {
            return Err(format!("{s:?}: port 0 is not a valid target"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl HostPort {
    /// `host:port` of an http(s)/ws(s) URL, default ports filled in (80/443): what the dial
    /// path connects to. Errors name the URL without credentials.
    pub fn of_url(url: &url::Url) -> Result<HostPort, String> {
        let shown = super::types::redact_url(url);
        let host = url.host_str().ok_or_else(|| format!("{shown} has no host"))?;
        let port = url.port_or_known_default().ok_or_else(|| format!("{shown} has no port"))?;
        Ok(HostPort {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPort::parse(&s, None).map_err(serde::de::Error::custom)
    }
}

/// `stun:`, `stuns:`, `turn:`, `turns:` (RFC 7064/7065).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IceScheme {
    Stun,
    Stuns,
    Turn,
    Turns,
}

/// Transport of a STUN/TURN URI (`?transport=`); `turns:`/`stuns:` are TCP+TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IceTransport {
    Udp,
    Tcp,
}

/// A parsed STUN/TURN URI, e.g. `turns:turn.example.com:443?transport=tcp`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IceUrl {
    pub scheme: IceScheme,
    pub host: String,
    pub port: u16,
    pub transport: IceTransport,
}

impl IceUrl {
    /// Whether the connection is TLS (`stuns:`/`turns:`).
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, IceScheme::Stuns | IceScheme::Turns)
    }

    /// Whether this is a TURN server URI.
    pub fn is_turn(&self) -> bool {
        matches!(self.scheme, IceScheme::Turn | IceScheme::Turns)
    }

    /// `udp`, `tcp` or `tls`: the transport label used in metrics.
    pub fn transport_label(&self) -> &'static str {
        if self.is_tls() {
            "tls"
        } else {
            match self.transport {
                IceTransport::Udp => "udp",
                IceTransport::Tcp => "tcp",
            }
        }
    }

    /// Host and port as a [`HostPort`].
    pub fn host_port(&self) -> HostPort {
        HostPort {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// Parses a URI; defaults: port 3478 (5349 for the TLS schemes), transport udp (tcp for TLS).
    pub fn parse(s: &str) -> Result<IceUrl, String> {
        let s = s.trim();
        let (scheme_s, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected stun:, stuns:, turn: or turns:"))?;
        let scheme = match scheme_s.to_ascii_lowercase().as_str() {
            "stun" => IceScheme::Stun,
            "stuns" => IceScheme::Stuns,
            "turn" => IceScheme::Turn,
            "turns" => IceScheme::Turns,
            other => return Err(format!("{s:?}: unknown scheme {other:?}; expected stun, stuns, turn or turns")),
        };
        let rest = rest.trim_start_matches("//");
        let (hp, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let tls = matches!(scheme, IceScheme::Stuns | IceScheme::Turns);
        let hp = HostPort::parse(hp, Some(if tls { 5349 } else { 3478 }))?;
        let mut transport = if tls { IceTransport::Tcp } else { IceTransport::Udp };
        if let Some(q) = query {
            for pair in q.split('&') {
                match pair.split_once('=') {
                    Some(("transport", "udp")) if tls => {
                        return Err(format!("{s:?}: {scheme_s}: runs over TCP; transport=udp (DTLS) is not supported"))
                    }
                    Some(("transport", "udp")) => transport = IceTransport::Udp,
                    Some(("transport", "tcp")) => transport = IceTransport::Tcp,
                    Some(("transport", other)) => return Err(format!("{s:?}: transport must be udp or tcp, got {other:?}")),
                    _ => return Err(format!("{s:?}: unknown query parameter {pair:?}; only transport= is allowed")),
                }
            }
        }
        Ok(IceUrl {
            scheme,
            host: hp.host,
            port: hp.port,
            transport,
        })
    }
}

impl fmt::Display for IceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            IceScheme::Stun => "stun",
            IceScheme::Stuns => "stuns",
            IceScheme::Turn => "turn",
            IceScheme::Turns => "turns",
        };
        let hp = HostPort {
            host: self.host.clone(),
            port: self.port,
        };
        let transport = match self.transport {
            IceTransport::Udp => "udp",
            IceTransport::Tcp => "tcp",
        };
        write!(f, "{scheme}:{hp}?transport={transport}")
    }
}

impl<'de> Deserialize<'de> for IceUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IceUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A secret value, read from `env:NAME`, `file:/path`, or given literally.
/// `Debug` and `Display` never show it, so it cannot leak into logs or errors by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Where it came from (`env:TURN_SECRET`, `file:/run/x`, `literal`) — safe to show.
    source: String,
}

impl Secret {
    /// A value given directly in the config (or built in code, e.g. the demo).
    pub fn literal(value: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            source: "literal".into(),
        }
    }

    /// Resolves `env:NAME` / `file:/path` references; anything else is a literal.
    pub fn resolve(raw: &str) -> Result<Secret, String> {
        if let Some(name) = raw.strip_prefix("env:") {
            let value = std::env::var(name).map_err(|_| format!("secret reference env:{name}: environment variable {name} is not set"))?;
            if value.is_empty() {
                return Err(format!("secret reference env:{name}: environment variable {name} is empty"));
            }
            return Ok(Secret {
                value,
                source: format!("env:{name}"),
            });
        }
        if let Some(path) = raw.strip_prefix("file:") {
            let value = std::fs::read_to_string(path).map_err(|e| format!("secret reference file:{path}: cannot read: {e}"))?;
            return Ok(Secret {
                value: value.trim_end_matches(['\n', '\r']).to_string(),
                source: format!("file:{path}"),
            });
        }
        Ok(Secret::literal(raw))
    }

    /// The secret itself. Call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the value came from, safe for messages.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.source)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret::resolve(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h30m`. Zero is rejected: every wait must be bounded and positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration {s:?} ({e}); use e.g. 500ms, 10s, 2m"))?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(d)
}

/// Parses `10%` or `0.1` into a fraction in 0.0..=0.5.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("bad fraction {s:?}; use e.g. 10% or 0.1"))?;
    if !(0.0..=0.5).contains(&v) {
        return Err(format!("{s:?} out of range: jitter must be between 0% and 50%"));
    }
    Ok(v)
}

/// serde helper for [`parse_percent`] accepting numbers or strings.
pub fn de_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        N(f64),
        S(String),
    }
    match P::deserialize(d)? {
        P::N(n) => parse_percent(&n.to_string()),
        P::S(s) => parse_percent(&s),
    }
    .map_err(serde::de::Error::custom)
}

/// Parses a `pin_sha256` entry: 64 hex digits or base64 of a SHA-256 digest of the
/// certificate's SubjectPublicKeyInfo, with an optional `sha256/` prefix (HPKP style).
pub fn parse_pin(p: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let t = p.trim().trim_start_matches("sha256/");
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).ok()
    } else {
        base64::engine::general_purpose::STANDARD.decode(t).ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| format!("pin_sha256 {p:?}: expected 64 hex digits or base64 of a SHA-256 digest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(HostPort::parse("a.example:443", None).unwrap().port, 443);
        assert_eq!(HostPort::parse("[::1]:8443", None).unwrap().host, "::1");
        assert!(HostPort::parse("::1:443", None).is_err());
        assert!(HostPort::parse("host:99999", None).is_err());
        assert!(HostPort::parse("host", None).is_err());
    }

    #[test]
    fn ice_url_defaults() {
        let u = IceUrl::parse("turns:relay.example.test").unwrap();
        assert_eq!((u.port, u.transport, u.transport_label()), (5349, IceTransport::Tcp, "tls"));
        let u = IceUrl::parse("turn:127.0.0.1:3478?transport=tcp").unwrap();
        assert_eq!(u.transport_label(), "tcp");
        assert!(IceUrl::parse("http://x").is_err());
        assert!(IceUrl::parse("turn:x?transport=sctp").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::literal("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(Secret::resolve("env:EGRESS_PROBE_SURELY_UNSET_VAR").is_err());
    }

    #[test]
    fn durations_and_percent() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!((parse_percent("10%").unwrap() - 0.1).abs() < 1e-9);
        assert!(parse_percent("80%").is_err());
    }
}
