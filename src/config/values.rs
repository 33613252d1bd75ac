//! Small value types of the config: `host:port`, STUN/TURN URIs, durations, percentages,
//! secret references, CA bundles, certificate pins, HTTP status ranges. Each parses from a
//! string (or a named file) and says precisely what is wrong with it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Deserializer};

use super::files::{read_bounded, FileError, MAX_NAMED_FILE};

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

    /// Host, port and the transport the client speaks (`turns:` is TLS).
    pub fn endpoint(&self) -> crate::outcome::Endpoint {
        crate::outcome::Endpoint {
            host: self.host.clone(),
            port: Some(self.port),
            transport: if self.is_tls() {
                crate::outcome::Transport::Tls
            } else {
                match self.transport {
                    IceTransport::Udp => crate::outcome::Transport::Udp,
                    IceTransport::Tcp => crate::outcome::Transport::Tcp,
                }
            },
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
            // A regular file of at most 1 MiB: a FIFO or /dev/zero must not hang or fill memory.
            let bytes = read_bounded(Path::new(path), MAX_NAMED_FILE).map_err(|e| match e {
                FileError::Io(e) => format!("secret reference file:{path}: cannot read: {e}"),
                other => format!("secret reference file:{path} {other}"),
            })?;
            let value = String::from_utf8(bytes).map_err(|_| format!("secret reference file:{path}: cannot read (invalid data)"))?;
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

/// Longest duration a config may give (intervals, timeouts, REST credential lifetimes): 24 h.
/// Bounded so that adding it to a clock reading can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `500ms`, `10s`, `2m`, `1h30m`. Zero is rejected (every wait must be bounded and
/// positive), and so is anything above [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration {s:?} ({e}); use e.g. 500ms, 10s, 2m"))?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    if d > MAX_DURATION {
        return Err(format!("duration {} is longer than the maximum of 24h", shorten(s.trim())));
    }
    Ok(d)
}

/// At most [`SHOWN_CHARS`] characters of user text, quoted, for messages: a 10 MB value is
/// never echoed whole.
pub fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        None => format!("{s:?}"),
        Some((i, _)) => format!("{:?}", format!("{}…", &s[..i])),
    }
}

/// How much of a long value messages show.
pub const SHOWN_CHARS: usize = 60;

/// The certificates of a `ca_file`, read and parsed once when the config is loaded, so the TLS
/// client never touches the file system while probing. Cheap to clone (shared).
#[derive(Clone)]
pub struct CaBundle {
    certs: Arc<Vec<CertificateDer<'static>>>,
}

impl CaBundle {
    /// Reads a PEM bundle: a regular file of at most 1 MiB holding at least one certificate.
    /// Errors name the path and say what is wrong (`cannot read "x": No such file or directory
    /// (os error 2)`, `"x" is a FIFO, not a regular file`, ...).
    pub fn read(path: &Path) -> Result<CaBundle, String> {
        let shown = format!("{:?}", path.display().to_string());
        let pem = read_bounded(path, MAX_NAMED_FILE).map_err(|e| match e {
            FileError::Io(e) => format!("cannot read {shown}: {e}"),
            other => format!("{shown} {other}"),
        })?;
        CaBundle::from_pem(&pem).map_err(|e| format!("{shown}: {e}"))
    }

    /// Parses PEM text; at least one `CERTIFICATE` block is required.
    pub fn from_pem(pem: &[u8]) -> Result<CaBundle, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM ({e})"))?;
        if certs.is_empty() {
            return Err("no PEM certificate in the file".into());
        }
        Ok(CaBundle { certs: Arc::new(certs) })
    }

    /// The certificates, in file order.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certs.len())
    }
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

/// An accepted status range, inclusive (`200`, `200-299`, `2xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, code: u16) -> bool {
        self.low <= code && code <= self.high
    }

    /// Parses `200`, `200-299` or `2xx`.
    pub fn parse(s: &str) -> Result<StatusRange, String> {
        let bad = || format!("bad status {s:?}; use 200, 200-299 or 2xx");
        let code = |t: &str| t.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c)).ok_or_else(bad);
        if let Some(d) = s.strip_suffix("xx") {
            let c = d.parse::<u16>().ok().filter(|c| (1..=5).contains(c)).ok_or_else(bad)?;
            return Ok(StatusRange {
                low: c * 100,
                high: c * 100 + 99,
            });
        }
        if let Some((a, b)) = s.split_once('-') {
            let (low, high) = (code(a)?, code(b)?);
            return if low <= high { Ok(StatusRange { low, high }) } else { Err(bad()) };
        }
        let c = code(s)?;
        Ok(StatusRange { low: c, high: c })
    }
}

/// A `pin_sha256` entry, parsed: the SHA-256 digest of a certificate's SubjectPublicKeyInfo
/// (or of its whole DER).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// Parses 64 hex digits or base64 of a SHA-256 digest, with an optional `sha256/` prefix
    /// (HPKP style).
    pub fn parse(p: &str) -> Result<Pin, String> {
        use base64::Engine as _;
        let t = p.trim().trim_start_matches("sha256/");
        let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(t).ok()
        };
        bytes
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(Pin)
            .ok_or_else(|| format!("pin_sha256 {p:?}: expected 64 hex digits or base64 of a SHA-256 digest"))
    }
}

/// base64(HMAC-SHA1(secret, username)), the REST-API TURN password (TURN REST API draft,
/// coturn `use-auth-secret`): what the probe sends and what the responder expects.
pub fn rest_password(secret: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC accepts keys of any length; unreachable in practice
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
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
    fn pins_parse_from_hex_or_base64() {
        let hex = "ab".repeat(32);
        assert_eq!(Pin::parse(&hex).unwrap(), Pin([0xab; 32]));
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0xab; 32]);
        assert_eq!(Pin::parse(&format!("sha256/{b64}")).unwrap(), Pin([0xab; 32]));
        assert!(Pin::parse("abcd").unwrap_err().contains("expected 64 hex digits"));
    }

    #[test]
    fn status_ranges_parse() {
        assert_eq!(StatusRange::parse("2xx").unwrap(), StatusRange { low: 200, high: 299 });
        assert_eq!(StatusRange::parse("200-204").unwrap(), StatusRange { low: 200, high: 204 });
        assert!(StatusRange::parse("299-200").is_err());
        assert!(StatusRange::parse("600").is_err());
    }

    #[test]
    fn durations_and_percent() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        let e = parse_duration("18446744073709551615s").unwrap_err();
        assert!(e.contains("longer than the maximum of 24h"), "{e}");
        assert!((parse_percent("10%").unwrap() - 0.1).abs() < 1e-9);
        assert!(parse_percent("80%").is_err());
    }
}
