//! Retargeting a configured probe for `/probe?module=NAME&target=T` (blackbox-style
//! multi-target): keep every setting of probe NAME, point it at T.
//!
//! What "target" means per kind: `tcp`/`tls` the `host:port`; `http`/`websocket` the URL's
//! `host:port` (or a whole URL of the same scheme family); `stun`/`turn` the URI's `host:port`;
//! `ice` every server's `host:port`; `media` the echo's `host:port`; `dns` the query name;
//! `udp_ports` the host (with a sweep of its own when it is another host, so the configured
//! host's port results are not mixed with another's; the configured host itself, however
//! written, keeps the probe's sweep). A TLS `server_name` set in the config is kept; otherwise SNI
//! follows the new host, as it did the old one.

use super::types::ProbeSpec;
use super::values::{HostPort, IceUrl};

impl ProbeSpec {
    /// This probe's settings pointed at `target`; `Err` says why the target does not fit.
    pub fn with_target(&self, target: &str) -> Result<ProbeSpec, String> {
        let target = target.trim();
        if target.is_empty() {
            return Err("empty target".into());
        }
        let mut spec = self.clone();
        match &mut spec {
            ProbeSpec::Tcp(s) => s.target = HostPort::parse(target, None)?,
            ProbeSpec::Path(s) => s.target = HostPort::parse(target, None)?,
            ProbeSpec::UdpPorts(s) => {
                let host = udp_ports_host(target)?;
                // Another host's answers must not mix into this probe's sweep: a fresh one
                // (one sample per `/probe` request, its start taken from the clock). The
                // probe's own host keeps it, so such runs add to its coverage.
                if !same_host(&host, &s.host) {
                    s.sweep = super::ports::PortSweep::default();
                }
                s.host = host;
            }
            ProbeSpec::Media(s) => s.target = HostPort::parse(target, None)?,
            ProbeSpec::Tls(s) => s.target = HostPort::parse(target, None)?,
            ProbeSpec::Http(s) => s.url = retarget_url(&s.url, target, &["http", "https"])?,
            ProbeSpec::Websocket(s) => s.url = retarget_url(&s.url, target, &["ws", "wss"])?,
            ProbeSpec::Stun(s) => s.server = retarget_ice(&s.server, target)?,
            ProbeSpec::Turn(s) => s.server = retarget_ice(&s.server, target)?,
            ProbeSpec::Ice(s) => {
                for server in &mut s.servers {
                    server.url = retarget_ice(&server.url, target)?;
                }
            }
            ProbeSpec::Dns(s) => s.query = dns_name(target)?,
            ProbeSpec::Session(_) => return Err("a session probe walks its own URLs and cannot be pointed at another target".into()),
        }
        Ok(spec)
    }
}

/// A whole URL of an allowed scheme replaces the URL; `host:port` replaces only those parts.
fn retarget_url(url: &url::Url, target: &str, schemes: &[&str]) -> Result<url::Url, String> {
    if target.contains("://") {
        let u = url::Url::parse(target).map_err(|e| format!("target URL: {e}"))?;
        if !schemes.contains(&u.scheme()) {
            return Err(format!("target URL scheme must be one of {schemes:?}"));
        }
        if u.host_str().is_none() {
            return Err("target URL has no host".into());
        }
        return Ok(u);
    }
    let hp = HostPort::parse(target, None)?;
    let mut u = url.clone();
    let host = if hp.host.contains(':') { format!("[{}]", hp.host) } else { hp.host };
    u.set_host(Some(&host)).map_err(|e| format!("target host: {e}"))?;
    u.set_port(Some(hp.port))
        .map_err(|_| "target port cannot be set on this URL".to_string())?;
    Ok(u)
}

fn retarget_ice(url: &IceUrl, target: &str) -> Result<IceUrl, String> {
    let hp = HostPort::parse(target, None)?;
    Ok(IceUrl {
        host: hp.host,
        port: hp.port,
        ..url.clone()
    })
}

/// A DNS name: letters, digits, `-`, `_`, `.`; labels of 1..=63 bytes, at most 253 in all.
fn dns_name(target: &str) -> Result<String, String> {
    let name = target.trim_end_matches('.');
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_labels = name.split('.').all(|l| !l.is_empty() && l.len() <= 63);
    if name.is_empty() || name.len() > 253 || !ok_chars || !ok_labels {
        return Err(format!("{target:?} is not a DNS name"));
    }
    Ok(target.to_string())
}

/// Two spellings of one host: case, brackets and a trailing dot aside, or equal addresses.
pub(crate) fn same_host(a: &str, b: &str) -> bool {
    let norm = |h: &str| {
        let h = h.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => h.to_ascii_lowercase(),
        }
    };
    norm(a) == norm(b)
}

/// `/probe?target=` for `udp_ports`: a host (a `host:port` keeps the host; the set stays).
fn udp_ports_host(target: &str) -> Result<String, String> {
    if target.parse::<std::net::IpAddr>().is_ok() {
        return Ok(target.to_string());
    }
    Ok(HostPort::parse(target, Some(1))?.host)
}

#[cfg(test)]
mod tests {
    use super::super::parse_str;
    use super::super::ProbeSpec;

    fn spec(yaml: &str) -> ProbeSpec {
        let text = format!("probes:\n  - name: p\n{yaml}");
        parse_str(&text, "t.yaml").unwrap().probes.remove(0).spec
    }

    #[test]
    fn each_kind_is_retargeted_where_its_target_lives() {
        let t = spec("    kind: tcp\n    target: a.example:1\n").with_target("127.0.0.1:9").unwrap();
        assert_eq!(t.target(), "127.0.0.1:9");
        let t = spec("    kind: tls\n    target: a.example:443\n    server_name: keep.example\n")
            .with_target("[::1]:8443")
            .unwrap();
        match &t {
            ProbeSpec::Tls(s) => {
                assert_eq!(s.target.to_string(), "[::1]:8443");
                assert_eq!(s.tls.server_name.as_deref(), Some("keep.example"));
            }
            _ => panic!(),
        }
        let t = spec("    kind: http\n    url: https://a.example/health?x=1\n")
            .with_target("b.example:8443")
            .unwrap();
        assert_eq!(t.target(), "https://b.example:8443/health");
        let t = spec("    kind: websocket\n    url: wss://a.example/ws\n")
            .with_target("[::1]:9000")
            .unwrap();
        assert_eq!(t.target(), "wss://[::1]:9000/ws");
        let t = spec("    kind: http\n    url: https://a.example/\n")
            .with_target("http://c.example:81/x")
            .unwrap();
        assert_eq!(t.target(), "http://c.example:81/x");
        let t = spec("    kind: turn\n    server: turns:a.example:443?transport=tcp\n    credentials: {username: u, password: p}\n")
            .with_target("127.0.0.1:5349")
            .unwrap();
        assert_eq!(t.target(), "turns:127.0.0.1:5349?transport=tcp");
        let t = spec("    kind: ice\n    servers:\n      - url: stun:a.example\n      - url: turn:b.example:3478\n        credentials: {username: u, password: p}\n")
            .with_target("127.0.0.1:3479")
            .unwrap();
        assert_eq!(t.target(), "stun:127.0.0.1:3479?transport=udp,turn:127.0.0.1:3479?transport=udp");
        let t = spec("    kind: dns\n    query: a.example\n    record: SRV\n")
            .with_target("_turn._udp.example.test")
            .unwrap();
        assert_eq!(t.target(), "_turn._udp.example.test SRV");
        let u = spec("    kind: udp_ports\n    host: a.example\n    ports: \"20000-20009\"\n");
        if let ProbeSpec::UdpPorts(s) = &u {
            s.sweep.record(&s.ports, &[(0, super::super::ports::PortState::Open)]);
        }
        for target in ["198.51.100.7", "b.example:3478", "::1"] {
            let t = u.with_target(target).unwrap();
            let ProbeSpec::UdpPorts(s) = &t else { panic!() };
            assert_eq!(s.sweep.covered(), 0, "{target}: a retargeted probe starts its own sweep");
        }
        for target in ["a.example", "A.Example.", "a.example:3478"] {
            let t = u.with_target(target).unwrap();
            let ProbeSpec::UdpPorts(s) = &t else { panic!() };
            assert_eq!(s.sweep.covered(), 1, "{target}: the probe's own host keeps its sweep");
        }
        assert_eq!(u.with_target("b.example:3478").unwrap().target(), "udp:b.example:20000-20009");
    }

    #[test]
    fn targets_that_do_not_fit_are_refused() {
        let tcp = spec("    kind: tcp\n    target: a.example:1\n");
        assert!(tcp.with_target("no-port").is_err());
        assert!(tcp.with_target("").is_err());
        assert!(tcp.with_target("host:99999").is_err());
        let http = spec("    kind: http\n    url: https://a.example/\n");
        assert!(http.with_target("ws://x.example/").is_err());
        let dns = spec("    kind: dns\n    query: a.example\n");
        assert!(dns.with_target("a b").is_err());
        assert!(dns.with_target("a..b").is_err());
    }
}
